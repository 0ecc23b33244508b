"""Secret XML and argument checks of libvirt_secret."""

from __future__ import annotations

import pytest
from lxml import etree

from ansible_collections.openvolume.compute.plugins.module_utils._libvirt import LibvirtError
from ansible_collections.openvolume.compute.plugins.module_utils._libvirt_secret import SecretSpec


@pytest.mark.parametrize(("usage_type", "element"), [("iscsi", "target"), ("ceph", "name"), ("volume", "volume")])
def test_secret_xml_per_usage_type(usage_type: str, element: str) -> None:
    spec = SecretSpec.from_params({"usage_type": usage_type, "usage": "a&b<c'", "value": "s3cret"})
    root = etree.fromstring(spec.xml())
    assert root.get("ephemeral") == "no" and root.get("private") == "no"
    assert root.find("usage").get("type") == usage_type
    assert root.find(f"usage/{element}").text == "a&b<c'"
    assert root.find("uuid") is None
    assert "s3cret" not in spec.xml()


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
