"""OpenVolumeModule keeps secrets of free-form parameters out of the invocation log.

AnsibleModule logs "Invoked with ..." while it is constructed; these tests
build real modules from real parameters and capture what would go to
syslog.
"""

from __future__ import annotations

import json
import typing as t

import pytest
from ansible.module_utils import basic

from ansible_collections.openvolume.compute.plugins.module_utils._common import OpenVolumeModule, secret_values

SECRET = "Ch4p'S3cr\\et-é"
CONNECTION_INFO = {
    "driver_volume_type": "iscsi",
    "data": {
        "target_iqn": "iqn.2026-11.org.openvolume.lab:vol-01",
        "auth_username": "ovlab-initiator",
        "auth_password": SECRET,
        "portals": [{"auth_password_in": "in-" + SECRET}],
    },
}
SPEC: dict[str, t.Any] = {
    "connection_info": {"type": "dict"},
    "name": {"type": "str"},
    "count": {"type": "int"},
}


@pytest.fixture
def syslog(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    lines: list[str] = []
    monkeypatch.setattr(basic, "has_journal", False)
    monkeypatch.setattr(basic.AnsibleModule, "_log_to_syslog", lambda self, msg: lines.append(msg))
    return lines


def module_args(monkeypatch: pytest.MonkeyPatch, args: dict[str, t.Any]) -> None:
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode())
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)


def test_plain_ansible_module_leaks_the_secret(monkeypatch: pytest.MonkeyPatch, syslog: list[str]) -> None:
    # The bug the subclass fixes: proves the capture sees a leak when there is one.
    module_args(monkeypatch, {"connection_info": CONNECTION_INFO, "name": "vol-01"})
    basic.AnsibleModule(argument_spec=SPEC)
    assert any("Invoked with" in line and "S3cr" in line for line in syslog)


def test_invocation_log_has_no_secret(monkeypatch: pytest.MonkeyPatch, syslog: list[str]) -> None:
    module_args(monkeypatch, {"connection_info": CONNECTION_INFO, "name": "vol-01"})
    module = OpenVolumeModule(argument_spec=SPEC)
    invoked = [line for line in syslog if line.startswith("Invoked with")]
    assert len(invoked) == 1
    assert "auth_username" in invoked[0] and "ovlab-initiator" in invoked[0]
    assert "S3cr" not in invoked[0]
    module.log(f"later message naming {SECRET}")
    assert "S3cr" not in syslog[-1]


def test_secret_values_finds_nested_and_escaped_forms() -> None:
    values = secret_values({"connection_info": CONNECTION_INFO, "etcd_password": "", "secret_uuid": "u"})
    assert SECRET in values
    assert repr(SECRET)[1:-1] in values
    assert "in-" + SECRET in values
    assert "u" not in values
    assert "" not in values
