"""LUN numbers, udev by-path names, WWIDs and the sysfs view of a session.

The LUN and by-path cases are what the compute-host VMs showed (tgtd LUNs
1, 300 and 16383 behind a kernel 6.1 initiator, udev 252) and what udev's
path_id builtin computes for other addressing methods; the sysfs tree is
laid out as the kernel lays out an iscsi_tcp session.
"""

from __future__ import annotations

import os
import pathlib

import pytest

from ansible_collections.openvolume.compute.plugins.module_utils._scsi_devices import (
    DeviceError,
    ScsiLun,
    SysfsSession,
    by_path_lun,
    by_path_name,
    find_by_path_link,
    flat_kernel_lun,
    is_lun,
    kernel_lun_for,
    lun_numbers,
    normalize_wwid,
    udev_wwid,
)

IQN = "iqn.2026-11.org.openvolume.lab:vol-300"


@pytest.mark.parametrize(
    ("kernel_lun", "numbers"),
    [
        (0, {0}),
        (1, {1}),
        (255, {255}),
        # flat space addressing (tgtd, most arrays): 0x4000 + N
        (0x4000 + 256, {0x4000 + 256, 256}),
        (16684, {16684, 300}),
        (0x4000 + 16383, {0x7FFF, 16383}),
        # SAM-3 flat addressing of a small LUN
        (0x4001, {0x4001, 1}),
        # extended flat space (0xD2 and 24 bits): LUN 0x012345
        (0x2345D201, {0x2345D201, 0x012345}),
        # Linux's own mapping of LUN 300 (LIO: peripheral with bus 1)
        (300, {300}),
    ],
)
def test_lun_numbers(kernel_lun: int, numbers: set[int]) -> None:
    assert lun_numbers(kernel_lun) == numbers


@pytest.mark.parametrize(
    ("kernel_lun", "name"),
    [
        (1, "lun-1"),
        (255, "lun-255"),
        (256, "lun-0x0100000000000000"),
        (16684, "lun-0x412c000000000000"),
        (0x7FFF, "lun-0x7fff000000000000"),
        (0x2345D201, "lun-0xd201234500000000"),
    ],
)
def test_by_path_lun_as_udev_path_id(kernel_lun: int, name: str) -> None:
    assert by_path_lun(kernel_lun) == name


def test_by_path_name_ipv6_has_no_brackets_and_keeps_the_record_spelling() -> None:
    assert by_path_name(address="fd00:6f76:1::1", port="3260", target=IQN, kernel_lun=16684) == (
        f"ip-fd00:6f76:1::1:3260-iscsi-{IQN}-lun-0x412c000000000000"
    )
    assert by_path_name(address="FD00:6F76:1:0::1", port=3260, target=IQN, kernel_lun=1) == (
        f"ip-FD00:6F76:1:0::1:3260-iscsi-{IQN}-lun-1"
    )


def test_find_by_path_link_with_offload_pci_prefix(tmp_path: pathlib.Path) -> None:
    name = f"ip-192.0.2.10:3260-iscsi-{IQN}-lun-1"
    # What udev makes for a bnx2i / qla4xxx session: the HBA's PCI path first.
    (tmp_path / f"pci-0000:05:00.1-{name}").symlink_to("/dev/sdc")
    (tmp_path / f"pci-0000:05:00.1-{name}-part1").symlink_to("/dev/sdc1")
    (tmp_path / f"ip-192.0.2.10:3260-iscsi-{IQN}-lun-11").symlink_to("/dev/sdd")
    assert find_by_path_link("sdc", name, str(tmp_path)) == str(tmp_path / f"pci-0000:05:00.1-{name}")
    assert find_by_path_link("sdd", name, str(tmp_path)) is None


def test_find_by_path_link_ignores_a_stale_link(tmp_path: pathlib.Path) -> None:
    name = f"ip-192.0.2.10:3260-iscsi-{IQN}-lun-1"
    # Left from an earlier session: same name, another disk.
    (tmp_path / name).symlink_to("/dev/sdb")
    assert find_by_path_link("sdc", name, str(tmp_path)) is None
    assert find_by_path_link("sdb", name, str(tmp_path)) == str(tmp_path / name)
    assert find_by_path_link("sdb", name, str(tmp_path / "missing")) is None


@pytest.mark.parametrize(
    ("sysfs", "udev"),
    [
        ("naa.60000000000000000e00000000010001", "360000000000000000e00000000010001"),
        ("naa.6001405ABCDEF0123456789ABCDEF012", "36001405abcdef0123456789abcdef012"),
        ("eui.0123456789abcdef", "20123456789abcdef"),
        ("t10.IET     VIRTUAL-DISK", "1IET_VIRTUAL-DISK"),
    ],
)
def test_udev_wwid(sysfs: str, udev: str) -> None:
    assert udev_wwid(sysfs) == udev


@pytest.mark.parametrize(
    "given",
    [
        "360000000000000000e00000000010001",
        "360000000000000000E00000000010001",
        "naa.60000000000000000e00000000010001",
        "60000000000000000e00000000010001",
        " 360000000000000000e00000000010001\n",
    ],
)
def test_normalize_wwid_forms(given: str) -> None:
    assert normalize_wwid(given, param="wwid") == "360000000000000000e00000000010001"


@pytest.mark.parametrize("given", ["vol-01", "3600", "xyz0000000000000000000000000000000"])
def test_normalize_wwid_names_the_parameter(given: str) -> None:
    with pytest.raises(DeviceError) as err:
        normalize_wwid(given, param="wwid")
    assert err.value.msg.startswith(f"wwid: '{given}' is not a WWN")


def fake_session(root: pathlib.Path, sid: int, host: int, luns: dict[int, str | None]) -> None:
    """A sysfs tree as the kernel makes it for an iscsi_tcp session."""
    session = root / f"devices/platform/host{host}/session{sid}"
    for lun, disk in luns.items():
        dev = session / f"target{host}:0:0/{host}:0:0:{lun}"
        dev.mkdir(parents=True)
        if disk:
            (dev / "block" / disk).mkdir(parents=True)
    cls = root / f"class/iscsi_session/session{sid}"
    cls.mkdir(parents=True)
    (cls / "device").symlink_to(os.path.relpath(session, cls))
    (cls / "targetname").write_text(IQN + "\n")
    conn = root / f"class/iscsi_connection/connection{sid}:0"
    conn.mkdir(parents=True)
    (conn / "persistent_address").write_text("fd00:6f76:1::1\n")
    (conn / "persistent_port").write_text("3260\n")


def test_sysfs_session_finds_the_lun_by_its_target_number(tmp_path: pathlib.Path) -> None:
    fake_session(tmp_path, 7, 4, {0: None, 1: "sdb", 16684: "sdc"})
    session = SysfsSession(7, str(tmp_path))
    assert session.exists()
    assert session.targetname() == IQN
    assert session.persistent_address() == ("fd00:6f76:1::1", "3260")
    assert session.luns() == [ScsiLun(4, 0, 0, 0, None), ScsiLun(4, 0, 0, 1, "sdb"), ScsiLun(4, 0, 0, 16684, "sdc")]
    assert session.find_lun(300) == ScsiLun(4, 0, 0, 16684, "sdc")
    assert session.find_lun(16684) == ScsiLun(4, 0, 0, 16684, "sdc")
    assert session.find_lun(1) == ScsiLun(4, 0, 0, 1, "sdb")
    # tgtd's LUN 0 is its controller: no disk, never a match.
    assert session.find_lun(0) is None
    # The target's addressing known (Cinder's addressing_mode): one number, exactly.
    assert session.find_lun(300, "SAM2") == ScsiLun(4, 0, 0, 16684, "sdc")
    assert session.find_lun(300, "SAM") is None
    assert session.find_lun(16684, "SAM") == ScsiLun(4, 0, 0, 16684, "sdc")
    assert session.find_lun(1, "SAM2") == ScsiLun(4, 0, 0, 1, "sdb")
    assert session.find_lun(1, "SAM3-flat") is None


def test_sysfs_session_refuses_an_ambiguous_lun(tmp_path: pathlib.Path) -> None:
    # LUN 300 of a target that uses Linux's mapping, and flat LUN 300 at once.
    fake_session(tmp_path, 8, 5, {300: "sdd", 16684: "sde"})
    with pytest.raises(DeviceError, match="lun: LUN 300 of session 8 could be any of sdd.*give the target's "
                       "addressing_mode"):
        SysfsSession(8, str(tmp_path)).find_lun(300)
    # Its addressing_mode says which (LIO numbers as Linux does: SAM).
    assert SysfsSession(8, str(tmp_path)).find_lun(300, "SAM") == ScsiLun(5, 0, 0, 300, "sdd")
    assert SysfsSession(8, str(tmp_path)).find_lun(300, "SAM2") == ScsiLun(5, 0, 0, 16684, "sde")


@pytest.mark.parametrize(("lun", "mode", "kernel"), [
    (1, "SAM", 1), (300, "SAM", 300), (300, "transparent", 300), (1, "SAM2", 1), (255, "SAM2", 255),
    (256, "SAM2", 0x4100), (300, "SAM2", 16684), (1, "SAM3-flat", 0x4001), (300, "SAM3-flat", 16684),
    (300, None, 16684), (1, None, 1), (40000, "SAM2", 0x9C40D200),
])
def test_kernel_lun_for_an_addressing_mode(lun: int, mode: str | None, kernel: int) -> None:
    # os-brick's lun_for_addressing, with extended flat space from 16384.
    assert kernel_lun_for(lun, mode) == kernel
    assert is_lun(kernel, lun, mode)
    assert lun in lun_numbers(kernel)


def test_sysfs_session_that_is_gone(tmp_path: pathlib.Path) -> None:
    session = SysfsSession(9, str(tmp_path))
    assert not session.exists()
    assert session.luns() == []
    assert session.persistent_address() is None


@pytest.mark.parametrize("lun", [0, 1, 255, 256, 300, 16383, 16384, 40000, 65535, 0xFFFFFF])
def test_flat_kernel_lun_is_what_lun_numbers_decodes(lun: int) -> None:
    # Check mode predicts the by-path name of a LUN no session shows yet.
    assert lun in lun_numbers(flat_kernel_lun(lun))
    assert flat_kernel_lun(40000) == 0x9C40D200
