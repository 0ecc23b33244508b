# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SCSI disks of iSCSI sessions on the compute host: by-path names, sysfs, multipath maps.

os-brick waited for a LUN by rescanning and sleeping ``tries ** 2`` seconds
(FLOW.md step 9). Here a wait is a short poll of the by-path link with one
bound on the total time, and every removal goes through sysfs the way the
kernel documents it (``/sys/block/sdX/device/delete``).
"""

from __future__ import annotations

import contextlib
import os
import typing as t
from dataclasses import dataclass

from ansible_collections.openvolume.compute.plugins.module_utils._common import wait_until
from ansible_collections.openvolume.compute.plugins.module_utils._iscsiadm import IscsiError, Portal

BY_PATH_DIR = "/dev/disk/by-path"
POLL_INTERVAL = 0.05


class DeviceError(IscsiError):
    """A SCSI device or multipath map did not appear, or could not be removed."""


def by_path(portal: Portal, target: str, lun: int) -> str:
    """The udev by-path link of an iSCSI LUN (udev's path_id naming)."""
    return f"{BY_PATH_DIR}/ip-{portal}-iscsi-{target}-lun-{lun}"


def wait_for(predicate: t.Callable[[], bool], *, timeout: float) -> bool:
    """Poll ``predicate`` every 50 ms until it holds or ``timeout`` seconds have passed."""
    return wait_until(predicate, timeout=timeout, interval=POLL_INTERVAL)


@dataclass
class Disk:
    """A SCSI disk as the kernel shows it in sysfs."""

    name: str  # sdb

    @property
    def dev(self) -> str:
        return f"/dev/{self.name}"

    @property
    def sysfs(self) -> str:
        return f"/sys/block/{self.name}"

    def exists(self) -> bool:
        return os.path.exists(self.sysfs)

    def size(self) -> int:
        """Size in bytes (sysfs counts 512-byte sectors whatever the block size)."""
        with open(f"{self.sysfs}/size") as f:
            return int(f.read().strip()) * 512

    def wwid(self) -> str | None:
        """The kernel's WWID of the disk (from VPD page 0x83), if it has one."""
        try:
            with open(f"{self.sysfs}/device/wwid") as f:
                return f.read().strip() or None
        except OSError:
            return None

    def holders(self) -> list[str]:
        """Device-mapper devices stacked on this disk (dm-0 ...)."""
        try:
            return sorted(os.listdir(f"{self.sysfs}/holders"))
        except OSError:
            return []

    @classmethod
    def from_path(cls, path: str) -> Disk:
        return cls(os.path.basename(os.path.realpath(path)))


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

    def paths(self) -> list[str]:
        try:
            return sorted(os.listdir(f"/sys/block/{self.dm}/slaves"))
        except OSError:
            return []

    @classmethod
    def of_disk(cls, disk: Disk) -> MultipathMap | None:
        for dm in disk.holders():
            try:
                with open(f"/sys/block/{dm}/dm/uuid") as f:
                    uuid = f.read().strip()
                with open(f"/sys/block/{dm}/dm/name") as f:
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

    def flush(self, *, mpath: MultipathMap) -> None:
        """Remove a map; it must be unused (flushed and closed) first."""
        self._run(args=["-f", mpath.name], action=f"flushing the multipath map {mpath.name}")


class ScsiDevices:
    """Waits for, inspects and removes the SCSI disks of iSCSI LUNs."""

    def __init__(self, module: t.Any) -> None:
        self.module = module
        self.multipath = Multipath(module)

    def wait_for_paths(self, paths: list[str], *, timeout: float) -> list[str]:
        """Wait until every by-path link exists; return the ones still missing."""
        wait_for(lambda: all(os.path.exists(p) for p in paths), timeout=timeout)
        return [p for p in paths if not os.path.exists(p)]

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
        if not wait_for(lambda: not os.path.exists(f"/sys/block/{mpath.dm}"), timeout=timeout):
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
