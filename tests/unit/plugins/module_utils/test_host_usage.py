"""Who uses what on a host: the refcount and reconcile decisions (pure, over realistic probe results)."""

from __future__ import annotations

import typing as t

import pytest

from ansible_collections.openvolume.compute.plugins.module_utils._host_usage import (
    HostTruth,
    parse_by_path,
    reconcile,
    release,
)

IQN = "iqn.2026-11.org.openvolume.lab:vol-07"


def conn(vol: str, mode: str, lun: int = 1, target: str = IQN) -> dict[str, t.Any]:
    return {"driver_volume_type": "iscsi",
            "data": {"target_iqn": target, "target_portal": "198.18.0.1:3260", "target_lun": lun},
            "openvolume": {"attach_mode": mode, "secret_usage": f"openvolume/{vol}" if mode == "qemu" else None}}


def record(vol: str, *atts: dict[str, t.Any]) -> dict[str, t.Any]:
    return {"volume_id": vol, "attachments": list(atts)}


def att(instance: str, host: str, status: str = "in-use", lapsed: bool = False, **ci: t.Any) -> dict[str, t.Any]:
    return {"instance": instance, "host": host, "status": status, "lapsed": lapsed, "connection_info": ci.get("ci")}


def disk(serial: str, views: list[str], source: dict[str, t.Any], block: dict[str, t.Any] | None = None,
         target: str = "sdb") -> dict[str, t.Any]:
    return {"serial": serial, "target_dev": target, "views": views, "source": source, "block_device": block}


def dom(name: str, *disks: dict[str, t.Any], active: bool = True, persistent: bool = True) -> dict[str, t.Any]:
    return {"name": name, "uuid": f"uuid-{name}", "active": active, "persistent": persistent, "disks": list(disks)}


QEMU_SRC = {"type": "network", "protocol": "iscsi", "name": f"{IQN}/1",
            "auth": {"username": "u", "secret_usage": "openvolume/vol-07"}}
BY_PATH = f"/dev/disk/by-path/ip-198.18.0.1:3260-iscsi-{IQN}-lun-1"
HOST_SRC = {"type": "block", "path": BY_PATH}
SESSION = {"target": IQN, "portal": "198.18.0.1:3260", "iface": "default", "sid": 1,
           "luns": [{"lun": 1, "device": "sdb"}]}


def item(vol: str, inst: str, mode: str) -> dict[str, t.Any]:
    return {"volume_id": vol, "instance": inst, "mode": mode, "target": IQN, "lun": 1,
            "secret_usage": f"openvolume/{vol}" if mode == "qemu" else None}


def test_qemu_secret_stays_while_another_domain_on_the_host_uses_it() -> None:
    records = [record("vol-07", att("vm1", "h1", ci=conn("vol-07", "qemu")),
                      att("vm2", "h1", ci=conn("vol-07", "qemu")))]
    truth = {"domains": [dom("vm1", disk("vol-07", ["live", "config"], QEMU_SRC)),
                         dom("vm2", disk("vol-07", ["live", "config"], QEMU_SRC))], "secrets": []}
    (decision,) = release([item("vol-07", "vm1", "qemu")], records, "h1", truth)
    assert decision["remove_secret"] is None
    assert decision["kept"] == [
        "secret openvolume/vol-07 stays: used by vm2 (vol-07, in-use), domain vm2 (disk vol-07)"]
    # The last one takes it.
    (last,) = release([item("vol-07", "vm2", "qemu")], [record("vol-07", att("vm2", "h1", ci=conn("vol-07", "qemu")))],
                      "h1", {"domains": [dom("vm2", disk("vol-07", ["live"], QEMU_SRC))]})
    assert last["remove_secret"] == "openvolume/vol-07"


def test_another_host_does_not_count() -> None:
    records = [record("vol-07", att("vm1", "h1", ci=conn("vol-07", "qemu")),
                      att("vm9", "h9", ci=conn("vol-07", "qemu")))]
    (decision,) = release([item("vol-07", "vm1", "qemu")], records, "h1", {"domains": []})
    assert decision["remove_secret"] == "openvolume/vol-07"


def test_an_attach_in_flight_on_the_host_keeps_the_lun() -> None:
    # vm2's attach holds a session but has no disk yet: only the store knows.
    records = [record("vol-07", att("vm1", "h1", ci=conn("vol-07", "host")),
                      att("vm2", "h1", status="attaching", ci=conn("vol-07", "host")))]
    truth = {"domains": [dom("vm1", disk("vol-07", ["live", "config"], HOST_SRC, {"name": "sdb", "slaves": []}))],
             "iscsi": {"sessions": [SESSION]}}
    (decision,) = release([item("vol-07", "vm1", "host")], records, "h1", truth)
    assert not decision["disconnect"] and not decision["remove_node_records"]
    assert "LUN 1 of iqn.2026-11.org.openvolume.lab:vol-07 stays connected: used by vm2 (vol-07, attaching)" in \
        decision["kept"]


def test_an_unrecorded_disk_on_the_lun_keeps_it_multipath_included() -> None:
    # A domain the store knows nothing about sits on the multipath map over sdb: the LUN stays.
    records = [record("vol-07", att("vm1", "h1", ci=conn("vol-07", "host")))]
    truth = {"domains": [
        dom("vm1", disk("vol-07", ["live"], {"type": "block", "path": "/dev/mapper/mpatha"},
                        {"name": "dm-0", "slaves": ["sdb"]})),
        dom("other", disk("x", ["live"], {"type": "block", "path": "/dev/mapper/mpatha"},
                          {"name": "dm-0", "slaves": ["sdb", "sdc"]})),
    ], "iscsi": {"sessions": [SESSION]}}
    (decision,) = release([item("vol-07", "vm1", "host")], records, "h1", truth)
    assert not decision["disconnect"]
    assert "domain other (disk x)" in decision["kept"][0]


def test_two_attachments_going_together_release_once() -> None:
    records = [record("vol-07", att("vm1", "h1", ci=conn("vol-07", "host")),
                      att("vm2", "h1", ci=conn("vol-07", "host")))]
    first, second = release([item("vol-07", "vm1", "host"), item("vol-07", "vm2", "host")], records, "h1", {})
    assert (first["disconnect"], first["remove_node_records"]) == (True, True)
    assert (second["disconnect"], second["remove_node_records"]) == (False, False)


def test_other_lun_of_the_target_keeps_the_records_not_the_lun() -> None:
    records = [record("vol-07", att("vm1", "h1", ci=conn("vol-07", "host", lun=1))),
               record("vol-08", att("vm2", "h1", ci=conn("vol-08", "host", lun=2)))]
    (decision,) = release([item("vol-07", "vm1", "host")], records, "h1", {})
    assert decision["disconnect"] and not decision["remove_node_records"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (BY_PATH, (IQN, 1)),
        # path_id for LUN 256 with flat addressing (kernel LUN 0x4100 = 16640).
        (f"/dev/disk/by-path/ip-198.18.0.1:3260-iscsi-{IQN}-lun-0x4100000000000000", (IQN, 16640)),
        # An offload HBA: udev puts the PCI path first.
        (f"/dev/disk/by-path/pci-0000:05:00.2-ip-198.18.0.1:3260-iscsi-{IQN}-lun-3", (IQN, 3)),
        # IPv6: no brackets in udev's name.
        (f"/dev/disk/by-path/ip-2001:db8::1:3260-iscsi-{IQN}-lun-1", (IQN, 1)),
        ("/dev/mapper/mpatha", None),
    ],
)
def test_parse_by_path(name: str, expected: t.Any) -> None:
    assert parse_by_path(name) == expected


def test_missing_views() -> None:
    truth = HostTruth({"domains": [dom("vm1", disk("vol-07", ["config"], QEMU_SRC)),
                                   dom("off", disk("vol-07", ["config"], QEMU_SRC), active=False)]})
    assert truth.missing_views("vm1", "vol-07") == ["live"]
    assert truth.missing_views("off", "vol-07") == []
    assert truth.missing_views("gone", "vol-07") is None


def test_reconcile_decisions() -> None:
    records = [
        record("vol-01", att("vm1", "h1", ci=conn("vol-01", "qemu"))),                      # fine
        record("vol-02", att("vm1", "h1", ci=conn("vol-02", "qemu"))),                      # lost its live side
        record("vol-03", att("gone", "h1", ci=conn("vol-03", "qemu"))),                     # domain deleted
        record("vol-04", att("vm1", "h1", "attaching", lapsed=True, ci=conn("vol-04", "qemu"))),  # disk there
        record("vol-05", att("vm1", "h1", "attaching", lapsed=True, ci=conn("vol-05", "qemu"))),  # no disk
        record("vol-06", att("vm1", "h1", "attaching", lapsed=False, ci=conn("vol-06", "qemu"))),  # a live run
        record("vol-09", att("vm9", "h9", ci=conn("vol-09", "qemu"))),                      # another host
    ]
    src = dict(QEMU_SRC)
    truth = {
        "domains": [dom("vm1",
                        disk("vol-01", ["live", "config"], src, target="sda"),
                        disk("vol-02", ["config"], src, target="sdb"),
                        disk("vol-04", ["live", "config"], src, target="sdc"),
                        disk("vol-10", ["live"], src, target="sdd"))],   # a catalogue volume, not recorded
        "secrets": [{"usage": "openvolume/vol-01", "usage_type": "iscsi"},
                    {"usage": "openvolume/vol-99", "usage_type": "iscsi"},   # orphan
                    {"usage": "openvolume/vol-03", "usage_type": "iscsi"}],  # the deleted domain's: detach removes it
        "iscsi": {"sessions": [{"target": "iqn.2026-11.org.openvolume.lab:vol-12", "portal": "198.18.0.1:3260",
                                "luns": [{"lun": 1, "device": "sdx"}]},
                               {"target": "iqn.1992-01.com.example:theirs", "portal": "10.0.0.1:3260",
                                "luns": [{"lun": 1, "device": "sdy"}]}],
                  "nodes": [{"target": "iqn.2026-11.org.openvolume.lab:vol-13", "portal": "198.18.0.1:3260"},
                            {"target": "iqn.1992-01.com.example:theirs", "portal": "10.0.0.1:3260"}]},
    }
    out = reconcile(records, "h1", truth,
                    our_targets=[f"iqn.2026-11.org.openvolume.lab:vol-{n:02d}" for n in range(1, 21)],
                    known_volumes=[f"vol-{n:02d}" for n in range(1, 21)])
    actions = {(r["volume"], r["instance"]): r["action"] for r in out["rows"]}
    assert ("vol-01", "vm1") not in actions
    assert actions[("vol-02", "vm1")] == "re-add the live disk"
    assert actions[("vol-03", "gone")].startswith("free: the domain is gone")
    assert actions[("vol-04", "vm1")].startswith("complete: in-use")
    assert actions[("vol-05", "vm1")].startswith("release: available")
    assert actions[("vol-06", "vm1")].startswith("none: run")
    assert actions[("vol-10", "vm1")].startswith("none: not recorded")
    assert ("vol-09", "vm9") not in actions
    assert out["attach"] == [{"volume": "vol-02", "instance": "vm1"}, {"volume": "vol-04", "instance": "vm1"}]
    assert out["detach"] == [{"volume": "vol-03", "instance": "gone"}, {"volume": "vol-05", "instance": "vm1"}]
    assert out["secrets"] == [{"usage_type": "iscsi", "usage": "openvolume/vol-99", "state": "absent"}]
    assert out["luns"] == [{"target": "iqn.2026-11.org.openvolume.lab:vol-12", "portal": "198.18.0.1:3260", "lun": 1,
                            "iface": "default"}]
    assert out["nodes"] == [{"target": "iqn.2026-11.org.openvolume.lab:vol-13", "portal": "198.18.0.1:3260",
                             "iface": "default"}]


def test_reconcile_of_a_consistent_host_is_empty() -> None:
    records = [record("vol-01", att("vm1", "h1", ci=conn("vol-01", "qemu")))]
    truth = {"domains": [dom("vm1", disk("vol-01", ["live", "config"], QEMU_SRC))],
             "secrets": [{"usage": "openvolume/vol-01", "usage_type": "iscsi"}]}
    out = reconcile(records, "h1", truth)
    assert out == {"rows": [], "attach": [], "detach": [], "secrets": [], "luns": [], "nodes": []}


def test_luns_from_256_match_the_catalogue_number() -> None:
    # tgtd's LUN 300 is the kernel's 16684 (flat space addressing), by-path lun-0x412c000000000000.
    records = [record("vol-07", att("vm1", "h1", ci=conn("vol-07", "host", lun=300))),
               record("vol-07", att("vm2", "h1", ci=conn("vol-07", "host", lun=300)))]
    path = f"/dev/disk/by-path/ip-198.18.0.1:3260-iscsi-{IQN}-lun-0x412c000000000000"
    session = dict(SESSION, luns=[{"lun": 16684, "device": "sdc"}])
    truth = {"domains": [dom("vm2", disk("vol-07", ["live"], {"type": "block", "path": path},
                                         {"name": "sdc", "slaves": []}))],
             "iscsi": {"sessions": [session]}}
    item300 = dict(item("vol-07", "vm1", "host"), lun=300)
    (decision,) = release([item300], records[:1], "h1", truth)
    assert not decision["disconnect"] and "domain vm2 (disk vol-07)" in decision["kept"][0]
    out = reconcile(records[1:], "h1", dict(truth, domains=[]), our_targets=[IQN])
    # Recorded (in-use, its domain gone) and its LUN 300 is used by the record: not an orphan.
    assert out["luns"] == []


def test_a_lost_secret_is_drift() -> None:
    records = [record("vol-01", att("vm1", "h1", ci=conn("vol-01", "qemu")))]
    truth = {"domains": [dom("vm1", disk("vol-01", ["live", "config"], QEMU_SRC))], "secrets": []}
    out = reconcile(records, "h1", truth)
    assert [r["action"] for r in out["rows"]] == ["re-create the secret"]
    assert out["attach"] == [{"volume": "vol-01", "instance": "vm1"}]


LUKS_SRC = dict(QEMU_SRC, encryption={"format": "luks", "secret_usage": "openvolume/vol-07/luks"})


def luks_conn(vol: str) -> dict[str, t.Any]:
    out = conn(vol, "qemu")
    out["openvolume"]["luks_secret_usage"] = f"openvolume/{vol}/luks"
    return out


def test_the_passphrase_secret_stays_while_another_domain_uses_it() -> None:
    records = [record("vol-07", att("vm1", "h1", ci=luks_conn("vol-07")), att("vm2", "h1", ci=luks_conn("vol-07")))]
    truth = {"domains": [dom("vm1", disk("vol-07", ["live", "config"], LUKS_SRC)),
                         dom("vm2", disk("vol-07", ["live", "config"], LUKS_SRC))], "secrets": []}
    going = dict(item("vol-07", "vm1", "qemu"), luks_secret_usage="openvolume/vol-07/luks")
    (decision,) = release([going], records, "h1", truth)
    assert decision["remove_secret"] is None and decision["remove_luks_secret"] is None
    assert any("secret openvolume/vol-07/luks stays" in k for k in decision["kept"])
    # The last one goes: both secrets go with it.
    (decision,) = release([going], records[:0], "h1", {"domains": [dom("vm1")], "secrets": []})
    assert decision["remove_luks_secret"] == "openvolume/vol-07/luks"


def test_an_unrecorded_encrypted_disk_keeps_its_passphrase_secret() -> None:
    truth = {"domains": [dom("vm9", disk("vol-07", ["live"], LUKS_SRC))], "secrets": []}
    going = dict(item("vol-07", "vm1", "qemu"), luks_secret_usage="openvolume/vol-07/luks")
    (decision,) = release([going], [], "h1", truth)
    assert decision["remove_luks_secret"] is None


def test_reconcile_passphrase_secrets() -> None:
    secrets = [{"usage": "openvolume/vol-07", "usage_type": "iscsi"},
               {"usage": "openvolume/vol-07/luks", "usage_type": "volume"},
               {"usage": "openvolume/vol-08/luks", "usage_type": "volume"}]
    records = [record("vol-07", att("vm1", "h1", ci=luks_conn("vol-07")))]
    truth = {"domains": [dom("vm1", disk("vol-07", ["live", "config"], LUKS_SRC))], "secrets": secrets}
    out = reconcile(records, "h1", truth, volumes=None)
    # vol-08's passphrase secret is an orphan of volume vol-08; vol-07's are used.
    assert out["secrets"] == [{"usage_type": "volume", "usage": "openvolume/vol-08/luks", "state": "absent"}]
    assert [r["volume"] for r in out["rows"]] == ["vol-08"]
    # Lost: drift, re-created by the attach role.
    out = reconcile(records, "h1", dict(truth, secrets=secrets[:1]))
    assert [r["action"] for r in out["rows"]] == ["re-create the secret"]
    assert "no secret openvolume/vol-07/luks" in out["rows"][0]["host_has"]
