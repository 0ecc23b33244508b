"""Parsers, validators and exit-code meanings of the iscsiadm wrapper.

The fixtures are iscsiadm's own output, captured from open-iscsi 2.1.8 on
Debian 12 against the lab's tgtd (tests/unit/plugins/module_utils/fixtures).
"""

from __future__ import annotations

import os
import pathlib

import pytest

from ansible_collections.openvolume.compute.plugins.module_utils._iscsi_node import KNOWN_NODE_KEYS
from ansible_collections.openvolume.compute.plugins.module_utils._iscsiadm import (
    EXIT_CODES,
    Iscsiadm,
    IscsiadmError,
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
    # open-iscsi include/iscsi_err.h: 1 (ISCSI_ERR) to 33 (ISCSI_ERR_REQ_TIMEDOUT).
    assert sorted(EXIT_CODES) == list(range(1, 34))
    assert EXIT_CODES[32][0] == "ISCSI_ERR_SESSION_NOT_CONNECTED"
    assert EXIT_CODES[33][0] == "ISCSI_ERR_REQ_TIMEDOUT"
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


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("[2001:DB8::1]:3260", "[2001:db8:0:0:0:0:0:1]:3260"),
        ("[2001:db8::1]", "[2001:0db8::0001]:3260"),
        ("Storage-A.example.net", "storage-a.example.net.:3260"),
        ("192.0.2.10", "192.0.2.10:3260,1"),
    ],
)
def test_portals_compare_canonically(a: str, b: str) -> None:
    assert Portal.parse(a) == Portal.parse(b)
    assert len({Portal.parse(a), Portal.parse(b)}) == 1


def test_portal_keeps_its_spelling_for_iscsiadm() -> None:
    portal = Portal.parse("[2001:DB8:0::1]:3261")
    assert str(portal) == "[2001:db8::1]:3261"
    assert portal.arg == "[2001:DB8:0::1]:3261"
    assert Portal.parse("192.0.2.10").arg == "192.0.2.10:3260"
    assert Portal.parse("storage.example.net").arg == "storage.example.net:3260"
    # iscsiadm brackets every address without a dot, host names included.
    assert Portal.parse("storage:3260").arg == "[storage]:3260"


def test_ipv4_mapped_portal_is_refused_with_the_fix() -> None:
    with pytest.raises(IscsiError) as err:
        Portal.parse("[::ffff:192.0.2.10]:3260", param="portal")
    assert err.value.msg.startswith("portal: iscsiadm cannot take the IPv6 address '::ffff:192.0.2.10'")
    assert "use the IPv4 address 192.0.2.10" in err.value.msg


@pytest.mark.parametrize(
    ("printed", "host", "literal", "port"),
    [
        ("192.0.2.10:3260", "192.0.2.10", "192.0.2.10", 3260),
        ("[2001:DB8::1]:3260", "2001:db8::1", "2001:DB8::1", 3260),
        # The kernel's current address of an IPv6 session: uncompressed.
        ("[2001:0db8:0000:0000:0000:0000:0000:0001]:3260", "2001:db8::1", "2001:0db8:0000:0000:0000:0000:0000:0001",
         3260),
        # A host name without a dot is printed in brackets.
        ("[storage]:3260", "storage", "storage", 3260),
        # An IPv4-mapped address has dots, so it is printed without brackets.
        ("::ffff:192.0.2.10:3260", "::ffff:c000:20a", "::ffff:192.0.2.10", 3260),
    ],
)
def test_parse_printed_portals(printed: str, host: str, literal: str, port: int) -> None:
    portal = Portal.parse_printed(printed)
    assert (portal.host, portal.literal, portal.port) == (host, literal, port)


def test_odd_node_lines_are_kept_or_skipped_not_fatal() -> None:
    text = (
        "[storage]:3260,1 iqn.2026-11.org.openvolume.lab:odd-host\n"
        "::ffff:198.18.0.1:3260,1 iqn.2026-11.org.openvolume.lab:odd-mapped\n"
        ":3260,-1 iqn.2026-11.org.openvolume.lab:odd-empty\n"
        "198.18.0.1:3260,1 iqn.2026-11.org.openvolume.lab:plain\n"
    )
    skipped: list[str] = []
    nodes = parse_node_list(text, skipped)
    assert [n.target.rsplit(":", 1)[1] for n in nodes] == ["odd-host", "odd-mapped", "plain"]
    assert skipped == [":3260,-1 iqn.2026-11.org.openvolume.lab:odd-empty"]


class FakeModule:
    """Just enough of AnsibleModule for the command wrapper: scripted exit codes."""

    def __init__(self, rcs: list[int]) -> None:
        self.rcs = rcs
        self.calls: list[list[str]] = []
        self.warnings: list[str] = []

    def get_bin_path(self, name: str, required: bool = False) -> str:
        return f"/usr/sbin/{name}"

    def run_command(self, cmd: list[str], **_kw: object) -> tuple[int, str, str]:
        self.calls.append(cmd)
        rc = self.rcs.pop(0)
        return rc, "", "iscsiadm: Could not make dir /etc/iscsi/nodes/x: File exists\n" if rc else ""

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)


def test_exit_6_on_a_node_database_command_is_retried() -> None:
    module = FakeModule([6, 6, 0])
    sleeps: list[float] = []
    iscsiadm = Iscsiadm(module, sleep=sleeps.append)
    iscsiadm.node_new(target="iqn.2026-11.org.openvolume.lab:plain", portal=Portal.parse("198.18.0.1"), iface="default")
    assert len(module.calls) == 3
    assert sleeps == [0.25, 0.5]
    assert len(module.warnings) == 1 and "went through at try 3" in module.warnings[0]
    assert module.calls[0][1:] == ["-m", "node", "-T", "iqn.2026-11.org.openvolume.lab:plain", "-p", "198.18.0.1:3260",
                                   "-I", "default", "-o", "new"]


def test_exit_6_that_persists_fails_clearly() -> None:
    module = FakeModule([6] * 5)
    iscsiadm = Iscsiadm(module, sleep=lambda _s: None)
    with pytest.raises(IscsiadmError) as err:
        iscsiadm.node_new(target="iqn.2026-11.org.openvolume.lab:plain", portal=Portal.parse("198.18.0.1"),
                          iface="default")
    assert err.value.rc == 6
    assert "ISCSI_ERR_IDBM" in err.value.msg and "tried 5 times" in err.value.msg
    assert len(module.calls) == 5


def test_exit_6_of_a_login_is_not_retried() -> None:
    module = FakeModule([6])
    with pytest.raises(IscsiadmError):
        Iscsiadm(module, sleep=lambda _s: None).login(
            target="iqn.2026-11.org.openvolume.lab:plain", portal=Portal.parse("198.18.0.1"), iface="default")
    assert len(module.calls) == 1


def test_exit_33_has_its_meaning() -> None:
    assert explain(33).startswith("iscsiadm exit 33 (ISCSI_ERR_REQ_TIMEDOUT): iscsid did not answer")


def test_a_logout_of_a_session_that_just_left_is_no_error(tmp_path: object) -> None:
    # -m session -r SID of a session another tool logged out a moment ago: exit 22 (sysfs lookup).
    module = FakeModule([22])
    assert Iscsiadm(module, sysfs_root=str(tmp_path)).logout_session(sid=9, what="t") is False
    # While the session is still there, exit 22 is a real failure.
    os.makedirs(f"{tmp_path}/class/iscsi_session/session9")
    with pytest.raises(IscsiadmError) as err:
        Iscsiadm(FakeModule([22]), sysfs_root=str(tmp_path)).logout_session(sid=9, what="t")
    assert err.value.rc == 22 and "ISCSI_ERR_SYSFS_LOOKUP" in err.value.msg
