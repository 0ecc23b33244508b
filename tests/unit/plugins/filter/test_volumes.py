from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.openvolume.compute.plugins.filter.volumes import chap_auth, connection_info

ENTRY = {
    "target_iqn": "iqn.2026-11.org.openvolume.lab:vol-01",
    "target_portals": ["127.0.0.1", "127.0.0.1:3261"],
    "target_lun": 1,
    "auth_username": "u",
    "auth_password": "p",
}


def test_connection_info_is_cinder_shaped() -> None:
    conn = connection_info(ENTRY, "vol-01")
    assert conn["driver_volume_type"] == "iscsi"
    assert conn["data"] == {
        "volume_id": "vol-01",
        "target_iqn": "iqn.2026-11.org.openvolume.lab:vol-01",
        "target_portal": "127.0.0.1:3260",
        "target_portals": ["127.0.0.1:3260", "127.0.0.1:3261"],
        "target_iqns": ["iqn.2026-11.org.openvolume.lab:vol-01"] * 2,
        "target_lun": 1,
        "target_luns": [1, 1],
        "access_mode": "rw",
        "multiattach": False,
        "auth_method": "CHAP",
        "auth_username": "u",
        "auth_password": "p",
    }
    assert chap_auth(conn) == {"method": "CHAP", "username": "u", "password": "p"}


def test_no_chap() -> None:
    conn = connection_info({"target_iqn": ENTRY["target_iqn"], "target_portal": "[::1]"}, "v")
    assert conn["data"]["auth_method"] is None
    assert conn["data"]["target_portal"] == "[::1]:3260"
    assert chap_auth(conn) is None


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"target_iqn": "bad", "target_portal": "127.0.0.1"}, "volume v: target_iqn: 'bad' is not an iSCSI name"),
        ({"target_iqn": ENTRY["target_iqn"]}, "volume v: target_portals: at least one portal"),
        ({"target_iqn": ENTRY["target_iqn"], "target_portals": ["::1"]}, "volume v: target_portals[0]: '::1'"),
        ({"target_iqn": ENTRY["target_iqn"], "target_portal": "h", "access_mode": "rx"}, "access_mode must be"),
    ],
)
def test_errors_name_the_volume_and_field(entry: dict, message: str) -> None:
    with pytest.raises(AnsibleFilterError) as err:
        connection_info(entry, "v")
    assert message in str(err.value)


# --- the plans of the attach and detach roles -------------------------------------------
from ansible_collections.openvolume.compute.plugins.filter.volumes import (  # noqa: E402
    attach_plan,
    detach_plan,
    disk_specs,
    in_use_entries,
    reservation_entries,
    session_devices,
    undo_disk_specs,
)

CATALOGUE = {
    "vol-01": dict(ENTRY, attach_mode="qemu", bus="scsi"),
    "vol-02": {"target_iqn": "iqn.2026-11.org.openvolume.lab:vol-02", "target_portals": ["127.0.0.1", "127.0.0.1:3261"],
               "multipath": True, "multiattach": True},
}


def test_attach_plan_items_and_no_secrets() -> None:
    plan = attach_plan([{"volume": "vol-01", "instance": "d1"}, {"volume": "vol-02", "instance": "d1",
                        "target_dev": "vdc"}], CATALOGUE, [], "h1")
    qemu, host = plan
    assert qemu["mode"] == "qemu" and qemu["bus"] == "scsi" and qemu["secret_usage"] == "openvolume/vol-01"
    assert qemu["qemu_source"] == {
        "type": "network", "protocol": "iscsi", "name": "iqn.2026-11.org.openvolume.lab:vol-01/1",
        "hosts": [{"name": "127.0.0.1", "port": 3260}],
        "auth": {"username": "u", "secret_usage": "openvolume/vol-01"},
    }
    assert "auth_password" not in str(plan)
    assert host["mode"] == "host" and host["multipath"] and host["portals"] == ["127.0.0.1:3260", "127.0.0.1:3261"]
    assert host["target_dev"] == "vdc" and host["multiattach"] and not host["attached"]


def test_attach_plan_skips_what_is_in_use_and_refuses_another_host() -> None:
    records = [{"volume_id": "vol-01", "attachments": [{"instance": "d1", "host": "h1", "status": "in-use"}]}]
    assert attach_plan([], CATALOGUE, records, "h1", one_volume="vol-01", one_instance="d1")[0]["attached"]
    with pytest.raises(AnsibleFilterError, match="in use by d1 on h1, not h2"):
        attach_plan([], CATALOGUE, records, "h2", one_volume="vol-01", one_instance="d1")


@pytest.mark.parametrize(
    ("requests", "kwargs", "message"),
    [
        ([{"volume": "vol-99", "instance": "d1"}], {}, "vol-99 is not in the volume catalogue"),
        ([{"volume": "vol-01"}], {}, r"attachments\[0\] needs volume and instance"),
        ([], {"one_volume": "vol-01"}, "give both volume and instance"),
        ([{"volume": "vol-01", "instance": "d1"}] * 2, {}, "requested twice"),
        ([{"volume": "vol-01", "instance": "d1", "mode": "nbd"}], {}, "attach_mode must be host or qemu"),
    ],
)
def test_attach_plan_errors(requests: list, kwargs: dict, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        attach_plan(requests, CATALOGUE, [], "h1", **kwargs)


def test_reservation_and_disk_entries() -> None:
    plan = attach_plan([{"volume": "vol-01", "instance": "d1"}], CATALOGUE, [], "h1")
    assert reservation_entries(plan, "attaching") == [
        {"volume_id": "vol-01", "state": "present", "multiattach": False},
        {"volume_id": "vol-01", "state": "attaching", "instance": "d1", "host": "h1", "mode": "rw"},
    ]
    assert reservation_entries(plan, "available") == [{"volume_id": "vol-01", "state": "available", "instance": "d1"}]
    spec = disk_specs(plan)[0]
    assert spec["source"]["protocol"] == "iscsi" and spec["bus"] == "scsi" and spec["serial"] == "vol-01"
    assert disk_specs(plan, state="absent") == [{"domain": "d1", "serial": "vol-01", "state": "absent"}]


def test_host_mode_devices_from_sessions_and_in_use() -> None:
    plan = attach_plan([{"volume": "vol-02", "instance": "d1"}], CATALOGUE, [], "h1")
    sessions = {"results": [{"item": plan[0], "by_path": "/dev/disk/by-path/x", "multipath_device": "/dev/mapper/m"}]}
    assert session_devices(sessions) == {"vol-02": "/dev/mapper/m"}
    assert disk_specs(plan, sessions)[0]["source"] == {"type": "block", "path": "/dev/mapper/m"}
    # check mode: no device yet, the by-path name it will have
    assert session_devices({"results": [{"item": plan[0]}]})["vol-02"].startswith("/dev/disk/by-path/ip-127.0.0.1:3260")
    with pytest.raises(AnsibleFilterError, match="no device for volume vol-02"):
        disk_specs(plan, {"results": []})
    entry = in_use_entries(plan, CATALOGUE, [{"target_dev": "sdb"}], {"vol-02": "/dev/mapper/m"})[0]
    assert entry["mountpoint"] == "/dev/sdb" and entry["state"] == "in-use"
    assert entry["connection_info"]["openvolume"]["device_path"] == "/dev/mapper/m"
    assert entry["connection_info"]["openvolume"]["attach_mode"] == "host"


def test_detach_plan_uses_the_stored_connection_info() -> None:
    conn = {"driver_volume_type": "iscsi", "data": {"target_iqn": "iqn.2026-11.org.x:v"},
            "openvolume": {"attach_mode": "qemu", "secret_usage": "openvolume/v"}}
    records = [{"volume_id": "v", "attachments": [{"instance": "d1", "host": "h1", "status": "in-use",
                                                   "connection_info": conn}]}]
    item = detach_plan([], records, "h1", one_volume="v", one_instance="d1")[0]
    assert item["attached"] and item["mode"] == "qemu" and item["secret_usage"] == "openvolume/v"
    assert not detach_plan([], records, "h2", one_volume="v", one_instance="d1")[0]["attached"]
    assert not detach_plan([], [], "h1", one_volume="v", one_instance="d1")[0]["attached"]
    records[0]["attachments"][0]["connection_info"] = None
    with pytest.raises(AnsibleFilterError, match="has no connection_info"):
        detach_plan([], records, "h1", one_volume="v", one_instance="d1")


def test_undo_disk_specs_only_what_changed() -> None:
    result = {"disks": [{"domain": "d1", "serial": "a", "changed": True},
                        {"domain": "d1", "serial": "b", "changed": False}]}
    assert undo_disk_specs(result) == [{"domain": "d1", "serial": "a", "state": "absent"}]
    assert undo_disk_specs(None) == []


def test_failure_message_of_a_failed_loop_is_the_failed_items_messages() -> None:
    from ansible_collections.openvolume.compute.plugins.filter.volumes import failure_message

    loop = {"failed": True, "msg": "One or more items failed", "results": [
        {"failed": False, "msg": "fine"},
        {"failed": True, "msg": "login to iqn.x at p failed: iscsiadm exit 24"},
        {"skipped": True},
        {"failed": True, "msg": "second"},
    ]}
    assert failure_message(loop) == "login to iqn.x at p failed: iscsiadm exit 24; second"


def test_failure_message_of_a_plain_task_is_its_msg() -> None:
    from ansible_collections.openvolume.compute.plugins.filter.volumes import failure_message

    assert failure_message({"failed": True, "msg": "no domain named 'x'"}) == "no domain named 'x'"
    assert failure_message({"failed": True, "results": [{"failed": True}]}).startswith("{")
