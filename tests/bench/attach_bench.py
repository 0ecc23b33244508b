"""Attach + detach of volumes on 5 domains: the playbooks against a plain script.

Two sets: 20 iSCSI volumes (qemu mode) and the lab's 6 Ceph RBD volumes.

Both do the same work on the lab (qemu mode: a libvirt secret and a QEMU
iSCSI network disk per volume, a reservation record per attachment), in
turn, several rounds; medians are compared. The last line reads
``bench: playbook Xs, script Ys, ratio R``. A measurement, not a test.

The playbooks get the volume catalogue as plain data, as the script gets
its facts from the lab's env files: the lab inventory builds it with an
ini lookup per field (about a second for each templating of the whole
catalogue), which is the lab's cost, not the collection's. It is resolved
once into the bench's private temporary directory (mode 0600, removed at
the end: it holds the lab's CHAP and cephx secrets).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROUNDS = int(os.environ.get("OV_BENCH_ROUNDS", "3"))
DOMAINS = [f"ovt-b-{i}" for i in range(1, 6)]
SETS = {
    "iSCSI, 20 volumes": [f"vol-{i:02d}" for i in range(1, 21)],
    "RBD, 6 volumes": [f"rbd-{i:02d}" for i in range(1, 7)],
}


def run(cmd: list[str], **kw: object) -> None:
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    start = time.monotonic()
    run(cmd, env=env)
    return time.monotonic() - start


RESOLVE = """
- name: The lab's volume catalogue as plain data
  hosts: compute
  gather_facts: false
  tasks:
    - name: Write it
      ansible.builtin.copy:
        content: "{{ {'openvolume_volumes': openvolume_volumes} | to_json }}"
        dest: "{{ dest }}"
        mode: "0600"
      no_log: true
"""


def resolve_catalogue(tmp: str, env: dict[str, str]) -> str:
    play, dest = os.path.join(tmp, "resolve.yml"), os.path.join(tmp, "catalogue.json")
    with open(play, "w") as f:
        f.write(RESOLVE)
    run(["ansible-playbook", "-i", "inventories/lab/hosts.yml", "-e", f"dest={dest}", play], env=env)
    return dest


def measure(name: str, volumes: list[str], tmp: str, env: dict[str, str], catalogue: str) -> None:
    """Attach + detach ``volumes`` round by round, playbooks and script in turn; print the medians."""
    attachments = [{"volume": v, "instance": DOMAINS[i % len(DOMAINS)]} for i, v in enumerate(volumes)]
    db = os.path.join(tmp, f"reservations-{len(volumes)}.db")
    vars_file = os.path.join(tmp, f"vars-{len(volumes)}.json")
    with open(vars_file, "w") as f:
        json.dump({"openvolume_attachments": attachments,
                   "openvolume_reservation": {"backend": "sqlite", "sqlite_path": db}}, f)
    play = ["ansible-playbook", "-i", "inventories/lab/hosts.yml", "-e", f"@{vars_file}", "-e", f"@{catalogue}"]
    script_db = os.path.join(tmp, f"script-{len(volumes)}.db")
    empty_play = os.path.join(tmp, "empty.yml")
    with open(empty_play, "w") as f:
        f.write("- name: Nothing\n  hosts: compute\n  gather_facts: false\n  tasks: []\n")
    # The one look at the host a no-op re-run cannot skip (a disk pulled
    # behind the collection's back is found only there): a play of that one
    # module task, to tell the round trip from the collection's own work.
    probe_play = os.path.join(tmp, "probe.yml")
    with open(probe_play, "w") as f:
        f.write("- name: One look at the host\n  hosts: compute\n  gather_facts: false\n  tasks:\n"
                "    - name: Read what the host has\n      openvolume.compute.volume_host_info:\n")
    # Ansible's own floor for a play that touches the host at all: one
    # ansible.builtin.ping (no collection code in it).
    ping_play = os.path.join(tmp, "ping.yml")
    with open(ping_play, "w") as f:
        f.write("- name: One ping\n  hosts: compute\n  gather_facts: false\n  tasks:\n"
                "    - name: Ping\n      ansible.builtin.ping:\n")
    playbook, script, rerun, empty, probe, ping = [], [], [], [], [], []
    for r in range(ROUNDS):
        attach = timed([*play, "playbooks/attach.yml"], env)
        # The same attach again, nothing to change, against an empty play on
        # the same inventory: what a no-op converge costs above Ansible's own.
        rerun.append(timed([*play, "playbooks/attach.yml"], env))
        empty.append(timed([*play, empty_play], env))
        probe.append(timed([*play, probe_play], env))
        ping.append(timed([*play, ping_play], env))
        p = attach + timed([*play, "playbooks/detach.yml"], env)
        s = timed(["tests/bench/baseline.sh", "attach", vars_file, script_db]) + timed(
            ["tests/bench/baseline.sh", "detach", vars_file, script_db])
        playbook.append(p)
        script.append(s)
        print(f"{name}, round {r + 1}: playbook {p:.1f}s, script {s:.1f}s, "
              f"re-run {rerun[-1]:.2f}s, empty play {empty[-1]:.2f}s, probe play {probe[-1]:.2f}s, "
              f"ping play {ping[-1]:.2f}s", flush=True)
    p, s = statistics.median(playbook), statistics.median(script)
    n, e, o, g = (statistics.median(x) for x in (rerun, empty, probe, ping))
    print(f"{name} on {len(DOMAINS)} domains, attach + detach, {ROUNDS} rounds in turn (medians)")
    print(f"bench ({name}, attach re-run with nothing to change): {n:.2f}s, empty play {e:.2f}s, "
          f"above by {n - e:.2f}s; a play of the one volume_host_info task {o:.2f}s ({o - e:.2f}s above), "
          f"of one ansible.builtin.ping {g:.2f}s ({g - e:.2f}s above)", flush=True)
    print(f"bench ({name}): playbook {p:.1f}s, script {s:.1f}s, ratio {p / s:.2f}", flush=True)


def main() -> None:
    tmp = tempfile.mkdtemp(prefix="ov-bench-")
    for dom in DOMAINS:
        run(["tests/lab/domain.sh", "create", dom])
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, "build", "collections"))
    try:
        catalogue = resolve_catalogue(tmp, env)
        for name, volumes in SETS.items():
            measure(name, volumes, tmp, env, catalogue)
    finally:
        for dom in DOMAINS:
            run(["tests/lab/domain.sh", "remove", dom])
        shutil.rmtree(tmp)
    sys.exit(0)


if __name__ == "__main__":
    main()
