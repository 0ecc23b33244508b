"""Parsers, validators and exit-code meanings of the iscsiadm wrapper.

The fixtures are iscsiadm's own output, captured from open-iscsi 2.1.8 on
Debian 12 against the lab's tgtd (tests/unit/plugins/module_utils/fixtures).
"""

from __future__ import annotations

import pathlib

import pytest

from ansible_collections.openvolume.compute.plugins.module_utils._iscsi_node import KNOWN_NODE_KEYS
from ansible_collections.openvolume.compute.plugins.module_utils._iscsiadm import (
    EXIT_CODES,
    IscsiError,
    NodeEntry,
    Portal,
    _relevant_stderr,
    explain,
    parse_node_list,
    parse_record,
    parse_session_list,
    validate_target_name,
)

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "iscsiadm"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_parse_node_list() -> None:
    assert parse_node_list(fixture("node_list.txt")) == [
        NodeEntry(Portal("127.0.0.1", 3260), -1, "iqn.2026-11.org.openvolume.lab:chap"),
        NodeEntry(Portal("127.0.0.1", 3261), -1, "iqn.2026-11.org.openvolume.lab:plain"),
    ]


def test_parse_record_shown_and_masked() -> None:
    shown = parse_record(fixture("node_record_shown.txt"))
    masked = parse_record(fixture("node_record_masked.txt"))
    assert shown["node.session.auth.password"] == "fixture-pass"
    assert masked["node.session.auth.password"] == "********"
    assert shown["node.session.auth.username_in"] == ""
    assert shown["node.conn[0].port"] == "3260"
    assert shown["node.startup"] == "manual"


def test_known_keys_are_those_of_a_real_record() -> None:
    record_keys = {k for k in parse_record(fixture("node_record_shown.txt")) if k.startswith("node.")}
    assert record_keys == set(KNOWN_NODE_KEYS)


def test_parse_session_list() -> None:
    text = (
        "tcp: [1] 192.0.2.10:3260,1 iqn.2026-11.org.openvolume.lab:plain (non-flash)\n"
        "tcp: [3] [2001:db8::10]:3260,2 iqn.2026-11.org.openvolume.lab:chap (non-flash)\n"
    )
    sessions = parse_session_list(text)
    assert [(s.sid, str(s.portal), s.tpgt) for s in sessions] == [
        (1, "192.0.2.10:3260", 1),
        (3, "[2001:db8::10]:3260", 2),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.10", Portal("192.0.2.10", 3260)),
        ("192.0.2.10:3261", Portal("192.0.2.10", 3261)),
        ("192.0.2.10:3260,1", Portal("192.0.2.10", 3260)),
        ("[2001:db8::1]", Portal("2001:db8::1", 3260)),
        ("[2001:db8::1]:3262", Portal("2001:db8::1", 3262)),
        ("storage-a.example.net:3260", Portal("storage-a.example.net", 3260)),
    ],
)
def test_portal_parse(text: str, expected: Portal) -> None:
    assert Portal.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2001:db8::1", "put it in brackets"),
        ("[2001:db8::1", "without ']'"),
        ("[nothex]:3260", "not an IPv6 address"),
        ("192.0.2.10:0", "not a TCP port"),
        ("192.0.2.10:70000", "not a TCP port"),
        ("192.0.2.10:abc", "not a TCP port"),
        ("bad host!", "neither an IP address nor a host name"),
    ],
)
def test_portal_parse_errors_name_the_parameter(text: str, message: str) -> None:
    with pytest.raises(IscsiError) as err:
        Portal.parse(text, param="portals[1]")
    assert err.value.msg.startswith("portals[1]: ")
    assert message in err.value.msg


def test_portal_str_round_trip() -> None:
    assert str(Portal("2001:db8::1", 3260)) == "[2001:db8::1]:3260"
    assert str(Portal.parse("192.0.2.10")) == "192.0.2.10:3260"


@pytest.mark.parametrize(
    "name",
    [
        "iqn.2010-10.org.openstack:volume-0b5e6a4c",
        "iqn.1993-08.org.debian:01:b3f441c969",
        "iqn.2026-11.org.openvolume.lab",
        "eui.02004567A425678D",
        "naa.52004567BA64678D",
        "naa.52004567BA64678D52004567BA64678D",
    ],
)
def test_valid_target_names(name: str) -> None:
    assert validate_target_name(name) == name


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("IQN.2010-10.org.example:vol", "lower case"),
        ("iqn.2010-13.org.example:vol", "iqn.YYYY-MM"),
        ("iqn.2010-10.-bad.example", "iqn.YYYY-MM"),
        ("eui.1234", "16 hex digits"),
        ("naa.12345", "32 hex digits"),
        ("volume-1", "not an iSCSI name"),
        ("iqn.2010-10.org.example:" + "x" * 220, "at most 223 bytes"),
    ],
)
def test_invalid_target_names(name: str, hint: str) -> None:
    with pytest.raises(IscsiError) as err:
        validate_target_name(name)
    assert err.value.msg.startswith("target: ")
    assert hint in err.value.msg


@pytest.mark.parametrize(
    ("rc", "words"),
    [
        (8, "timed out"),
        (12, "modprobe iscsi_tcp"),
        (15, "already logged in"),
        (20, "start iscsid"),
        (21, "no records"),
        (24, "CHAP username and password"),
    ],
)
def test_exit_codes_are_explained(rc: int, words: str) -> None:
    assert f"iscsiadm exit {rc} ({EXIT_CODES[rc][0]})" in explain(rc)
    assert words in explain(rc)


def test_every_documented_exit_code_has_a_meaning() -> None:
    assert sorted(EXIT_CODES) == list(range(1, 33))
    assert "unknown exit code" in explain(99)


def test_relevant_stderr_drops_systemd_noise() -> None:
    # What iscsiadm prints on a host whose PID 1 is not systemd.
    err = (
        "System has not been booted with systemd as init system (PID 1). Can't operate.\n"
        "Failed to connect to bus: Host is down\n"
        "iscsiadm: can not connect to iSCSI daemon (111)!\n"
        "iscsiadm: Cannot modify node.bogus.key. Invalid param name.\n"
    )
    assert _relevant_stderr(err) == (
        "iscsiadm: can not connect to iSCSI daemon (111)!\niscsiadm: Cannot modify node.bogus.key. Invalid param name."
    )


def test_auth_failure_names_the_option_that_holds_the_account() -> None:
    assert "(auth)" in explain(24)
    assert "(discovery_auth)" in explain(24, auth_param="discovery_auth")
