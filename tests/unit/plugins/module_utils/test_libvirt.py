"""libvirt-python errors turned into messages that name the parameter and the fix."""

from __future__ import annotations

import typing as t

import libvirt
import pytest

from ansible_collections.openvolume.compute.plugins.module_utils import _libvirt as lv
from ansible_collections.openvolume.compute.plugins.module_utils._libvirt import LibvirtError


def _error(code: int, message: str) -> libvirt.libvirtError:
    exc = libvirt.libvirtError(message)
    # What libvirt-python fills in from virGetLastError().
    exc.err = (code, 0, message, 2, None, None, None, -1, -1)
    return exc


class _Conn:
    """A connection whose look-ups fail as libvirt's do."""

    def __init__(self, exc: libvirt.libvirtError) -> None:
        self.exc = exc

    def getURI(self) -> str:
        return "qemu:///system"

    def lookupByName(self, _name: str) -> t.Any:
        raise self.exc

    def lookupByUUIDString(self, _uuid: str) -> t.Any:
        raise self.exc


def test_unknown_domain_names_the_parameter() -> None:
    conn = _Conn(_error(libvirt.VIR_ERR_NO_DOMAIN, "Domain not found: no domain with matching name 'x'"))
    with pytest.raises(LibvirtError) as err:
        lv.lookup_domain(conn, "x", param="disks[1].domain")
    assert err.value.msg == (
        "disks[1].domain: no domain named 'x' on qemu:///system; check the name or UUID (virsh list --all)"
    )


def test_unknown_uuid_names_the_parameter() -> None:
    conn = _Conn(_error(libvirt.VIR_ERR_NO_DOMAIN, "Domain not found"))
    with pytest.raises(LibvirtError, match="^domain: no domain named '6f1c"):
        lv.lookup_domain(conn, "6f1c2b1e-7d1e-4f7e-9a57-3d2a9d1e0c11")


def test_other_lookup_errors_keep_libvirts_message() -> None:
    conn = _Conn(_error(libvirt.VIR_ERR_SYSTEM_ERROR, "Cannot recv data: Connection reset by peer"))
    with pytest.raises(LibvirtError) as err:
        lv.lookup_domain(conn, "x")
    assert err.value.msg == "domain: looking up 'x' failed: Cannot recv data: Connection reset by peer"


def test_unreachable_uri_names_the_parameter() -> None:
    # A real connection attempt to a socket that does not exist: no mock needed.
    uri = "qemu:///system?socket=/nonexistent/ovt-libvirt.sock"
    with pytest.raises(LibvirtError) as err:
        lv.connect(uri)
    assert err.value.msg.startswith(f"uri: cannot connect to {uri}: ")
    assert "check that libvirtd runs on the host" in err.value.msg


def test_describe_and_error_code() -> None:
    exc = _error(libvirt.VIR_ERR_NO_SECRET, "Secret not found")
    assert lv.describe(exc) == "Secret not found"
    assert lv.error_code(exc) == libvirt.VIR_ERR_NO_SECRET
    assert lv.error_code(ValueError("x")) is None
