"""Live extend on the real lab: the domain sees the new size, data stays, the record keeps it.

RBD: QEMU grows the image itself through librbd (rbd info shows it).
iSCSI in qemu mode: tgtd keeps the size its LU had when it was made and has
no resize; an array grows a LUN in place. The test does what such an array
does, as tgtd allows it: it makes the LU again over a larger backing file
with the same SCSI id and serial, then runs extend.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import typing as t

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "volume_safety"))

from safety_lab import CONFIG, LAB, Run, Store, disks, domain, play, qemu_io, remove_domain, virsh  # noqa: E402

DOM = "ovt-ext-1"
TID = 397
IQN = "iqn.2026-11.org.openvolume.lab:ovt-extend"
LUN_FILE = os.path.join(LAB, "tgt", "luns", "ovt-extend.img")
CEPH = ["rbd", "-c", CONFIG.get("lab_ceph_conf", "")]
IMAGE = f"{CONFIG.get('lab_ceph_pool', 'volumes')}/ovt-ext-img"
MiB = 1 << 20


def tgtadm(*args: str) -> str:
    port = CONFIG.get("lab_tgt_control_port", "0")
    return subprocess.run(["tgtadm", "-C", port, "--lld", "iscsi", *args], check=True, capture_output=True,
                          text=True).stdout


def make_lu(size: int) -> None:
    """(Re)make LUN 1 of the test target over a backing file of ``size`` bytes, same SCSI id and serial."""
    subprocess.run(["truncate", "-s", str(size), LUN_FILE], check=True)
    if f"Target {TID}: " in tgtadm("--op", "show", "--mode", "target"):
        tgtadm("--op", "delete", "--mode", "logicalunit", "--tid", str(TID), "--lun", "1")
    else:
        tgtadm("--op", "new", "--mode", "target", "--tid", str(TID), "-T", IQN)
        tgtadm("--op", "bind", "--mode", "target", "--tid", str(TID), "-I", "ALL")
    tgtadm("--op", "new", "--mode", "logicalunit", "--tid", str(TID), "--lun", "1", "-b", LUN_FILE)
    tgtadm("--op", "update", "--mode", "logicalunit", "--tid", str(TID), "--lun", "1",
           "--params", "scsi_id=ovt-extend-1,scsi_sn=ovtext01")


def capacity(serial: str) -> int:
    target = disks(DOM)[serial]["target"]
    out = virsh("domblkinfo", DOM, target)
    return int(re.search(r"Capacity:\s+(\d+)", out).group(1))  # type: ignore[union-attr]


def changed(run: Run) -> int:
    m = re.search(r"^lab-compute-1\s*:.*changed=(\d+)", run.out, re.M)
    assert m, run.out[-3000:]
    return int(m.group(1))


def ok(run: Run | t.Any) -> Run:
    assert run.rc == 0, run.out[-6000:]
    return t.cast(Run, run)


@pytest.fixture(scope="module", autouse=True)
def lab() -> t.Iterator[None]:
    remove_domain(DOM)
    domain(DOM)
    yield
    remove_domain(DOM)
    if f"Target {TID}: " in tgtadm("--op", "show", "--mode", "target"):
        tgtadm("--op", "delete", "--mode", "target", "--tid", str(TID), "--force")
    if os.path.exists(LUN_FILE):
        os.unlink(LUN_FILE)
    subprocess.run([*CEPH, "rm", IMAGE], check=False, capture_output=True, stdin=subprocess.DEVNULL)


@pytest.fixture
def store(tmp_path: t.Any) -> Store:
    return Store("sqlite", str(tmp_path))


def catalogue(**volumes: dict[str, t.Any]) -> dict[str, t.Any]:
    return {"openvolume_volumes": volumes}


def test_rbd_extend(store: Store) -> None:
    subprocess.run([*CEPH, "rm", IMAGE], check=False, capture_output=True, stdin=subprocess.DEVNULL)
    # Ceph's tools set O_NONBLOCK on what they write to: never our own output.
    subprocess.run([*CEPH, "create", IMAGE, "--size", "64M"], check=True, capture_output=True,
                   stdin=subprocess.DEVNULL)
    cat = catalogue(**{"ovt-ext-rbd": {
        "driver_volume_type": "rbd", "name": IMAGE, "hosts": [CONFIG["lab_ceph_mon_addr"]],
        "auth_username": CONFIG["lab_ceph_client"], "auth_key": CONFIG["lab_ceph_client_key"], "bus": "scsi"}})
    ok(play("attach.yml", store, extra=dict(cat, volume="ovt-ext-rbd", instance=DOM)))
    qemu_io(DOM, "ovt-ext-rbd", "write -P 0x6b 60M 1M")
    # The catalogue's monitors change while the volume is attached (a monitor
    # added, Cinder's data refreshed with ports): the same image, grown.
    moved = catalogue(**{"ovt-ext-rbd": dict(cat["openvolume_volumes"]["ovt-ext-rbd"],
                                             hosts=[CONFIG["lab_ceph_mon_addr"], "localhost"],
                                             ports=[CONFIG["lab_ceph_mon_port_v2"], CONFIG["lab_ceph_mon_port_v2"]])})
    extend = dict(moved, volume="ovt-ext-rbd", instance=DOM, size="128M")
    check = ok(play("extend.yml", store, extra=extend, check=True))
    assert changed(check) >= 1 and capacity("ovt-ext-rbd") == 64 * MiB
    ok(play("extend.yml", store, extra=extend))
    info = subprocess.run([*CEPH, "info", IMAGE, "--format", "json"], check=True, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    assert '"size":134217728' in info.stdout.replace(" ", "")
    assert capacity("ovt-ext-rbd") == 128 * MiB
    assert store._backend().get("ovt-ext-rbd").size == 128 * MiB
    # The data is where it was, and the new part is there to write.
    qemu_io(DOM, "ovt-ext-rbd", "read -P 0x6b 60M 1M")
    qemu_io(DOM, "ovt-ext-rbd", "write -P 0x7c 120M 1M")
    assert changed(ok(play("extend.yml", store, extra=extend))) == 0
    shrink = play("extend.yml", store, extra=dict(extend, size="96M"))
    assert shrink.rc != 0 and "is already 134217728 bytes, more than 100663296; a volume is never shrunk" in shrink.out
    assert CONFIG["lab_ceph_client_key"] not in check.out + shrink.out
    ok(play("detach.yml", store, extra=dict(cat, volume="ovt-ext-rbd", instance=DOM)))


def test_iscsi_qemu_mode_extend(store: Store) -> None:
    make_lu(64 * MiB)
    cat = catalogue(**{"ovt-ext-iscsi": {
        "target_iqn": IQN, "target_portals": [CONFIG["lab_tgt_portal"]], "target_lun": 1, "attach_mode": "qemu",
        "bus": "scsi"}})
    ok(play("attach.yml", store, extra=dict(cat, volume="ovt-ext-iscsi", instance=DOM)))
    qemu_io(DOM, "ovt-ext-iscsi", "write -P 0x5d 60M 1M")
    extend = dict(cat, volume="ovt-ext-iscsi", instance=DOM, size="128M")
    # The target has not grown the LUN: QEMU cannot grow it, the run says so and changes nothing.
    early = play("extend.yml", store, extra=extend)
    assert early.rc != 0 and "grow it on the storage first" in early.out, early.out[-3000:]
    assert capacity("ovt-ext-iscsi") == 64 * MiB
    assert store._backend().get("ovt-ext-iscsi").size is None
    # The array grows the LUN (tgtd: the LU made again, larger, same identity), then extend.
    make_lu(128 * MiB)
    ok(play("extend.yml", store, extra=extend))
    assert capacity("ovt-ext-iscsi") == 128 * MiB
    assert store._backend().get("ovt-ext-iscsi").size == 128 * MiB
    qemu_io(DOM, "ovt-ext-iscsi", "read -P 0x5d 60M 1M")
    qemu_io(DOM, "ovt-ext-iscsi", "write -P 0x4e 120M 1M")
    with open(LUN_FILE, "rb") as f:
        f.seek(120 * MiB)
        assert f.read(MiB) == b"\x4e" * MiB
    assert changed(ok(play("extend.yml", store, extra=extend))) == 0
    ok(play("detach.yml", store, extra=dict(cat, volume="ovt-ext-iscsi", instance=DOM)))


def test_extend_of_a_volume_not_in_use_is_refused(store: Store) -> None:
    run = play("extend.yml", store, extra={"volume": "vol-01", "instance": DOM, "size": "128M"})
    assert run.rc != 0 and "only a volume in use is extended here" in run.out
