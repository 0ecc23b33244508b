"""Host mode in a compute-host guest: the playbooks against a plain script.

20 iSCSI volumes with multipath over the lab's two portals, attached to
paused TCG domains inside ONE guest (vm1) and detached again: by
playbooks/attach.yml + playbooks/detach.yml (reservations on the controller
in SQLite), and by tests/vmlab/bench/baseline.sh run inside the guest over
ssh (iscsiadm, multipath, virsh, sqlite3). In turn, several rounds
(OV_BENCH_ROUNDS, 3); after every half the guest is probed (untimed): 20
disks, 20 maps and 40 sessions after an attach, none after a detach. The
last line reads ``bench (host mode, 20 volumes, multipath): playbook Xs,
script Ys, ratio R`` (medians). A measurement, not a test: never part of
``make test``.

Needs the guests up (tests/vmlab/bench/run.sh brings them up when they are
not). The output of every run goes to OV_BENCH_LOG_DIR (default: the run's
temporary directory), so a callback enabled in the environment
(ANSIBLE_CALLBACKS_ENABLED) reports there, per round.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
LAB = os.environ.get("OV_LAB_DIR", "/var/tmp/openvolume-lab")
ROUNDS = int(os.environ.get("OV_BENCH_ROUNDS", "3"))
HOST = "vm1"
VOLUMES = [f"vol-{i:02d}" for i in range(1, 21)]
DOMAINS = [f"ovt-vmb-{i}" for i in range(1, 5)]
NAME = f"host mode, {len(VOLUMES)} volumes, multipath"
GUEST_DIR = "/root/ovbench"
# What the guest has of the benchmark's volumes: disks in the domains,
# multipath maps, iSCSI sessions to vol-01 .. vol-20.
PROBE = (
    "for d in " + " ".join(DOMAINS) + "; do virsh -q domblklist $d; done | grep -c . || true; "
    "dmsetup ls --target multipath | grep -vc '^No devices' || true; "
    "iscsiadm -m session 2>/dev/null | grep -cE ':vol-(0[1-9]|1[0-9]|20)( |$)' || true"
)


def lab_env(name: str) -> dict[str, str]:
    """The KEY=VALUE lines of one of the lab's env files (tgt.env, vm.env)."""
    env = {}
    with open(os.path.join(LAB, name)) as f:
        for line in f:
            key, sep, value = line.strip().partition("=")
            if sep:
                env[key] = value.strip('"')
    return env


def catalogue() -> dict[str, object]:
    """The volume catalogue: both portals, multipath, host mode; CHAP from tgt.env by lookup, never a value."""
    tgt_env = os.path.join(LAB, "tgt.env")

    def ini(key: str) -> str:
        return f"{{{{ lookup('ansible.builtin.ini', '{key}', type='properties', file='{tgt_env}') }}}}"

    prefix = lab_env("tgt.env")["TGT_IQN_PREFIX"]
    return {
        vol: {
            "target_iqn": f"{prefix}:{vol}",
            "target_portals": ["{{ ovlab_portal1 }}", "{{ ovlab_portal2 }}"],
            "target_lun": 1,
            "auth_username": ini("TGT_CHAP_USER"),
            "auth_password": ini("TGT_CHAP_PASSWORD"),
            "attach_mode": "host",
            "bus": "scsi",
            "multipath": True,
        }
        for vol in VOLUMES
    }


class Guest:
    """ssh to the benchmark's guest, as the lab's inventory reaches it."""

    def __init__(self) -> None:
        vm = lab_env("vm.env")
        addr = dict(zip(vm["VM_NAMES"].split(), vm["VM_ADDRS"].split(), strict=True))[HOST]
        self.argv = ["ssh", "-i", vm["VM_SSH_KEY"], "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                     "-o", f"UserKnownHostsFile={LAB}/vm/known_hosts", "-o", "LogLevel=ERROR", f"root@{addr}"]

    def run(self, command: str) -> str:
        return subprocess.run([*self.argv, command], check=True, capture_output=True, text=True).stdout

    def probe(self, want: int, when: str) -> None:
        """Fail unless the guest has ``want`` disks and maps and twice as many sessions."""
        got = [int(n) for n in self.run(PROBE).split()]
        if got != [want, want, 2 * want]:
            sys.exit(f"bench-vm: after {when} the guest has {got[0]} disks, {got[1]} multipath maps and "
                     f"{got[2]} sessions of the benchmark's volumes, not {want}, {want} and {2 * want}")


def timed(cmd: list[str], env: dict[str, str] | None = None, log: str | None = None) -> float:
    start = time.monotonic()
    with open(log or os.devnull, "a") as out:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    elapsed = time.monotonic() - start
    if proc.returncode:
        sys.exit(f"bench-vm: {shlex.join(cmd[:1] + cmd[-1:])} failed (exit {proc.returncode})"
                 + (f", output in {log}" if log else ""))
    return elapsed


def main() -> None:
    tmp = tempfile.mkdtemp(prefix="ov-bench-vm-")
    logs = os.environ.get("OV_BENCH_LOG_DIR", tmp)
    os.makedirs(logs, exist_ok=True)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, "build", "collections"),
               ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_NOCOLOR="1")
    # The guest's python (the inventory names it), not the controller's venv.
    env.pop("ANSIBLE_PYTHON_INTERPRETER", None)
    vars_file = os.path.join(tmp, "vars.json")
    with open(vars_file, "w") as f:
        json.dump({
            "openvolume_target_hosts": HOST,
            "openvolume_volumes": catalogue(),
            "openvolume_attachments": [{"volume": v, "instance": DOMAINS[i % len(DOMAINS)]}
                                       for i, v in enumerate(VOLUMES)],
            "openvolume_reservation": {"backend": "sqlite", "sqlite_path": os.path.join(tmp, "reservations.db")},
        }, f)
    inventory = ["-i", os.path.join(LAB, "vm", "inventory.ini")]
    play = ["ansible-playbook", *inventory, "-e", f"@{vars_file}"]
    setup = ["ansible-playbook", *inventory, os.path.join(HERE, "setup.yml"), "-e",
             json.dumps({"bench_host": HOST, "bench_domains": DOMAINS, "bench_volumes": len(VOLUMES)})]
    guest = Guest()
    timed(setup, env, os.path.join(logs, "setup.log"))
    ssh_once = timed([*guest.argv, "true"])
    script = [*guest.argv, f"{GUEST_DIR}/baseline.sh"]
    playbook_s, script_s = [], []
    try:
        for r in range(1, ROUNDS + 1):
            log = os.path.join(logs, f"round{r}")
            pa = timed([*play, "playbooks/attach.yml"], env, f"{log}-attach.log")
            guest.probe(len(VOLUMES), f"attach.yml (round {r})")
            pd = timed([*play, "playbooks/detach.yml"], env, f"{log}-detach.log")
            guest.probe(0, f"detach.yml (round {r})")
            sa = timed([*script, "attach"], log=f"{log}-script.log")
            guest.probe(len(VOLUMES), f"baseline.sh attach (round {r})")
            sd = timed([*script, "detach"], log=f"{log}-script.log")
            guest.probe(0, f"baseline.sh detach (round {r})")
            playbook_s.append(pa + pd)
            script_s.append(sa + sd)
            print(f"bench-vm round {r}: playbook {pa + pd:.1f}s (attach {pa:.1f}s, detach {pd:.1f}s), "
                  f"script {sa + sd:.1f}s (attach {sa:.1f}s, detach {sd:.1f}s)", flush=True)
    finally:
        timed([*setup, "-e", "bench_state=absent"], env, os.path.join(logs, "setup.log"))
    p, s = statistics.median(playbook_s), statistics.median(script_s)
    print(f"{NAME} on {len(DOMAINS)} domains in {HOST}, attach + detach, {ROUNDS} rounds in turn (medians); "
          f"the script's time includes its two ssh connections ({ssh_once:.1f}s each); logs in {logs}")
    print(f"bench ({NAME}): playbook {p:.1f}s, script {s:.1f}s, ratio {p / s:.2f}", flush=True)


if __name__ == "__main__":
    main()
