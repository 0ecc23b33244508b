"""Disk XML building, identity, normalisation and device-name picking."""

from __future__ import annotations

import typing as t

import pytest
from lxml import etree

from ansible_collections.openvolume.compute.plugins.module_utils._libvirt import LibvirtError
from ansible_collections.openvolume.compute.plugins.module_utils._libvirt_disk import (
    DiskSpec,
    LibvirtDisks,
    build_disk,
    diff_text,
    disk_info,
    find_disk,
    letters,
    normalise,
    pick_target,
    settings,
    source_key,
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
        "bus": "scsi", "device": "disk", "cache": "none", "io": "native", "discard": "unmap",
        "readonly": True, "shareable": True,
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
        ({"cache": "writeback"}, "cache: disk p1"),
        ({"target_dev": "sdc"}, "target_dev: disk p1 of d is already attached as sda, not sdc"),
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
