"""Disk XML building, identity, normalisation and device-name picking."""

from __future__ import annotations

import re
import shutil
import socket
import struct
import subprocess
import typing as t
from pathlib import Path
from unittest import mock

import pytest
from lxml import etree

from ansible_collections.openvolume.compute.plugins.module_utils._libvirt import LibvirtError
from ansible_collections.openvolume.compute.plugins.module_utils._libvirt_disk import (
    DiskSpec,
    LibvirtDisks,
    apply_all,
    block_devices,
    build_disk,
    diff_text,
    disk_info,
    driver_io,
    find_disk,
    image_format,
    letters,
    normalise,
    pick_target,
    same_rbd_image,
    settings,
    source_key,
    unreachable_monitors,
)

NETWORK = {
    "type": "network", "protocol": "iscsi", "name": "iqn.2026-11.org.openvolume.lab:vol-01/1",
    "hosts": [{"name": "127.0.0.1", "port": 3260}],
    "auth": {"username": "u", "secret_usage": "openvolume/vol-01"},
}

# A disk as libvirt shows it in a live domain (address, alias and index added).
LIVE_DOMAIN = """<domain type='qemu'><devices>
  <disk type='file' device='disk'>
    <driver name='qemu' type='raw' cache='none'/>
    <source file='/var/tmp/a.img' index='2'/>
    <backingStore/>
    <target dev='sda' bus='scsi'/>
    <serial>vol-a</serial>
    <alias name='scsi0-0-0-0'/>
    <address type='drive' controller='0' bus='0' target='0' unit='0'/>
  </disk>
  <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/></disk>
</devices></domain>"""


def spec(**kw: t.Any) -> DiskSpec:
    return DiskSpec.from_params(dict({"domain": "d", "state": "present"}, **kw))


def test_network_disk_xml() -> None:
    disk = build_disk(spec(source=NETWORK, serial="vol-01", bus="scsi", shareable=True), "sdb")
    text = etree.tostring(disk, encoding="unicode")
    assert text == (
        '<disk type="network" device="disk"><driver name="qemu" type="raw" cache="none"/>'
        '<source protocol="iscsi" name="iqn.2026-11.org.openvolume.lab:vol-01/1">'
        '<host name="127.0.0.1" port="3260"/>'
        '<auth username="u"><secret type="iscsi" usage="openvolume/vol-01"/></auth></source>'
        '<target dev="sdb" bus="scsi"/><serial>vol-01</serial><shareable/></disk>'
    )
    info = disk_info(disk)
    assert info["source"] == NETWORK and info["target_dev"] == "sdb" and info["shareable"]


def test_special_characters_are_escaped() -> None:
    disk = build_disk(spec(source={"type": "file", "path": "/x/we'ird & <x>.img"}), "vdb")
    text = etree.tostring(disk, encoding="unicode")
    assert "&amp; &lt;x&gt;" in text
    assert disk_info(etree.fromstring(text))["source"]["path"] == "/x/we'ird & <x>.img"


def test_normalise_drops_what_libvirt_adds() -> None:
    live = etree.fromstring(LIVE_DOMAIN).find("./devices/disk")
    built = build_disk(spec(source={"type": "file", "path": "/var/tmp/a.img"}, serial="vol-a", bus="scsi"), "sda")
    assert normalise(live) == normalise(built)


def test_find_by_serial_then_source_then_target() -> None:
    root = etree.fromstring(LIVE_DOMAIN)
    assert find_disk(root, spec(serial="vol-a", source={"type": "file", "path": "/other"})) is not None
    assert find_disk(root, spec(source={"type": "file", "path": "/var/tmp/a.img"})) is not None
    assert find_disk(root, spec(serial="vol-z", source={"type": "file", "path": "/var/tmp/a.img"})) is None
    assert find_disk(root, DiskSpec.from_params({"domain": "d", "state": "absent", "target_dev": "sda"})) is not None


def test_a_serial_on_two_disks_is_refused_unless_target_dev_says_which() -> None:
    disk = ('<disk type="file" device="disk"><source file="/{}"/><target dev="{}" bus="scsi"/>'
            '<serial>vol-d</serial></disk>')
    root = etree.fromstring(f"<domain><devices>{disk.format('a', 'sdb')}{disk.format('b', 'sdc')}</devices></domain>")
    absent = {"domain": "d", "state": "absent", "serial": "vol-d"}
    with pytest.raises(LibvirtError, match=r"serial: vol-d is the serial of 2 disks of d \(sdb, sdc\); give target"):
        find_disk(root, DiskSpec.from_params(absent))
    chosen = find_disk(root, DiskSpec.from_params(dict(absent, target_dev="sdc")))
    assert chosen is not None and chosen.find("source").get("file") == "/b"
    with pytest.raises(LibvirtError, match="is the serial of 2 disks"):
        find_disk(root, DiskSpec.from_params(dict(absent, target_dev="sdz")))


def test_source_key_fills_default_ports() -> None:
    a = dict(NETWORK, hosts=[{"name": "127.0.0.1"}])
    assert source_key(a) == source_key(NETWORK)


@pytest.mark.parametrize(("n", "name"), [(0, "a"), (25, "z"), (26, "aa"), (27, "ab"), (701, "zz")])
def test_letters(n: int, name: str) -> None:
    assert letters(n) == name


def test_pick_target_skips_used_names() -> None:
    assert pick_target("virtio", set()) == "vda"
    assert pick_target("virtio", {"vda", "vdb", "sda"}) == "vdc"
    assert pick_target("scsi", {"sda"}) == "sdb"
    used = {"vd" + letters(i) for i in range(26)}
    assert pick_target("virtio", used) == "vdaa"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"bus": "scsi", "target_dev": "vdb", "source": {"type": "file", "path": "/x"}}, "target_dev: 'vdb' is not"),
        ({"target_dev": "vd1", "source": {"type": "file", "path": "/x"}}, "target_dev: 'vd1'"),
        ({}, "source: required with state=present"),
        ({"source": {"type": "file", "path": "x"}}, "source.path: a file source needs an absolute path"),
        ({"source": dict(NETWORK, protocol="nbd")}, "source.protocol"),
        ({"source": dict(NETWORK, hosts=[])}, "source.hosts"),
        ({"source": dict(NETWORK, auth={"username": "u"})}, "give exactly one of secret_usage and secret_uuid"),
        ({"state": "absent"}, "state=absent needs serial, source or target_dev"),
        ({"serial": "a b", "source": {"type": "file", "path": "/x"}}, "serial: 'a b'"),
        ({"source": {"type": "network", "protocol": "rbd", "name": "volumes/ns/img"}},
         "source.name: an RBD source name is pool/image (libvirt cannot attach an image in a namespace)"),
    ],
)
def test_bad_specs_name_the_parameter(params: dict[str, t.Any], message: str) -> None:
    with pytest.raises(LibvirtError) as err:
        DiskSpec.from_params(dict({"domain": "d"}, **params), where="disks[2].")
    assert err.value.msg.startswith("disks[2].")
    assert message in err.value.msg


# libvirt writes <readonly/> and <shareable/> before <serial>, we build them after.
LIBVIRT_ORDER = """<disk type='file' device='disk'>
  <driver name='qemu' type='raw' cache='none' io='native' discard='unmap'/>
  <source file='/var/tmp/p.img' index='1'/>
  <backingStore/>
  <target dev='sda' bus='scsi'/>
  <readonly/>
  <shareable/>
  <serial>p1</serial>
  <alias name='scsi0-0-0-0'/>
  <address type='drive' controller='0' bus='0' target='0' unit='0'/>
</disk>"""

P1 = {"source": {"type": "file", "path": "/var/tmp/p.img"}, "serial": "p1", "bus": "scsi", "io": "native",
      "discard": "unmap", "readonly": True, "shareable": True}


def test_canonical_form_ignores_child_and_attribute_order() -> None:
    assert normalise(etree.fromstring(LIBVIRT_ORDER)) == normalise(build_disk(spec(**P1), "sda"))


def test_canonical_form_keeps_host_order() -> None:
    two = dict(NETWORK, hosts=[{"name": "10.0.0.2", "port": 3260}, {"name": "10.0.0.1", "port": 3260}])
    a = normalise(build_disk(spec(source=two), "sdb"))
    assert a.index("10.0.0.2") < a.index("10.0.0.1")


def test_settings_of_a_libvirt_disk() -> None:
    assert settings(etree.fromstring(LIBVIRT_ORDER)) == {
        "bus": "scsi", "device": "disk", "format": "raw", "cache": "none", "io": "native", "discard": "unmap",
        "readonly": True, "shareable": True, "encryption": None,
    }


def _checker() -> LibvirtDisks:
    # _check_existing reads only its arguments: no connection needed.
    return LibvirtDisks.__new__(LibvirtDisks)


def test_same_disk_again_is_accepted() -> None:
    assert _checker()._check_existing(spec(**P1), etree.fromstring(LIBVIRT_ORDER)) == "sda"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"readonly": False}, "readonly: disk p1 of d is attached as sda with other settings: readonly=False"),
        ({"cache": "directsync"}, "cache: disk p1"),
        ({"target_dev": "sdc"}, "target_dev: disk p1 of d is already attached as sda, not sdc"),
        ({"source": {"type": "file", "path": "/var/tmp/p.img", "format": "qcow2"}},
         "source.format: disk p1 of d is attached as sda with other settings: format='qcow2' (attached: 'raw')"),
        ({"source": {"type": "file", "path": "/var/tmp/q.img"}},
         "serial: disk p1 of d is already attached as sda with another source (/var/tmp/p.img)"),
    ],
)
def test_same_serial_other_disk_is_an_error(change: dict[str, t.Any], message: str) -> None:
    with pytest.raises(LibvirtError) as err:
        _checker()._check_existing(spec(**dict(P1, **change)), etree.fromstring(LIBVIRT_ORDER))
    assert err.value.msg.startswith(message)


@pytest.mark.parametrize(
    ("libvirt_msg", "hint"),
    [
        ("Secret not found: no secret with matching usage 'x'",
         "source.auth: no usable libvirt secret 'openvolume/vol-01'"),
        ("Cannot access storage file '/nope.img': No such file or directory", "source.path: /nope.img does not exist"),
        ("Failed to get \"write\" lock", "shareable: true for multiattach volumes"),
        ("internal error: iSCSI login failed: Authentication failure", "source.auth: the target refused the CHAP"),
        ("Failed to connect socket: Connection refused", "source.hosts: the target did not answer there"),
        ("Operation not supported: disk bus 'sata' cannot be hotplugged.",
         "bus: libvirt cannot hot-plug a virtio disk into a running domain"),
    ],
)
def test_attach_errors_get_a_hint(libvirt_msg: str, hint: str) -> None:
    src = NETWORK if "lock" not in libvirt_msg and "file" not in libvirt_msg else {"type": "file", "path": "/nope.img"}
    msg = LibvirtDisks._explain_attach(spec(source=src, serial="vol-01"), libvirt_msg)
    assert msg.startswith("attaching disk vol-01 of d failed: " + libvirt_msg)
    assert hint in msg


def test_canonical_text_in_libvirts_order() -> None:
    text = normalise(build_disk(spec(**P1), "sda"))
    tags = [child.tag for child in etree.fromstring(text)]
    assert tags == ["driver", "source", "target", "readonly", "shareable", "serial"]
    assert '<driver cache="none" discard="unmap" io="native" name="qemu" type="raw"/>' in text


def test_diff_text_names_each_view() -> None:
    assert diff_text({"live": "<disk/>", "config": "<disk/>"}) == (
        "<!-- live -->\n<disk/>\n<!-- persistent config -->\n<disk/>\n"
    )
    assert diff_text({"live": "", "config": ""}) == ""


# --- Nova-grade XML ---------------------------------------------------------------------------------------------
RBD = {
    "type": "network", "protocol": "rbd", "name": "volumes/volume-01",
    "hosts": [{"name": "10.0.0.1"}, {"name": "10.0.0.2", "port": 3300}],
    "auth": {"username": "openvolume", "secret_usage": "openvolume/volume-01"},
}


def test_rbd_disk_xml_like_nova() -> None:
    disk = build_disk(spec(source=RBD, serial="volume-01"), "vdb")
    text = etree.tostring(disk, encoding="unicode")
    # No port forced on a monitor without one, the cephx secret of type ceph.
    assert text == (
        '<disk type="network" device="disk"><driver name="qemu" type="raw" cache="none"/>'
        '<source protocol="rbd" name="volumes/volume-01"><host name="10.0.0.1"/><host name="10.0.0.2" port="3300"/>'
        '<auth username="openvolume"><secret type="ceph" usage="openvolume/volume-01"/></auth></source>'
        '<target dev="vdb" bus="virtio"/><serial>volume-01</serial></disk>'
    )
    hosts = disk_info(disk)["source"]["hosts"]
    assert hosts == [{"name": "10.0.0.1", "port": None}, {"name": "10.0.0.2", "port": 3300}]


def test_rbd_without_hosts_uses_ceph_conf() -> None:
    disk = build_disk(spec(source={"type": "network", "protocol": "rbd", "name": "volumes/v"}), "vdb")
    assert disk.find("source").findall("host") == []


@pytest.mark.parametrize(
    ("source", "cache", "io", "expected"),
    [
        ({"type": "block", "path": "/dev/sdb"}, "none", None, "native"),
        ({"type": "block", "path": "/dev/sdb"}, "directsync", None, "native"),
        ({"type": "block", "path": "/dev/sdb"}, "writeback", None, None),
        ({"type": "block", "path": "/dev/sdb"}, "none", "threads", "threads"),
        ({"type": "file", "path": "/var/tmp/a.img"}, "none", None, None),
        (RBD, "none", None, None),
        ({"type": "file", "path": "/var/tmp/a.img"}, "none", "io_uring", "io_uring"),
    ],
)
def test_io_default_like_nova(source: dict[str, t.Any], cache: str, io: str | None, expected: str | None) -> None:
    s = spec(source=source, cache=cache, io=io)
    assert s.io == io  # a default is never recorded as the user's choice
    assert driver_io(s) == expected
    assert build_disk(s, "vdb").find("driver").get("io") == expected


def test_lun_disk_has_no_serial() -> None:
    lun = spec(source={"type": "block", "path": "/dev/sdb"}, device="lun", bus="scsi")
    disk = build_disk(lun, "sdb")
    assert disk.get("device") == "lun" and disk.find("serial") is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"device": "lun", "bus": "scsi", "serial": "v1", "source": {"type": "block", "path": "/dev/sdb"}},
         "serial: a device=lun disk passes SCSI commands through"),
        ({"io": "native", "cache": "writeback", "source": {"type": "block", "path": "/dev/sdb"}},
         "io: native needs cache none or directsync"),
        ({"source": dict(RBD, name="volume-01")}, "source.name: an RBD source name is pool/image"),
        ({"source": dict(RBD, name="volumes/v@snap")}, "source.name: an RBD source name is pool/image"),
        ({"source": {"type": "block", "path": "/dev/sdb", "format": "qcow2"}},
         "source.format: a block source is raw"),
        ({"source": {"type": "file", "path": "/x", "format": "vdi"}}, "source.format: 'vdi' is not one of"),
    ],
)
def test_bad_nova_rules_name_the_parameter(params: dict[str, t.Any], message: str) -> None:
    with pytest.raises(LibvirtError) as err:
        DiskSpec.from_params(dict({"domain": "d"}, **params))
    assert err.value.msg.startswith(message)


def test_lun_without_serial_on_detach_by_serial_is_accepted() -> None:
    s = DiskSpec.from_params({"domain": "d", "state": "absent", "serial": "v1", "device": "lun"})
    assert s.serial == "v1"


ISCSI_NAME = "iqn.2026-11.org.openvolume.lab:vol-01"


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        # Ceph monitors: no port, v2 port, v1 port (the old default) are one monitor.
        (RBD, dict(RBD, hosts=[{"name": "10.0.0.2", "port": 6789}, {"name": "10.0.0.1", "port": 6789}]), True),
        (RBD, dict(RBD, hosts=[{"name": "10.0.0.1", "port": 3300}, {"name": "10.0.0.2"}]), True),
        (RBD, dict(RBD, hosts=[{"name": "10.0.0.1", "port": 6790}, {"name": "10.0.0.2"}]), False),
        (RBD, dict(RBD, hosts=[]), False),
        (RBD, dict(RBD, name="volumes/volume-02"), False),
        # iSCSI: no port is 3260, no /LUN is LUN 0.
        (dict(NETWORK, name=f"{ISCSI_NAME}/0"), dict(NETWORK, name=ISCSI_NAME), True),
        (dict(NETWORK, name=f"{ISCSI_NAME}/1"), dict(NETWORK, name=ISCSI_NAME), False),
        (dict(NETWORK, name=f"{ISCSI_NAME}/01"), dict(NETWORK, name=f"{ISCSI_NAME}/1"), True),
        (NETWORK, dict(NETWORK, hosts=[{"name": "127.0.0.1", "port": 3261}]), False),
    ],
)
def test_source_identity_is_canonical(a: dict[str, t.Any], b: dict[str, t.Any], same: bool) -> None:
    assert (source_key(a) == source_key(b)) is same


# What earlier versions of this module attached: every monitor with port 6789,
# no io on a block disk. Such disks are still found and accepted unchanged.
OLD_RBD = """<domain><devices><disk type='network' device='disk'>
  <driver name='qemu' type='raw' cache='none'/>
  <source protocol='rbd' name='volumes/volume-01' index='1'>
    <host name='10.0.0.1' port='6789'/><host name='10.0.0.2' port='6789'/>
    <auth username='openvolume'><secret type='ceph' usage='openvolume/volume-01'/></auth>
  </source>
  <target dev='vdb' bus='virtio'/><serial>volume-01</serial><alias name='virtio-disk1'/>
</disk>
<disk type='block' device='disk'>
  <driver name='qemu' type='raw' cache='none'/>
  <source dev='/dev/disk/by-path/ip-127.0.0.1:3260-iscsi-iqn.x:vol-02-lun-1'/>
  <target dev='vdc' bus='virtio'/><serial>volume-02</serial>
</disk>
<disk type='network' device='lun'>
  <driver name='qemu' type='raw' cache='none'/>
  <source protocol='iscsi' name='iqn.x:vol-03'><host name='127.0.0.1'/></source>
  <target dev='sda' bus='scsi'/>
</disk></devices></domain>"""
OLD_BLOCK = "/dev/disk/by-path/ip-127.0.0.1:3260-iscsi-iqn.x:vol-02-lun-1"
OLD_LUN = {"type": "network", "protocol": "iscsi", "name": "iqn.x:vol-03/0", "hosts": [{"name": "127.0.0.1"}]}


@pytest.mark.parametrize(
    ("params", "target"),
    [
        ({"serial": "volume-01", "source": RBD}, "vdb"),
        ({"source": RBD}, "vdb"),
        ({"serial": "volume-02", "source": {"type": "block", "path": OLD_BLOCK}}, "vdc"),
        ({"device": "lun", "bus": "scsi", "source": OLD_LUN}, "sda"),
    ],
)
def test_disks_attached_with_the_old_xml_are_found_and_kept(params: dict[str, t.Any], target: str) -> None:
    s = spec(**params)
    found = find_disk(etree.fromstring(OLD_RBD), s)
    assert found is not None
    assert _checker()._check_existing(s, found) == target


def test_explicit_io_still_differs_from_an_old_disk() -> None:
    s = spec(serial="volume-02", io="threads", source={"type": "block", "path": OLD_BLOCK})
    found = find_disk(etree.fromstring(OLD_RBD), s)
    with pytest.raises(LibvirtError, match="^io: disk volume-02 of d is attached as vdc with other settings"):
        _checker()._check_existing(s, found)


def _qemu_img(*args: str) -> None:
    assert shutil.which("qemu-img"), "qemu-img (Debian qemu-utils, installed by make deps) is needed"
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def test_image_format_of_real_images(tmp_path: Path) -> None:
    raw, qcow2 = tmp_path / "a.raw", tmp_path / "b.qcow2"
    _qemu_img("create", "-f", "raw", str(raw), "1M")
    _qemu_img("create", "-f", "qcow2", str(qcow2), "1M")
    assert image_format(str(raw)) == "raw"
    assert image_format(str(qcow2)) == "qcow2"
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert image_format(str(empty)) == "raw"


def test_qcow2_referring_to_another_file_is_refused(tmp_path: Path) -> None:
    base, overlay = tmp_path / "base.qcow2", tmp_path / "overlay.qcow2"
    _qemu_img("create", "-f", "qcow2", str(base), "1M")
    _qemu_img("create", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(overlay))
    with pytest.raises(LibvirtError, match="^disks\\[0\\]\\.source\\.format: .* refers to another file"):
        image_format(str(overlay), where="disks[0].")
    # A raw image whose guest wrote a qcow2 header with an external data file.
    forged = tmp_path / "forged.raw"
    header = bytearray(104)
    struct.pack_into(">4sIQ", header, 0, b"QFI\xfb", 3, 0)
    struct.pack_into(">Q", header, 72, 0x4)
    forged.write_bytes(bytes(header))
    with pytest.raises(LibvirtError, match="refers to another file"):
        image_format(str(forged))


def test_image_format_of_a_missing_file_names_the_path() -> None:
    with pytest.raises(LibvirtError, match="^source.path: cannot read /nonexistent/x.img"):
        image_format("/nonexistent/x.img")


def test_file_source_gets_the_detected_format() -> None:
    disk = build_disk(spec(source={"type": "file", "path": "/var/tmp/a.img"}), "vdb", "qcow2")
    assert disk.find("driver").get("type") == "qcow2"
    assert disk_info(disk)["source"] == {"type": "file", "path": "/var/tmp/a.img", "format": "qcow2"}


def test_monitor_probe() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        port = listening.getsockname()[1]
        assert unreachable_monitors([{"name": "127.0.0.1", "port": port}]) == []
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        tried = unreachable_monitors([{"name": "127.0.0.1", "port": port}], timeout=1)
    assert tried == [f"127.0.0.1:{port} (Connection refused)"]


@pytest.mark.parametrize(
    ("libvirt_msg", "hint"),
    [
        ("internal error: unable to execute QEMU command 'blockdev-add': error connecting: Permission denied",
         "source.auth: Ceph refused client.openvolume: check source.auth.username"),
        ("internal error: unable to execute QEMU command 'blockdev-add': error connecting: Invalid argument",
         "source.auth: the libvirt secret for client.openvolume does not hold a cephx key"),
        ("internal error: unable to execute QEMU command 'blockdev-add': error reading header from volume-01: "
         "No such file or directory", "source.name: pool volumes has no image 'volume-01' (rbd ls volumes)"),
        ("internal error: unable to execute QEMU command 'blockdev-add': error opening pool volumes: "
         "No such file or directory", "source.name: the cluster has no pool 'volumes'"),
        ("internal error: unable to execute QEMU command 'blockdev-add': error connecting: Connection timed out",
         "source.hosts: the Ceph monitors did not answer"),
        ("Secret not found: no secret with matching usage 'openvolume/volume-01'",
         "source.auth: no usable libvirt secret 'openvolume/volume-01'"),
    ],
)
def test_rbd_attach_errors_get_a_hint(libvirt_msg: str, hint: str) -> None:
    msg = LibvirtDisks._explain_attach(spec(source=RBD, serial="volume-01"), libvirt_msg)
    assert msg.startswith("attaching disk volume-01 of d failed: " + libvirt_msg + "; " + hint)


def test_an_rbd_disk_without_cephx_on_a_cephx_cluster_is_told_so() -> None:
    # What the lab's cluster (auth client required = cephx) answers a disk without <auth>.
    libvirt_msg = ("internal error: unable to execute QEMU command 'blockdev-add': error connecting: "
                   "Operation not supported")
    plain = {k: v for k, v in RBD.items() if k != "auth"}
    msg = LibvirtDisks._explain_attach(spec(source=plain, serial="volume-01"), libvirt_msg)
    assert msg.endswith("; source.auth: the cluster requires cephx and the disk has none: give the user and its "
                        "libvirt secret (in a catalogue: auth_username, auth_key, auth_enabled true or left out)")
    msg = LibvirtDisks._explain_attach(spec(source=RBD, serial="volume-01"), libvirt_msg)
    assert "the cluster takes no cephx from clients" in msg


ENCRYPTED = dict(NETWORK, encryption={"format": "luks", "secret_usage": "openvolume/vol-01/luks"})


def test_encrypted_disk_xml_has_the_encryption_inside_source() -> None:
    disk = build_disk(spec(source=ENCRYPTED, serial="vol-01", bus="scsi"), "sdb")
    source = disk.find("source")
    enc = source.find("encryption")
    assert enc.get("format") == "luks" and enc.get("engine") == "qemu"
    assert etree.tostring(enc, encoding="unicode") == (
        '<encryption format="luks" engine="qemu"><secret type="passphrase" usage="openvolume/vol-01/luks"/>'
        '</encryption>')
    assert disk_info(disk)["source"] == ENCRYPTED
    # Older XML has it under <disk>: found there too.
    old = etree.fromstring(
        "<disk type='network' device='disk'><source protocol='rbd' name='volumes/x'/>"
        "<encryption format='luks'><secret type='passphrase' uuid='0a81f5b2'/></encryption>"
        "<target dev='vdb' bus='virtio'/></disk>")
    assert disk_info(old)["source"]["encryption"] == {"format": "luks", "secret_uuid": "0a81f5b2"}


def test_a_plaintext_disk_is_not_the_encrypted_one() -> None:
    plain = build_disk(spec(source=NETWORK, serial="vol-01", bus="scsi"), "sdb")
    with pytest.raises(LibvirtError, match="^source.encryption: disk vol-01 of d is attached as sdb with other "
                                           "settings: encryption='luks' \\(attached: 'none'\\)"):
        _checker()._check_existing(spec(source=ENCRYPTED, serial="vol-01", bus="scsi"), plain)
    encrypted = build_disk(spec(source=ENCRYPTED, serial="vol-01", bus="scsi"), "sdb")
    assert _checker()._check_existing(spec(source=ENCRYPTED, serial="vol-01", bus="scsi"), encrypted) == "sdb"
    with pytest.raises(LibvirtError, match="encryption='none' \\(attached: 'luks'\\)"):
        _checker()._check_existing(spec(source=NETWORK, serial="vol-01", bus="scsi"), encrypted)


@pytest.mark.parametrize(
    ("encryption", "message"),
    [
        ({"format": "luks"}, "source.encryption: give exactly one of secret_usage and secret_uuid"),
        ({"format": "qcow", "secret_usage": "x"}, "source.encryption.format: only luks is supported"),
    ],
)
def test_bad_encryption_names_the_parameter(encryption: dict[str, t.Any], message: str) -> None:
    with pytest.raises(LibvirtError, match=f"^{re.escape(message)}"):
        spec(source=dict(NETWORK, encryption=encryption), serial="vol-01")


def test_wrong_passphrase_at_hot_plug_gets_a_hint() -> None:
    msg = LibvirtDisks._explain_attach(spec(source=ENCRYPTED, serial="vol-01"),
                                       "internal error: Invalid password, cannot unlock any keyslot")
    assert "source.encryption: the passphrase in libvirt secret 'openvolume/vol-01/luks' does not open" in msg


# --- a batch: all or nothing ----------------------------------------------------------------------
class _Batch:
    """LibvirtDisks with its states faked: attaches and detaches are logged, some fail."""

    def __init__(self, fail: set[str] = frozenset(), stuck: set[str] = frozenset(), check_mode: bool = False) -> None:
        self.disks = LibvirtDisks(mock.MagicMock(check_mode=check_mode))
        self.log: list[str] = []
        self.fail, self.stuck = fail, stuck
        self.disks.state_present = self.present  # type: ignore[method-assign]
        self.disks.state_absent = self.absent  # type: ignore[method-assign]
        self.disks.absent_all = self.absent_all  # type: ignore[method-assign]

    def present(self, s: DiskSpec) -> dict[str, t.Any]:
        if s.serial in self.fail:
            raise LibvirtError(f"{s.where}attaching {s.label} failed", rc=7)
        self.log.append(f"attach {s.serial}")
        return {"changed": s.serial != "same", "disk": {"target_dev": f"vd-{s.serial}"}}

    def absent(self, s: DiskSpec, timeout: float) -> dict[str, t.Any]:
        self.log.append(f"detach {s.serial} {s.target_dev}")
        if s.serial in self.stuck:
            raise LibvirtError("the guest keeps it")
        return {"changed": True}

    def absent_all(self, specs: list[DiskSpec], timeout: float, missing_domain: str) -> list[dict[str, t.Any]]:
        self.log.append(f"detach run {','.join(str(s.serial) for s in specs)}")
        return [{"changed": True, "disk": {"target_dev": s.target_dev}} for s in specs]


def _specs(*serials: str) -> list[DiskSpec]:
    return [DiskSpec.from_params({"domain": "d", "state": "absent", "serial": s[1:]}, where=f"disks[{i}].")
            if s.startswith("-") else spec(source=NETWORK, serial=s) for i, s in enumerate(serials)]


def test_a_failed_batch_detaches_again_what_it_attached_in_reverse() -> None:
    batch = _Batch(fail={"v4"})
    with pytest.raises(LibvirtError) as err:
        apply_all(batch.disks, _specs("v1", "same", "-o1", "-o2", "v2", "v4", "v5"), timeout=5)
    assert err.value.msg == "attaching disk v4 of d failed (rolled back: disk v2 of d, disk v1 of d)"
    assert err.value.details == {"rc": 7}
    # Unchanged disks and detaches are not undone; v5 never ran.
    assert batch.log == ["attach v1", "attach same", "detach run o1,o2", "attach v2",
                         "detach v2 vd-v2", "detach v1 vd-v1"]


def test_a_disk_that_cannot_be_detached_again_is_named() -> None:
    batch = _Batch(fail={"v3"}, stuck={"v1"})
    with pytest.raises(LibvirtError) as err:
        apply_all(batch.disks, _specs("v1", "v2", "v3"), timeout=5)
    assert err.value.msg == ("attaching disk v3 of d failed (rolled back: disk v2 of d; could not detach again: "
                             "disk v1 of d)")


@pytest.mark.parametrize("serials", [("v1",), ("-o1", "same", "v1")])
def test_a_failure_with_nothing_to_undo_keeps_its_message(serials: tuple[str, ...]) -> None:
    with pytest.raises(LibvirtError) as err:
        apply_all(_Batch(fail={"v1"}).disks, _specs(*serials), timeout=5)
    assert err.value.msg == "attaching disk v1 of d failed"


def test_check_mode_undoes_nothing() -> None:
    batch = _Batch(fail={"v2"}, check_mode=True)
    with pytest.raises(LibvirtError) as err:
        apply_all(batch.disks, _specs("v1", "v2"), timeout=5)
    assert err.value.msg == "attaching disk v2 of d failed"
    assert batch.log == ["attach v1"]


class _Domain:
    def __init__(self, xml: str) -> None:
        self.name, self.root = "d", etree.fromstring(xml)

    def views(self) -> dict[str, t.Any]:
        return {"live": self.root}


def _domain_with(*disks: tuple[str, str, str]) -> _Domain:
    return _Domain("<domain type='qemu'><devices>" + "".join(
        f"<disk type='block' device='disk'><source dev='{path}'/><target dev='{dev}' bus='virtio'/>"
        f"<serial>{serial}</serial></disk>" for path, dev, serial in disks) + "</devices></domain>")


def test_a_block_device_under_another_name_is_the_same_volume(tmp_path: Path) -> None:
    # A by-path link and the node it points to (here /dev/null stands for /dev/sdc).
    link = tmp_path / "ip-127.0.0.1:3260-iscsi-iqn.2026-11.org.openvolume.lab:vol-01-lun-1"
    link.symlink_to("/dev/null")
    dom = _domain_with(("/dev/null", "vdb", "other-tool"))
    with pytest.raises(LibvirtError) as err:
        _checker()._check_source_unused(spec(serial="vol-01", source={"type": "block", "path": str(link)}), dom)
    assert "is already attached to d as vdb (serial other-tool)" in err.value.msg
    # A multipath map and one of its paths are one LUN too.
    slaves = tmp_path / "block" / "null" / "slaves"
    slaves.mkdir(parents=True)
    (slaves / "sdc").touch()
    assert block_devices({"type": "block", "path": str(link)}, str(tmp_path)) == {"null", "sdc"}
    assert block_devices({"type": "network", "protocol": "rbd", "name": "p/i"}) == set()


def test_serials_a_virtio_guest_cannot_tell_apart_are_refused() -> None:
    dom = _domain_with(("/var/tmp/none-a", "vdb", "prod-postgres-primary-data"))
    with pytest.raises(LibvirtError) as err:
        _checker()._check_source_unused(spec(serial="prod-postgres-primary-wal",
                                             source={"type": "block", "path": "/var/tmp/none-b"}), dom)
    assert "begin with the same 20 bytes" in err.value.msg
    # Apart within 20 bytes, or on another bus: fine.
    _checker()._check_source_unused(spec(serial="prod-pg-wal", source={"type": "block", "path": "/var/tmp/b"}), dom)
    _checker()._check_source_unused(spec(serial="prod-postgres-primary-wal", bus="scsi",
                                         source={"type": "block", "path": "/var/tmp/b"}), dom)


def test_an_rbd_image_is_the_same_through_other_monitors() -> None:
    image = {"type": "network", "protocol": "rbd", "name": "volumes/volume-1", "hosts": [{"name": "10.0.0.1"}]}
    moved = dict(image, hosts=[{"name": "10.0.0.7", "port": 3300}])
    assert source_key(image) != source_key(moved) and same_rbd_image(image, moved)
    assert not same_rbd_image(image, dict(moved, name="volumes/volume-2"))
    # Without monitors the host's ceph.conf is read: maybe another cluster.
    assert not same_rbd_image(image, dict(image, hosts=[]))
    assert not same_rbd_image(image, {"type": "file", "path": "/x"})
