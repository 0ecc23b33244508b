# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SCSI disks of iSCSI sessions on the compute host: sysfs, LUN numbers, by-path names, WWIDs, multipath maps.

os-brick waited for a LUN by rescanning and sleeping ``tries ** 2`` seconds
(FLOW.md step 9). Here the disk of a LUN is looked up where the kernel puts
it, below the session in sysfs (``/sys/class/iscsi_session/sessionN/device/
targetH:C:T/H:C:T:L/block/sdX``), with a short poll and one bound on the
total time; the by-path link is only accepted when it resolves to that disk,
so a link left over from an earlier session is never handed on. Every
removal goes through sysfs the way the kernel documents it
(``/sys/block/sdX/device/delete``).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import typing as t
from dataclasses import dataclass

from ansible_collections.openvolume.compute.plugins.module_utils._common import wait_until
from ansible_collections.openvolume.compute.plugins.module_utils._iscsiadm import (
    SYSFS,
    IscsiError,
    persistent_address,
)

# The largest LUN number the kernel's iSCSI initiator takes (its max_lun).
MAX_LUN = 2**32 - 1
BY_PATH_DIR = "/dev/disk/by-path"
POLL_INTERVAL = 0.05

_HCTL = re.compile(r"^(\d+):(\d+):(\d+):(\d+)$")
_HEX = re.compile(r"^[0-9a-f]+$")


class DeviceError(IscsiError):
    """A SCSI device or multipath map did not appear, is not the expected one, or could not be removed."""


def wait_for(predicate: t.Callable[[], bool], *, timeout: float) -> bool:
    """Poll ``predicate`` every 50 ms until it holds or ``timeout`` seconds have passed."""
    return wait_until(predicate, timeout=timeout, interval=POLL_INTERVAL)


# LUN numbers -----------------------------------------------------------------
#
# A target names a LUN with 8 bytes (SAM); the kernel folds them into one
# integer two bytes at a time (drivers/scsi scsilun_to_int): bytes 0-1 are
# bits 0-15, bytes 2-3 bits 16-31. Which bytes a target uses for "LUN 300"
# depends on its addressing method, so the kernel's number is not the
# number in the volume catalogue:
#   peripheral (LUN < 256, method 00b, bus 0)  00 NN   -> NN
#   flat space (method 01b, up to 16383)       4x xx   -> 0x4000 + N (tgtd, most arrays)
#   extended flat space (0xD2, 24-bit LUN)     D2 aa bb cc -> 0xD2aa | 0xbbcc << 16
#   Linux's own mapping (LIO)                  int_to_scsilun(N) -> N
# So a LUN is found by decoding the kernel numbers of the session's devices,
# not by guessing one encoding.

def lun_numbers(kernel_lun: int) -> set[int]:
    """The LUN numbers a target may mean by the kernel's LUN number ``kernel_lun``."""
    numbers = {kernel_lun}
    first = (kernel_lun >> 8) & 0xFF
    second = kernel_lun & 0xFF
    level2 = (kernel_lun >> 16) & 0xFFFF
    if kernel_lun >> 32 == 0:
        if first >> 6 == 1 and level2 == 0:
            numbers.add(((first & 0x3F) << 8) | second)
        elif first == 0xD2:
            numbers.add((second << 16) | level2)
    return numbers


def flat_kernel_lun(lun: int) -> int:
    """The kernel's number for the target's LUN ``lun`` under flat space addressing, as most targets use from
    LUN 256 (peripheral below, extended flat from 16384): the inverse of ``lun_numbers``' decoding."""
    if lun < 256:
        return lun
    if lun < 0x4000:
        return 0x4000 | lun
    return 0xD200 | ((lun >> 16) & 0xFF) | ((lun & 0xFFFF) << 16)


# Cinder's ``addressing_mode`` (os-brick's names): how the array numbers its
# LUNs, when its driver says. SAM and transparent: the kernel's number is the
# LUN; SAM2: peripheral below 256, flat space from it; SAM3-flat: flat space
# for every LUN. Without it, ``lun_numbers`` decodes every encoding.
ADDRESSING_MODES = ("SAM", "transparent", "SAM2", "SAM3-flat")


def kernel_lun_for(lun: int, addressing: str | None = None) -> int:
    """The kernel's number for the target's LUN ``lun`` under ``addressing`` (None: flat from 256, as most
    targets number them)."""
    if addressing in ("SAM", "transparent"):
        return lun
    if addressing == "SAM3-flat" and lun < 0x4000:
        return 0x4000 | lun
    return flat_kernel_lun(lun)


def is_lun(kernel_lun: int, lun: int, addressing: str | None = None) -> bool:
    """Whether the kernel's LUN number ``kernel_lun`` is the target's LUN ``lun``: exactly under a known
    ``addressing``, else under any encoding that decodes to it."""
    if addressing is None:
        return lun in lun_numbers(kernel_lun)
    return kernel_lun == kernel_lun_for(lun, addressing)


def by_path_lun(kernel_lun: int) -> str:
    """The LUN part of a by-path name, as udev's path_id writes it (format_lun_number)."""
    if kernel_lun < 256:
        return f"lun-{kernel_lun}"
    return f"lun-0x{kernel_lun & 0xFFFF:04x}{(kernel_lun >> 16) & 0xFFFF:04x}00000000"


def by_path_name(*, address: str, port: int | str, target: str, kernel_lun: int) -> str:
    """The by-path name udev's path_id gives an iSCSI disk.

    ``address`` and ``port`` are the connection's persistent address and port
    as the kernel reports them: the node record's address verbatim, so an
    IPv6 portal appears without brackets and in the record's spelling.
    """
    name = f"ip-{address}:{port}-iscsi-{target}-{by_path_lun(kernel_lun)}"
    # udev writes a link name with every ASCII character but letters, digits
    # and #+-.:=@_ replaced by _ (udev_replace_chars): an IPv6 link-local
    # portal's zone, fe80::1%eth0, becomes fe80::1_eth0.
    return _udev_chars(name, "/")


def _udev_chars(text: str, also: str) -> str:
    """``text`` as udev_replace_chars leaves it: ASCII other than letters, digits, #+-.:=@_ and ``also`` is _."""
    return "".join(c if ord(c) > 127 or c.isalnum() or c in "#+-.:=@_" or c in also else "_" for c in text)


def find_by_path_link(disks: str | t.Collection[str], name: str, directory: str = BY_PATH_DIR) -> str | None:
    """The by-path link called ``name`` (or ``<prefix>-name``) that resolves to one of ``/dev/<disks>``.

    udev's path_id prepends the parents of the SCSI host: nothing for
    iscsi_tcp and iser (their hosts are virtual), ``pci-0000:05:00.1-`` for
    an offload HBA (bnx2i, qla4xxx, be2iscsi, cxgb4i). A link that exists
    but points elsewhere (left from an earlier session) does not count.
    """
    wanted = {f"/dev/{d}" for d in ([disks] if isinstance(disks, str) else disks)}
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return None
    for entry in entries:
        if entry == name or entry.endswith(f"-{name}"):
            path = os.path.join(directory, entry)
            if os.path.realpath(path) in wanted:
                return path
    return None


# WWIDs -----------------------------------------------------------------------
#
# The kernel's sysfs ``wwid`` names the designator type in words
# (``naa.6001405...``); udev (scsi_id, ID_SERIAL) and multipath use its
# numeric code as a prefix (``36001405...``). The collection speaks the
# udev/multipath form, as os-brick does.
_WWID_TYPES = {"t10.": "1", "eui.": "2", "naa.": "3"}


def udev_wwid(sysfs_wwid: str) -> str:
    """The udev/multipath form of a sysfs WWID (``naa.6001...`` -> ``36001...``)."""
    text = sysfs_wwid.strip()
    prefix = _WWID_TYPES.get(text[:4].lower())
    if prefix is None:
        prefix, body = "8", text
    else:
        body = text[4:]
    if prefix in "23":
        return prefix + body.lower()
    # A T10 vendor id (vendor, product, serial padded with blanks) or a SCSI
    # name string: udev's ID_SERIAL, which multipath takes for the WWID, has
    # each run of blanks as one _ (udev_replace_whitespace) and any other
    # character udev does not keep as _ (udev_replace_chars).
    return prefix + _udev_chars(_BLANKS.sub("_", body.strip()), "")


_BLANKS = re.compile(r"\s+")
# A T10 vendor id in the udev/multipath form: 1, the 8-character vendor, and more.
_T10_UDEV = re.compile(r"^1[\x21-\x7e]{9,}$")


def normalize_wwid(text: str, *, param: str) -> str:
    """A WWN from a volume catalogue in the udev/multipath form.

    Accepts that form (``36001405...``), the kernel's (``naa.6001405...``,
    ``eui.``) and a bare NAA in hex (``6001405...``, 16 or 32 digits), as
    storage back ends report it.
    """
    value = text.strip()
    low = value.lower()
    if low[:4] in _WWID_TYPES:
        return udev_wwid(value)
    if _HEX.match(low):
        if len(low) in (17, 25, 33) and low[0] in "123":
            return low
        if len(low) in (16, 32):
            return "3" + low
    if _T10_UDEV.match(value):
        return value
    raise DeviceError(
        f"{param}: '{text}' is not a WWN this module knows; give the udev/multipath form (3 and the NAA in hex, "
        "as in /dev/disk/by-id/wwn-0x... or multipath -ll), naa.<hex>, or the bare NAA in hex"
    )


# sysfs -----------------------------------------------------------------------
@dataclass
class Disk:
    """A SCSI disk as the kernel shows it in sysfs."""

    name: str  # sdb
    sysfs_root: str = SYSFS

    @property
    def dev(self) -> str:
        return f"/dev/{self.name}"

    @property
    def sysfs(self) -> str:
        return f"{self.sysfs_root}/block/{self.name}"

    def exists(self) -> bool:
        return os.path.exists(self.sysfs)

    def size(self) -> int:
        """Size in bytes (sysfs counts 512-byte sectors whatever the block size)."""
        with open(f"{self.sysfs}/size") as f:
            return int(f.read().strip()) * 512

    def sysfs_wwid(self) -> str | None:
        """The kernel's WWID of the disk (from VPD page 0x83), if it has one."""
        try:
            with open(f"{self.sysfs}/device/wwid") as f:
                return f.read().strip() or None
        except OSError:
            return None

    def wwid(self) -> str | None:
        """The disk's WWID in the udev/multipath form, if it has one."""
        raw = self.sysfs_wwid()
        return udev_wwid(raw) if raw else None

    def holders(self) -> list[str]:
        """Device-mapper devices stacked on this disk (dm-0 ...); none when the disk is gone.

        Any other failure to read them is an error: taken for "none", a live
        multipath map would be missed and the disk under it deleted.
        """
        try:
            return sorted(os.listdir(f"{self.sysfs}/holders"))
        except FileNotFoundError:
            if self.exists():
                raise DeviceError(f"{self.dev} has no holders directory in sysfs; cannot tell whether a "
                                  "multipath map sits on it, so it is left alone") from None
            return []
        except OSError as exc:
            raise DeviceError(f"reading the holders of {self.dev} failed ({exc.strerror}); cannot tell whether a "
                              "multipath map sits on it, so it is left alone") from None

    @classmethod
    def from_path(cls, path: str) -> Disk:
        return cls(os.path.basename(os.path.realpath(path)))


@dataclass(frozen=True)
class ScsiLun:
    """One SCSI device below an iSCSI session: its H:C:T:L and its disk, if it is one."""

    host: int
    channel: int
    target: int
    lun: int  # the kernel's LUN number
    disk: str | None

    @property
    def hctl(self) -> str:
        return f"{self.host}:{self.channel}:{self.target}:{self.lun}"


class SysfsSession:
    """An iSCSI session as sysfs shows it (``/sys/class/iscsi_session/sessionN``)."""

    def __init__(self, sid: int, sysfs_root: str = SYSFS) -> None:
        self.sid = sid
        self.root = sysfs_root

    def _read(self, path: str) -> str | None:
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            return None

    def exists(self) -> bool:
        return os.path.exists(f"{self.root}/class/iscsi_session/session{self.sid}")

    def targetname(self) -> str | None:
        return self._read(f"{self.root}/class/iscsi_session/session{self.sid}/targetname")

    def persistent_address(self) -> tuple[str, str] | None:
        """The connection's persistent address and port, the ones udev names by-path links after."""
        return persistent_address(self.sid, self.root)

    def luns(self) -> list[ScsiLun]:
        """The SCSI devices of the session, disks or not (tgtd's LUN 0 is a controller)."""
        base = os.path.realpath(f"{self.root}/class/iscsi_session/session{self.sid}/device")
        found = []
        try:
            targets = [d for d in os.listdir(base) if d.startswith("target")]
        except OSError:
            return []
        for target in targets:
            try:
                entries = os.listdir(os.path.join(base, target))
            except OSError:
                continue
            for entry in entries:
                m = _HCTL.match(entry)
                if not m:
                    continue
                try:
                    blocks = sorted(os.listdir(os.path.join(base, target, entry, "block")))
                except OSError:
                    blocks = []
                h, c, t_, lun = (int(x) for x in m.groups())
                found.append(ScsiLun(h, c, t_, lun, blocks[0] if blocks else None))
        return sorted(found, key=lambda d: d.lun)

    def find_lun(self, lun: int, addressing: str | None = None) -> ScsiLun | None:
        """The disk of the target's LUN ``lun``: under the target's ``addressing`` when known, else whatever
        addressing the target uses.

        Raises DeviceError when two disks could both be meant.
        """
        matches = [d for d in self.luns() if d.disk and is_lun(d.lun, lun, addressing)]
        if len(matches) > 1:
            raise DeviceError(
                f"lun: LUN {lun} of session {self.sid} could be any of "
                f"{', '.join(f'{d.disk} ({d.hctl})' for d in matches)}; give the target's addressing_mode "
                f"({', '.join(ADDRESSING_MODES)}; Cinder's drivers name it), or the kernel's LUN number (the last "
                "number of H:C:T:L) with addressing_mode SAM"
            )
        return matches[0] if matches else None


@dataclass
class MultipathMap:
    """A device-mapper multipath map found through sysfs."""

    dm: str  # dm-0
    name: str  # mpatha or the WWID, as /dev/mapper/<name>
    uuid: str  # mpath-<wwid>

    @property
    def dev(self) -> str:
        return f"/dev/mapper/{self.name}"

    @property
    def wwid(self) -> str:
        return self.uuid.split("-", 1)[1] if "-" in self.uuid else self.uuid

    def size(self) -> int:
        """The map's size in bytes (sysfs counts 512-byte sectors)."""
        with open(f"{SYSFS}/block/{self.dm}/size") as f:
            return int(f.read().strip()) * 512

    def paths(self) -> list[str]:
        try:
            return sorted(os.listdir(f"{SYSFS}/block/{self.dm}/slaves"))
        except OSError:
            return []

    @classmethod
    def of_disk(cls, disk: Disk) -> MultipathMap | None:
        for dm in disk.holders():
            try:
                with open(f"{disk.sysfs_root}/block/{dm}/dm/uuid") as f:
                    uuid = f.read().strip()
                with open(f"{disk.sysfs_root}/block/{dm}/dm/name") as f:
                    name = f.read().strip()
            except OSError:
                continue
            if uuid.startswith("mpath-"):
                return cls(dm=dm, name=name, uuid=uuid)
        return None


class Multipath:
    """The ``multipath`` command (multipath-tools), one wrapper for the binary."""

    def __init__(self, module: t.Any) -> None:
        self.module = module
        self._binary: str | None = None

    @property
    def binary(self) -> str:
        if self._binary is None:
            self._binary = self.module.get_bin_path("multipath", required=False)
            if not self._binary:
                raise DeviceError(
                    "multipath: the multipath command is missing on this host; install multipath-tools "
                    "(the iscsi_initiator role does with iscsi_initiator_multipath: true)"
                )
        return self._binary

    def _run(self, *, args: list[str], action: str) -> str:
        rc, out, err = self.module.run_command([self.binary, *args], environ_update={"LC_ALL": "C"}, check_rc=False)
        if rc != 0:
            raise DeviceError(f"{action} failed: multipath exit {rc}: {(err or out).strip()}")
        return str(out)

    def add_path(self, *, disk: Disk) -> None:
        """Ask multipath to build (or extend) the map of ``disk``'s WWID."""
        self._run(args=[disk.dev], action=f"creating the multipath map of {disk.dev}")

    def resize(self, *, mpath: MultipathMap) -> None:
        """Have multipathd take the size its paths have now (``multipathd resize map``)."""
        binary = self.module.get_bin_path("multipathd", required=False)
        if not binary:
            raise DeviceError("multipath: the multipathd command is missing on this host; install multipath-tools")
        rc, out, err = self.module.run_command([binary, "resize", "map", mpath.name], environ_update={"LC_ALL": "C"},
                                               check_rc=False)
        if rc != 0 or "fail" in (out or "").lower():
            raise DeviceError(f"resizing the multipath map {mpath.name} failed: {(err or out).strip()}")

    def flush(self, *, mpath: MultipathMap) -> None:
        """Remove a map; it must be unused (flushed and closed) first."""
        self._run(args=["-f", mpath.name], action=f"flushing the multipath map {mpath.name}")


class ScsiDevices:
    """Waits for, inspects and removes the SCSI disks of iSCSI LUNs."""

    def __init__(self, module: t.Any) -> None:
        self.module = module
        self.multipath = Multipath(module)

    def wait_for_luns(self, wanted: t.Sequence[tuple[SysfsSession, int, str | None]], *,
                      timeout: float) -> dict[int, float]:
        """Wait until every (session, LUN) of ``wanted`` has its disk: one bounded poll over all of them.

        Returns, for the index of each pair in ``wanted`` that appeared, the
        seconds it took; a pair missing from the result did not appear in
        time (the caller says which and why).
        """
        start = time.monotonic()
        appeared: dict[int, float] = {}

        def all_present() -> bool:
            for i, (session, lun, addressing) in enumerate(wanted):
                if i not in appeared and session.find_lun(lun, addressing) is not None:
                    appeared[i] = round(time.monotonic() - start, 2)
            return len(appeared) == len(wanted)

        wait_for(all_present, timeout=timeout)
        return appeared

    def wait_for_link(self, disks: t.Collection[str], name: str, *, timeout: float) -> str | None:
        """Wait until udev has made the by-path link ``name`` of one of ``disks``; the link, or None."""
        found: list[str] = []

        def present() -> bool:
            link = find_by_path_link(disks, name)
            if link is not None:
                found.append(link)
            return link is not None

        wait_for(present, timeout=timeout)
        return found[-1] if found else None

    def wait_for_map(self, disks: list[Disk], *, timeout: float) -> MultipathMap | None:
        """Wait for the multipath map over ``disks``, creating it if multipathd does not.

        multipathd builds maps itself for WWIDs it knows; with find_multipaths
        it may wait for a second path or ignore a new WWID, so after a short
        grace period the map is asked for explicitly.
        """
        def current() -> MultipathMap | None:
            for disk in disks:
                found = MultipathMap.of_disk(disk)
                if found is not None:
                    return found
            return None

        def complete() -> bool:
            mp = current()
            return mp is not None and all(d.name in mp.paths() for d in disks)

        grace = min(2.0, timeout / 2)
        if wait_for(complete, timeout=grace):
            return current()
        for disk in disks:
            self.multipath.add_path(disk=disk)
        wait_for(complete, timeout=max(timeout - grace, 0.0))
        return current()

    def rescan(self, disk: Disk) -> None:
        """Have the kernel read the disk's identity (VPD pages) and size again.

        The sysfs WWID is what the kernel read when it found the disk; a
        different volume mapped behind the same LUN since then shows only
        after a rescan (``/sys/block/sdX/device/rescan``).
        """
        try:
            with open(f"{disk.sysfs}/device/rescan", "w") as f:
                f.write("1")
        except OSError as exc:
            raise DeviceError(f"rescanning {disk.dev} failed: {exc}") from None

    def flush_buffers(self, disk: Disk) -> None:
        blockdev = self.module.get_bin_path("blockdev", required=True)
        rc, _out, err = self.module.run_command([blockdev, "--flushbufs", disk.dev], check_rc=False)
        if rc != 0 and disk.exists():
            raise DeviceError(f"flushing {disk.dev} failed: {err.strip()}; is the device still in use?")

    def delete(self, disk: Disk, *, timeout: float) -> None:
        """Remove a SCSI disk from the kernel (``/sys/block/sdX/device/delete``)."""
        if not disk.exists():
            return
        self.flush_buffers(disk)
        try:
            with open(f"{disk.sysfs}/device/delete", "w") as f:
                f.write("1")
        except OSError as exc:
            if disk.exists():
                raise DeviceError(f"deleting {disk.dev} failed: {exc}") from None
        if not wait_for(lambda: not disk.exists(), timeout=timeout):
            raise DeviceError(f"{disk.dev} is still there {timeout:g}s after it was deleted; is it in use?")

    def remove_map(self, mpath: MultipathMap, *, timeout: float) -> None:
        self.multipath.flush(mpath=mpath)
        if not wait_for(lambda: not os.path.exists(f"{SYSFS}/block/{mpath.dm}"), timeout=timeout):
            raise DeviceError(f"multipath map {mpath.name} is still there {timeout:g}s after the flush")


def resolve_block(path: str) -> dict[str, t.Any] | None:
    """The kernel block device behind ``path`` (a by-path link, a map, /dev/sdX), or None if absent.

    For a device-mapper map, its ``slaves`` are the SCSI disks under it: what
    tells which LUN a domain's disk really uses.
    """
    real = os.path.realpath(path)
    name = os.path.basename(real)
    if not real.startswith("/dev/") or not os.path.exists(f"/sys/class/block/{name}"):
        return None
    slaves: list[str] = []
    if name.startswith("dm-"):
        with contextlib.suppress(OSError):
            slaves = sorted(os.listdir(f"/sys/class/block/{name}/slaves"))
    return {"name": name, "slaves": slaves}


def initiator_name(path: str = "/etc/iscsi/initiatorname.iscsi") -> str | None:
    """This host's initiator IQN (the connector's ``initiator``), if configured."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("InitiatorName="):
                    return line.split("=", 1)[1].strip() or None
    except OSError:
        return None
    return None
