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
    conn = connection_info({"target_iqn": ENTRY["target_iqn"], "target_portal": "[::1]", "target_lun": 0}, "v")
    assert conn["data"]["auth_method"] is None
    assert conn["data"]["target_portal"] == "[::1]:3260"
    assert chap_auth(conn) is None


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"target_iqn": "bad", "target_portal": "127.0.0.1"}, "volume v: target_iqn: 'bad' is not an iSCSI name"),
        ({"target_iqn": ENTRY["target_iqn"]}, "volume v: target_portals: at least one portal"),
        ({"target_iqn": ENTRY["target_iqn"], "target_portals": ["::1"]}, "volume v: target_portals[0]: '::1'"),
        ({"target_iqn": ENTRY["target_iqn"], "target_portal": "h", "target_lun": 1, "access_mode": "rx"},
         "access_mode must be"),
        # Which LUN is the volume's is never guessed, nor a LUN number taken from something else.
        ({"target_iqn": ENTRY["target_iqn"], "target_portal": "h"}, "volume v: target_lun is needed"),
        ({**ENTRY, "target_lun": None}, "volume v: target_lun is needed"),
        ({**ENTRY, "target_lun": "abc"}, "volume v: target_lun must be a LUN number from 0 to 4294967295, got 'abc'"),
        ({**ENTRY, "target_lun": -1}, "target_lun must be a LUN number from 0 to 4294967295, got -1"),
        ({**ENTRY, "target_lun": 1.5}, "target_lun must be a LUN number"),
        ({**ENTRY, "target_lun": True}, "target_lun must be a LUN number"),
        ({**ENTRY, "target_lun": 2**32}, "target_lun must be a LUN number"),
        # A string is one portal written without its list, not a list of characters.
        ({**ENTRY, "target_portals": "127.0.0.1:3260"},
         "volume v: target_portals must be a list, got '127.0.0.1:3260'; write one item as ['127.0.0.1:3260']"),
        ({**ENTRY, "target_portals": {"127.0.0.1": 3260}}, "volume v: target_portals must be a list"),
        ({**ENTRY, "multiattach": "maybe"}, "volume v: multiattach must be true or false, got 'maybe'"),
        ({**ENTRY, "multiattach": 2}, "volume v: multiattach must be true or false, got 2"),
        ({"driver_volume_type": "rbd", "name": "volumes/v", "hosts": "10.0.0.1"},
         "volume v: hosts must be a list, got '10.0.0.1'"),
        ({"driver_volume_type": "rbd", "name": "volumes/v", "multiattach": "sometimes"},
         "volume v: multiattach must be true or false"),
        ({"target_iqn": ENTRY["target_iqn"], "target_portal": "h", "auth_username": "u"},
         "volume v: auth_password (the CHAP password of u) is needed with auth_username"),
        ({**ENTRY, "auth_username_in": "t"},
         "volume v: auth_password_in (the mutual CHAP password of t) is needed with auth_username_in"),
        ({"target_iqn": ENTRY["target_iqn"], "target_portal": "h", "auth_username_in": "t", "auth_password_in": "q"},
         "auth_username_in (mutual CHAP) needs auth_username and auth_password"),
    ],
)
def test_errors_name_the_volume_and_field(entry: dict, message: str) -> None:
    with pytest.raises(AnsibleFilterError) as err:
        connection_info(entry, "v")
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("no", False), ("false", False), ("False", False), ("0", False), ("off", False),
     (0, False), ("yes", True), ("true", True), ("1", True), (1, True), (None, False), ("", False), (" ", False),
     (" yes ", True)],
)
def test_flags_read_as_ansible_reads_booleans(value: object, expected: bool) -> None:
    # "no" from an ini lookup, -e or a survey is no: a non-empty string
    # taken for true would let a second writer on a single-writer volume.
    for entry in ({**ENTRY, "multiattach": value},
                  {"driver_volume_type": "rbd", "name": "volumes/v", "multiattach": value}):
        assert connection_info(entry, "v")["data"]["multiattach"] is expected


def test_lun_numbers_as_the_catalogue_may_write_them() -> None:
    assert connection_info({**ENTRY, "target_lun": 0}, "v")["data"]["target_lun"] == 0
    assert connection_info({**ENTRY, "target_lun": "256"}, "v")["data"]["target_luns"] == [256, 256]
    assert connection_info({**ENTRY, "target_lun": 2**32 - 1}, "v")["data"]["target_lun"] == 2**32 - 1


# --- the plans of the attach and detach roles -------------------------------------------
from ansible_collections.openvolume.compute.plugins.filter.volumes import (  # noqa: E402
    attach_plan,
    detach_plan,
    disk_specs,
    in_use_entries,
    reservation_entries,
    reserve_entries,
    session_devices,
)

CATALOGUE = {
    "vol-01": dict(ENTRY, attach_mode="qemu", bus="scsi"),
    "vol-02": {"target_iqn": "iqn.2026-11.org.openvolume.lab:vol-02", "target_portals": ["127.0.0.1", "127.0.0.1:3261"],
               "target_lun": 1, "multipath": True, "multiattach": True},
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
    item = attach_plan([], CATALOGUE, records, "h1", one_volume="vol-01", one_instance="d1")[0]
    assert item["attached"] and item["action"] == "none"
    with pytest.raises(AnsibleFilterError, match="is in-use by d1 on h1, not h2"):
        attach_plan([], CATALOGUE, records, "h2", one_volume="vol-01", one_instance="d1")


@pytest.mark.parametrize(
    ("requests", "kwargs", "message"),
    [
        ([{"volume": "vol-99", "instance": "d1"}], {}, "vol-99 is not in the volume catalogue"),
        ([{"volume": "vol-01"}], {}, r"attachments\[0\] needs volume and instance"),
        ([], {"one_volume": "vol-01"}, "give both volume and instance"),
        ([{"volume": "vol-01", "instance": "d1"}] * 2, {}, "requested twice"),
        ([{"volume": "vol-01", "instance": "d1", "mode": "nbd"}], {}, "attach_mode must be host or qemu"),
        ([{"volume": "vol-01", "instance": "d1", "bus": "ide"}], {},
         "volume vol-01: bus must be one of virtio, scsi, sata, got 'ide'"),
        ([{"volume": "vol-02", "instance": "d1", "multipath": "sure"}], {},
         "attachment vol-02 on d1: multipath must be true or false, got 'sure'"),
    ],
)
def test_attach_plan_errors(requests: list, kwargs: dict, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        attach_plan(requests, CATALOGUE, [], "h1", **kwargs)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"wwn": "not-a-wwn"}, "volume vol-02: wwn: 'not-a-wwn' is not a WWN"),
        ({"portal_group": "one"}, "volume vol-02: portal_group must be the target portal group tag, a number from 0 "
                                  "to 65535, got 'one'"),
        ({"portal_group": 70000}, "portal_group must be the target portal group tag"),
    ],
)
def test_attach_plan_checks_host_mode_keys_before_anything_is_reserved(change: dict, message: str) -> None:
    catalogue = {"vol-02": dict(CATALOGUE["vol-02"], **change)}
    with pytest.raises(AnsibleFilterError) as err:
        attach_plan([{"volume": "vol-02", "instance": "d1"}], catalogue, [], "h1")
    assert message in str(err.value)


def test_attach_plan_host_mode_keys_as_yaml_may_read_them() -> None:
    # A WWN of digits alone is a YAML number; a portal group tag a string of digits.
    catalogue = {"vol-02": dict(CATALOGUE["vol-02"], wwn=36001405123456789012345678901234, portal_group="2")}
    item = attach_plan([{"volume": "vol-02", "instance": "d1"}], catalogue, [], "h1")[0]
    assert item["wwn"] == "36001405123456789012345678901234" and item["portal_group"] == 2


def test_attach_plan_reads_multipath_as_a_boolean() -> None:
    # The request's over the catalogue's; "false" is false.
    requests = [{"volume": "vol-02", "instance": "d1", "multipath": "false"}]
    assert attach_plan(requests, CATALOGUE, [], "h1")[0]["multipath"] is False
    catalogue = dict(CATALOGUE, **{"vol-02": dict(CATALOGUE["vol-02"], multipath="no")})
    item = attach_plan([{"volume": "vol-02", "instance": "d1"}], catalogue, [], "h1")[0]
    assert item["multipath"] is False and item["portals"] == ["127.0.0.1:3260"]
    item = attach_plan([{"volume": "vol-02", "instance": "d1", "multipath": "yes"}], catalogue, [], "h1")[0]
    assert item["multipath"] is True and item["portals"] == ["127.0.0.1:3260", "127.0.0.1:3261"]
    # A request that leaves it empty (an unanswered survey question) takes the catalogue's.
    item = attach_plan([{"volume": "vol-02", "instance": "d1", "multipath": ""}], CATALOGUE, [], "h1")[0]
    assert item["multipath"] is True
    item = attach_plan([{"volume": "vol-02", "instance": "d1", "multipath": 0}], CATALOGUE, [], "h1")[0]
    assert item["multipath"] is False


def test_attach_plan_actions_from_the_host_truth() -> None:
    src = {"type": "network", "protocol": "iscsi", "name": "x/1"}
    records = [{"volume_id": v, "attachments": [{"instance": "d1", "host": "h1", "status": s, "lapsed": True}]}
               for v, s in (("vol-01", "in-use"), ("vol-02", "detaching"))]
    truth = {"domains": [{"name": "d1", "active": True, "persistent": True,
                          "disks": [{"serial": "vol-01", "views": ["live"], "source": src}]}]}
    reqs = [{"volume": "vol-01", "instance": "d1"}, {"volume": "vol-02", "instance": "d1"}]
    drifted, crashed = attach_plan(reqs, CATALOGUE, records, "h1", truth=truth)
    assert (drifted["action"], drifted["record_state"]) == ("repair", "in-use")
    # A detach a crashed run left: held again as detaching, then rolled back to in-use.
    assert (crashed["action"], crashed["reserve_state"], crashed["lapsed"]) == ("attach", "detaching", True)
    truth["domains"][0]["disks"][0]["views"] = ["live", "config"]
    assert attach_plan(reqs, CATALOGUE, records, "h1", truth=truth)[0]["action"] == "none"


def test_reserve_entries_store_the_connection_info() -> None:
    plan = attach_plan([{"volume": "vol-01", "instance": "d1"}], CATALOGUE, [], "h1")
    present, reserve = reserve_entries(plan, CATALOGUE)
    assert present == {"volume_id": "vol-01", "state": "present", "multiattach": False}
    assert reserve["state"] == "attaching" and reserve["host"] == "h1"
    assert reserve["connection_info"]["data"]["auth_password"] == "p"
    assert reserve["connection_info"]["openvolume"] == {
        "attach_mode": "qemu", "multipath": False, "secret_usage": "openvolume/vol-01", "serial": "vol-01",
        "target_dev": None, "device_path": None, "wwid": None, "ifaces": None, "secret_type": "iscsi"}


def test_secrets_are_read_in_one_place() -> None:
    from ansible_collections.openvolume.compute.plugins.filter.volumes import volume_secrets
    mutual = {**ENTRY, "auth_username_in": "t", "auth_password_in": "q", "encrypted": True, "passphrase": "s"}
    assert volume_secrets(mutual) == {
        "chap": {"auth_username": "u", "auth_password": "p", "auth_username_in": "t", "auth_password_in": "q"},
        "libvirt": "p", "passphrase": "s"}
    rbd = {"driver_volume_type": "rbd", "name": "volumes/v", "auth_username": "openvolume", "auth_key": "K",
           "passphrase": "not encrypted: not read"}
    assert volume_secrets(rbd) == {"chap": {}, "libvirt": "K", "passphrase": None}
    bare = {"target_iqn": ENTRY["target_iqn"]}
    assert volume_secrets(bare) == {"chap": {}, "libvirt": None, "passphrase": None}


def test_the_stored_connection_info_is_the_plans_with_the_chap_keys() -> None:
    # The plan's public connection_info, the CHAP keys put back: what
    # connection_info() of the catalogue entry gives, read only once.
    plan = attach_plan([{"volume": "vol-01", "instance": "d1"}], CATALOGUE, [], "h1")
    assert "auth_password" not in plan[0]["connection_info"]["data"]
    stored = reserve_entries(plan, CATALOGUE)[1]["connection_info"]
    assert stored["data"] == connection_info(CATALOGUE["vol-01"], "vol-01")["data"]
    assert stored["driver_volume_type"] == "iscsi"


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
    sessions = {"changed": True, "volumes": [{"volume_id": "vol-02", "by_path": "/dev/disk/by-path/x",
                                              "multipath_device": "/dev/mapper/m", "device_path": "/dev/mapper/m"}]}
    assert session_devices(sessions) == {"vol-02": "/dev/mapper/m"}
    assert disk_specs(plan, sessions)[0]["source"] == {"type": "block", "path": "/dev/mapper/m"}
    with pytest.raises(AnsibleFilterError, match="no device for volume vol-02"):
        disk_specs(plan, {"volumes": []})
    entry = in_use_entries(plan, CATALOGUE, [{"target_dev": "sdb"}], sessions)[0]
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


# --- rollback decisions of the roles -------------------------------------------------------
from ansible_collections.openvolume.compute.plugins.filter.volumes import (  # noqa: E402
    attach_undo,
    attach_unreserve_entries,
    detach_rollback_entries,
    host_release,
)


def test_attach_undo_only_what_this_run_changed_and_nobody_uses() -> None:
    plan = attach_plan([{"volume": "vol-02", "instance": "d2", "mode": "qemu"}], CATALOGUE, [], "h1")
    plan[0]["secret_usage"] = "openvolume/vol-02"
    results = {"disks": {"disks": [{"domain": "d2", "serial": "vol-02", "changed": True}]},
               "secrets": {"secrets": [{"usage": "openvolume/vol-02", "changed": True, "created": False}]}}
    undo = attach_undo(plan, [], "h1", results)
    assert undo["disks"] == [{"domain": "d2", "serial": "vol-02", "state": "absent"}]
    # The secret existed before this run (its value was only updated): it stays.
    assert undo["secrets"] == []
    results["secrets"]["secrets"][0]["created"] = True
    assert attach_undo(plan, [], "h1", results)["secrets"] == [
        {"usage_type": "iscsi", "usage": "openvolume/vol-02", "state": "absent"}]
    # Created by this run, but another domain on the host was attached meanwhile: it stays.
    other = [{"volume_id": "vol-02", "attachments": [{"instance": "d1", "host": "h1", "status": "in-use",
              "connection_info": {"data": {}, "openvolume": {"attach_mode": "qemu",
                                                             "secret_usage": "openvolume/vol-02"}}}]}]
    undo = attach_undo(plan, other, "h1", results)
    assert undo["secrets"] == [] and "used by d1" in undo["kept"][0]


def test_attach_unreserve_never_frees_a_volume_whose_disk_may_be_attached() -> None:
    plan = attach_plan([{"volume": "vol-01", "instance": "d1"}, {"volume": "vol-02", "instance": "d1"}],
                       CATALOGUE, [], "h1")
    reserved = {"volumes": [{"volume_id": "vol-01", "changed": True}, {"volume_id": "vol-02", "changed": True}]}
    assert [e["state"] for e in attach_unreserve_entries(plan, reserved, {}, False)] == ["available", "available"]
    # A host-side undo failed: nobody knows what is left.
    assert [e["state"] for e in attach_unreserve_entries(plan, reserved, {}, True)] == ["error_attaching"] * 2
    # The disk was there before this run (a crashed run's hot-plug it took over): error, not available.
    plan[1]["disk_present"] = True
    assert [e["state"] for e in attach_unreserve_entries(plan, reserved, {}, False)] == [
        "available", "error_attaching"]
    # Not held by this run (its reserve failed): not touched.
    assert attach_unreserve_entries(plan, {"failed": True, "msg": "x"}, {}, False) == []


def test_detach_rollback_entries() -> None:
    plan = [{"volume_id": "a", "instance": "d", "begin_state": "detaching"},
            {"volume_id": "b", "instance": "d", "begin_state": "attaching"}]
    assert [e["state"] for e in detach_rollback_entries(plan, False)] == ["in-use", "error_attaching"]
    assert [e["state"] for e in detach_rollback_entries(plan, True)] == ["error_detaching", "error_attaching"]


def test_host_release_adds_the_decision_to_the_items() -> None:
    items = [{"volume_id": "v", "instance": "d", "mode": "qemu", "secret_usage": "openvolume/v"}]
    (out,) = host_release(items, [], "h1", {})
    assert out["remove_secret"] == "openvolume/v" and out["instance"] == "d"


# --- encrypted volumes (LUKS, QEMU decrypts) -------------------------------------------------
from ansible_collections.openvolume.compute.plugins.filter.volumes import (  # noqa: E402
    absent_secret_entries,
    secret_entries,
)

PASSPHRASE = "luks passphrase 7"
ENCRYPTED = {
    "vol-11": dict(ENTRY, target_iqn="iqn.2026-11.org.openvolume.lab:vol-11", attach_mode="qemu", encrypted=True,
                   passphrase=PASSPHRASE),
    "rbd-1": {"driver_volume_type": "rbd", "name": "volumes/luks-1", "hosts": ["127.0.0.1"],
              "auth_username": "openvolume", "auth_key": "AQDkey==", "encrypted": True, "format": "luks",
              "passphrase": PASSPHRASE},
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"passphrase": None}, "volume v: passphrase (the LUKS passphrase, from a vault like the CHAP secrets) is "
                               "needed with encrypted: true"),
        ({"format": "luks2"}, "volume v: format must be luks (the only encryption format), got 'luks2'"),
        ({"encrypted": "maybe"}, "volume v: encrypted must be true or false, got 'maybe'"),
    ],
)
def test_encrypted_entries_are_validated(change: dict, message: str) -> None:
    for entry in ENCRYPTED.values():
        with pytest.raises(AnsibleFilterError) as err:
            connection_info(dict(entry, **change), "v")
        assert message in str(err.value)


def test_connection_info_says_encrypted_never_the_passphrase() -> None:
    for vid, entry in ENCRYPTED.items():
        data = connection_info(entry, vid)["data"]
        assert data["encrypted"] is True
        assert PASSPHRASE not in repr(data)
    assert "encrypted" not in connection_info(ENTRY, "vol-01")["data"]


def test_encrypted_plan_disk_and_secrets() -> None:
    plan = attach_plan([{"volume": "vol-11", "instance": "d1"}, {"volume": "rbd-1", "instance": "d1"}],
                       ENCRYPTED, [], "h1")
    assert [i["luks_secret_usage"] for i in plan] == ["openvolume/vol-11/luks", "openvolume/rbd-1/luks"]
    assert PASSPHRASE not in repr(plan)
    specs = disk_specs(plan)
    assert [s["source"]["encryption"] for s in specs] == [
        {"format": "luks", "secret_usage": "openvolume/vol-11/luks"},
        {"format": "luks", "secret_usage": "openvolume/rbd-1/luks"}]
    assert secret_entries(plan, ENCRYPTED) == [
        {"usage_type": "iscsi", "usage": "openvolume/vol-11", "value": "p"},
        {"usage_type": "volume", "usage": "openvolume/vol-11/luks", "value": PASSPHRASE},
        {"usage_type": "ceph", "usage": "openvolume/rbd-1", "value": "AQDkey=="},
        {"usage_type": "volume", "usage": "openvolume/rbd-1/luks", "value": PASSPHRASE}]
    # The store keeps encrypted and the secret's usage, never the passphrase.
    entries = reserve_entries(plan, ENCRYPTED)
    assert PASSPHRASE not in repr(entries)
    stored = entries[1]["connection_info"]
    assert stored["data"]["encrypted"] is True
    assert stored["openvolume"]["luks_secret_usage"] == "openvolume/vol-11/luks"
    assert absent_secret_entries(plan) == [
        {"usage_type": "iscsi", "usage": "openvolume/vol-11", "state": "absent"},
        {"usage_type": "volume", "usage": "openvolume/vol-11/luks", "state": "absent"},
        {"usage_type": "ceph", "usage": "openvolume/rbd-1", "state": "absent"},
        {"usage_type": "volume", "usage": "openvolume/rbd-1/luks", "state": "absent"}]


def test_encrypted_in_host_mode_is_a_block_disk_qemu_decrypts() -> None:
    (item,) = attach_plan([{"volume": "vol-11", "instance": "d1", "mode": "host"}], ENCRYPTED, [], "h1")
    assert item["mode"] == "host" and item["luks_secret_usage"] == "openvolume/vol-11/luks"
    # CHAP is the kernel session's (iscsi_node): no CHAP secret in libvirt.
    assert item["secret_usage"] is None
    sessions = {"volumes": [{"volume_id": "vol-11", "by_path": "/dev/disk/by-path/x", "multipath_device": "/dev/dm-3",
                             "device_path": "/dev/dm-3"}]}
    (spec,) = disk_specs([item], sessions)
    assert spec["source"] == {"type": "block", "path": "/dev/dm-3",
                              "encryption": {"format": "luks", "secret_usage": "openvolume/vol-11/luks"}}
    assert secret_entries([item], ENCRYPTED) == [
        {"usage_type": "volume", "usage": "openvolume/vol-11/luks", "value": PASSPHRASE}]
    stored = reserve_entries([item], ENCRYPTED)[1]["connection_info"]
    assert stored["openvolume"]["attach_mode"] == "host"
    assert stored["openvolume"]["luks_secret_usage"] == "openvolume/vol-11/luks"
    assert PASSPHRASE not in repr(stored)


def test_detach_plan_and_rollback_remove_the_passphrase_secret() -> None:
    plan = attach_plan([{"volume": "rbd-1", "instance": "d1"}], ENCRYPTED, [], "h1")
    conn = reserve_entries(plan, ENCRYPTED)[1]["connection_info"]
    records = [{"volume_id": "rbd-1", "attachments": [
        {"instance": "d1", "host": "h1", "status": "in-use", "connection_info": conn}]}]
    (item,) = detach_plan([{"volume": "rbd-1", "instance": "d1"}], records, "h1")
    assert item["luks_secret_usage"] == "openvolume/rbd-1/luks"
    (decision,) = host_release([item], records, "h1")
    assert decision["remove_secret"] == "openvolume/rbd-1" and decision["remove_luks_secret"] == "openvolume/rbd-1/luks"
    assert absent_secret_entries([decision])[1] == {"usage_type": "volume", "usage": "openvolume/rbd-1/luks",
                                                    "state": "absent"}
    # A rollback removes the secrets this run created, the passphrase's too.
    secrets = {"secrets": [{"usage": "openvolume/rbd-1", "changed": True, "created": True},
                           {"usage": "openvolume/rbd-1/luks", "changed": True, "created": True}]}
    undo = attach_undo(plan, [], "h1", {"secrets": secrets})
    assert undo["secrets"] == [{"usage_type": "ceph", "usage": "openvolume/rbd-1", "state": "absent"},
                               {"usage_type": "volume", "usage": "openvolume/rbd-1/luks", "state": "absent"}]


def test_node_records_one_call_for_every_volume_and_portal() -> None:
    from ansible_collections.openvolume.compute.plugins.filter.volumes import node_records

    settings = {"node.session.timeo.replacement_timeout": 5}
    catalogue = dict(CATALOGUE, **{"vol-03": dict(CATALOGUE["vol-02"], target_lun=2, auth_username="u3",
                                                  auth_password="p3", node_settings=settings)})
    plan = attach_plan([{"volume": "vol-02", "instance": "d1"}, {"volume": "vol-03", "instance": "d1"}],
                       catalogue, [], "h1")
    records = node_records(plan, catalogue)
    assert [(r["portal"], r["auth"] and r["auth"]["username"]) for r in records] == [
        ("127.0.0.1:3260", None), ("127.0.0.1:3261", None), ("127.0.0.1:3260", "u3"), ("127.0.0.1:3261", "u3")]
    assert records[2]["auth"]["password"] == "p3"
    assert records[3]["settings"] == {"node.session.timeo.replacement_timeout": 5}
    # The delete form: once per target and ifaces.
    release = [{"target": "t1", "ifaces": None, "lun": 1}, {"target": "t1", "ifaces": None, "lun": 2}]
    assert node_records(release) == [{"target": "t1", "ifaces": None}]


def test_attach_undo_removes_the_node_records_the_batch_created() -> None:
    plan = attach_plan([{"volume": "vol-02", "instance": "d1"}], CATALOGUE, [], "h1")
    target = CATALOGUE["vol-02"]["target_iqn"]
    nodes = {"changed": True, "records": [
        {"target": target, "records": [{"iface": "default", "portal": "127.0.0.1:3260", "created": True}]},
        {"target": target, "records": [{"iface": "default", "portal": "127.0.0.1:3261", "created": False}]},
    ]}
    assert attach_undo(plan, [], "h1", {"nodes": nodes})["nodes"] == [
        {"target": target, "portal": "127.0.0.1:3260", "iface": "default"}]
    # A failed batch changed nothing: nothing to undo.
    assert attach_undo(plan, [], "h1", {"nodes": {"failed": True, "msg": "x"}})["nodes"] == []


def test_session_volumes_one_entry_per_volume() -> None:
    from ansible_collections.openvolume.compute.plugins.filter.volumes import session_volumes

    plan = attach_plan([{"volume": "vol-02", "instance": "d1"}, {"volume": "vol-02", "instance": "d2"}],
                       CATALOGUE, [], "h1")
    assert session_volumes(plan) == [{
        "volume_id": "vol-02", "target": "iqn.2026-11.org.openvolume.lab:vol-02",
        "portals": ["127.0.0.1:3260", "127.0.0.1:3261"], "lun": 1, "multipath": True, "ifaces": None,
        "wwid": None}]
    assert session_volumes(plan, resize=True)[0]["resize"] is True
    orphan = {"target": "t", "portal": "127.0.0.1:3260", "lun": 2, "iface": "default"}
    assert session_volumes([orphan]) == [{"volume_id": None, "target": "t", "portals": ["127.0.0.1:3260"], "lun": 2,
                                          "ifaces": ["default"], "wwid": None}]


def test_attach_undo_disconnects_every_volume_of_a_target_this_run_logged_in_to() -> None:
    catalogue = dict(CATALOGUE, **{"vol-03": dict(CATALOGUE["vol-02"], target_lun=2)})
    plan = attach_plan([{"volume": "vol-02", "instance": "d1"}, {"volume": "vol-03", "instance": "d1"}],
                       catalogue, [], "h1")
    target = CATALOGUE["vol-02"]["target_iqn"]
    sessions = {"changed": True, "volumes": [
        {"volume_id": "vol-02", "target": target, "logged_in": ["127.0.0.1:3260"], "wwid": "w2"},
        {"volume_id": "vol-03", "target": target, "logged_in": [], "wwid": "w3"}]}
    undo = attach_undo(plan, [], "h1", {"sessions": sessions})
    assert [(e["volume_id"], e["lun"], e["wwid"]) for e in undo["sessions"]] == [
        ("vol-02", 1, "w2"), ("vol-03", 2, "w3")]
    # A failed call logged out of what it logged in to: nothing to undo.
    assert attach_undo(plan, [], "h1", {"sessions": {"failed": True, "msg": "x"}})["sessions"] == []


# --- catalogue entries as Cinder's initialize_connection returns them ---------------------
from ansible_collections.openvolume.compute.plugins.filter.volumes import volume_secrets  # noqa: E402


def _cinder_iscsi() -> dict:
    """An LVM/tgt volume's connection_info as Cinder returns it (the keys a real one has), our keys beside data."""
    return {
        "driver_volume_type": "iscsi",
        "data": {
            "target_discovered": False, "target_iqn": ENTRY["target_iqn"], "target_portal": "127.0.0.1:3260",
            "target_portals": ["127.0.0.1:3260", "127.0.0.1:3261"], "target_iqns": [ENTRY["target_iqn"]] * 2,
            "target_lun": 1, "target_luns": [1, 1], "volume_id": "vol-01", "auth_method": "CHAP",
            "auth_username": "u", "auth_password": "p", "encrypted": False, "qos_specs": None, "access_mode": "rw",
            "discard": True, "cacheable": False,
        },
        "attach_mode": "qemu", "bus": "scsi",
    }


def test_a_cinder_shaped_entry_reads_as_the_flat_one() -> None:
    nested = connection_info(_cinder_iscsi(), "vol-01")
    assert nested == connection_info(ENTRY, "vol-01")
    assert volume_secrets(_cinder_iscsi())["chap"] == {"auth_username": "u", "auth_password": "p"}
    flat_plan = attach_plan([{"volume": "vol-01", "instance": "d1"}], CATALOGUE, [], "h1")
    cinder_plan = attach_plan([{"volume": "vol-01", "instance": "d1"}], {"vol-01": _cinder_iscsi()}, [], "h1")
    assert cinder_plan == flat_plan
    # os-brick reads the protocol in any case; the access mode too.
    shouting = _cinder_iscsi()
    shouting["driver_volume_type"] = "iSCSI"
    shouting["data"]["access_mode"] = "RW"
    assert connection_info(shouting, "vol-01") == nested
    rbd = {"driver_volume_type": "RBD", "auth_key": "K",
           "data": {"name": "volumes/volume-1", "hosts": ["10.0.0.1", "10.0.0.2"], "ports": ["6789", "6789"],
                    "cluster_name": "ceph", "auth_enabled": True, "auth_username": "cinder", "secret_type": "ceph",
                    "secret_uuid": "457eb676-33da-42ec-9a8c-9293d545c337", "volume_id": "volume-1",
                    "discard": True, "keyring": None, "access_mode": "rw", "encrypted": False}}
    conn = connection_info(rbd, "volume-1")
    assert conn["driver_volume_type"] == "rbd" and conn["data"]["auth_username"] == "cinder"
    assert "K" not in str(conn) and volume_secrets(rbd)["libvirt"] == "K"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"attach_mode": "qemu", "access_mode": "ro"}, "volume v: access_mode is 'ro' beside data and 'rw' in data"),
        ({"multipath": True, "data": {"target_iqns": [ENTRY["target_iqn"], "iqn.2026-11.org.openvolume.lab:other"]}},
         "volume v: target_iqns ['iqn.2026-11.org.openvolume.lab:vol-01', 'iqn.2026-11.org.openvolume.lab:other'] "
         "name another target or LUN behind some portals"),
        ({"multipath": True, "data": {"target_luns": [1, 2]}},
         "volume v: target_luns [1, 2] name another target or LUN"),
        ({"data": {"target_luns": [2, 2]}}, "volume v: target_luns [2, 2] name another target or LUN"),
        ({"data": {"target_luns": [1]}}, "volume v: target_luns has 1 entries for 2 portals"),
        ({"data": {"driver_volume_type": "fibre_channel"}},
         "driver_volume_type is 'iscsi' beside data and 'fibre_channel' in data"),
    ],
)
def test_a_cinder_shaped_entry_is_refused_where_it_is_ambiguous(change: dict, message: str) -> None:
    entry = _cinder_iscsi()
    entry["data"].update(change.pop("data", {}))
    entry.update(change)
    with pytest.raises(AnsibleFilterError) as err:
        connection_info(entry, "v")
    assert message in str(err.value)


def test_iqns_compare_without_case() -> None:
    entry = _cinder_iscsi()
    entry["data"]["target_iqns"] = [ENTRY["target_iqn"].upper().replace("IQN.", "iqn."), ENTRY["target_iqn"]]
    assert connection_info(entry, "v")["data"]["target_iqn"] == ENTRY["target_iqn"]


def test_a_volume_id_yaml_read_as_a_number_is_found() -> None:
    # `1234:` in the catalogue is a number to YAML, `volume: 1234` too; the request's id is its text.
    catalogue = {1234: dict(ENTRY, attach_mode="qemu")}
    item = attach_plan([{"volume": 1234, "instance": "d1"}], catalogue, [], "h1")[0]
    assert item["volume_id"] == "1234" and item["connection_info"]["data"]["volume_id"] == "1234"
    assert reserve_entries([item], catalogue)[1]["connection_info"]["data"]["auth_password"] == "p"
    assert secret_entries([item], catalogue) == [{"usage_type": "iscsi", "usage": "openvolume/1234", "value": "p"}]


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("readonly", "access_mode: ro"), ("read-only", "access_mode: ro"), ("shareable", "multiattach: true"),
        ("multi_attach", "multiattach"), ("multiatach", "multiattach"), ("acces_mode", "access_mode"),
        ("mode", "attach_mode (host or qemu)"), ("lun", "target_lun"), ("wwid", "wwn"),
        ("auth_pasword", "auth_password"), ("encryption", "encrypted: true"), ("multipaths", "multipath"),
        ("target_dev", "the attachment (openvolume_attachments), not the catalogue"),
    ],
)
def test_a_misspelt_or_misplaced_key_is_refused(key: str, hint: str) -> None:
    with pytest.raises(AnsibleFilterError) as err:
        attach_plan([{"volume": "vol-01", "instance": "d1"}], {"vol-01": dict(ENTRY, **{key: True})}, [], "h1")
    assert f"volume vol-01: unknown key {key!r}: did you mean {hint}?" in str(err.value)
    # Inside Cinder's data too.
    nested = _cinder_iscsi()
    nested["data"][key] = True
    with pytest.raises(AnsibleFilterError):
        connection_info(nested, "vol-01")


def test_keys_of_cinder_and_of_the_operator_are_taken() -> None:
    # Every key of Cinder's iSCSI and RBD data is known; a key unlike any (a note) is left alone.
    entry = dict(ENTRY, description="db volume", size="10G", discovery_auth_method="CHAP", serial="vol-01")
    assert connection_info(entry, "vol-01") == connection_info(ENTRY, "vol-01")


def test_rbd_monitors_as_operators_write_them() -> None:
    base = {"driver_volume_type": "rbd", "name": "volumes/volume-1", "auth_username": "client.cinder", "auth_key": "K"}
    conn = connection_info(dict(base, hosts=["[2001:db8::21]", "10.0.0.2"], ports=["6789", None]), "volume-1")
    # IPv6 without brackets (libvirt's <host name=...>), a null port as none, the cephx id without "client.".
    assert conn["data"]["hosts"] == ["2001:db8::21", "10.0.0.2"] and conn["data"]["ports"] == ["6789", ""]
    assert conn["data"]["auth_username"] == "cinder"
    item = attach_plan([{"volume": "volume-1", "instance": "d1"}],
                       {"volume-1": dict(base, hosts=["2001:db8::21", "10.0.0.2"], ports=[6789, ""])}, [], "h1")[0]
    assert item["qemu_source"]["hosts"] == [{"name": "2001:db8::21", "port": 6789}, {"name": "10.0.0.2"}]
    assert item["qemu_source"]["auth"]["username"] == "cinder"
    for hosts, ports, message in ((["mon1:6789"], [], "hosts[0]: 'mon1:6789' is no monitor address or host name; "
                                   "give its port in ports"),
                                  (["10.0.0.1"], ["http"], "ports[0] must be a TCP port (1-65535), got 'http'")):
        with pytest.raises(AnsibleFilterError) as err:
            connection_info(dict(base, hosts=hosts, ports=ports), "volume-1")
        assert message in str(err.value)


@pytest.mark.parametrize("vid", ["vol 01", "vol/01", "vol#1", "v" * 65, "vol-ä"])
def test_a_volume_id_that_cannot_be_a_serial_fails_the_plan(vid: str) -> None:
    with pytest.raises(AnsibleFilterError) as err:
        attach_plan([{"volume": vid, "instance": "d1"}], {vid: dict(ENTRY)}, [], "h1")
    assert f"volume id {vid!r} is also the disk's serial" in str(err.value)


def test_one_volume_under_two_ids_is_refused() -> None:
    # The same LUN twice (a Cinder UUID in two cases, or a copy-paste): two ids would be two writers' records.
    catalogue = {"vol-01": dict(ENTRY), "VOL-01": {"driver_volume_type": "iSCSI",
                                                   "data": dict(ENTRY, target_iqn=ENTRY["target_iqn"].upper()
                                                                .replace("IQN.", "iqn."), target_lun="1")}}
    with pytest.raises(AnsibleFilterError) as err:
        attach_plan([{"volume": "vol-01", "instance": "d1"}], catalogue, [], "h1")
    assert "volumes vol-01 and VOL-01 of the catalogue are both LUN 1 of" in str(err.value)
    rbd = {"driver_volume_type": "rbd", "name": "volumes/volume-1", "hosts": ["10.0.0.1"]}
    with pytest.raises(AnsibleFilterError) as err:
        attach_plan([{"volume": "r2", "instance": "d1"}], {"r1": rbd, "r2": dict(rbd, hosts=["10.0.0.2"])}, [], "h1")
    assert "volumes r2 and r1 of the catalogue are both RBD image volumes/volume-1" in str(err.value)
    # Another LUN of the target, another cluster's image of that name, or an entry that names nothing: fine.
    attach_plan([{"volume": "vol-01", "instance": "d1"}],
                {"vol-01": dict(ENTRY), "vol-02": dict(ENTRY, target_lun=2), "odd": "text", "half": {}}, [], "h1")
    attach_plan([{"volume": "r2", "instance": "d1"}], {"r1": rbd, "r2": dict(rbd, cluster_name="dr")}, [], "h1")


def test_an_array_with_a_target_per_portal_is_attached_through_the_volumes_own_target() -> None:
    # PowerStore, Unity, 3PAR, ... give each portal a target of its own. One
    # path (no multipath in the entry): the portals of target_iqn alone, as
    # os-brick takes target_portal/target_iqn/target_lun.
    entry = _cinder_iscsi()
    entry["data"]["target_iqns"] = [ENTRY["target_iqn"], "iqn.2026-11.org.openvolume.lab:vol-01-b"]
    data = connection_info(entry, "vol-01")["data"]
    assert data["target_portals"] == ["127.0.0.1:3260"] and data["target_iqns"] == [ENTRY["target_iqn"]]
    item = attach_plan([{"volume": "vol-01", "instance": "d1"}], {"vol-01": dict(entry, attach_mode="host")},
                       [], "h1")[0]
    assert item["portals"] == ["127.0.0.1:3260"]


def test_an_rbd_image_in_a_namespace_is_refused_in_the_plan() -> None:
    # libvirt 9 hands QEMU "ns/img" as the image name: checked on the lab, QEMU found no such image.
    rbd = {"driver_volume_type": "rbd", "name": "volumes/ns/img", "hosts": ["10.0.0.1"]}
    with pytest.raises(AnsibleFilterError) as err:
        attach_plan([{"volume": "r1", "instance": "d1"}], {"r1": rbd}, [], "h1")
    assert "name 'volumes/ns/img' is an image in an RBD namespace, which libvirt cannot attach" in str(err.value)


def test_rbd_auth_enabled_as_cinder_and_nova_read_it() -> None:
    base = {"driver_volume_type": "rbd", "name": "volumes/volume-1", "hosts": ["10.0.0.1"]}
    # Cinder without rbd_secret_uuid (older releases): auth_enabled false and
    # still its rbd_user; Nova then uses the compute's own cephx settings,
    # which a host here has none of: no cephx, no secret.
    data = dict(base, auth_enabled=False, auth_username="cinder", secret_type="ceph", secret_uuid=None)
    cinder = {"driver_volume_type": "rbd", "data": data}
    data = connection_info(cinder, "volume-1")["data"]
    assert data["auth_enabled"] is False and data["auth_username"] is None
    item = attach_plan([{"volume": "volume-1", "instance": "d1"}], {"volume-1": cinder}, [], "h1")[0]
    assert "auth" not in item["qemu_source"] and item["secret_usage"] is None
    assert secret_entries([item], {"volume-1": cinder}) == []
    # "true" as a survey or -e gives it, with its user and key: cephx.
    data = connection_info(dict(base, auth_enabled="true", auth_username="cinder", auth_key="K"), "volume-1")["data"]
    assert data["auth_enabled"] is True and data["auth_username"] == "cinder"
    for entry, message in (
        (dict(base, auth_enabled=True), "auth_enabled is true but no auth_username"),
        (dict(base, auth_enabled=False, auth_username="cinder", auth_key="K"), "auth_enabled is false but auth_key"),
        (dict(base, auth_enabled="maybe", auth_username="cinder", auth_key="K"), "auth_enabled must be true or false"),
    ):
        with pytest.raises(AnsibleFilterError) as err:
            connection_info(entry, "volume-1")
        assert message in str(err.value)


def test_an_rbd_cluster_name_without_its_monitors_is_refused() -> None:
    # libvirt's disk names no cluster: without hosts the host's ceph.conf (cluster ceph) would be opened.
    rbd = {"driver_volume_type": "rbd", "name": "volumes/volume-1", "cluster_name": "dr"}
    with pytest.raises(AnsibleFilterError) as err:
        attach_plan([{"volume": "r1", "instance": "d1"}], {"r1": rbd}, [], "h1")
    assert "cluster_name 'dr' needs hosts (the monitors of that cluster)" in str(err.value)
    assert connection_info(dict(rbd, hosts=["10.0.0.1"]), "r1")["data"]["cluster_name"] == "dr"
    assert connection_info(dict(rbd, cluster_name="ceph"), "r1")["data"]["cluster_name"] == "ceph"
    assert connection_info(dict(rbd, cluster_name=None), "r1")["data"]["cluster_name"] == "ceph"


def test_cinders_addressing_mode_reaches_the_session_and_the_record() -> None:
    from ansible_collections.openvolume.compute.plugins.filter.volumes import session_volumes

    # Pure's and other drivers' connection_info say how the array numbers LUNs (os-brick's names).
    entry = _cinder_iscsi()
    entry["data"].update(target_lun=300, target_luns=[300, 300], addressing_mode="sam2")
    catalogue = {"vol-01": dict(entry, attach_mode="host")}
    item = attach_plan([{"volume": "vol-01", "instance": "d1"}], catalogue, [], "h1")[0]
    assert item["connection_info"]["data"]["addressing_mode"] == "SAM2"
    assert session_volumes([item])[0]["addressing_mode"] == "SAM2"
    assert "addressing_mode" not in connection_info(ENTRY, "vol-01")["data"]
    entry["data"]["addressing_mode"] = "SAM-3"
    with pytest.raises(AnsibleFilterError) as err:
        connection_info(entry, "vol-01")
    assert "addressing_mode must be one of SAM, transparent, SAM2, SAM3-flat (Cinder's names), got 'SAM-3'" \
        in str(err.value)


@pytest.mark.parametrize(("lun", "mode", "qemu"), [
    (1, None, 1), (255, None, 255), (256, None, 0x4100), (300, None, 16684), (16383, None, 0x7FFF),
    (300, "SAM", 300), (300, "SAM2", 16684), (1, "SAM3-flat", 0x4001), (65535, "SAM", 65535),
])
def test_qemu_mode_gives_libiscsi_the_lun_as_the_kernel_numbers_it(lun: int, mode: str | None, qemu: int) -> None:
    # libiscsi copies the number's two bytes into the LUN field: tgtd refuses LUN 300 as 300 (checked on the
    # lab), and serves it as 16684 (flat space addressing).
    entry = dict(ENTRY, target_lun=lun, attach_mode="qemu", **({"addressing_mode": mode} if mode else {}))
    item = attach_plan([{"volume": "vol-01", "instance": "d1"}], {"vol-01": entry}, [], "h1")[0]
    assert item["qemu_source"]["name"] == f"{ENTRY['target_iqn']}/{qemu}"
    assert item["connection_info"]["data"]["target_lun"] == lun


@pytest.mark.parametrize(("lun", "mode"), [(16384, None), (40000, "SAM2"), (65536, "SAM")])
def test_a_lun_qemus_iscsi_client_cannot_address_fails_the_plan(lun: int, mode: str | None) -> None:
    entry = dict(ENTRY, target_lun=lun, attach_mode="qemu", **({"addressing_mode": mode} if mode else {}))
    with pytest.raises(AnsibleFilterError) as err:
        attach_plan([{"volume": "vol-01", "instance": "d1"}], {"vol-01": entry}, [], "h1")
    assert f"volume vol-01: target_lun {lun} cannot be addressed by QEMU's iSCSI client" in str(err.value)
    # The kernel's initiator can.
    attach_plan([{"volume": "vol-01", "instance": "d1"}], {"vol-01": dict(entry, attach_mode="host")}, [], "h1")
