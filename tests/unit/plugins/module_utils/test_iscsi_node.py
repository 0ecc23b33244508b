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


# Batches (records): all or nothing, against an in-memory node database ------

class FakeModule:
    def __init__(self, check_mode: bool = False) -> None:
        self.check_mode = check_mode


class FakeIscsiadm:
    """The node database as a dict; updating ``bad_key`` fails like iscsiadm does for an unknown key."""

    DEFAULTS = {"node.startup": "manual", "node.session.auth.authmethod": "None",
                "node.session.auth.username": "", "node.session.auth.password": "",
                "node.session.auth.username_in": "", "node.session.auth.password_in": "",
                "node.session.timeo.replacement_timeout": "120"}

    def __init__(self, bad_key: str = "node.conn[0].iscsi.HeaderDigest") -> None:
        self.db: dict[tuple[str, str, str], dict[str, str]] = {}
        self.bad_key = bad_key

    def nodes(self) -> list[t.Any]:
        from ansible_collections.openvolume.compute.plugins.module_utils._iscsiadm import NodeEntry, Portal

        return [NodeEntry(portal=Portal.parse(p), tpgt=1, target=tg, iface=i) for (tg, p, i) in self.db]

    def node_record(self, *, target: str, portal: t.Any, iface: str) -> dict[str, str] | None:
        rec = self.db.get((target, str(portal), iface))
        return dict(rec) if rec is not None else None

    def node_new(self, *, target: str, portal: t.Any, iface: str, tpgt: int | None = None) -> None:
        self.db[(target, str(portal), iface)] = dict(self.DEFAULTS, **{self.bad_key: ""})

    def node_update(self, *, target: str, portal: t.Any, iface: str, name: str, value: str, secret: bool) -> None:
        if name == self.bad_key and value == "boom":
            raise IscsiError(f"setting {name} failed: iscsiadm exit 7")
        self.db[(target, str(portal), iface)][name] = value

    def node_delete(self, *, target: str, portal: t.Any, iface: str | None) -> bool:
        keys = [k for k in self.db if k[0] == target and (portal is None or k[1] == str(portal))
                and (iface is None or k[2] == iface)]
        for k in keys:
            del self.db[k]
        return bool(keys)


def batch(*entries: dict[str, t.Any], state: str = "present") -> list[NodeRequest]:
    from ansible_collections.openvolume.compute.plugins.module_utils._iscsi_node import batch_requests

    reqs = batch_requests({"records": list(entries), "state": state})
    assert reqs is not None
    return reqs


def entry(target: str, portal: str = "127.0.0.1", **extra: t.Any) -> dict[str, t.Any]:
    return {"target": target, "portal": portal, "iface": None, "ifaces": None, "auth": None, "startup": None,
            "settings": None, "state": None} | extra


T2 = "iqn.2026-11.org.openvolume.lab:vol-02"
CHAP = {"method": "CHAP", "username": "u", "password": "s3cret", "username_in": None, "password_in": None}


def test_batch_applies_every_record_and_a_repeat_changes_nothing() -> None:
    from ansible_collections.openvolume.compute.plugins.module_utils._iscsi_node import IscsiNode

    db = FakeIscsiadm()
    reqs = batch(entry(TARGET, auth=CHAP), entry(TARGET, "127.0.0.1:3261", auth=CHAP), entry(T2, startup="automatic"))
    first = IscsiNode(FakeModule(), db).apply_all(reqs)  # type: ignore[arg-type]
    assert [o["created"] for o in first] == [True, True, True]
    assert db.db[(T2, "127.0.0.1:3260", "default")]["node.startup"] == "automatic"
    again = IscsiNode(FakeModule(), db).apply_all(batch(  # type: ignore[arg-type]
        entry(TARGET, auth=CHAP), entry(TARGET, "127.0.0.1:3261", auth=CHAP), entry(T2, startup="automatic")))
    assert not any(o["changed"] for o in again)


def test_batch_failure_removes_what_it_created_and_restores_what_it_changed() -> None:
    from ansible_collections.openvolume.compute.plugins.module_utils._iscsi_node import IscsiNode

    db = FakeIscsiadm()
    IscsiNode(FakeModule(), db).apply_all(batch(entry(TARGET, startup="manual")))  # type: ignore[arg-type]
    IscsiNode(FakeModule(), db).apply_all(batch(entry(T2, "127.0.0.1:3261")))  # type: ignore[arg-type]
    before = {k: dict(v) for k, v in db.db.items()}
    reqs = batch(
        entry(TARGET, startup="automatic", auth=CHAP),    # changed, must be set back
        entry(T2, "127.0.0.1:3261", state="absent"),      # deleted, must come back
        entry(T2, "127.0.0.1:3262"),                      # created, must go again
        entry(T2, settings={"node.conn[0].iscsi.HeaderDigest": "boom"}),  # fails half-way
    )
    with pytest.raises(IscsiError) as err:
        IscsiNode(FakeModule(), db).apply_all(reqs)  # type: ignore[arg-type]
    assert err.value.msg.startswith("records[3]: setting node.conn[0].iscsi.HeaderDigest failed")
    assert "could NOT undo" not in err.value.msg
    assert db.db == before


def test_batch_check_mode_predicts_the_real_run_for_a_shared_record() -> None:
    from ansible_collections.openvolume.compute.plugins.module_utils._iscsi_node import IscsiNode

    entries = (entry(TARGET, auth=CHAP), entry(TARGET, auth=CHAP, startup="automatic"), entry(TARGET, state="absent"))
    db = FakeIscsiadm()
    predicted = IscsiNode(FakeModule(check_mode=True), db).apply_all(batch(*entries))  # type: ignore[arg-type]
    assert db.db == {}
    real = IscsiNode(FakeModule(), db).apply_all(batch(*entries))  # type: ignore[arg-type]
    assert [(o["changed"], o.get("created")) for o in predicted] == [(o["changed"], o.get("created")) for o in real]
    assert [o["changed"] for o in real] == [True, True, True]
    assert real[1]["created"] is False


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"records": [], "target": TARGET}, "records: give either records or target (the single form), not both"),
        ({"records": [entry(TARGET, portal=None)]}, "records[0].portal: required with state=present"),
        ({"records": [entry(TARGET), entry("nope")]}, "records[1].target: "),
        ({"records": [entry(TARGET, iface="a", ifaces=["b"])]}, "records[0]: iface and ifaces are mutually"),
        ({"records": [entry(TARGET, settings={"node.startup": "x"})]}, "records[0].settings: 'node.startup'"),
        ({"records": [], "discover": True}, "records: give either records or discover"),
    ],
)
def test_batch_errors_name_the_entry(params: dict[str, t.Any], message: str) -> None:
    from ansible_collections.openvolume.compute.plugins.module_utils._iscsi_node import batch_requests

    with pytest.raises(IscsiError) as err:
        batch_requests({"state": "present"} | params)
    assert err.value.msg.startswith(message), err.value.msg


def test_batch_takes_the_top_level_ifaces_as_the_entries_default() -> None:
    from ansible_collections.openvolume.compute.plugins.module_utils._iscsi_node import batch_requests

    reqs = batch_requests({"records": [entry(TARGET, "127.0.0.1:3260,1"), entry(T2, iface="own")],
                           "state": "present", "ifaces": ["if1", "if2"]})
    assert reqs is not None
    assert [r.ifaces for r in reqs] == [["if1", "if2"], ["own"]]


def test_batch_lists_the_records_once_and_again_after_a_delete() -> None:
    from ansible_collections.openvolume.compute.plugins.module_utils._iscsi_node import IscsiNode

    class Counting(FakeIscsiadm):
        listings = 0

        def nodes(self) -> list[t.Any]:
            self.listings += 1
            return super().nodes()

    db = Counting()
    IscsiNode(FakeModule(), db).apply_all(  # type: ignore[arg-type]
        batch(*(entry(f"{TARGET}-{i}", portal) for i in range(20) for portal in ("127.0.0.1", "127.0.0.1:3261"))))
    assert len(db.db) == 40 and db.listings == 1
    # A record deleted by an entry is made again by a later one: the delete
    # made the listing stale, so the later entry lists again.
    db.listings = 0
    out = IscsiNode(FakeModule(), db).apply_all(batch(  # type: ignore[arg-type]
        entry(f"{TARGET}-0", state="absent"), entry(f"{TARGET}-0", startup="automatic")))
    assert [o["changed"] for o in out] == [True, True] and out[1]["created"] is True
    assert db.db[(f"{TARGET}-0", "127.0.0.1:3260", "default")]["node.startup"] == "automatic"
    assert db.listings == 2
