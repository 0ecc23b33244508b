"""Secret XML and argument checks of libvirt_secret."""

from __future__ import annotations

import base64
import struct
import typing as t

import libvirt
import pytest
from lxml import etree

from ansible_collections.openvolume.compute.plugins.module_utils._libvirt import LibvirtError
from ansible_collections.openvolume.compute.plugins.module_utils._libvirt_secret import SecretSpec, run

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


# --- a batch: all or nothing ----------------------------------------------------------------------
class _LibvirtFailure(libvirt.libvirtError):
    """A libvirtError with the code and message libvirt would set."""

    def __init__(self, msg: str, code: int = libvirt.VIR_ERR_INTERNAL_ERROR) -> None:
        super().__init__(msg)
        self.msg, self.code = msg, code

    def get_error_code(self) -> int:
        return self.code

    def get_error_message(self) -> str:
        return self.msg


class _FakeSecret:
    def __init__(self, conn: _FakeConn, usage: str) -> None:
        self.conn, self.usage = conn, usage

    def UUIDString(self) -> str:  # noqa: N802 (libvirt's name)
        return f"uuid-{self.usage}"

    def usageID(self) -> str:  # noqa: N802
        return self.usage

    def usageType(self) -> int:  # noqa: N802
        return libvirt.VIR_SECRET_USAGE_TYPE_ISCSI

    def value(self) -> bytes:
        return f"pw-{self.usage}".encode()

    def setValue(self, value: bytes) -> None:  # noqa: N802
        if self.usage in self.conn.refuse_value:
            raise _LibvirtFailure("value refused")

    def undefine(self) -> None:
        self.conn.log.append(f"undefine {self.usage}")
        if self.usage in self.conn.refuse_undefine:
            raise _LibvirtFailure("undefine refused")
        del self.conn.secrets[self.usage]


class _FakeConn:
    def __init__(self) -> None:
        self.secrets: dict[str, _FakeSecret] = {}
        self.log: list[str] = []
        self.refuse_value: set[str] = set()
        self.refuse_undefine: set[str] = set()

    def secretLookupByUsage(self, _kind: int, usage: str) -> _FakeSecret:  # noqa: N802
        if usage not in self.secrets:
            raise _LibvirtFailure("no secret", libvirt.VIR_ERR_NO_SECRET)
        return self.secrets[usage]

    def secretDefineXML(self, xml: str) -> _FakeSecret:  # noqa: N802
        usage = etree.fromstring(xml.encode()).findtext("usage/target")
        secret = self.secrets[usage] = _FakeSecret(self, usage)
        return secret


class _FakeModule:
    """What libvirt_secret's ``run`` uses of LibvirtModule; ``run`` keeps the result or the error."""

    def __init__(self, params: dict[str, t.Any], conn: _FakeConn) -> None:
        self.params = dict({"secrets": None, "usage": None, "uuid": None, "value": None, "usage_type": "iscsi",
                            "state": "present"}, **params)
        self.conn = conn
        self.check_mode = False
        self.diff_mode = False
        self.result: dict[str, t.Any] | None = None
        self.error: LibvirtError | None = None

    def run(self, handler: t.Callable[[], dict[str, t.Any]], secrets: t.Iterable[str | None] = ()) -> None:
        try:
            self.result = handler()
        except LibvirtError as exc:
            self.error = exc


def _batch(*usages: str) -> dict[str, t.Any]:
    return {"secrets": [{"usage": u, "value": f"pw-{u}", "usage_type": "iscsi", "state": "present",
                         "uuid": None} for u in usages]}


def test_a_failed_batch_removes_the_secrets_it_defined() -> None:
    conn = _FakeConn()
    conn.secrets["kept"] = _FakeSecret(conn, "kept")
    conn.refuse_value.add("s3")
    module = _FakeModule(_batch("s1", "kept", "s2", "s3"), conn)
    run(module)
    assert module.error is not None and module.result is None
    assert module.error.msg == "secrets[3].defining the secret for s3 failed: value refused"
    # What the batch defined goes again, last first; the secret that existed stays.
    assert conn.log == ["undefine s2", "undefine s1"]
    assert set(conn.secrets) == {"kept", "s3"}


def test_a_secret_that_cannot_be_removed_again_is_added_to_the_error() -> None:
    conn = _FakeConn()
    conn.refuse_value.add("s3")
    conn.refuse_undefine.add("s1")
    module = _FakeModule(_batch("s1", "s2", "s3"), conn)
    run(module)
    assert module.error is not None
    assert module.error.msg == ("secrets[2].defining the secret for s3 failed: value refused; and could NOT undo: "
                                "removing the secret s1 (secrets[0].removing the secret for s1 failed: "
                                "undefine refused)")
    assert module.error.details == {"not_undone": ["removing the secret s1 (secrets[0].removing the secret for s1 "
                                                   "failed: undefine refused)"]}
    assert set(conn.secrets) == {"s1", "s3"}


def test_a_batch_that_succeeds_reports_each_secret() -> None:
    conn = _FakeConn()
    module = _FakeModule(_batch("s1", "s2"), conn)
    run(module)
    assert module.error is None and module.result is not None
    assert module.result["changed"] is True
    assert [s["uuid"] for s in module.result["secrets"]] == ["uuid-s1", "uuid-s2"]
    assert conn.log == []


def test_a_secret_another_run_defined_meanwhile_is_taken_and_left_to_it() -> None:
    # Two runs attach one multiattach volume to two domains of a host at once:
    # both look the usage up, find nothing, and define; libvirt refuses the
    # second define. That run takes the other's secret and does not remove it
    # when its own batch fails later.
    conn = _FakeConn()
    define = conn.secretDefineXML

    def racing_define(xml: str) -> _FakeSecret:
        usage = etree.fromstring(xml.encode()).findtext("usage/target")
        if usage == "shared":
            conn.secrets["shared"] = _FakeSecret(conn, "shared")
            raise _LibvirtFailure("a secret with UUID x already defined for use with shared")
        return define(xml)

    conn.secretDefineXML = racing_define  # type: ignore[method-assign]
    conn.refuse_value.add("s2")
    module = _FakeModule(_batch("shared", "s2"), conn)
    run(module)
    assert module.error is not None and "secrets[1]" in module.error.msg
    assert conn.log == [] and "shared" in conn.secrets
    module = _FakeModule(_batch("shared"), conn)
    conn.secrets.pop("shared")
    run(module)
    assert module.result is not None and module.result["secrets"][0]["created"] is False
