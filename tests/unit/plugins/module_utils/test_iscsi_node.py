"""Option handling of iscsi_node: from module parameters to node.* keys."""

from __future__ import annotations

import typing as t

import pytest

from ansible_collections.openvolume.compute.plugins.module_utils._common import MASK
from ansible_collections.openvolume.compute.plugins.module_utils._iscsi_node import (
    NodeRequest,
    auth_settings,
    masked_view,
)
from ansible_collections.openvolume.compute.plugins.module_utils._iscsiadm import IscsiError

TARGET = "iqn.2026-11.org.openvolume.lab:chap"


def params(**extra: t.Any) -> dict[str, t.Any]:
    return {"target": TARGET, "portal": "127.0.0.1", "iface": "default", "auth": None, "startup": None,
            "settings": {}} | extra


def test_request_maps_options_to_record_keys() -> None:
    req = NodeRequest.from_params(params(
        auth={"method": "CHAP", "username": "u", "password": "p", "username_in": None, "password_in": None},
        startup="automatic",
        settings={"node.session.timeo.replacement_timeout": 20, "node.session.iscsi.ImmediateData": False},
    ))
    assert str(req.portal) == "127.0.0.1:3260"
    assert req.desired == {
        "node.session.auth.authmethod": "CHAP",
        "node.session.auth.username": "u",
        "node.session.auth.password": "p",
        "node.session.auth.username_in": "",
        "node.session.auth.password_in": "",
        "node.startup": "automatic",
        "node.session.timeo.replacement_timeout": "20",
        "node.session.iscsi.ImmediateData": "No",
    }


def test_auth_none_clears_credentials() -> None:
    assert auth_settings({"method": "None"}, prefix="node.session.auth") == {
        "node.session.auth.authmethod": "None",
        "node.session.auth.username": "",
        "node.session.auth.password": "",
        "node.session.auth.username_in": "",
        "node.session.auth.password_in": "",
    }


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({"method": "CHAP", "username": "u"}, "auth: CHAP needs both username and password"),
        ({"method": "CHAP", "username": "u", "password": "p", "username_in": "t"}, "auth: mutual CHAP needs both"),
        ({"method": "None", "username": "u"}, "auth: method is None but credentials are given"),
    ],
)
def test_auth_errors(auth: dict[str, t.Any], message: str) -> None:
    with pytest.raises(IscsiError) as err:
        auth_settings(auth, prefix="node.session.auth")
    assert err.value.msg.startswith(message)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("node.startup", "use that instead"),
        ("node.session.auth.password", "set by the option 'auth'"),
        ("node.conn[0].port", "set by the option 'portal'"),
        ("session.timeo.replacement_timeout", "keys start with 'node.'"),
    ],
)
def test_settings_errors_name_the_option(key: str, message: str) -> None:
    with pytest.raises(IscsiError) as err:
        NodeRequest.from_params(params(settings={key: "1"}))
    assert err.value.msg.startswith("settings: ")
    assert message in err.value.msg


def test_unknown_settings_key() -> None:
    req = NodeRequest.from_params(params(settings={"node.session.nope": 1}))
    with pytest.raises(IscsiError, match="iscsiadm does not know node.session.nope"):
        req.check_known({"node.startup"})


def test_masked_view_never_shows_a_secret() -> None:
    record = {"node.session.auth.password": "p1", "node.session.auth.password_in": "", "node.startup": "manual"}
    keys = record.keys()
    assert masked_view(record, keys) == {
        "node.session.auth.password": MASK,
        "node.session.auth.password_in": "",
        "node.startup": "manual",
    }
    changed = masked_view(record, keys, {"node.session.auth.password"})
    assert changed["node.session.auth.password"] == f"{MASK} (changed)"
