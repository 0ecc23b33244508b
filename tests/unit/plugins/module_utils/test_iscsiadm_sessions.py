"""The session and node parsers over real iscsiadm output.

Captured in the compute-host VM lab (tests/vmlab): open-iscsi 2.1.8 on
Debian 12 (kernel 6.1) logged in to the lab's tgtd at 198.18.0.1:3260, two
sessions: the plain target with LUN 1 and 2, the chap target with LUN 1.
"""

from __future__ import annotations

import pathlib

from ansible_collections.openvolume.compute.plugins.module_utils._iscsiadm import (
    NodeEntry,
    Portal,
    SessionDetail,
    SessionEntry,
    parse_node_list,
    parse_session_detail,
    parse_session_list,
)

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "iscsiadm"
PREFIX = "iqn.2026-11.org.openvolume.lab"
PORTAL = Portal("198.18.0.1", 3260)


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_parse_session_detail_two_sessions_with_luns() -> None:
    sessions = parse_session_detail(fixture("session_p3.txt"))
    assert sessions == [
        SessionDetail(
            target=f"{PREFIX}:plain", portal=PORTAL, tpgt=1, iface="default", sid=2,
            connection_state="LOGGED IN", session_state="LOGGED_IN", host_number=2,
            disks={1: "sda", 2: "sdb"},
        ),
        SessionDetail(
            target=f"{PREFIX}:chap", portal=PORTAL, tpgt=1, iface="default", sid=3,
            connection_state="LOGGED IN", session_state="LOGGED_IN", host_number=3,
            disks={1: "sdc"},
        ),
    ]


def test_parse_session_detail_lun_without_disk_is_not_a_disk() -> None:
    # tgtd's LUN 0 is its controller (no "Attached scsi disk" line).
    sessions = parse_session_detail(fixture("session_p3.txt"))
    assert all(0 not in s.disks for s in sessions)


def test_parse_session_detail_masks_nothing_into_fields() -> None:
    # The CHAP block of -P 3 prints "password: ********"; no field takes it.
    text = fixture("session_p3.txt")
    assert "password: ********" in text
    for s in parse_session_detail(text):
        assert "*" not in repr(s)


def test_parse_session_detail_without_sessions() -> None:
    assert parse_session_detail("iscsiadm: No active sessions.\n") == []


def test_parse_session_list() -> None:
    assert parse_session_list(fixture("session_list.txt")) == [
        SessionEntry("tcp", 2, PORTAL, 1, f"{PREFIX}:plain"),
        SessionEntry("tcp", 3, PORTAL, 1, f"{PREFIX}:chap"),
    ]


def test_session_list_and_detail_agree() -> None:
    listed = {(s.sid, s.portal, s.target) for s in parse_session_list(fixture("session_list.txt"))}
    detailed = {(s.sid, s.portal, s.target) for s in parse_session_detail(fixture("session_p3.txt"))}
    assert listed == detailed


def test_parse_node_list_of_a_sendtargets_discovery() -> None:
    nodes = parse_node_list(fixture("discovery.txt"))
    names = [f"{PREFIX}:{n}" for n in ("plain", "chap", "mutual")] + [f"{PREFIX}:vol-{i:02d}" for i in range(1, 21)]
    assert nodes == [NodeEntry(PORTAL, 1, name) for name in names]
