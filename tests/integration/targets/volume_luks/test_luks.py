"""Encrypted volumes on the real lab: QEMU decrypts, the storage holds only ciphertext.

For a qemu-mode iSCSI LUN (CHAP) of a target of this test's own (tgtd tid
399) and an RBD image of its own (cephx): attach.yml on a paused domain
writes a LUKS header on the blank volume; a pattern written through the
drive (HMP qemu-io) is not in the LUN's backing file or the image's export,
where a LUKS header is (cryptsetup isLuks); detach, attach again: the
pattern reads back and the header is the same bytes (not formatted again).
A wrong passphrase is refused with a full rollback and the header
unchanged. The passphrase is in no output (-vvv), domain XML or store
record, and never on a command line: the catalogue goes to ansible-playbook
in a file of mode 0600.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets as pysecrets
import subprocess
import sys
import tempfile
import time
import typing as t

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "volume_safety"))

from safety_lab import (  # noqa: E402
    CONFIG,
    INVENTORY,
    LAB,
    REPO,
    Run,
    Store,
    disks,
    domain,
    qemu_io,
    remove_domain,
    virsh,
)
from safety_lab import secrets as libvirt_secrets  # noqa: E402

DOM = "ovt-luks-1"
TID = 399
IQN = f"{CONFIG.get('lab_tgt_iqn_prefix', 'iqn.2026-11.org.openvolume.lab')}:ovt-luks"
LUN_FILE = os.path.join(LAB, "tgt", "luns", "ovt-luks.img")
# LUN 2: a volume with data and no header (a plaintext volume declared encrypted by mistake).
DATA_FILE = os.path.join(LAB, "tgt", "luns", "ovt-luks-data.img")
CEPH = ["rbd", "-c", CONFIG.get("lab_ceph_conf", "")]
IMAGE = f"{CONFIG.get('lab_ceph_pool', 'volumes')}/luks-img-1"
PASSPHRASE = "ovt-" + pysecrets.token_urlsafe(24)
MiB = 1 << 20
PATTERN = 0x5A


def tgtadm(*args: str) -> str:
    port = CONFIG.get("lab_tgt_control_port", "0")
    return subprocess.run(["tgtadm", "-C", port, "--lld", "iscsi", *args], check=True, capture_output=True,
                          text=True).stdout


def rbd(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # Ceph's tools set O_NONBLOCK on what they write to: never our own output.
    return subprocess.run([*CEPH, *args], check=check, capture_output=True, text=True, stdin=subprocess.DEVNULL)


def drop_target() -> None:
    if f"Target {TID}: " in tgtadm("--op", "show", "--mode", "target"):
        tgtadm("--op", "delete", "--mode", "target", "--tid", str(TID), "--force")


def drop_secrets() -> None:
    for line in virsh("secret-list").splitlines():
        fields = line.split()
        if len(fields) >= 2 and "openvolume/luks-" in line:
            virsh("secret-undefine", fields[0], check=False)


@pytest.fixture(scope="module", autouse=True)
def lab() -> t.Iterator[None]:
    remove_domain(DOM)
    drop_secrets()
    domain(DOM)
    # A blank 64 MiB LUN behind a target of our own, with the lab's CHAP account.
    drop_target()
    for path in (LUN_FILE, DATA_FILE):
        if os.path.exists(path):
            os.unlink(path)
        subprocess.run(["truncate", "-s", str(64 * MiB), path], check=True)
    with open(DATA_FILE, "r+b") as f:
        f.seek(4096)
        f.write(b"a filesystem that is not encrypted")
    tgtadm("--op", "new", "--mode", "target", "--tid", str(TID), "-T", IQN)
    tgtadm("--op", "new", "--mode", "logicalunit", "--tid", str(TID), "--lun", "1", "-b", LUN_FILE)
    tgtadm("--op", "new", "--mode", "logicalunit", "--tid", str(TID), "--lun", "2", "-b", DATA_FILE)
    tgtadm("--op", "bind", "--mode", "target", "--tid", str(TID), "-I", "ALL")
    tgtadm("--op", "bind", "--mode", "account", "--tid", str(TID), "--user", CONFIG["lab_tgt_chap_user"])
    rbd("rm", IMAGE, check=False)
    rbd("create", IMAGE, "--size", "64M")
    yield
    remove_domain(DOM)
    drop_secrets()
    drop_target()
    for path in (LUN_FILE, DATA_FILE):
        if os.path.exists(path):
            os.unlink(path)
    rbd("rm", IMAGE, check=False)


def catalogue(passphrase: str = PASSPHRASE) -> dict[str, t.Any]:
    iscsi = {"target_iqn": IQN, "target_portals": [CONFIG["lab_tgt_portal"]],
             "auth_username": CONFIG["lab_tgt_chap_user"], "auth_password": CONFIG["lab_tgt_chap_password"],
             "attach_mode": "qemu", "bus": "scsi", "encrypted": True, "passphrase": passphrase}
    return {
        "luks-data": dict(iscsi, target_lun=2),
        "luks-iscsi": {
            "target_iqn": IQN, "target_portals": [CONFIG["lab_tgt_portal"]], "target_lun": 1,
            "auth_username": CONFIG["lab_tgt_chap_user"], "auth_password": CONFIG["lab_tgt_chap_password"],
            "attach_mode": "qemu", "bus": "scsi", "encrypted": True, "format": "luks", "passphrase": passphrase},
        "luks-rbd": {
            "driver_volume_type": "rbd", "name": IMAGE, "hosts": [CONFIG["lab_ceph_mon_addr"]],
            "auth_username": CONFIG["lab_ceph_client"], "auth_key": CONFIG["lab_ceph_client_key"], "bus": "scsi",
            "encrypted": True, "passphrase": passphrase},
    }


def command_lines() -> list[bytes]:
    """Every process's command line now (/proc/PID/cmdline, readable by any local user)."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    out.append(f.read())
            except OSError:
                pass
    return out


def play(playbook: str, store: Store, tmp: str, extra: dict[str, t.Any], *, check: bool = False,
         verbose: bool = False) -> Run:
    """ansible-playbook with the variables in a file of mode 0600 (no secret on its command line).

    While it runs, every process's command line is read again and again: the
    passphrase must be on none (ansible-playbook, its modules, qemu-img, qemu-io).
    """
    path = os.path.join(tmp, "extra-vars.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(dict(store.extra_vars(), **extra), f)
    cmd = ["ansible-playbook", "-i", INVENTORY, "-e", f"@{path}", os.path.join(REPO, "playbooks", playbook)]
    if check:
        cmd += ["--check", "--diff"]
    if verbose:
        cmd.append("-vvv")
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        seen = 0
        while proc.poll() is None:
            lines = command_lines()
            seen += len(lines)
            assert not [c for c in lines if PASSPHRASE.encode() in c], "the passphrase is on a command line"
            time.sleep(0.05)
        log.seek(0)
        out = log.read().decode(errors="replace")
    os.unlink(path)
    assert seen
    return Run(proc.returncode, out)


def ok(run: Run) -> Run:
    assert run.rc == 0, run.out[-6000:]
    return run


def changed(run: Run) -> int:
    m = re.search(r"^lab-compute-1\s*:.*changed=(\d+)", run.out, re.M)
    assert m, run.out[-3000:]
    return int(m.group(1))


def volume_bytes(volume: str, tmp: str) -> bytes:
    """What the storage holds: the LUN's backing file, or the image as rbd export writes it."""
    if volume == "luks-iscsi":
        with open(LUN_FILE, "rb") as f:
            return f.read()
    out = os.path.join(tmp, "export.img")
    if os.path.exists(out):
        os.unlink(out)
    rbd("export", IMAGE, out)
    with open(out, "rb") as f:
        return f.read()


def is_luks(volume: str, tmp: str) -> bool:
    path = LUN_FILE
    if volume == "luks-rbd":
        path = os.path.join(tmp, "export.img")
        with open(path, "wb") as f:
            f.write(volume_bytes(volume, tmp))
    return subprocess.run(["cryptsetup", "isLuks", path], check=False).returncode == 0


def head_hash(volume: str, tmp: str) -> str:
    return hashlib.sha256(volume_bytes(volume, tmp)[: 4 * MiB]).hexdigest()


def no_passphrase_anywhere(store: Store, *outputs: str) -> None:
    for text in outputs:
        assert PASSPHRASE not in text
    for inactive in ([], ["--inactive"]):
        assert PASSPHRASE not in virsh("dumpxml", *inactive, DOM)
    with open(store.options["sqlite_path"], "rb") as f:
        assert PASSPHRASE.encode() not in f.read()
    # Module invocations logged to syslog (the lab's rsyslog, tests/lab/syslog.sh).
    messages = os.path.join(LAB, "syslog", "messages")
    if os.path.exists(messages):
        with open(messages, "rb") as f:
            assert PASSPHRASE.encode() not in f.read()


@pytest.mark.parametrize("volume", ["luks-iscsi", "luks-rbd"])
def test_encrypted_volume(volume: str, tmp_path: t.Any) -> None:
    tmp = str(tmp_path)
    store = Store("sqlite", tmp)
    extra = {"openvolume_volumes": catalogue(), "volume": volume, "instance": DOM}
    assert not any(volume_bytes(volume, tmp)[: 4 * MiB])

    # Check mode predicts and writes nothing.
    check = ok(play("attach.yml", store, tmp, extra, check=True))
    assert changed(check) >= 1
    assert not any(volume_bytes(volume, tmp)[: 4 * MiB])
    assert volume not in disks(DOM)

    first = ok(play("attach.yml", store, tmp, extra, verbose=True))
    live = virsh("dumpxml", DOM)
    assert "<encryption format='luks' engine='qemu'>" in live
    assert f"usage='openvolume/{volume}/luks'" in live
    assert {f"openvolume/{volume}", f"openvolume/{volume}/luks"} <= libvirt_secrets()
    att = store.attachment(volume, DOM)
    assert att.status == "in-use"
    assert att.connection_info["data"]["encrypted"] is True
    assert att.connection_info["openvolume"]["luks_secret_usage"] == f"openvolume/{volume}/luks"

    # Through the drive QEMU decrypts; on the storage: a LUKS header and ciphertext.
    qemu_io(DOM, volume, f"write -P {PATTERN:#x} 1M 1M")
    stored = volume_bytes(volume, tmp)
    assert stored[:6] == b"LUKS\xba\xbe"
    assert bytes([PATTERN]) * 4096 not in stored
    assert is_luks(volume, tmp)
    header = head_hash(volume, tmp)
    assert changed(ok(play("attach.yml", store, tmp, extra))) == 0
    no_passphrase_anywhere(store, check.out, first.out)

    ok(play("detach.yml", store, tmp, extra))
    assert volume not in disks(DOM) and volume not in disks(DOM, live=False)
    assert not {f"openvolume/{volume}", f"openvolume/{volume}/luks"} & libvirt_secrets()
    assert store.state(volume, DOM) == "available"

    # Again: the header is found, not written; the data is there.
    again = ok(play("attach.yml", store, tmp, extra))
    assert head_hash(volume, tmp) == header
    qemu_io(DOM, volume, f"read -P {PATTERN:#x} 1M 1M")
    ok(play("detach.yml", store, tmp, extra))

    # A wrong passphrase: refused, everything rolled back, the header as it was.
    wrong = play("attach.yml", store, tmp, dict(extra, openvolume_volumes=catalogue("ovt-wrong-passphrase")))
    assert wrong.rc != 0
    assert f"the passphrase in libvirt secret openvolume/{volume}/luks does not open the LUKS header" in wrong.out
    assert "the earlier steps were rolled back" in wrong.out
    assert "ovt-wrong-passphrase" not in wrong.out
    assert volume not in disks(DOM) and volume not in disks(DOM, live=False)
    assert not {f"openvolume/{volume}", f"openvolume/{volume}/luks"} & libvirt_secrets()
    assert store.state(volume, DOM) == "available"
    assert head_hash(volume, tmp) == header
    no_passphrase_anywhere(store, again.out, wrong.out)


def test_encrypted_without_a_passphrase_names_the_field(tmp_path: t.Any) -> None:
    store = Store("sqlite", str(tmp_path))
    cat = catalogue()
    del cat["luks-rbd"]["passphrase"]
    extra = {"openvolume_volumes": cat, "volume": "luks-rbd", "instance": DOM}
    run = play("attach.yml", store, str(tmp_path), extra)
    assert run.rc != 0
    assert "volume luks-rbd: passphrase (the LUKS passphrase, from a vault like the CHAP secrets) is needed" in run.out


def test_a_volume_with_data_and_no_header_is_never_formatted(tmp_path: t.Any) -> None:
    store = Store("sqlite", str(tmp_path))
    with open(DATA_FILE, "rb") as f:
        before = hashlib.sha256(f.read()).hexdigest()
    extra = {"openvolume_volumes": catalogue(), "volume": "luks-data", "instance": DOM}
    run = play("attach.yml", store, str(tmp_path), extra)
    assert run.rc != 0
    assert "has no LUKS header but holds data in its first 64 KiB" in run.out
    assert "the earlier steps were rolled back" in run.out
    with open(DATA_FILE, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == before
    assert "luks-data" not in disks(DOM)
    assert not {"openvolume/luks-data", "openvolume/luks-data/luks"} & libvirt_secrets()
    assert store.state("luks-data", DOM) == "available"
