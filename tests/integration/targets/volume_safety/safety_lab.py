"""The safety tests' view of the lab: playbook runs with faults, and the truth of libvirt, tgtd and the store.

Everything is read from the real components: the reservation store through
the collection's own backend code, the domains and secrets through virsh,
the data through QEMU's monitor (HMP qemu-io on a domain's drive) and the
LUN files of tgtd.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import typing as t
import uuid

from lxml import etree

HERE = os.path.dirname(os.path.abspath(__file__))
LAB = os.environ.get("OV_LAB_DIR", "/var/tmp/openvolume-lab")
URI = "qemu:///system"


def config() -> dict[str, str]:
    """integration_config.yml of ansible-test (lab facts as lab_<key>)."""
    path = os.path.join(HERE, "..", "..", "integration_config.yml")
    out: dict[str, str] = {}
    with open(path) as f:
        for line in f:
            key, sep, value = line.partition(": ")
            if sep:
                out[key.strip()] = value.strip().strip("'")
    return out


CONFIG = config()
REPO = CONFIG["lab_repo"]
INVENTORY = os.path.join(REPO, "inventories", "lab", "hosts.yml")


class Store:
    """The reservation store a test uses (its own SQLite file, or its own etcd prefix)."""

    def __init__(self, backend: str, tmp: str, lease_ttl: int = 300) -> None:
        if backend == "sqlite":
            self.options: dict[str, t.Any] = {"backend": "sqlite", "sqlite_path": os.path.join(tmp, "volumes.db")}
        else:
            self.options = {"backend": "etcd", "etcd_endpoints": [CONFIG["lab_etcd_endpoint"]],
                            "etcd_prefix": f"/ovsafety/{uuid.uuid4().hex}/"}
        self.lease_ttl = lease_ttl
        # The volumes the case works on (reconcile is limited to them).
        self.volumes: list[str] = []

    def extra_vars(self) -> dict[str, t.Any]:
        return {"openvolume_reservation": dict(self.options, lease_ttl=self.lease_ttl)}

    def _backend(self) -> t.Any:
        # REPO is .../ansible_collections/openvolume/compute: its grandparent's
        # parent is what Python imports ansible_collections from.
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(REPO))))
        if root not in sys.path:
            sys.path.insert(0, root)
        from ansible_collections.openvolume.compute.plugins.module_utils._reservation import open_backend

        return open_backend(self.options)

    def attachment(self, volume: str, instance: str) -> t.Any:
        """The attachment of ``instance`` (an _reservation.Attachment), or None."""
        backend = self._backend()
        try:
            record = backend.get(volume)
        finally:
            backend.close()
        return record.attachments.get(instance) if record else None

    def state(self, volume: str, instance: str) -> str:
        att = self.attachment(volume, instance)
        return att.status if att else "available"

    def attachments(self, volume: str) -> dict[str, t.Any]:
        backend = self._backend()
        try:
            record = backend.get(volume)
        finally:
            backend.close()
        return dict(record.attachments) if record else {}

    def cleanup(self) -> None:
        if self.options["backend"] == "etcd":
            backend = self._backend()
            backend.client.delete_prefix(self.options["etcd_prefix"])
            backend.close()


class Run(t.NamedTuple):
    rc: int
    out: str


def play(
    playbook: str,
    store: Store,
    *,
    extra: dict[str, t.Any] | None = None,
    kill_at: str | None = None,
    pause_at: str | None = None,
    pause_file: str | None = None,
    check: bool = False,
    inventory: list[str] | None = None,
    limit: str | None = None,
    background: bool = False,
) -> Run | subprocess.Popen[str]:
    """Run one of the collection's playbooks as its own process group (a controller)."""
    evars = dict(store.extra_vars(), **(extra or {}))
    cmd = ["ansible-playbook", *sum((["-i", i] for i in inventory or [INVENTORY]), []),
           "-e", json.dumps(evars), os.path.join(REPO, "playbooks", playbook)]
    if check:
        cmd += ["--check", "--diff"]
    if limit:
        cmd += ["--limit", limit]
    env = dict(os.environ, ANSIBLE_CALLBACK_PLUGINS=os.path.join(HERE, "callback_plugins"),
               ANSIBLE_CALLBACKS_ENABLED="ov_fault", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    for key in ("OV_FAULT_KILL_AT", "OV_FAULT_PAUSE_AT", "OV_FAULT_PAUSE_FILE"):
        env.pop(key, None)
    if kill_at:
        env["OV_FAULT_KILL_AT"] = kill_at
    if pause_at:
        env.update(OV_FAULT_PAUSE_AT=pause_at, OV_FAULT_PAUSE_FILE=str(pause_file))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    if background:
        return proc
    out = proc.communicate(timeout=600)[0]
    return Run(proc.returncode, out)


def wait_for_file(path: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not os.path.exists(path):
        if time.time() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout}s")
        time.sleep(0.1)


def virsh(*args: str, check: bool = True) -> str:
    res = subprocess.run(["virsh", "-q", "-c", URI, *args], capture_output=True, text=True, check=False)
    if check and res.returncode != 0:
        raise AssertionError(f"virsh {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout


def domain(name: str, state: str = "paused") -> None:
    subprocess.run([os.path.join(REPO, "tests", "lab", "domain.sh"), "create", name, state], check=True,
                   stdout=subprocess.DEVNULL)


def remove_domain(name: str) -> None:
    subprocess.run([os.path.join(REPO, "tests", "lab", "domain.sh"), "remove", name], check=False)


def disks(name: str, *, live: bool = True) -> dict[str, dict[str, t.Any]]:
    """serial -> {target, alias} of the domain's disks, live or persistent."""
    xml = virsh("dumpxml", *([] if live else ["--inactive"]), name)
    root = etree.fromstring(xml.encode())
    out = {}
    for disk in root.findall("./devices/disk"):
        serial = disk.findtext("serial")
        alias = disk.find("alias")
        if serial:
            out[serial] = {"target": disk.find("target").get("dev"),
                           "alias": alias.get("name") if alias is not None else None}
    return out


def has_disk(name: str, serial: str) -> dict[str, bool]:
    return {"live": serial in disks(name, live=True), "config": serial in disks(name, live=False)}


def secrets() -> set[str]:
    out = set()
    for line in virsh("secret-list").splitlines():
        uuid_ = line.split()[0] if line.split() else ""
        if not uuid_:
            continue
        # Another case may remove its secret between the list and the read.
        xml = virsh("secret-dumpxml", uuid_, check=False)
        if not xml.strip():
            continue
        usage = etree.fromstring(xml.encode()).find("usage")
        if usage is not None and len(usage):
            out.add(usage[0].text)
    return out


def tgtadm(*args: str) -> str:
    """tgtadm on the lab's tgtd (its control port), failing the case on an error."""
    return subprocess.run(["tgtadm", "-C", CONFIG.get("lab_tgt_control_port", "0"), "--lld", "iscsi", *args],
                          check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout


def hmp(name: str, command: str) -> str:
    return virsh("qemu-monitor-command", name, "--hmp", command)


def qemu_io(name: str, serial: str, command: str) -> str:
    """Run a qemu-io command on the domain's disk of ``serial`` (no guest OS needed)."""
    alias = disks(name)[serial]["alias"]
    out = hmp(name, f'qemu-io -d {alias} "{command}"')
    if "error" in out.lower() or "fail" in out.lower():
        raise AssertionError(f"qemu-io on {name}/{serial}: {out}")
    return out


def lun_file(volume: str) -> str:
    """The backing file tgtd serves for a lab volume vol-NN (target tid 10+NN, LUN 1)."""
    n = int(volume.split("-")[1])
    return os.path.join(LAB, "tgt", "luns", f"t{10 + n}-lun1.img")


def read_lun(volume: str, offset: int, length: int) -> bytes:
    with open(lun_file(volume), "rb") as f:
        f.seek(offset)
        return f.read(length)
