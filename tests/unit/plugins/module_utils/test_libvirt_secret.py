"""Secret XML and argument checks of libvirt_secret."""

from __future__ import annotations

import base64
import struct

import pytest
from lxml import etree

from ansible_collections.openvolume.compute.plugins.module_utils._libvirt import LibvirtError
from ansible_collections.openvolume.compute.plugins.module_utils._libvirt_secret import SecretSpec

# A cephx key as "ceph auth get-key" prints it: type 1 (AES), created, 16-byte secret.
KEY_BYTES = struct.pack("<HIIH", 1, 1795467342, 0, 16) + bytes(range(16))
CEPH_KEY = base64.b64encode(KEY_BYTES).decode()


@pytest.mark.parametrize(("usage_type", "element"), [("iscsi", "target"), ("ceph", "name"), ("volume", "volume")])
def test_secret_xml_per_usage_type(usage_type: str, element: str) -> None:
    value = CEPH_KEY if usage_type == "ceph" else "s3cret"
    spec = SecretSpec.from_params({"usage_type": usage_type, "usage": "a&b<c'", "value": value})
    root = etree.fromstring(spec.xml())
    assert root.get("ephemeral") == "no" and root.get("private") == "no"
    assert root.find("usage").get("type") == usage_type
    assert root.find(f"usage/{element}").text == "a&b<c'"
    assert root.find("uuid") is None
    assert value not in spec.xml()


def test_secret_xml_with_uuid() -> None:
    spec = SecretSpec.from_params({"usage": "u", "uuid": "457eb676-33da-42ec-9a8c-9293d545c337", "value": "v"})
    assert etree.fromstring(spec.xml()).findtext("uuid") == "457eb676-33da-42ec-9a8c-9293d545c337"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"value": "v"}, "secrets[0].usage: required"),
        ({"usage": "u"}, "secrets[0].value: required with state=present"),
    ],
)
def test_bad_secret_specs_name_the_parameter(params: dict[str, str], message: str) -> None:
    with pytest.raises(LibvirtError) as err:
        SecretSpec.from_params(params, where="secrets[0].")
    assert err.value.msg.startswith(message)


def test_absent_needs_no_value() -> None:
    assert SecretSpec.from_params({"usage": "u", "state": "absent"}).value is None


@pytest.mark.parametrize(
    ("usage_type", "value", "stored"),
    [
        ("iscsi", "s3cret", b"s3cret"),
        ("volume", "pass phrase", b"pass phrase"),
        # libvirt hands QEMU the stored bytes base64-encoded: a ceph secret holds the key's bytes.
        ("ceph", CEPH_KEY, KEY_BYTES),
        ("ceph", CEPH_KEY + "\n", KEY_BYTES),
    ],
)
def test_stored_value(usage_type: str, value: str, stored: bytes) -> None:
    assert SecretSpec.from_params({"usage_type": usage_type, "usage": "u", "value": value}).stored_value() == stored


@pytest.mark.parametrize(
    "value",
    ["FirstValue-1234", "AQAA", base64.b64encode(b"not a cephx key at all").decode(), CEPH_KEY[:-4],
     "AQ D==" + CEPH_KEY],
)
def test_a_ceph_value_that_is_no_cephx_key_is_refused(value: str) -> None:
    with pytest.raises(LibvirtError) as err:
        SecretSpec.from_params({"usage_type": "ceph", "usage": "u", "value": value}, where="secrets[1].")
    assert err.value.msg.startswith("secrets[1].value: a ceph secret's value is the user's cephx key")
    assert value not in err.value.msg
