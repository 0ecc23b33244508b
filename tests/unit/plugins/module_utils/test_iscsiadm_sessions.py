"""The session and node parsers over real iscsiadm output.

Captured in the compute-host VM lab (tests/vmlab): open-iscsi 2.1.8 on
Debian 12 (kernel 6.1) logged in to the lab's tgtd at 198.18.0.1:3260, two
sessions: the plain target with LUN 1 and 2, the chap target with LUN 1.
"""

from __future__ import annotations

import pathlib

from ansible_collections.openvolume.compute.plugins.module_utils._iscsiadm import (
    Iface,
    NodeEntry,
    Portal,
    SessionDetail,
    SessionEntry,
    parse_iface_list,
    parse_node_list,
    parse_node_tree,
    parse_session_detail,
    parse_session_list,
    persistent_portal,
)
from ansible_collections.openvolume.compute.plugins.module_utils._scsi_devices import (
    by_path_name,
    lun_numbers,
    normalize_wwid,
    udev_wwid,
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
            disks={1: "sda", 2: "sdb"}, persistent_portal=PORTAL, transport="tcp", netdev="default",
        ),
        SessionDetail(
            target=f"{PREFIX}:chap", portal=PORTAL, tpgt=1, iface="default", sid=3,
            connection_state="LOGGED IN", session_state="LOGGED_IN", host_number=3,
            disks={1: "sdc"}, persistent_portal=PORTAL, transport="tcp", netdev="default",
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


# Captured by tests/vmlab/capture-realworld.sh in a compute-host guest
# (open-iscsi 2.1.8, kernel 6.1, udev 252) against tgtd: rw-luns through an
# IPv6 portal recorded as [FD00:6F76:1:0::1]:3260 with LUNs 1, 300 and 16383;
# rw-ifaces through one portal by two ifaces, ov-a and ov-b; odd records.
RW = f"{PREFIX}:rw"
V6 = Portal.make("FD00:6F76:1:0::1", 3260)


def test_rw_two_sessions_to_one_portal_share_its_portal_lines() -> None:
    sessions = parse_session_detail(fixture("rw_session_p3.txt"))
    assert [(s.target, s.sid, s.iface, str(s.persistent_portal), s.netdev, s.transport) for s in sessions] == [
        (f"{RW}-luns", 5, "default", "[fd00:6f76:1::1]:3260", "default", "tcp"),
        (f"{RW}-ifaces", 6, "ov-a", "198.18.0.1:3260", "eth0", "tcp"),
        (f"{RW}-ifaces", 7, "ov-b", "198.18.0.1:3260", "eth0", "tcp"),
    ]
    # iscsiadm printed no portal lines for the second one: it takes them over.
    assert sessions[2].portal == sessions[1].portal == PORTAL
    assert [s.disks for s in sessions] == [{1: "sda", 16684: "sdb", 32767: "sdc"}, {1: "sdd"}, {1: "sde"}]
    assert [s.host_number for s in sessions] == [2, 3, 4]


def test_rw_ipv6_current_portal_is_uncompressed_persistent_is_the_records_spelling() -> None:
    luns = parse_session_detail(fixture("rw_session_p3.txt"))[0]
    assert luns.portal is not None and luns.persistent_portal is not None
    assert luns.portal.literal == "fd00:6f76:0001:0000:0000:0000:0000:0001"
    assert luns.persistent_portal.literal == "FD00:6F76:1:0::1"
    # Both are one portal, and the one asked for in any spelling.
    assert luns.portal == luns.persistent_portal == V6 == Portal.parse("[fd00:6f76:1::1]:3260")


def test_rw_session_list_agrees_with_detail() -> None:
    listed = parse_session_list(fixture("rw_session_list.txt"))
    assert [(s.sid, s.portal, s.target) for s in listed] == [
        (5, V6, f"{RW}-luns"), (6, PORTAL, f"{RW}-ifaces"), (7, PORTAL, f"{RW}-ifaces"),
    ]
    assert listed[0].portal.literal == "FD00:6F76:1:0::1"


def test_rw_node_list_keeps_odd_lines_and_skips_the_empty_record() -> None:
    skipped: list[str] = []
    nodes = parse_node_list(fixture("rw_node_list.txt"), skipped)
    assert [(n.target.rsplit(":", 1)[1], n.portal.literal, n.tpgt) for n in nodes] == [
        ("odd-host", "storage", -1),
        ("odd-mapped", "::ffff:198.18.0.1", -1),
        ("rw-ifaces", "198.18.0.1", 1),
        ("rw-ifaces", "198.18.0.1", 1),
        ("rw-luns", "FD00:6F76:1:0::1", -1),
    ]
    assert skipped == ["[]:3260,4294967295"]


def test_rw_node_tree_gives_each_record_its_iface() -> None:
    skipped: list[str] = []
    nodes = parse_node_tree(fixture("rw_node_tree.txt"), skipped)
    assert [(n.target.rsplit(":", 1)[1], str(n.portal), n.tpgt, n.iface) for n in nodes] == [
        ("odd-host", "storage:3260", -1, "default"),
        ("odd-mapped", "[::ffff:c612:1]:3260", -1, "default"),
        ("rw-ifaces", "198.18.0.1:3260", 1, "ov-a"),
        ("rw-ifaces", "198.18.0.1:3260", 1, "ov-b"),
        ("rw-luns", "[fd00:6f76:1::1]:3260", -1, "default"),
    ]
    # The empty record: its "Target: " and "Portal: []:3260,-1" lines.
    assert skipped == ["Target:"]


def test_rw_iface_list() -> None:
    assert parse_iface_list(fixture("rw_iface_list.txt")) == [
        Iface("ov-a", "tcp", netdev="eth0"),
        Iface("ov-b", "tcp", netdev="eth0"),
        Iface("default", "tcp"),
        Iface("iser", "iser"),
    ]


def test_rw_by_path_names_are_what_udev_made() -> None:
    # rw_sysfs_udev.txt: the sysfs persistent address, the kernel's LUN
    # numbers and the ID_PATH udev gave each disk.
    text = fixture("rw_sysfs_udev.txt")
    id_paths = [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ID_PATH=")]
    expected = [
        by_path_name(address="FD00:6F76:1:0::1", port=3260, target=f"{RW}-luns", kernel_lun=lun)
        for lun in (1, 16684, 32767)
    ] + [by_path_name(address="198.18.0.1", port=3260, target=f"{RW}-ifaces", kernel_lun=1)] * 2
    assert id_paths == expected
    wwids = [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ID_SERIAL=")]
    sysfs = [w.split("wwid=")[1] for w in text.splitlines() if " sd" in w and "wwid=" in w]
    assert [udev_wwid(w) for w in sysfs] == wwids
    assert lun_numbers(16684) >= {300} and lun_numbers(32767) >= {16383}


def test_rw_a_session_without_its_own_portal_lines_reads_its_record_from_sysfs(tmp_path: pathlib.Path) -> None:
    # iscsiadm leaves out a session's portal lines when its *current* address
    # is the one before; its record (persistent address) may be another
    # spelling or host name. The parser marks it, sysfs tells.
    sessions = parse_session_detail(fixture("rw_session_p3.txt"))
    assert [s.portals_inherited for s in sessions] == [False, False, True]
    conn = tmp_path / "class" / "iscsi_connection" / "connection7:0"
    conn.mkdir(parents=True)
    (conn / "persistent_address").write_text("san.example.com\n")
    (conn / "persistent_port").write_text("3260\n")
    assert persistent_portal(7, str(tmp_path)) == Portal.parse("san.example.com:3260")
    assert persistent_portal(6, str(tmp_path)) is None


def test_a_lun_iscsiadm_prints_negative_is_its_own_lun_not_the_one_before() -> None:
    # iscsiadm prints the kernel's LUN with %d: extended flat LUNs (2**31 and up) come out negative.
    text = "\n".join((
        "Target: iqn.2026-11.org.openvolume.lab:big (non-flash)",
        "\tCurrent Portal: 198.18.0.1:3260,1", "\tPersistent Portal: 198.18.0.1:3260,1",
        "\t\tIface Name: default", "\t\tSID: 3", "\t\tHost Number: 4\tState: running",
        "\t\tscsi4 Channel 00 Id 0 Lun: 1", "\t\t\tAttached scsi disk sdb\t\tState: running",
        "\t\tscsi4 Channel 00 Id 0 Lun: -2147429870", "\t\t\tAttached scsi disk sdc\t\tState: running",
        "\t\tscsi4 Channel 00 Id 0 Lun: what", "\t\t\tAttached scsi disk sdd\t\tState: running",
    ))
    skipped: list[str] = []
    session = parse_session_detail(text, skipped)[0]
    assert session.disks == {1: "sdb", 0x8000D212: "sdc"}
    assert skipped == ["scsi4 Channel 00 Id 0 Lun: what"]


def test_an_ipv6_zone_in_a_by_path_name_is_written_as_udev_writes_it() -> None:
    # udev replaces what is no letter, digit or #+-.:=@_ in a link name with _.
    assert by_path_name(address="fe80::5054:ff:fe12:3456%ens3", port=3260, target=f"{PREFIX}:plain",
                        kernel_lun=1) == f"ip-fe80::5054:ff:fe12:3456_ens3:3260-iscsi-{PREFIX}:plain-lun-1"


def test_a_t10_wwid_is_written_as_multipath_writes_it() -> None:
    # The kernel keeps the T10 id's padding; udev's ID_SERIAL (multipath's WWID) has one _ per run of blanks.
    assert udev_wwid("t10.IET     VIRTUAL-DISK    00010001") == "1IET_VIRTUAL-DISK_00010001"
    assert normalize_wwid("1IET_VIRTUAL-DISK_00010001", param="wwn") == "1IET_VIRTUAL-DISK_00010001"
    assert normalize_wwid("t10.IET     VIRTUAL-DISK    00010001", param="wwn") == "1IET_VIRTUAL-DISK_00010001"
    assert udev_wwid("naa.6001405ABCDEF") == "36001405abcdef"
