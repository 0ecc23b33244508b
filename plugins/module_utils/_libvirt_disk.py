# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disks of libvirt domains: the logic of the libvirt_disk module.

FLOW.md attach steps 10-11 and detach step 2, as Nova's libvirt driver does
them: the disk XML is built as elements, attached with ``AFFECT_CONFIG`` for
a persistent domain and ``AFFECT_LIVE`` for a running or paused one, and a
detach waits until the device has really left the live domain. A guest that
does not release a virtio disk leaves it attached although libvirt's call
"succeeded": that ends in a failure that says so, never in a false success.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import re
import socket
import string
import struct
import time
import typing as t
from dataclasses import dataclass, field

from ansible_collections.openvolume.compute.plugins.module_utils import _libvirt as lv
from ansible_collections.openvolume.compute.plugins.module_utils._common import (
    SERIAL,
    OpenVolumeError,
    UndoSteps,
    apply_batch,
    skip_if_check_mode,
    undo_after,
)
from ansible_collections.openvolume.compute.plugins.module_utils._libvirt import LibvirtError
from ansible_collections.openvolume.compute.plugins.module_utils._libvirt_secret import (
    LibvirtSecrets,
    SecretSpec,
    apply_secrets,
    secret_result,
    secret_specs,
    secrets_option,
    undo_created,
)
from ansible_collections.openvolume.compute.plugins.module_utils._luks import Credentials, LuksError, luks_volume
from ansible_collections.openvolume.compute.plugins.module_utils._rbd import (
    Rbd,
    RbdError,
    monitor_addresses,
    sharing_blockers,
)

BUS_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd"}
SECRET_TYPE = {"iscsi": "iscsi", "rbd": "ceph"}
# The libvirt secret usage type of each kind of secret a disk names.
SECRET_USAGE_TYPE = {"iscsi": "VIR_SECRET_USAGE_TYPE_ISCSI", "rbd": "VIR_SECRET_USAGE_TYPE_CEPH",
                     "passphrase": "VIR_SECRET_USAGE_TYPE_VOLUME"}
ENCRYPTION_FORMATS = ("luks",)
# An iSCSI portal without a port is 3260 (libvirt assumes it too); we write
# it out. A Ceph monitor without a port gets none: librados then tries the
# messenger v2 port 3300 and the v1 port 6789, while a forced 6789 breaks
# clusters whose monitors speak v2 only.
ISCSI_PORT = 3260
CEPH_MON_PORTS = (3300, 6789)
# Cache modes with O_DIRECT: the only ones QEMU's native AIO works with.
DIRECT_CACHE = ("none", "directsync")
FORMATS = ("raw", "qcow2", "qed", "vmdk", "vhdx")
# Image formats known by their first bytes (as QEMU probes them); raw has none.
MAGIC = ((b"QFI\xfb", "qcow2"), (b"QED\x00", "qed"), (b"KDMV", "vmdk"), (b"vhdxfile", "vhdx"))
# Settings whose option is not named like the setting.
PARAM = {"format": "source.format", "encryption": "source.encryption"}
# How long the monitor probe before an RBD attach waits for each address.
PROBE_TIMEOUT = 3.0


@dataclass
class DiskSpec:
    """One disk as the user asked for it, validated.

    ``io`` is what the user chose (None: the default of the source type, see
    ``driver_io``), so a default never counts as a setting that differs from
    a disk attached earlier.
    """

    domain: str
    state: str
    where: str = ""
    source: dict[str, t.Any] | None = None
    target_dev: str | None = None
    bus: str = "virtio"
    serial: str | None = None
    cache: str = "none"
    io: str | None = None
    discard: str | None = None
    readonly: bool = False
    shareable: bool = False
    device: str = "disk"
    # Bytes the live disk must have at least (an extend: QEMU's block_resize).
    size: int | None = None
    extra: dict[str, t.Any] = field(default_factory=dict)

    @classmethod
    def from_params(cls, p: t.Mapping[str, t.Any], where: str = "") -> DiskSpec:
        if not p.get("domain"):
            raise LibvirtError(f"{where}domain: required")
        spec = cls(
            domain=p["domain"], state=p.get("state") or "present", where=where, source=p.get("source"),
            target_dev=p.get("target_dev"), bus=p.get("bus") or "virtio", serial=p.get("serial"),
            cache=p.get("cache") or "none", io=p.get("io"), discard=p.get("discard"),
            readonly=bool(p.get("readonly")), shareable=bool(p.get("shareable")), device=p.get("device") or "disk",
            size=parse_size(p.get("size"), param=f"{where}size"),
        )
        spec.validate()
        return spec

    def validate(self) -> None:
        w = self.where
        if self.bus not in BUS_PREFIX:
            raise LibvirtError(f"{w}bus: '{self.bus}' is not one of virtio, scsi, sata")
        if self.target_dev is not None and self.state == "present":
            prefix = BUS_PREFIX[self.bus]
            if not re.fullmatch(rf"{prefix}[a-z]{{1,3}}", self.target_dev):
                raise LibvirtError(
                    f"{w}target_dev: '{self.target_dev}' is not a device name for bus {self.bus}; "
                    f"use {prefix}b, {prefix}c, ... or leave it out to take the next free one"
                )
        if self.serial is not None and not SERIAL.fullmatch(self.serial):
            raise LibvirtError(f"{w}serial: '{self.serial}' may hold only letters, digits, '.', '_', ':' and '-', "
                               "at most 64 of them")
        if self.device == "lun" and self.bus == "virtio" and self.source and self.source.get("type") == "file":
            raise LibvirtError(f"{w}device: lun needs a block or network source, not a file")
        if self.state == "absent":
            if not self.serial and not self.source and not self.target_dev:
                raise LibvirtError(f"{w}serial: state=absent needs serial, source or target_dev to find the disk")
            if self.source:
                self.validate_source()
            return
        if self.device == "lun" and self.serial is not None:
            # libvirt: "scsi-block 'lun' devices do not support the serial
            # property" (nor a wwn). Nova leaves the serial out of a lun disk.
            raise LibvirtError(
                f"{w}serial: a device=lun disk passes SCSI commands through and the guest sees the LUN's own "
                "serial, so libvirt refuses a <serial> on it; leave serial out (the disk is then found by its "
                "source, as Nova does) or attach it as device=disk"
            )
        if self.io == "native" and self.cache not in DIRECT_CACHE:
            raise LibvirtError(
                f"{w}io: native needs cache none or directsync (QEMU's native AIO works only with O_DIRECT), "
                f"not cache={self.cache}; use io=threads or leave io out"
            )
        if not self.source:
            raise LibvirtError(f"{w}source: required with state=present")
        self.validate_source()

    def validate_source(self) -> None:
        w, src = self.where, self.source or {}
        kind = src.get("type")
        if kind in ("block", "file"):
            path = src.get("path")
            if not path or not str(path).startswith("/"):
                raise LibvirtError(f"{w}source.path: a {kind} source needs an absolute path")
        elif kind == "network":
            protocol = src.get("protocol")
            if protocol not in ("iscsi", "rbd"):
                raise LibvirtError(f"{w}source.protocol: a network source takes iscsi or rbd, got {protocol!r}")
            if not src.get("name"):
                hint = "IQN/LUN" if protocol == "iscsi" else "pool/image"
                raise LibvirtError(f"{w}source.name: required for a network source ({hint})")
            if protocol == "iscsi" and not re.fullmatch(r"\S+/\d+", str(src["name"])):
                raise LibvirtError(f"{w}source.name: an iSCSI source name is IQN/LUN, got '{src['name']}'")
            if protocol == "rbd" and not re.fullmatch(r"[^/@\s]+/[^/@\s]+", str(src["name"])):
                # pool/namespace/image too: libvirt takes what follows the
                # pool for the image name, and QEMU never finds it.
                raise LibvirtError(
                    f"{w}source.name: an RBD source name is pool/image (libvirt cannot attach an image in a "
                    f"namespace), got '{src['name']}'"
                )
            # RBD without hosts: QEMU's librbd reads the monitors from the
            # host's /etc/ceph/ceph.conf, as with Cinder's empty hosts list.
            if protocol == "iscsi" and not src.get("hosts"):
                raise LibvirtError(f"{w}source.hosts: an iSCSI source needs at least one portal")
            auth = src.get("auth")
            if auth:
                if not auth.get("username"):
                    raise LibvirtError(f"{w}source.auth.username: required with source.auth")
                if bool(auth.get("secret_usage")) == bool(auth.get("secret_uuid")):
                    raise LibvirtError(f"{w}source.auth: give exactly one of secret_usage and secret_uuid")
        else:
            raise LibvirtError(f"{w}source.type: must be block, file or network, got {kind!r}")
        encryption = src.get("encryption")
        if encryption:
            if (encryption.get("format") or "luks") not in ENCRYPTION_FORMATS:
                raise LibvirtError(f"{w}source.encryption.format: only luks is supported, got "
                                   f"{encryption.get('format')!r}")
            if bool(encryption.get("secret_usage")) == bool(encryption.get("secret_uuid")):
                raise LibvirtError(f"{w}source.encryption: give exactly one of secret_usage and secret_uuid (the "
                                   "libvirt secret of usage type volume that holds the passphrase)")
        fmt = src.get("format")
        if fmt is not None and fmt not in FORMATS:
            raise LibvirtError(f"{w}source.format: '{fmt}' is not one of {', '.join(FORMATS)}")
        if fmt not in (None, "raw") and kind != "file":
            raise LibvirtError(f"{w}source.format: a {kind} source is raw; {fmt} is for image files only")
        if fmt not in (None, "raw") and encryption:
            raise LibvirtError(f"{w}source.encryption: a LUKS volume is a raw volume with a LUKS header; {fmt} images "
                               "carry their own encryption")

    @property
    def label(self) -> str:
        return f"disk {self.serial or self.target_dev or '(by source)'} of {self.domain}"


# --- XML -------------------------------------------------------------------------------
def driver_io(spec: DiskSpec) -> str | None:
    """The ``io`` of the driver: the user's, else Nova's default for the source type.

    A host block device gets ``native`` when the cache mode bypasses the page
    cache (Nova's volume drivers do the same; with another cache mode Nova
    falls back to the default, threads). Files and network disks keep QEMU's
    default.
    """
    if spec.io:
        return spec.io
    if (spec.source or {}).get("type") == "block" and spec.cache in DIRECT_CACHE:
        return "native"
    return None


def build_disk(spec: DiskSpec, target_dev: str, fmt: str | None = None) -> t.Any:
    """The ``<disk>`` element for ``spec`` (lxml escapes every value).

    ``fmt`` is the image format of a file source (see ``image_format``); block
    and network volumes are raw.
    """
    E = lv.etree.Element
    sub = lv.etree.SubElement
    src = spec.source or {}
    disk = E("disk", type=src["type"], device=spec.device)
    driver = sub(disk, "driver", name="qemu", type=fmt or src.get("format") or "raw", cache=spec.cache)
    io = driver_io(spec)
    if io:
        driver.set("io", io)
    if spec.discard:
        driver.set("discard", spec.discard)
    source = sub(disk, "source")
    if src["type"] == "block":
        source.set("dev", src["path"])
    elif src["type"] == "file":
        source.set("file", src["path"])
    else:
        protocol = src["protocol"]
        source.set("protocol", protocol)
        source.set("name", str(src["name"]))
        for host in src.get("hosts") or []:
            port = host.get("port") or (ISCSI_PORT if protocol == "iscsi" else None)
            h = sub(source, "host", name=str(host["name"]))
            if port:
                h.set("port", str(port))
        auth = src.get("auth")
        if auth:
            a = sub(source, "auth", username=str(auth["username"]))
            secret = sub(a, "secret", type=SECRET_TYPE[protocol])
            if auth.get("secret_usage"):
                secret.set("usage", str(auth["secret_usage"]))
            else:
                secret.set("uuid", str(auth["secret_uuid"]))
    encryption = src.get("encryption")
    if encryption:
        # Inside <source> (libvirt's place for it since 3.9): QEMU's luks
        # driver decrypts, with the passphrase of a secret of usage type volume.
        enc = sub(source, "encryption", format=str(encryption.get("format") or "luks"), engine="qemu")
        secret = sub(enc, "secret", type="passphrase")
        if encryption.get("secret_usage"):
            secret.set("usage", str(encryption["secret_usage"]))
        else:
            secret.set("uuid", str(encryption["secret_uuid"]))
    sub(disk, "target", dev=target_dev, bus=spec.bus)
    # (validate() refuses a serial on a lun; this keeps the rule in the XML too)
    if spec.serial and spec.device != "lun":
        sub(disk, "serial").text = spec.serial
    if spec.readonly:
        sub(disk, "readonly")
    if spec.shareable:
        sub(disk, "shareable")
    return disk


def disk_source(disk: t.Any) -> dict[str, t.Any]:
    """The source of a ``<disk>`` in the module's terms (a host without a port has port None)."""
    out = _disk_source(disk)
    encryption = disk_encryption(disk)
    if encryption:
        out["encryption"] = encryption
    return out


def disk_encryption(disk: t.Any) -> dict[str, t.Any] | None:
    """The ``<encryption>`` of a disk (inside ``<source>``, or under ``<disk>`` as older XML has it)."""
    source = disk.find("source")
    enc = source.find("encryption") if source is not None and source.find("encryption") is not None \
        else disk.find("encryption")
    if enc is None:
        return None
    out: dict[str, t.Any] = {"format": enc.get("format")}
    secret = enc.find("secret")
    if secret is not None:
        refs = (("secret_usage", secret.get("usage")), ("secret_uuid", secret.get("uuid")))
        out.update({k: v for k, v in refs if v})
    return out


def _disk_source(disk: t.Any) -> dict[str, t.Any]:
    source = disk.find("source")
    kind = disk.get("type")
    if source is None:
        return {"type": kind}
    if kind == "block":
        return {"type": "block", "path": source.get("dev")}
    if kind == "file":
        driver = disk.find("driver")
        return {"type": "file", "path": source.get("file"),
                "format": driver.get("type") if driver is not None else None}
    out: dict[str, t.Any] = {
        "type": kind, "protocol": source.get("protocol"), "name": source.get("name"),
        "hosts": [{"name": h.get("name"), "port": int(h.get("port")) if h.get("port") else None}
                  for h in source.findall("host")],
    }
    auth = source.find("auth") if source.find("auth") is not None else disk.find("auth")
    if auth is not None:
        secret = auth.find("secret")
        out["auth"] = {"username": auth.get("username")}
        if secret is not None:
            refs = (("secret_usage", secret.get("usage")), ("secret_uuid", secret.get("uuid")))
            out["auth"].update({k: v for k, v in refs if v})
    return out


# QEMU hands a virtio-blk guest this much of a disk's serial (VIRTIO_BLK_ID_BYTES).
VIRTIO_SERIAL_BYTES = 20


def block_devices(src: t.Mapping[str, t.Any], sysfs_root: str = "/sys") -> set[str]:
    """The kernel block devices behind a block source: the one its path names and, for a map, its paths."""
    if src.get("type") != "block" or not src.get("path"):
        return set()
    real = os.path.realpath(str(src["path"]))
    if not real.startswith("/dev/") or not os.path.exists(real):
        return set()
    name = os.path.basename(real)
    try:
        slaves = set(os.listdir(f"{sysfs_root}/block/{name}/slaves"))
    except OSError:
        slaves = set()
    return {name} | slaves


def source_key(src: t.Mapping[str, t.Any]) -> tuple[t.Any, ...]:
    """What makes two sources the same volume, whichever XML attached it.

    Written out or left to the default, a port is the same port: an iSCSI
    portal without one is 3260, and a Ceph monitor without one, on 3300 (v2)
    or on 6789 (v1, which this module used to write for every monitor) is
    the same monitor. An iSCSI name without ``/LUN`` is LUN 0, as libvirt
    reads it. An RBD source without hosts (ceph.conf) is a source of its own.
    """
    kind = src.get("type")
    if kind in ("block", "file"):
        return (kind, src.get("path"))
    protocol = src.get("protocol")
    name = str(src.get("name"))
    hosts: list[tuple[str, str]] = []
    for h in src.get("hosts") or []:
        port = h.get("port")
        if protocol == "rbd":
            shown = "mon" if port in (None, 0, "", *CEPH_MON_PORTS) else str(port)
        else:
            shown = str(int(port or ISCSI_PORT))
        hosts.append((str(h.get("name")), shown))
    if protocol == "iscsi":
        iqn, _slash, lun = name.rpartition("/")
        name = f"{iqn}/{int(lun)}" if iqn and lun.isdigit() else f"{name}/0"
    return ("network", protocol, name, tuple(sorted(set(hosts))))


def same_rbd_image(a: t.Mapping[str, t.Any], b: t.Mapping[str, t.Any]) -> bool:
    """Whether two RBD sources with monitors name the same image (pool/image), whatever monitors they list.

    Monitors are how QEMU reaches the cluster, not what the volume is: they
    move (a monitor replaced, Cinder's data refreshed with ports) while the
    disk stays attached. A source without monitors reads the host's
    ceph.conf, maybe another cluster: never the same.
    """
    return all(src.get("type") == "network" and src.get("protocol") == "rbd" and src.get("hosts") for src in (a, b)) \
        and str(a.get("name")) == str(b.get("name"))


def image_format(path: str, *, where: str = "") -> str:
    """The format of an image file, from its first bytes (raw when none is known).

    A qcow2 file handed to a guest as raw is corrupted by the guest's first
    write, so a file source gets its real format. Probing trusts the file,
    though: a guest that wrote a qcow2 header into a raw image could point
    it at a host file. A qcow2 image that names a backing file or an external
    data file is therefore refused unless the user gives ``source.format``.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(104)
    except OSError as exc:
        raise LibvirtError(f"{where}source.path: cannot read {path} to tell its format: {exc.strerror}; "
                           "check the path, or give source.format") from None
    fmt = next((name for magic, name in MAGIC if head.startswith(magic)), "raw")
    if fmt == "qcow2" and len(head) >= 80:
        version, backing_offset = struct.unpack(">IQ", head[4:16])
        incompatible = struct.unpack(">Q", head[72:80])[0] if version >= 3 else 0
        # Incompatible feature bit 2: the data is in an external file.
        if backing_offset or incompatible & 0x4:
            raise LibvirtError(
                f"{where}source.format: {path} is a qcow2 image that refers to another file (a backing file or "
                "an external data file); this module does not follow such references on its own: give "
                "source.format: qcow2 if the image is trusted, or flatten it (qemu-img convert)"
            )
    return fmt


def unreachable_monitors(hosts: t.Sequence[t.Mapping[str, t.Any]], timeout: float = PROBE_TIMEOUT) -> list[str]:
    """The addresses tried, if no Ceph monitor of ``hosts`` accepts a connection; [] once one does.

    QEMU's librbd waits for the monitors up to its mount timeout (5 minutes
    by default) inside libvirt's attach call; a TCP probe first turns a
    cluster that is down into an error within seconds.
    """
    tried = []
    for host in hosts:
        name = str(host["name"]).strip("[]")
        for port in ([int(host["port"])] if host.get("port") else CEPH_MON_PORTS):
            try:
                socket.create_connection((name, port), timeout=timeout).close()
                return []
            except OSError as exc:
                tried.append(f"{name}:{port} ({exc.strerror or exc})")
    return tried


def disk_info(disk: t.Any) -> dict[str, t.Any]:
    target = disk.find("target")
    serial = disk.find("serial")
    return {
        "target_dev": target.get("dev") if target is not None else None,
        "bus": target.get("bus") if target is not None else None,
        "serial": serial.text if serial is not None else None,
        "source": disk_source(disk),
        "readonly": disk.find("readonly") is not None,
        "shareable": disk.find("shareable") is not None,
        "device": disk.get("device"),
    }


# Children of <disk> libvirt adds or fills in: not part of what we asked for.
_ADDED = ("address", "alias", "backingStore")
# The order libvirt formats a disk's children in (virDomainDiskDefFormat);
# others follow in their own order.
_ORDER = {tag: i for i, tag in enumerate(("driver", "source", "target", "iotune", "readonly", "shareable", "serial",
                                          "wwn", "vendor", "product", "encryption", "boot"))}


def canonical(disk: t.Any) -> t.Any:
    """A copy of a ``<disk>`` in a canonical form, for comparing and diffing.

    Without what libvirt adds (address, alias, backing store, the source's
    index), without whitespace, attributes sorted, and the disk's children in
    libvirt's order whatever order they came in. The order of repeated
    children (a network source's hosts) is kept.
    """
    clone = lv.etree.fromstring(lv.etree.tostring(disk))
    for tag in _ADDED:
        for el in clone.findall(tag):
            clone.remove(el)
    source = clone.find("source")
    if source is not None and "index" in source.attrib:
        del source.attrib["index"]
    for el in clone.iter():
        el.tail = None
        if el.text is not None and not el.text.strip():
            el.text = None
        attrs = sorted(el.attrib.items())
        el.attrib.clear()
        for key, value in attrs:
            el.set(key, value)
    clone[:] = sorted(clone, key=lambda child: _ORDER.get(str(child.tag), len(_ORDER)))
    return clone


def normalise(disk: t.Any) -> str:
    """A disk as compared and shown in diffs: the text of ``canonical``."""
    return lv.to_text(canonical(disk))


def settings(disk: t.Any) -> dict[str, t.Any]:
    """The options of a ``<disk>`` a user sets, in the module's terms."""
    driver = disk.find("driver")
    target = disk.find("target")

    def drv(name: str) -> str | None:
        return driver.get(name) if driver is not None else None

    return {
        "bus": target.get("bus") if target is not None else None,
        "device": disk.get("device") or "disk",
        "format": drv("type") or "raw",
        "cache": drv("cache"),
        "io": drv("io"),
        "discard": drv("discard"),
        "readonly": disk.find("readonly") is not None,
        "shareable": disk.find("shareable") is not None,
        "encryption": (disk_encryption(disk) or {}).get("format"),
    }


def disks_of(root: t.Any) -> list[t.Any]:
    return [d for d in root.findall("./devices/disk") if d.get("device") in ("disk", "lun", None)]


def find_disk(root: t.Any, spec: DiskSpec) -> t.Any | None:
    """The disk of ``spec`` in a domain: by serial first, else by source, else by target_dev.

    A serial on two disks (made outside this module) is refused unless
    ``target_dev`` names one of them: taking the first could pull a disk the
    guest uses in place of the volume's.
    """
    disks = disks_of(root)
    if spec.serial:
        matches = [d for d in disks if (d.findtext("serial") or None) == spec.serial]
        if len(matches) > 1 and spec.target_dev:
            matches = [d for d in matches if _target_dev(d) == spec.target_dev] or matches
        if len(matches) > 1:
            raise LibvirtError(
                f"{spec.where}serial: {spec.serial} is the serial of {len(matches)} disks of {spec.domain} "
                f"({', '.join(str(_target_dev(d)) for d in matches)}); give target_dev to say which one is the "
                "volume's, or give one of them another serial")
        if matches:
            return matches[0]
        if spec.state == "present" or not (spec.source or spec.target_dev):
            return None
    if spec.source:
        key = source_key(spec.source)
        for d in disks:
            if source_key(disk_source(d)) == key:
                return d
    if spec.state == "absent" and spec.target_dev:
        for d in disks:
            if _target_dev(d) == spec.target_dev:
                return d
    return None


def _target_dev(disk: t.Any) -> str | None:
    tgt = disk.find("target")
    return tgt.get("dev") if tgt is not None else None


def used_targets(*roots: t.Any) -> set[str]:
    return {tgt.get("dev") for root in roots for tgt in root.findall("./devices/disk/target")}


def letters(n: int) -> str:
    """0 -> a, 25 -> z, 26 -> aa (the kernel's sd/vd naming)."""
    out = ""
    n += 1
    while n:
        n, r = divmod(n - 1, 26)
        out = string.ascii_lowercase[r] + out
    return out


def pick_target(bus: str, used: t.Collection[str]) -> str:
    """The first free device name for ``bus``, as Nova's get_next_disk_info does."""
    prefix = BUS_PREFIX[bus]
    for i in range(26 * 27):
        name = prefix + letters(i)
        if name not in used:
            return name
    raise LibvirtError(f"target_dev: no free device name left for bus {bus}")


# --- the domain's state ------------------------------------------------------------------------------
class Domain:
    """A domain with its live and persistent XML, re-read after each change."""

    def __init__(self, conn: t.Any, name: str, where: str = "", *, handle: t.Any = None) -> None:
        self.dom = handle if handle is not None else lv.lookup_domain(conn, name, param=f"{where}domain")
        self.name = self.dom.name()
        self.refresh()

    def refresh(self) -> None:
        self.active = bool(self.dom.isActive())
        self.persistent = bool(self.dom.isPersistent())
        self.live = lv.domain_xml(self.dom, inactive=False) if self.active else None
        self.config = lv.domain_xml(self.dom, inactive=True) if self.persistent else None

    def views(self) -> dict[str, t.Any]:
        """The XML trees that count: live when running or paused, config when persistent."""
        out = {}
        if self.live is not None:
            out["live"] = self.live
        if self.config is not None:
            out["config"] = self.config
        return out

    @property
    def uuid(self) -> str:
        return str(self.dom.UUIDString())

    # Check mode changes nothing in libvirt, so the domain is not read again
    # after a step; these two change the trees read before instead, as the
    # step would have, so that a batch's later entries see what a real run
    # sees (the next free target_dev, a disk detached and attached again).
    def assume_attached(self, disk: t.Any, views: t.Iterable[str]) -> None:
        """Check mode: ``disk`` as if attached to ``views``."""
        for view in views:
            root = self.views().get(view)
            if root is not None:
                devices = root.find("devices")
                if devices is None:
                    devices = lv.etree.SubElement(root, "devices")
                devices.append(lv.etree.fromstring(lv.etree.tostring(disk)))

    def assume_detached(self, *disks: t.Any) -> None:
        """Check mode: ``disks`` (elements of the trees, or None) as if detached."""
        for disk in disks:
            if disk is not None and disk.getparent() is not None:
                disk.getparent().remove(disk)


FLAG = {"live": "VIR_DOMAIN_AFFECT_LIVE", "config": "VIR_DOMAIN_AFFECT_CONFIG"}
VIEW_TITLE = {"live": "live", "config": "persistent config"}


def diff_text(views: t.Mapping[str, str]) -> str:
    """One side of the diff: each view's disk XML under a comment naming the view.

    Plain text, so Ansible shows the XML line by line (a dict would be shown
    as JSON with the XML's newlines escaped).
    """
    text = "".join(f"<!-- {VIEW_TITLE[view]} -->\n{xml}\n" for view, xml in views.items() if xml and view in VIEW_TITLE)
    if views.get("size"):
        text += f"<!-- size: {views['size']} bytes -->\n"
    if views.get("luks"):
        text += f"<!-- {views['luks']} -->\n"
    return text


def _where(info: t.Mapping[str, t.Any]) -> str:
    """A disk's source, for messages."""
    src = info.get("source") or {}
    return str(src.get("path") or src.get("name"))


class LibvirtDisks:
    """Attaches and detaches disks.

    ``_attach``, ``_request_live`` and ``_detach_config`` are the only methods
    that change a domain, and the only place check mode is guarded.
    """

    def __init__(self, module: lv.LibvirtModule) -> None:
        self.module = module
        self._domains: dict[str, Domain] = {}

    def known_domain(self, name: str) -> Domain | None:
        """The domain as this call read (and changed) it, or None when it did not touch it."""
        return next((d for d in self._domains.values() if d.name == name), None)

    def domain(self, spec: DiskSpec) -> Domain:
        if spec.domain not in self._domains:
            self._domains[spec.domain] = Domain(self.module.conn, spec.domain, spec.where)
        return self._domains[spec.domain]

    # present ------------------------------------------------------------------------------
    def state_present(self, spec: DiskSpec) -> dict[str, t.Any]:
        dom = self.domain(spec)
        views = dom.views()
        found = {view: find_disk(root, spec) for view, root in views.items()}
        existing = next((d for d in found.values() if d is not None), None)
        if existing is not None:
            target = self._check_existing(spec, existing)
        else:
            self._check_source_unused(spec, dom)
            target = self._free_target(spec, dom)
        missing = [view for view, d in found.items() if d is None]
        if missing and existing is None and spec.shareable:
            self._check_shareable(spec)
        new = build_disk(spec, target, self._file_format(spec, existing) if missing else None)
        before = {view: (normalise(d) if d is not None else "") for view, d in found.items()}
        after = {view: before[view] or normalise(new) for view in found}
        # An encrypted volume gets its LUKS header (once) before QEMU opens it.
        luks = self._luks_ready(spec) if missing and (spec.source or {}).get("encryption") else None
        if missing and self._attach(dom, spec, new, missing):
            dom.refresh()
            after = {view: normalise(self._attached_in(dom, spec, view, root)) for view, root in dom.views().items()}
        elif missing:
            dom.assume_attached(new, missing)  # check mode
        shown = existing if existing is not None else new
        result: dict[str, t.Any] = {
            "changed": bool(missing), "applied_to": missing, "diff": {"before": before, "after": after},
            "disk": dict(disk_info(shown), domain=dom.name, xml=normalise(shown)),
        }
        if luks is not None:
            result["disk"]["luks"] = luks
            if luks["formatted"]:
                result["diff"]["after"]["luks"] = "a LUKS header written to the blank volume"
        if spec.size is not None:
            self._grow(dom, spec, str(result["disk"]["target_dev"]), result)
        return result

    def _luks_ready(self, spec: DiskSpec) -> dict[str, t.Any]:
        """The volume's LUKS header, written if the volume is blank, and opened with the passphrase.

        The secrets are read from libvirt (the disk's passphrase secret and,
        for a network source, its CHAP or cephx secret), never from the task.
        In check mode the secrets a real run would create first may not exist
        yet: the header is then not read, and the result says so.
        """
        src = spec.source or {}
        encryption = src["encryption"]
        auth = src.get("auth") or {}
        try:
            passphrase = self._secret_value(spec, "passphrase", encryption, "source.encryption")
            credential = self._secret_value(spec, str(src.get("protocol")), auth, "source.auth") if auth else None
        except LibvirtError:
            if not self.module.check_mode:
                raise
            return {"format": "luks", "header": "unknown", "formatted": False,
                    "note": "check mode: the libvirt secrets are not defined yet, the volume was not read"}
        usage = encryption.get("secret_usage") or encryption.get("secret_uuid") or ""
        volume = luks_volume(self.module.module, src, Credentials(passphrase=passphrase, auth=credential),
                             where=spec.where, label=spec.label, secret=usage)
        try:
            return volume.ensure()
        except LuksError as exc:
            raise LibvirtError(exc.msg) from None

    def _grow(self, dom: Domain, spec: DiskSpec, target: str, result: dict[str, t.Any]) -> None:
        """Make the live disk at least ``spec.size`` bytes (Nova's extend_volume: block_resize).

        QEMU re-reads an iSCSI LUN's or a block device's size, and grows an
        RBD image itself (librbd's resize). A shut-off domain reads the size
        when it starts: nothing to tell it.
        """
        if not dom.active or dom.live is None or find_disk(dom.live, spec) is None:
            return
        try:
            capacity = int(dom.dom.blockInfo(target)[0])
        except lv.libvirt.libvirtError as exc:
            if self.module.check_mode:
                return  # a disk check mode would attach
            raise LibvirtError(f"{spec.where}size: reading the size of {spec.label} failed: {lv.describe(exc)}") \
                from None
        size = t.cast(int, spec.size)
        result["size"] = {"before": capacity, "after": max(capacity, size)}
        if capacity > size:
            raise LibvirtError(
                f"{spec.where}size: {spec.label} is already {capacity} bytes, more than {size}; a volume is never "
                "shrunk: give its size or more"
            )
        if capacity == size:
            return
        self._block_resize(dom, spec, target, size)
        result["changed"] = True
        result["diff"]["before"]["size"] = str(capacity)
        result["diff"]["after"]["size"] = str(size)

    @skip_if_check_mode
    def _block_resize(self, dom: Domain, spec: DiskSpec, target: str, size: int) -> None:
        try:
            dom.dom.blockResize(target, size, lv.libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
        except lv.libvirt.libvirtError as exc:
            msg = lv.describe(exc)
            hint = ""
            if "grow" in msg.lower() or "cannot" in msg.lower():
                hint = ("; the volume behind the disk is smaller: grow it on the storage first (QEMU grows RBD "
                        "images itself, but not iSCSI LUNs or host block devices; in host mode rescan them first)")
            raise LibvirtError(f"{spec.where}size: growing {spec.label} to {size} bytes failed: {msg}{hint}") from None

    def _check_shareable(self, spec: DiskSpec) -> None:
        """A shareable RBD disk: the image must allow several writers (no exclusive-lock).

        Asked with ``rbd info`` on the host, with the cephx key the disk's
        libvirt secret holds (read from libvirt, never from the task).
        """
        src = spec.source or {}
        if src.get("type") != "network" or src.get("protocol") != "rbd":
            return
        auth = src.get("auth") or {}
        key = self._ceph_key(spec, auth) if auth else None
        try:
            # Ceph reads an IPv6 monitor only in brackets (2001:db8::21:6789 is another address).
            info = Rbd(self.module.module).info(image=str(src["name"]), monitors=monitor_addresses(src.get("hosts")),
                                                user=auth.get("username"), key=key, param=f"{spec.where}source.name")
        except RbdError as exc:
            raise LibvirtError(exc.msg) from None
        blockers = sharing_blockers(info)
        if blockers:
            raise LibvirtError(
                f"{spec.where}shareable: RBD image {src['name']} has the {', '.join(blockers)} feature, so it cannot "
                "be written by several domains at once (multiattach); turn it off on the image first (rbd feature "
                f"disable {src['name']} object-map fast-diff exclusive-lock), or attach it to one domain only"
            )

    def _ceph_key(self, spec: DiskSpec, auth: t.Mapping[str, t.Any]) -> str:
        """The cephx key of the disk's libvirt secret (libvirt keeps the key's bytes)."""
        return base64.b64encode(self._secret_value(spec, "rbd", auth, "source.auth")).decode()

    def _secret_value(self, spec: DiskSpec, kind: str, ref: t.Mapping[str, t.Any], param: str) -> bytes:
        """The value of a libvirt secret a disk names (``kind``: iscsi, rbd or passphrase), as libvirt keeps it."""
        conn = self.module.conn
        try:
            if ref.get("secret_uuid"):
                secret = conn.secretLookupByUUIDString(ref["secret_uuid"])
            else:
                secret = conn.secretLookupByUsage(getattr(lv.libvirt, SECRET_USAGE_TYPE[kind]), ref["secret_usage"])
            return bytes(secret.value())
        except lv.libvirt.libvirtError as exc:
            raise LibvirtError(
                f"{spec.where}{param}: the libvirt secret {ref.get('secret_usage') or ref.get('secret_uuid')} "
                f"cannot be read ({lv.describe(exc)}); create it with openvolume.compute.libvirt_secret first"
            ) from None

    def _file_format(self, spec: DiskSpec, existing: t.Any | None) -> str | None:
        """The format a file source is attached with: the user's, else the file's own."""
        src = spec.source or {}
        if src.get("type") != "file":
            return None
        if src.get("format"):
            return str(src["format"])
        real = image_format(str(src["path"]), where=spec.where)
        attached = settings(existing)["format"] if existing is not None else None
        if attached is not None and attached != real:
            self.module.module.warn(
                f"{spec.where}{spec.label}: {src['path']} is a {real} image but is attached as {attached}; the "
                "guest's writes can corrupt it: detach the disk and attach it again"
            )
        return real

    def _check_existing(self, spec: DiskSpec, existing: t.Any) -> str:
        """The target of the disk already there, if it is the one asked for; else a clear error."""
        info = disk_info(existing)
        if spec.source and source_key(info["source"]) != source_key(spec.source):
            if not same_rbd_image(info["source"], spec.source):
                raise LibvirtError(
                    f"{spec.where}serial: {spec.label} is already attached as {info['target_dev']} with another "
                    f"source ({_where(info)}); detach it first"
                )
            self.module.module.warn(
                f"{spec.where}{spec.label}: RBD image {spec.source['name']} is attached through the monitors "
                f"{', '.join(monitor_addresses(info['source'].get('hosts')))}, asked for through "
                f"{', '.join(monitor_addresses(spec.source.get('hosts')))}: the same image, kept as "
                "attached (QEMU keeps its session with the cluster); a view added now gets the monitors asked for"
            )
        if spec.target_dev and info["target_dev"] != spec.target_dev:
            raise LibvirtError(
                f"{spec.where}target_dev: {spec.label} is already attached as {info['target_dev']}, not "
                f"{spec.target_dev}; detach it first to move it"
            )
        # A hot-plugged disk cannot change its bus, cache or read-only flag in
        # place: saying "ok" would be a false success.
        have = settings(existing)
        asked_for = {k: getattr(spec, k) for k in have if hasattr(spec, k)}
        asked_for["format"] = (spec.source or {}).get("format")
        # A disk attached in plaintext is not the encrypted one, nor the other way round.
        asked_for["encryption"] = ((spec.source or {}).get("encryption") or {}).get("format") or (
            "luks" if (spec.source or {}).get("encryption") else "none")
        have["encryption"] = have["encryption"] or "none"
        # None: not asked for (io and format then have a default that never
        # makes a disk attached earlier differ).
        differ = [k for k, v in have.items() if asked_for.get(k) is not None and asked_for[k] != v]
        if differ:
            asked = ", ".join(f"{k}={asked_for[k]!r} (attached: {have[k]!r})" for k in differ)
            param = PARAM.get(differ[0], differ[0])
            raise LibvirtError(
                f"{spec.where}{param}: {spec.label} is attached as {info['target_dev']} with other settings: "
                f"{asked}; detach it first to attach it with these settings, or ask for the attached ones"
            )
        return str(info["target_dev"])

    def _check_source_unused(self, spec: DiskSpec, dom: Domain) -> None:
        """A volume is attached once per domain: its source must not be there under another serial.

        A block device counts as the same under any of its names (a by-path
        link, /dev/sdc, /dev/mapper/mpatha or the WWID-named map) and as a
        multipath map and one of its paths. The guest sees only the first 20
        bytes of a virtio disk's serial (/dev/disk/by-id/virtio-...): two
        disks whose serials share them would look like one volume to it.
        """
        key = source_key(spec.source or {})
        devices = block_devices(spec.source or {})
        short = spec.serial.encode()[:VIRTIO_SERIAL_BYTES] if spec.bus == "virtio" and spec.serial else None
        for root in dom.views().values():
            for d in disks_of(root):
                info = disk_info(d)
                if (source_key(info["source"]) == key or devices & block_devices(info["source"])
                        or same_rbd_image(info["source"], spec.source or {})):
                    raise LibvirtError(
                        f"{spec.where}source: {_where(info)} is already attached to {dom.name} as "
                        f"{info['target_dev']} (serial {info['serial']}); a volume is attached once per domain: "
                        "give that serial, or detach it first"
                    )
                if (short and info.get("bus") == "virtio" and info.get("serial")
                        and str(info["serial"]).encode()[:VIRTIO_SERIAL_BYTES] == short):
                    raise LibvirtError(
                        f"{spec.where}serial: {spec.serial!r} and the serial {info['serial']!r} of {dom.name}'s disk "
                        f"{info['target_dev']} begin with the same {VIRTIO_SERIAL_BYTES} bytes, all a virtio guest "
                        "sees of a serial (/dev/disk/by-id/virtio-...): it could not tell the two volumes apart; "
                        "use volume ids that differ within their first 20 characters, or bus scsi"
                    )

    def _free_target(self, spec: DiskSpec, dom: Domain) -> str:
        """The requested target_dev if free, else the next free name of the bus."""
        views = dom.views()
        used = used_targets(*views.values())
        target = spec.target_dev or pick_target(spec.bus, used)
        if target in used:
            other = next(disk_info(d) for root in views.values() for d in disks_of(root) if _target_dev(d) == target)
            raise LibvirtError(
                f"{spec.where}target_dev: {target} of {dom.name} is taken by another disk (serial "
                f"{other['serial']}, source {_where(other)}); choose another target_dev or leave it out"
            )
        return target

    def _attached_in(self, dom: Domain, spec: DiskSpec, view: str, root: t.Any) -> t.Any:
        disk = find_disk(root, spec)
        if disk is None:
            raise LibvirtError(
                f"{spec.where}libvirt accepted {spec.label} but the {view} XML of {dom.name} does not show it; "
                "check the domain with virsh dumpxml"
            )
        return disk

    @skip_if_check_mode
    def _attach(self, dom: Domain, spec: DiskSpec, disk: t.Any, views: list[str]) -> bool:
        """attachDeviceFlags for the views the disk is missing from; True once done (None in check mode)."""
        flags = 0
        for view in views:
            flags |= getattr(lv.libvirt, FLAG[view])
        src = spec.source or {}
        if "live" in views and src.get("protocol") == "rbd" and src.get("hosts"):
            tried = unreachable_monitors(src["hosts"])
            if tried:
                raise LibvirtError(
                    f"{spec.where}source.hosts: no Ceph monitor accepts connections at {', '.join(tried)}; "
                    f"{spec.label} was not attached: check that the cluster is up and the monitor addresses"
                )
        try:
            dom.dom.attachDeviceFlags(lv.to_text(disk), flags)
        except lv.libvirt.libvirtError as exc:
            raise LibvirtError(self._explain_attach(spec, lv.describe(exc))) from None
        return True

    @staticmethod
    def _explain_attach(spec: DiskSpec, msg: str) -> str:
        src = spec.source or {}
        if src.get("protocol") == "rbd":
            return f"{spec.where}attaching {spec.label} failed: {msg}{LibvirtDisks._rbd_hint(src, msg)}"
        hint = ""
        if ("Invalid password" in msg or "unlock" in msg) and src.get("encryption"):
            enc = src["encryption"]
            hint = (f"; source.encryption: the passphrase in libvirt secret "
                    f"'{enc.get('secret_usage') or enc.get('secret_uuid')}' does not open the volume's LUKS header")
        elif "secret" in msg.lower() and src.get("auth"):
            usage = src["auth"].get("secret_usage") or src["auth"].get("secret_uuid")
            hint = (f"; source.auth: no usable libvirt secret '{usage}' — create it with "
                    "openvolume.compute.libvirt_secret first")
        elif "Authentication failure" in msg:
            hint = ("; source.auth: the target refused the CHAP login: check the username and the value of the "
                    "libvirt secret")
        elif "Failed to connect" in msg or "Connection refused" in msg:
            hint = "; source.hosts: the target did not answer there: check the portal and that the target is up"
        elif ("No such file" in msg or "does not exist" in msg) and src.get("path"):
            hint = f"; source.path: {src.get('path')} does not exist on the host"
        elif "cannot be hotplugged" in msg or "cannot be hot plugged" in msg:
            hint = (f"; bus: libvirt cannot hot-plug a {spec.bus} disk into a running domain: use bus virtio or scsi, "
                    "or attach while the domain is shut off")
        elif 'Failed to get "write" lock' in msg:
            hint = "; the image is in use by another disk or domain (shareable: true for multiattach volumes)"
        return f"{spec.where}attaching {spec.label} failed: {msg}{hint}"

    @staticmethod
    def _rbd_hint(src: t.Mapping[str, t.Any], msg: str) -> str:
        """What to check when QEMU's librbd could not open an RBD image (its messages, Ceph 16)."""
        auth = src.get("auth") or {}
        user = f"client.{auth.get('username')}"
        pool = str(src.get("name")).split("/", 1)[0]
        if "secret" in msg.lower() and auth:
            usage = auth.get("secret_usage") or auth.get("secret_uuid")
            return (f"; source.auth: no usable libvirt secret '{usage}': create it with "
                    "openvolume.compute.libvirt_secret (usage_type: ceph) first")
        if "error connecting: Permission denied" in msg:
            if not auth:
                return "; source.auth: the cluster requires cephx: give the user and its libvirt secret"
            return (f"; source.auth: Ceph refused {user}: check source.auth.username and that the libvirt secret "
                    "holds that user's key (libvirt_secret, usage_type: ceph)")
        if "error connecting: Operation not supported" in msg:
            # The monitor and the client share no auth method.
            if not auth:
                return ("; source.auth: the cluster requires cephx and the disk has none: give the user and its "
                        "libvirt secret (in a catalogue: auth_username, auth_key, auth_enabled true or left out)")
            return (f"; source.auth: the cluster takes no cephx from clients (auth_client_required): leave out "
                    f"the user {user}")
        if "error connecting: Invalid argument" in msg:
            return (f"; source.auth: the libvirt secret for {user} does not hold a cephx key: set it with "
                    "libvirt_secret, usage_type: ceph, value: the key as 'ceph auth get-key' prints it")
        if "error connecting" in msg:
            return "; source.hosts: the Ceph monitors did not answer: check the addresses and that the cluster is up"
        if "error opening pool" in msg:
            return f"; source.name: the cluster has no pool '{pool}' (or {user} may not use it)"
        if "No such file or directory" in msg:
            return f"; source.name: pool {pool} has no image '{str(src.get('name')).split('/', 1)[-1]}' (rbd ls {pool})"
        if "Operation not permitted" in msg or "Permission denied" in msg:
            return f"; source.auth: {user} may not open images in pool {pool}: check its caps (profile rbd pool={pool})"
        return ""

    # absent -------------------------------------------------------------------------------
    def state_absent(self, spec: DiskSpec, timeout: float) -> dict[str, t.Any]:
        """Detach one disk (see ``absent_all``)."""
        return self.absent_all([spec], timeout)[0]

    def absent_all(self, specs: t.Sequence[DiskSpec], timeout: float,
                   missing_domain: str = "fail") -> list[dict[str, t.Any]]:
        """Detach several disks: every removal is asked for first, then all are waited for together.

        A guest takes its time to release a disk (seconds, when it runs an
        OS); one after the other, twenty disks would cost twenty such waits.
        The wait is driven by libvirt's DEVICE_REMOVED events (see
        ``_wait_released``). Each outcome's ``disk.waited`` is how long that
        disk took to leave the live domain and ``disk.released_by`` what told.
        A disk that does not leave within ``timeout``, or that the guest
        refuses to release (DEVICE_REMOVAL_FAILED), fails the call after the
        others' persistent configs were updated; it stays attached, live and
        persistent.
        """
        outcomes: list[dict[str, t.Any]] = []
        pending: list[_LiveDetach] = []
        error: LibvirtError | None = None
        # Registered before the first removal is asked for: an event libvirt
        # sends before that is never delivered.
        events = self._watch_removals()
        try:
            for spec in specs:
                try:
                    outcome, job = self._begin_absent(spec, missing_domain)
                except LibvirtError as exc:
                    # Finish what was asked for already before failing: a disk
                    # the guest released must leave the persistent config too.
                    error = exc
                    break
                outcomes.append(outcome)
                if job is not None:
                    pending.append(job)
            stuck, refused = self._wait_released([j for j in pending if j.live is not None], timeout, events)
        finally:
            if events is not None:
                events.close()
        for job in pending:
            if job not in stuck and job not in refused and job.config is not None:
                self._detach_config(job.dom, job.spec, job.config)
        touched = {id(j.dom): j.dom for j in pending if j.live is not None or j.config is not None}.values()
        if self.module.check_mode:
            # What the real run leaves behind, for the entries after these in
            # a batch (a disk detached and attached again, a freed target_dev).
            for job in pending:
                job.dom.assume_detached(job.live, job.config)
        else:
            for dom in touched:
                dom.refresh()
        if error is not None:
            raise error
        if refused or stuck:
            raise self._not_released(refused, stuck, timeout)
        return outcomes

    @staticmethod
    def _not_released(refused: list[_LiveDetach], stuck: list[_LiveDetach], timeout: float) -> LibvirtError:
        """The error for disks still attached after the wait: refused by the guest first, then timed out."""
        first = (refused or stuck)[0]
        others = "".join(f"; also {j.spec.label} ({j.target}, {'refused' if j in refused else 'not released'})"
                         for j in [*refused, *stuck] if j is not first)
        if refused:
            msg = (f"{first.spec.where}detaching {first.spec.label} ({first.target}) failed: the guest of "
                   f"{first.dom.name} refused to release the disk (libvirt's DEVICE_REMOVAL_FAILED event){others}; "
                   "the disk is still attached (live and persistent). The guest may still be using it (a mounted "
                   "filesystem, a busy device): release it inside the guest and retry, or shut the domain down")
        else:
            msg = (f"{first.spec.where}detach_timeout: the guest of {first.dom.name} did not release "
                   f"{first.spec.label} ({first.target}) within {timeout:g}s{others}; the disk is still attached "
                   "(live and persistent). A guest without an OS or without hot-unplug support never releases a "
                   "virtio disk: shut the domain down, or retry with a longer detach_timeout")
        return LibvirtError(msg, still_attached=True, target_dev=first.target, disk=first.shown,
                            stuck=[j.shown for j in [*refused, *stuck]])

    def _begin_absent(self, spec: DiskSpec, missing_domain: str) -> tuple[dict[str, t.Any], _LiveDetach | None]:
        """The outcome of detaching ``spec`` (before/after) and, if it is attached, its removal asked for."""
        try:
            dom = self.domain(spec)
        except lv.NoDomain:
            if missing_domain != "skip":
                raise
            self.module.module.warn(
                f"{spec.where}domain {spec.domain} does not exist on this host (destroyed and undefined); "
                f"its disk {spec.serial or spec.target_dev or ''} went with it")
            gone = {"domain": spec.domain, "serial": spec.serial, "target_dev": spec.target_dev,
                    "domain_missing": True, "waited": 0.0, "released_by": None}
            return {"changed": False, "applied_to": [], "diff": {"before": {}, "after": {}}, "disk": gone}, None
        found = {view: find_disk(root, spec) for view, root in dom.views().items()}
        present = [view for view, d in found.items() if d is not None]
        existing = next((d for d in found.values() if d is not None), None)
        disk = (dict(disk_info(existing), domain=dom.name, xml=normalise(existing)) if existing is not None
                else {"domain": dom.name, "serial": spec.serial, "target_dev": spec.target_dev})
        disk["waited"] = 0.0
        disk["released_by"] = None
        before = {view: (normalise(d) if d is not None else "") for view, d in found.items()}
        outcome = {"changed": bool(present), "applied_to": present, "disk": disk,
                   "diff": {"before": before, "after": {view: "" for view in found}}}
        # Live first: the persistent config loses the disk only once the
        # guest has released it, so a disk that stays is still attached everywhere.
        job = _LiveDetach(dom, spec, found.get("live"), found.get("config"), disk)
        if job.live is not None:
            self._request_live(job, first=True)
        return outcome, job

    def _watch_removals(self) -> lv.DeviceRemovals | None:
        """The device-removal events of the connection, registered now (None: not available, or check mode).

        The domains read before the registration are read once more: a disk
        that left in between would send its DEVICE_REMOVED to nobody, so it
        must not be waited for.
        """
        if self.module.check_mode:
            return None
        events = self.module.device_removals()
        if events is not None:
            for dom in self._domains.values():
                dom.refresh()
        return events

    @skip_if_check_mode
    def _detach_config(self, dom: Domain, spec: DiskSpec, disk: t.Any) -> None:
        try:
            dom.dom.detachDeviceFlags(lv.to_text(disk), lv.libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        except lv.libvirt.libvirtError as exc:
            raise LibvirtError(f"{spec.where}detaching {spec.label} from the persistent config failed: "
                               f"{lv.describe(exc)}") from None

    @skip_if_check_mode
    def _request_live(self, job: _LiveDetach, *, first: bool = False) -> None:
        """Ask the guest to release the disk (again); mark the job done if it is gone already.

        By the device's alias when it has one: libvirt's detachDeviceAlias
        only sends the request and returns, while detachDeviceFlags waits up
        to 5 seconds for the guest, per disk, before it returns (the
        removal then goes on in the background either way).
        """
        if first:
            job.started = time.monotonic()
        try:
            if job.alias and job.by_alias:
                try:
                    job.dom.dom.detachDeviceAlias(job.alias, lv.libvirt.VIR_DOMAIN_AFFECT_LIVE)
                    return
                except lv.libvirt.libvirtError as exc:
                    if lv.error_code(exc) != lv.libvirt.VIR_ERR_NO_SUPPORT:
                        raise
                    job.by_alias = False  # a driver without it: the device's XML, as before
            job.dom.dom.detachDeviceFlags(job.xml, lv.libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except lv.libvirt.libvirtError as exc:
            # "already in the process of unplug" is the guest still thinking.
            if "unplug" in lv.describe(exc):
                return
            live = _live_or_none(job.dom.dom)
            if live is None:
                job.release("domain_stopped")
                return
            if job.gone(live):
                job.release("live_xml")
                return
            raise LibvirtError(f"{job.spec.where}detaching {job.spec.label} failed: {lv.describe(exc)}") from None

    def _wait_released(self, jobs: list[_LiveDetach], timeout: float,
                       events: lv.DeviceRemovals | None) -> tuple[list[_LiveDetach], list[_LiveDetach]]:
        """Wait for all ``jobs`` together; return those still attached at the end: (timed out, refused).

        detachDeviceFlags/detachDeviceAlias only ask the guest; the device
        leaves when the guest acks, and libvirt then sends DEVICE_REMOVED
        naming the device's alias, or DEVICE_REMOVAL_FAILED when the guest
        said no. The wait sleeps until such an event arrives. A disk without
        an alias, or a connection without events, falls back to reading the
        live XML every 0.1 s. Requests are repeated now and then, as Nova
        does, within one bound on the total time; a last read of the live
        XML before giving up keeps a lost event from failing a disk that left.
        """
        if self.module.check_mode or not jobs:
            return [], []
        interval = min(5.0, max(timeout / 3, 0.5))
        # Every disk gets at least ``timeout`` from its own request.
        deadline = max(j.started for j in jobs) + timeout
        watched = [j for j in jobs if events is not None and j.alias]
        waiting = [j for j in jobs if not j.done]
        refused: list[_LiveDetach] = []

        def settle() -> None:
            """Take what the events said, then read the live XML for the disks no event covers."""
            if events is not None:
                for job in [j for j in waiting if j in watched]:
                    seen = events.outcome(*job.key)
                    if seen is None:
                        continue
                    waiting.remove(job)
                    if seen[0] == lv.REMOVED:
                        job.release("event", at=seen[1])
                    else:
                        job.shown["waited"] = round(seen[1] - job.started, 2)
                        refused.append(job)
            self._read_live([j for j in waiting if j not in watched], waiting)

        next_request = time.monotonic() + interval
        settle()
        while waiting:
            now = time.monotonic()
            if now >= deadline:
                break
            if now >= next_request:
                settle()  # no request for a disk whose event came in just now
                for job in list(waiting):
                    # A repeated request only nudges the guest: its failure
                    # (the domain busy, say) leaves the outcome to the wait.
                    with contextlib.suppress(LibvirtError):
                        self._request_live(job)
                waiting[:] = [j for j in waiting if not j.done]
                next_request = now + interval
                if not waiting:
                    break
            step = min(next_request, deadline) - now
            if any(j not in watched for j in waiting):
                step = min(step, 0.1)
            if events is not None and watched:
                events.wait([j.key for j in waiting if j in watched], step)
            else:
                time.sleep(step)
            settle()
        self._read_live(list(waiting), waiting)
        for job in waiting:
            job.shown["waited"] = round(time.monotonic() - job.started, 2)
        return waiting, refused

    @staticmethod
    def _read_live(jobs: list[_LiveDetach], waiting: list[_LiveDetach]) -> None:
        """Release the ``jobs`` whose disk the live XML no longer shows (one read per domain)."""
        lives: dict[str, t.Any] = {}
        for job in jobs:
            if job.dom.name not in lives:
                lives[job.dom.name] = _live_or_none(job.dom.dom)
            if lives[job.dom.name] is None:
                # The domain stopped (or went away) during the wait: it has
                # no live disks left; the persistent config was already done.
                job.release("domain_stopped")
                waiting.remove(job)
            elif job.gone(lives[job.dom.name]):
                job.release("live_xml")
                waiting.remove(job)


def _live_or_none(dom: t.Any) -> t.Any | None:
    """The domain's live XML, or None once it no longer runs (stopped, destroyed, undefined)."""
    try:
        return lv.domain_xml(dom, inactive=False) if dom.isActive() else None
    except lv.libvirt.libvirtError:
        try:
            active = bool(dom.isActive())
        except lv.libvirt.libvirtError:
            return None
        if active:
            raise
        return None


@dataclass(eq=False)
class _LiveDetach:
    """One disk being detached: where it is, and what the result shows of it."""

    dom: Domain
    spec: DiskSpec
    live: t.Any
    config: t.Any
    shown: dict[str, t.Any]
    started: float = 0.0
    done: bool = False
    # Whether the domain's driver takes detachDeviceAlias (see _request_live).
    by_alias: bool = True

    @property
    def xml(self) -> str:
        return lv.to_text(self.live)

    @property
    def target(self) -> str:
        return str(disk_info(self.live if self.live is not None else self.config)["target_dev"])

    @property
    def alias(self) -> str | None:
        """The live device's alias (libvirt gives every live device one), what the removal events name."""
        alias = self.live.find("alias") if self.live is not None else None
        return alias.get("name") if alias is not None else None

    @property
    def key(self) -> tuple[str, str]:
        """How the events name this disk: (domain UUID, alias)."""
        return (self.dom.uuid, str(self.alias))

    def release(self, by: str, at: float | None = None) -> None:
        """The disk left the live domain (``by``: what told, at the monotonic time ``at``, now if None)."""
        self.done = True
        self.shown["waited"] = round((time.monotonic() if at is None else at) - self.started, 2)
        self.shown["released_by"] = by

    def gone(self, live_root: t.Any) -> bool:
        """Whether the live domain ``live_root`` no longer has this disk's target."""
        target = self.target
        return all(d.find("target") is None or d.find("target").get("dev") != target for d in disks_of(live_root))


def parse_size(value: t.Any, *, param: str = "size") -> int | None:
    """Bytes from ``value``: an integer, or a string with a unit (``128M``, ``1G``, binary units)."""
    if value is None or value == "":
        return None
    from ansible.module_utils.common.text.formatters import human_to_bytes

    try:
        size = int(value) if isinstance(value, int) or str(value).isdigit() else int(human_to_bytes(str(value)))
    except (TypeError, ValueError) as exc:
        raise LibvirtError(f"{param}: {value!r} is not a size; give bytes, or a number with a unit like 128M or "
                           f"2G ({exc})") from None
    if size <= 0:
        raise LibvirtError(f"{param}: {value!r} is not a size: it must be more than 0 bytes")
    return size


def disk_spec_options() -> dict[str, t.Any]:
    """Per-disk options, shared by the single form and the ``disks`` list."""
    return {
        "source": {
            "type": "dict",
            "options": {
                "type": {"type": "str", "choices": ["block", "file", "network"], "required": True},
                "path": {"type": "str"},
                "format": {"type": "str", "choices": list(FORMATS)},
                "protocol": {"type": "str", "choices": ["iscsi", "rbd"]},
                "name": {"type": "str"},
                "hosts": {"type": "list", "elements": "dict", "options": {
                    "name": {"type": "str", "required": True}, "port": {"type": "int"}}},
                "auth": {"type": "dict", "options": {
                    "username": {"type": "str", "required": True},
                    # References to a libvirt secret, not secrets themselves.
                    "secret_usage": {"type": "str", "no_log": False},
                    "secret_uuid": {"type": "str", "no_log": False}}},
                "encryption": {"type": "dict", "options": {
                    "format": {"type": "str", "choices": list(ENCRYPTION_FORMATS), "default": "luks"},
                    "secret_usage": {"type": "str", "no_log": False},
                    "secret_uuid": {"type": "str", "no_log": False}}},
            },
        },
        "target_dev": {"type": "str"},
        "bus": {"type": "str", "choices": ["virtio", "scsi", "sata"], "default": "virtio"},
        "serial": {"type": "str"},
        "cache": {"type": "str", "choices": ["none", "writethrough", "writeback", "directsync", "unsafe"],
                  "default": "none"},
        "io": {"type": "str", "choices": ["native", "threads", "io_uring"]},
        "discard": {"type": "str", "choices": ["unmap", "ignore"]},
        "readonly": {"type": "bool", "default": False},
        "shareable": {"type": "bool", "default": False},
        "device": {"type": "str", "choices": ["disk", "lun"], "default": "disk"},
        "size": {"type": "raw"},
    }


def argument_spec() -> dict[str, t.Any]:
    per_disk = disk_spec_options()
    list_entry = dict(per_disk, domain={"type": "str", "required": True},
                      state={"type": "str", "choices": ["present", "absent"], "default": "present"})
    return dict(
        domain={"type": "str"},
        state={"type": "str", "choices": ["present", "absent"], "default": "present"},
        detach_timeout={"type": "float", "default": 30.0},
        missing_domain={"type": "str", "choices": ["fail", "skip"], "default": "fail"},
        disks={"type": "list", "elements": "dict", "options": list_entry},
        secrets=secrets_option(),
        **per_disk,
    )


SINGLE_ONLY = ("domain", "source", "target_dev", "serial")


def run(module: lv.LibvirtModule) -> None:
    """Entry point of the libvirt_disk module."""
    params = module.params

    def handle() -> dict[str, t.Any]:
        batch = params.get("disks") is not None
        if batch and any(params.get(k) for k in SINGLE_ONLY):
            raise LibvirtError("disks: give either disks or the single-disk options (domain, source, ...), not both")
        if batch and not params["disks"]:
            raise LibvirtError("disks: give at least one disk, or use domain and source for one")
        if params["detach_timeout"] <= 0:
            raise LibvirtError("detach_timeout: must be a positive number of seconds")
        specs = ([DiskSpec.from_params(d, where=f"disks[{i}].") for i, d in enumerate(params["disks"])]
                 if batch else [DiskSpec.from_params(params)])
        secrets = secret_specs(params.get("secrets"))
        outcomes, secret_outcomes = apply_with_secrets(
            LibvirtDisks(module), specs, secrets, params["detach_timeout"], params["missing_domain"])
        if batch:
            result: dict[str, t.Any] = {
                "changed": any(o["changed"] for o in outcomes),
                "disks": [disk_result(o, s) for o, s in zip(outcomes, specs, strict=True)],
                "diff": [shown_diff(o["diff"], s) for o, s in zip(outcomes, specs, strict=True) if o["changed"]],
            }
        else:
            o = outcomes[0]
            result = {"changed": o["changed"], "disk": o["disk"], "diff": [shown_diff(o["diff"], specs[0])]}
            if "size" in o:
                result["size"] = o["size"]
        if params.get("secrets") is not None:
            result["changed"] = result["changed"] or any(o["changed"] for o in secret_outcomes)
            result["secrets"] = [secret_result(o) for o in secret_outcomes]
            result["diff"] += [dict(o["diff"], before_header=f"secret {s.usage}", after_header=f"secret {s.usage}")
                               for o, s in zip(secret_outcomes, secrets, strict=True) if o["changed"]]
        if not batch and len(result["diff"]) == 1:
            result["diff"] = result["diff"][0]
        if not module.diff_mode:
            result.pop("diff")
        return result

    module.run(handle, secrets=[s.get("value") for s in params.get("secrets") or [] if s.get("value")])


def disk_result(outcome: t.Mapping[str, t.Any], spec: DiskSpec) -> dict[str, t.Any]:
    """One entry of the ``disks`` result."""
    return dict(outcome["disk"], changed=outcome["changed"], state=spec.state, **_size_of(outcome))


def apply_with_secrets(disks: LibvirtDisks, specs: list[DiskSpec], secrets: list[SecretSpec], timeout: float,
                       missing_domain: str) -> tuple[list[dict[str, t.Any]], list[dict[str, t.Any]]]:
    """The secrets to define, then the disks (``apply_all``), then the secrets to remove.

    Secrets come first because a disk is attached with the secrets it names
    (QEMU gets their values at the hot-plug). When a disk fails, the secrets
    this call defined go again after the disks were rolled back. A secret to
    remove that a disk of any domain on the host still names (live or
    persistent, another tool's disk included) is kept, with ``kept`` saying
    which disk; the disks this call detaches do not count. Removing comes
    last and is not undone: a removal that fails leaves the disks detached,
    and the error says so and carries ``disks``.
    """
    manager = LibvirtSecrets(disks.module)
    define = [s for s in secrets if s.state == "present"]
    remove = [s for s in secrets if s.state != "present"]
    defined = apply_secrets(manager, define)
    try:
        outcomes = apply_all(disks, specs, timeout, missing_domain)
    except OpenVolumeError as exc:
        removed_again = undo_after(exc, undo_created(manager, define, defined))
        if removed_again:
            usages = ", ".join(label.removeprefix("removing the secret ") for label in removed_again)
            exc.msg += f" (the secrets this task had defined were removed again: {usages})"
            exc.args = (exc.msg,)
        raise
    removed: list[dict[str, t.Any]] = []
    if remove:
        users = secret_users(disks)
        try:
            for spec in remove:
                removed.append(remove_unused(manager, spec, users))
        except OpenVolumeError as exc:
            exc.msg += (" (every disk was done: the detached disks stay detached; secrets removed before: "
                        f"{', '.join(o['usage'] for o in removed if o['changed']) or 'none'})")
            exc.args = (exc.msg,)
            exc.details["disks"] = [disk_result(o, s) for o, s in zip(outcomes, specs, strict=True)]
            raise
    by_spec = dict(zip(map(id, define), defined, strict=True)) | dict(zip(map(id, remove), removed, strict=True))
    return outcomes, [by_spec[id(s)] for s in secrets]


def secret_users(disks: LibvirtDisks) -> dict[str, str]:
    """Each secret (usage and uuid) the disks of the host's domains name -> the first disk naming it.

    The domains this call changed are taken as it left them (in check mode:
    as the real run would), the others are read now.
    """
    conn = disks.module.conn
    users: dict[str, str] = {}
    try:
        handles = list(conn.listAllDomains(0))
    except lv.libvirt.libvirtError as exc:
        raise LibvirtError(f"listing the domains failed: {lv.describe(exc)}") from None
    for handle in handles:
        dom = disks.known_domain(handle.name()) or read_domain(conn, handle)
        if dom is None:
            continue
        for root in dom.views().values():
            for disk in disks_of(root):
                source = disk_source(disk)
                for ref in (source.get("auth") or {}, source.get("encryption") or {}):
                    for key in ("secret_usage", "secret_uuid"):
                        if ref.get(key):
                            tgt = disk.find("target")
                            users.setdefault(ref[key], f"disk {tgt.get('dev') if tgt is not None else '?'} "
                                                       f"of domain {dom.name}")
    return users


def read_domain(conn: t.Any, handle: t.Any) -> Domain | None:
    """The domain of ``handle`` read now; None when it was undefined since it was listed (it is gone)."""
    try:
        return Domain(conn, "", handle=handle)
    except lv.libvirt.libvirtError as exc:
        if lv.error_code(exc) == lv.libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise LibvirtError(f"reading domain {handle.name()} failed: {lv.describe(exc)}") from None


def remove_unused(manager: LibvirtSecrets, spec: SecretSpec, users: t.Mapping[str, str]) -> dict[str, t.Any]:
    """Remove the secret of ``spec`` unless a disk in ``users`` names it (then ``kept`` says which)."""
    secret = manager.lookup(spec)
    if secret is not None:
        user = users.get(spec.usage) or users.get(secret.UUIDString())
        if user:
            return {"changed": False, "uuid": secret.UUIDString(), "usage_type": spec.usage_type,
                    "usage": spec.usage, "kept": f"secret {spec.usage} stays: {user} names it",
                    "diff": {"before": {}, "after": {}}}
    return t.cast(dict[str, t.Any], manager.state_absent(spec))


def _size_of(outcome: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    return {"size": outcome["size"]} if "size" in outcome else {}


def shown_diff(diff: t.Mapping[str, t.Mapping[str, str]], spec: DiskSpec) -> dict[str, str]:
    """The diff of one disk as Ansible shows it."""
    return {"before": diff_text(diff["before"]), "after": diff_text(diff["after"]),
            "before_header": spec.label, "after_header": spec.label}


def apply_all(disks: LibvirtDisks, specs: list[DiskSpec], timeout: float,
              missing_domain: str = "fail") -> list[dict[str, t.Any]]:
    """Apply every spec in order; on a failure detach again what this call attached.

    With ``missing_domain='skip'`` a detach from a domain that does not exist
    is no change and a warning: the disk went with the domain.
    """
    # A disk to attach is one item of the batch; a run of detaches is one
    # item too: asked for at once and waited for together.
    items: list[list[DiskSpec]] = []
    for spec in specs:
        if spec.state != "present" and items and items[-1][0].state != "present":
            items[-1].append(spec)
        else:
            items.append([spec])

    def apply(item: list[DiskSpec]) -> list[dict[str, t.Any]]:
        if item[0].state == "present":
            return [disks.state_present(item[0])]
        return disks.absent_all(item, timeout, missing_domain)

    def undo(item: list[DiskSpec], outcomes: list[dict[str, t.Any]]) -> UndoSteps:
        # Only an attach is taken back: a detached disk stays detached.
        spec, outcome = item[0], outcomes[0]
        if spec.state != "present" or not outcome["changed"] or disks.module.check_mode:
            return []
        again = DiskSpec(domain=spec.domain, state="absent", serial=spec.serial, source=spec.source,
                         target_dev=outcome["disk"]["target_dev"])
        return [(again.label, functools.partial(disks.state_absent, again, timeout))]

    def report(error: OpenVolumeError, steps: UndoSteps) -> None:
        # A batch's error lists the disks detached again, and those that
        # could not be, by name.
        undone, stuck = [], []
        for label, step in steps:
            try:
                step()
                undone.append(label)
            except LibvirtError:
                stuck.append(label)
        if len(specs) > 1 and (undone or stuck):
            note = f" (rolled back: {', '.join(undone) or 'nothing'}"
            note += f"; could not detach again: {', '.join(stuck)})" if stuck else ")"
            error.msg += note
            error.args = (error.msg,)

    return [outcome for outcomes in apply_batch(items, apply, undo, report=report) for outcome in outcomes]


def domain_inventory(conn: t.Any, names: t.Sequence[str] | None = None) -> tuple[list[dict[str, t.Any]], list[str]]:
    """The domains of a host (all, or ``names``) with their disks, live and persistent.

    Each disk is listed once with the views it is in (``live``, ``config``),
    so a disk missing from one side (drift) shows; a block source carries the
    kernel device under it (``block_device``). Returns (domains, names asked
    for that do not exist).
    """
    from ansible_collections.openvolume.compute.plugins.module_utils._scsi_devices import resolve_block

    if names is None:
        handles = list(conn.listAllDomains(0))
        missing: list[str] = []
    else:
        handles, missing = [], []
        for name in names:
            try:
                handles.append(lv.lookup_domain(conn, name))
            except LibvirtError:
                missing.append(name)
    out = []
    for handle in handles:
        dom = read_domain(conn, handle)
        if dom is None:
            continue
        disks: dict[tuple[str, str], dict[str, t.Any]] = {}
        for view, root in dom.views().items():
            for d in disks_of(root):
                info = disk_info(d)
                key = ("serial", info["serial"]) if info["serial"] else ("target", str(info["target_dev"]))
                entry = disks.setdefault(key, dict(info, views=[]))
                entry["views"].append(view)
        for entry in disks.values():
            src = entry["source"]
            entry["block_device"] = resolve_block(src["path"]) if src.get("type") == "block" and src.get("path") \
                else None
        state = "shut off" if not dom.active else (
            "paused" if handle.state()[0] == lv.libvirt.VIR_DOMAIN_PAUSED else "running")
        out.append({"name": dom.name, "uuid": handle.UUIDString(), "state": state, "active": dom.active,
                    "persistent": dom.persistent, "disks": list(disks.values())})
    return sorted(out, key=lambda d: d["name"]), missing


def info_argument_spec() -> dict[str, t.Any]:
    return {"domains": {"type": "list", "elements": "str", "required": True}}


def run_info(module: lv.LibvirtModule) -> None:
    """Entry point of the libvirt_disk_info module: read-only."""

    def handle() -> dict[str, t.Any]:
        out = []
        for i, name in enumerate(module.params["domains"]):
            dom = Domain(module.conn, name, where=f"domains[{i}].")
            root = dom.live if dom.live is not None else dom.config
            state = "shut off" if not dom.active else (
                "paused" if dom.dom.state()[0] == lv.libvirt.VIR_DOMAIN_PAUSED else "running")
            out.append({"name": dom.name, "state": state, "persistent": dom.persistent,
                        "disks": [disk_info(d) for d in disks_of(root)] if root is not None else []})
        return {"changed": False, "domains": out}

    module.run(handle)
