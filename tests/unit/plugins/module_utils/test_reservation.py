"""The reservation state machine on both real backends (SQLite file, lab etcd)."""

from __future__ import annotations

import itertools
import multiprocessing
import re
import subprocess
import time
import types
import typing as t

import pytest
from reservation_lab import BACKENDS, CI, TEST_RUN, Store, make_store

from ansible_collections.openvolume.compute.plugins.module_utils._common import MASK
from ansible_collections.openvolume.compute.plugins.module_utils._reservation import (
    ATTACHING,
    AVAILABLE,
    DETACHING,
    ERROR_ATTACHING,
    ERROR_DETACHING,
    IN_USE,
    TRANSITIONS,
    Backend,
    BackendError,
    IllegalTransition,
    Request,
    ReservationError,
    Reservations,
    Volume,
    plan,
    secret_strings,
)
from ansible_collections.openvolume.compute.plugins.module_utils._reservation_lease import Owner


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: t.Any) -> t.Iterator[Store]:
    yield from make_store(request, tmp_path)


ATTACHMENT_STATES = [AVAILABLE, ATTACHING, IN_USE, DETACHING, ERROR_ATTACHING, ERROR_DETACHING]

# How to bring instance i1's attachment of a fresh volume into each state.
PATHS: dict[str, list[dict[str, t.Any]]] = {
    AVAILABLE: [],
    ATTACHING: [{"state": ATTACHING, "host": "h1"}],
    IN_USE: [{"state": ATTACHING, "host": "h1"}, {"state": IN_USE, "connection_info": CI}],
    DETACHING: [{"state": ATTACHING, "host": "h1"}, {"state": IN_USE, "connection_info": CI}, {"state": DETACHING}],
    ERROR_ATTACHING: [{"state": ATTACHING, "host": "h1"}, {"state": ERROR_ATTACHING}],
    ERROR_DETACHING: [
        {"state": ATTACHING, "host": "h1"}, {"state": IN_USE, "connection_info": CI},
        {"state": DETACHING}, {"state": ERROR_DETACHING},
    ],
}


def bring(store: Store, volume_id: str, state: str, instance: str = "i1", multiattach: bool = False) -> None:
    store.apply(volume_id=volume_id, state="present", multiattach=multiattach)
    for step in PATHS[state]:
        store.apply(volume_id=volume_id, instance=instance, **step)


def attachment_state(store: Store, volume_id: str, instance: str = "i1") -> str:
    volume = store.get(volume_id)
    att = volume.attachments.get(instance)
    return att.status if att else AVAILABLE


def request_to(state: str) -> dict[str, t.Any]:
    params: dict[str, t.Any] = {"state": state, "instance": "i1"}
    if state == ATTACHING:
        params["host"] = "h1"
    return params


@pytest.mark.parametrize(("frm", "to"), sorted(TRANSITIONS), ids=str)
def test_every_legal_transition(store: Store, frm: str, to: str) -> None:
    bring(store, "vol-legal", frm)
    params = request_to(to)
    if (frm, to) == (ATTACHING, IN_USE):
        params["connection_info"] = CI
    outcome = store.apply(volume_id="vol-legal", **params)
    assert outcome.transition == TRANSITIONS[(frm, to)]
    assert attachment_state(store, "vol-legal") == to
    if to == IN_USE:
        # connection_info is there in every in-use record, whatever the path.
        assert store.get("vol-legal").attachments["i1"].connection_info == CI


ILLEGAL = [(a, b) for a, b in itertools.permutations(ATTACHMENT_STATES, 2) if (a, b) not in TRANSITIONS]


@pytest.mark.parametrize(("frm", "to"), ILLEGAL, ids=str)
def test_every_illegal_transition(store: Store, frm: str, to: str) -> None:
    bring(store, "vol-illegal", frm)
    before = store.get("vol-illegal").to_dict()
    params = request_to(to)
    if to == IN_USE:
        params["connection_info"] = CI
    with pytest.raises(IllegalTransition) as err:
        store.apply(volume_id="vol-illegal", **params)
    holder = "has no attachment for i1" if frm == AVAILABLE else f"is {frm} by i1 on h1"
    assert f"volume vol-illegal {holder}" in err.value.msg
    assert f"cannot go to {to}" in err.value.msg
    assert store.get("vol-illegal").to_dict() == before


def test_table_leaves_no_dead_end() -> None:
    # Seed 004: every state must have a way back to available.
    for state in ATTACHMENT_STATES[1:]:
        seen, todo = {state}, [state]
        while todo:
            current = todo.pop()
            for a, b in TRANSITIONS:
                if a == current and b not in seen:
                    seen.add(b)
                    todo.append(b)
        assert AVAILABLE in seen, state


@pytest.mark.parametrize("state", ATTACHMENT_STATES)
def test_rerun_is_unchanged(store: Store, state: str) -> None:
    bring(store, "vol-rerun", state)
    before = store.get("vol-rerun").to_dict()
    params = request_to(state)
    outcome = store.apply(volume_id="vol-rerun", **params)
    assert outcome.transition is None and not outcome.changed
    assert store.get("vol-rerun").to_dict() == before


def test_present_and_absent_rerun(store: Store) -> None:
    assert store.apply(volume_id="vol-x", state="present").transition == "create"
    assert store.apply(volume_id="vol-x", state="present").transition is None
    assert store.apply(volume_id="vol-x", state="available").transition is None
    assert store.apply(volume_id="vol-x", state="absent").transition == "remove"
    assert store.apply(volume_id="vol-x", state="absent").transition is None
    assert store.get("vol-x") is None


def test_absent_refused_while_attached(store: Store) -> None:
    bring(store, "vol-abs", IN_USE)
    with pytest.raises(IllegalTransition, match="volume vol-abs is in-use by i1 on h1; detach every attachment"):
        store.apply(volume_id="vol-abs", state="absent")
    assert attachment_state(store, "vol-abs") == IN_USE


def test_unregistered_volume_is_refused(store: Store) -> None:
    with pytest.raises(IllegalTransition, match="volume vol-new is not registered.*state=present"):
        store.apply(volume_id="vol-new", state=ATTACHING, instance="i1", host="h1")
    assert store.get("vol-new") is None


def test_non_multiattach_has_one_attachment(store: Store) -> None:
    bring(store, "vol-single", IN_USE)
    with pytest.raises(IllegalTransition) as err:
        store.apply(volume_id="vol-single", state=ATTACHING, instance="i2", host="h2")
    assert err.value.msg == (
        "volume vol-single is in-use by i1 on h1; it is not multiattach, so it cannot be reserved for i2 on h2"
    )
    assert set(store.get("vol-single").attachments) == {"i1"}


def test_multiattach_rules(store: Store) -> None:
    bring(store, "vol-multi", IN_USE, multiattach=True)
    # Another instance may reserve while in-use ...
    assert store.apply(volume_id="vol-multi", state=ATTACHING, instance="i2", host="h2").transition == "reserve"
    assert store.get("vol-multi").status == ATTACHING
    store.apply(volume_id="vol-multi", state=IN_USE, instance="i2", connection_info=CI)
    assert store.get("vol-multi").status == IN_USE
    assert set(store.get("vol-multi").attachments) == {"i1", "i2"}
    # ... but never twice for the same instance.
    with pytest.raises(IllegalTransition, match="vol-multi is in-use by i1 on h1; it cannot go to attaching.*twice"):
        store.apply(volume_id="vol-multi", state=ATTACHING, instance="i1", host="h1")
    # multiattach cannot change while attached.
    with pytest.raises(IllegalTransition, match="multiattach can only change while it has no attachment"):
        store.apply(volume_id="vol-multi", state="present", multiattach=False)
    # Detaching one keeps the other.
    store.apply(volume_id="vol-multi", state=DETACHING, instance="i1")
    store.apply(volume_id="vol-multi", state=AVAILABLE, instance="i1")
    assert set(store.get("vol-multi").attachments) == {"i2"}


def test_multiattach_set_at_creation_and_changed_when_free(store: Store) -> None:
    store.apply(volume_id="vol-m", state="available", multiattach=True)
    assert store.get("vol-m").multiattach is True
    assert store.apply(volume_id="vol-m", state="present", multiattach=True).transition is None
    assert store.apply(volume_id="vol-m", state="present", multiattach=False).transition == "update"
    assert store.get("vol-m").multiattach is False


def test_in_use_requires_connection_info(store: Store) -> None:
    bring(store, "vol-ci", ATTACHING)
    with pytest.raises(IllegalTransition, match="connection_info is required for state=in-use"):
        store.apply(volume_id="vol-ci", state=IN_USE, instance="i1")
    assert attachment_state(store, "vol-ci") == ATTACHING
    store.apply(volume_id="vol-ci", state=IN_USE, instance="i1", connection_info=CI, mountpoint="/dev/vdb")
    # State and connection_info were written together: read back through a new connection.
    att = store.get("vol-ci").attachments["i1"]
    assert (att.status, att.connection_info, att.mountpoint, att.expires_at) == (IN_USE, CI, "/dev/vdb", None)


def test_connection_info_update_while_in_use(store: Store) -> None:
    bring(store, "vol-upd", IN_USE)
    rotated = {"driver_volume_type": "iscsi", "data": dict(CI["data"], auth_password="rotated-secret-1")}
    assert store.apply(volume_id="vol-upd", state=IN_USE, instance="i1", connection_info=rotated).transition == "update"
    assert store.get("vol-upd").attachments["i1"].connection_info == rotated
    assert store.apply(volume_id="vol-upd", state=IN_USE, instance="i1", connection_info=rotated).transition is None


def test_wrong_host_is_refused(store: Store) -> None:
    bring(store, "vol-host", ATTACHING)
    with pytest.raises(IllegalTransition, match=r"volume vol-host is attaching by i1 on h1 \(held by .*\); not on h9: "
                       "give the host the attachment was reserved for"):
        store.apply(volume_id="vol-host", state=ATTACHING, instance="i1", host="h9")


def test_check_mode_changes_nothing(store: Store) -> None:
    store.apply(volume_id="vol-check", state="present")
    outcome = store.apply(check_mode=True, volume_id="vol-check", state=ATTACHING, instance="i1", host="h1")
    assert outcome.changed and outcome.transition == "reserve"
    assert outcome.after.attachments["i1"].status == ATTACHING
    assert store.get("vol-check").attachments == {}
    with pytest.raises(IllegalTransition):
        store.apply(check_mode=True, volume_id="vol-check", state=IN_USE, instance="i1", connection_info=CI)


def test_secrets_masked_in_results_not_in_store(store: Store) -> None:
    bring(store, "vol-mask", IN_USE)
    outcome = store.apply(volume_id="vol-mask", state=DETACHING, instance="i1")
    shown = outcome.to_result()["volume"]["attachments"][0]["connection_info"]["data"]
    assert shown["auth_password"] == MASK
    assert shown["auth_username"] == "ovlab-initiator"
    assert "chap-secret-0123" not in repr(outcome.to_result())
    # Stored in clear: the detach needs the record as it was given.
    assert store.get("vol-mask").attachments["i1"].connection_info == CI


def test_secret_strings_finds_nested_secrets() -> None:
    ci = {"data": {"auth_password": "a", "auth_password_in": "b", "cephx_key": "c", "auth_username": "u"}}
    assert sorted(secret_strings([{"connection_info": ci}])) == ["a", "b", "c"]


def test_batch_rolls_back_on_failure(store: Store) -> None:
    for vid in ("b1", "b2", "b3"):
        store.apply(volume_id=vid, state="present")
    bring(store, "b3", IN_USE, instance="other")
    reqs = [Request.from_params({"volume_id": v, "state": ATTACHING, "instance": "i1", "host": "h1"}, lease_ttl=600,
                                owner=TEST_RUN)
            for v in ("b1", "b2", "b3")]
    service = store.service()
    with pytest.raises(IllegalTransition) as err:
        service.apply_all(reqs)
    assert err.value.msg.startswith("volumes[2] (volume b3): volume b3 is in-use by other on h1")
    assert err.value.msg.endswith("; nothing in this batch was changed")
    assert store.get("b1").attachments == {} and store.get("b2").attachments == {}


def test_batch_check_mode_predicts_in_order(store: Store) -> None:
    store.apply(volume_id="bc", state="present", multiattach=True)
    reqs = [
        Request.from_params({"volume_id": "bc", "state": ATTACHING, "instance": "i1", "host": "h1"}, lease_ttl=600,
                            owner=TEST_RUN),
        Request.from_params({"volume_id": "bc", "state": IN_USE, "instance": "i1", "connection_info": CI},
                            lease_ttl=600, owner=TEST_RUN),
    ]
    outcomes = store.service(check_mode=True).apply_all(reqs)
    assert [o.transition for o in outcomes] == ["reserve", "attach"]
    assert store.get("bc").attachments == {}


def _reserve_worker(params: dict[str, t.Any], index: int, barrier: t.Any, results: t.Any) -> None:
    service = Reservations(types.SimpleNamespace(check_mode=False), Store(params).open())
    req = Request.from_params(
        {"volume_id": "vol-race", "state": ATTACHING, "instance": f"inst-{index}", "host": f"host-{index}"},
        lease_ttl=600, owner=Owner(token=f"run-{index}"),
    )
    barrier.wait()
    try:
        outcome = service.apply(req)
        results.put((index, "won", outcome.transition))
    except ReservationError as exc:
        results.put((index, "lost", exc.msg))
    except Exception as exc:  # a bug: report it instead of leaving the parent waiting
        results.put((index, "crashed", repr(exc)))


def test_race_twenty_processes_one_wins(store: Store) -> None:
    store.apply(volume_id="vol-race", state="present")
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(20)
    results = ctx.Queue()
    procs = [ctx.Process(target=_reserve_worker, args=(store.params, i, barrier, results)) for i in range(20)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _proc in procs]
    for p in procs:
        p.join(timeout=30)
    winners = [o for o in outcomes if o[1] == "won"]
    losers = [o for o in outcomes if o[1] == "lost"]
    assert len(winners) == 1, outcomes
    assert len(losers) == 19, outcomes
    w = winners[0][0]
    for _index, _result, msg in losers:
        assert re.match(
            rf"volume vol-race is attaching by inst-{w} on host-{w} \(held by run run-{w} since .*, lease ends .*\); "
            r"it is not multiattach, so it cannot be reserved",
            msg,
        ), msg
    volume = store.get("vol-race")
    assert list(volume.attachments) == [f"inst-{w}"]


def test_lapsed_leases_block_until_established(store: Store) -> None:
    """A lapsed lease frees nothing: the run may have died after the hot-plug (hole 1 of issue 14)."""
    store.apply(volume_id="vol-lease", state="present")
    store.apply(volume_id="vol-lease", state=ATTACHING, instance="crashed", host="h1", lease_ttl=2,
                connection_info=CI, owner=Owner(token="dead-run"))
    time.sleep(2.2)
    volume = store.get("vol-lease")
    att = volume.attachments["crashed"]
    assert (att.status, att.lapsed, att.connection_info) == (ATTACHING, True, CI)
    # Another instance cannot take the volume, here or elsewhere, and is told why and what to do.
    with pytest.raises(IllegalTransition) as err:
        store.apply(volume_id="vol-lease", state=ATTACHING, instance="other", host="h2")
    assert "attaching by crashed on h1 (lapsed: run dead-run is gone" in err.value.msg
    assert "run playbooks/reconcile.yml for h1" in err.value.msg
    assert "it is not multiattach, so it cannot be reserved for other on h2" in err.value.msg
    # The same attachment, by a new run, takes it over and may complete it.
    outcome = store.apply(volume_id="vol-lease", state=ATTACHING, instance="crashed", host="h1")
    assert outcome.transition == "take_over"
    assert outcome.taken_over_from()["token"] == "dead-run"
    assert "took over the lapsed attaching of crashed from run dead-run" in outcome.takeover_note()
    att = store.get("vol-lease").attachments["crashed"]
    assert (att.owner["token"], att.lapsed) == ("test-run", False)
    assert store.apply(volume_id="vol-lease", state=IN_USE, instance="crashed").transition == "attach"


def test_lapsed_detaching_stays_detaching(store: Store) -> None:
    bring(store, "vol-ld", IN_USE)
    store.apply(volume_id="vol-ld", state=DETACHING, instance="i1", lease_ttl=2, owner=Owner(token="gone"))
    time.sleep(2.2)
    att = store.get("vol-ld").attachments["i1"]
    assert (att.status, att.lapsed, att.connection_info) == (DETACHING, True, CI)
    # Rolled back (the disk is still there) or finished by whoever establishes it.
    assert store.apply(volume_id="vol-ld", state=IN_USE, instance="i1").transition == "roll_detaching"
    att = store.get("vol-ld").attachments["i1"]
    assert (att.status, att.owner, att.expires_at) == (IN_USE, None, None)


def test_lapsed_attaching_does_not_block_a_multiattach_volume(store: Store) -> None:
    store.apply(volume_id="vol-lm", state="present", multiattach=True)
    store.apply(volume_id="vol-lm", state=ATTACHING, instance="i1", host="h1", lease_ttl=2, owner=Owner(token="x"))
    time.sleep(2.2)
    assert store.apply(volume_id="vol-lm", state=ATTACHING, instance="i2", host="h1").transition == "reserve"


def test_a_live_run_keeps_its_attachment(store: Store) -> None:
    """Two runs for one attachment: the second is refused while the first lives (hole 3)."""
    store.apply(volume_id="vol-own", state="present")
    first = Owner(token="first-run", controller="ctl-a", pid=4242)
    store.apply(volume_id="vol-own", state=ATTACHING, instance="i1", host="h1", owner=first)
    before = store.get("vol-own").to_dict()
    for state in (ATTACHING, IN_USE, AVAILABLE, ERROR_ATTACHING):
        with pytest.raises(IllegalTransition) as err:
            store.apply(volume_id="vol-own", state=state, instance="i1", connection_info=CI
                        if state == IN_USE else None, host="h1", owner=Owner(token="second-run"))
        assert re.search(r"attaching by i1 on h1 \(held by run first-run \(pid 4242 on ctl-a\) since \S+, "
                         r"lease ends \S+\); another run cannot change it while that run lives", err.value.msg)
    assert store.get("vol-own").to_dict() == before
    # The holder itself goes on; its own repeat renews the lease.
    assert store.apply(volume_id="vol-own", state=IN_USE, instance="i1", connection_info=CI,
                       owner=first).transition == "attach"


def test_a_dead_run_on_this_controller_is_lapsed_at_once(store: Store) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    dead = Owner.current(token="dead-at-once")
    dead.pid, dead.started = proc.pid, 1  # a process that is gone (or another one with that pid)
    store.apply(volume_id="vol-dead", state="present")
    store.apply(volume_id="vol-dead", state=ATTACHING, instance="i1", host="h1", owner=dead)
    assert store.get("vol-dead").attachments["i1"].lapsed
    assert store.apply(volume_id="vol-dead", state=ATTACHING, instance="i1", host="h1").transition == "take_over"


def test_connection_info_is_stored_with_the_reservation(store: Store) -> None:
    store.apply(volume_id="vol-ci0", state="present")
    store.apply(volume_id="vol-ci0", state=ATTACHING, instance="i1", host="h1", connection_info=CI)
    att = store.get("vol-ci0").attachments["i1"]
    assert att.connection_info == CI
    # in-use then needs no connection_info of its own.
    assert store.apply(volume_id="vol-ci0", state=IN_USE, instance="i1").transition == "attach"


def test_renew_extends_only_the_tokens_leases(store: Store) -> None:
    store.apply(volume_id="vol-r1", state="present", multiattach=True)
    store.apply(volume_id="vol-r1", state=ATTACHING, instance="i1", host="h1", lease_ttl=60, owner=Owner(token="a"))
    store.apply(volume_id="vol-r1", state=ATTACHING, instance="i2", host="h1", lease_ttl=60, owner=Owner(token="b"))
    backend = store.open()
    try:
        target = time.time() + 3600
        assert backend.renew("a", target) == 1
        assert backend.renew("nobody", target) == 0
    finally:
        backend.close()
    atts = store.get("vol-r1").attachments
    assert atts["i1"].expires_at == pytest.approx(target)
    assert atts["i2"].expires_at < target - 3000


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"volume_id": "", "state": "present"}, "volume_id: give the volume's id"),
        ({"volume_id": "v", "state": ATTACHING, "host": "h"}, "instance: required with state=attaching"),
        ({"volume_id": "v", "state": ATTACHING, "instance": "i"}, "host: required with state=attaching"),
        ({"volume_id": "v", "state": "absent", "instance": "i"}, "instance: state=absent is about the whole volume"),
        ({"volume_id": "v", "state": IN_USE, "instance": "i", "connection_info": {"data": {}}},
         "connection_info: give a dict with driver_volume_type"),
        ({"volume_id": "v", "state": ERROR_ATTACHING, "instance": "i", "connection_info": CI},
         "connection_info: stored with state=attaching or state=in-use"),
        ({"volume_id": "v", "state": ATTACHING, "instance": "i", "host": "h", "multiattach": True},
         "multiattach: set when the record is created"),
        ({"volume_id": "v", "state": "present", "mode": "rx"}, "mode: 'rx' is not one of rw, ro"),
    ],
)
def test_bad_input_names_the_parameter(params: dict[str, t.Any], match: str) -> None:
    with pytest.raises(ReservationError, match=re.escape(match)):
        Request.from_params(params, lease_ttl=600)


def test_bad_input_in_batch_names_the_entry() -> None:
    with pytest.raises(ReservationError, match=re.escape("volumes[3].host: required with state=attaching")):
        Request.from_params({"volume_id": "v", "state": ATTACHING, "instance": "i"}, lease_ttl=600, where="volumes[3].")


def test_lease_ttl_too_short() -> None:
    with pytest.raises(ReservationError, match="lease_ttl: 1 is too short"):
        Request.from_params({"volume_id": "v"}, lease_ttl=1)


def test_plan_is_pure() -> None:
    req = Request.from_params({"volume_id": "v", "state": "present"}, lease_ttl=600)
    after, name = plan(None, req, 0.0)
    assert name == "create" and after is not None and after.status == AVAILABLE


def test_a_batch_is_one_transaction_per_volume_sequence(store: Store) -> None:
    # present + attaching + in-use for one volume, and a second volume: one batch, planned in order.
    reqs = [Request.from_params(p, lease_ttl=600, owner=TEST_RUN) for p in (
        {"volume_id": "t1", "state": "present"},
        {"volume_id": "t1", "state": ATTACHING, "instance": "i1", "host": "h1", "connection_info": CI},
        {"volume_id": "t2", "state": "present", "multiattach": True},
        {"volume_id": "t1", "state": IN_USE, "instance": "i1"},
    )]
    outcomes = store.service().apply_all(reqs)
    assert [o.transition for o in outcomes] == ["create", "reserve", "create", "attach"]
    assert outcomes[1].before.attachments == {} and outcomes[3].before.attachments["i1"].status == ATTACHING
    assert store.get("t1").attachments["i1"].status == IN_USE and store.get("t2").multiattach


def test_a_large_batch_keeps_all_or_nothing(store: Store) -> None:
    # Beyond what one etcd transaction holds (128 operations): still all or nothing.
    ids = [f"big-{n:03d}" for n in range(80)]
    store.service().apply_all([Request.from_params({"volume_id": v, "state": "present"}, lease_ttl=600)
                               for v in ids])
    bring(store, "big-079", IN_USE, instance="other")
    reqs = [Request.from_params({"volume_id": v, "state": ATTACHING, "instance": "i1", "host": "h1"},
                                lease_ttl=600, owner=TEST_RUN) for v in ids]
    with pytest.raises(IllegalTransition, match=r"^volumes\[79\] \(volume big-079\)"):
        store.service().apply_all(reqs)
    assert all(store.get(v).attachments == {} for v in ids[:79])
    reqs = reqs[:79]
    assert all(o.transition == "reserve" for o in store.service().apply_all(reqs))
    assert all(store.get(v).attachments["i1"].status == ATTACHING for v in ids[:79])


def test_the_record_keeps_the_size_it_grew_to(store: Store) -> None:
    bring(store, "vol-size", IN_USE)
    assert store.get("vol-size").size is None
    assert store.apply(volume_id="vol-size", state="present", size=128 << 20).transition == "resize"
    assert store.apply(volume_id="vol-size", state="present", size=128 << 20).transition is None
    assert store.apply(volume_id="vol-size", state=IN_USE, instance="i1", size=256 << 20).transition == "resize"
    assert store.get("vol-size").size == 256 << 20
    with pytest.raises(IllegalTransition, match="would shrink it"):
        store.apply(volume_id="vol-size", state="present", size=64 << 20)
    with pytest.raises(ReservationError, match="size: give the volume's size in bytes"):
        store.apply(volume_id="vol-size", state="present", size=-1)


class _MemoryBackend(Backend):
    """A store without a transaction of several records: update_many's own fallback runs."""

    def __init__(self) -> None:
        self.records: dict[str, Volume] = {}
        self.log: list[str] = []
        self.refuse: set[str] = set()

    def get(self, volume_id: str) -> Volume | None:
        return self.records.get(volume_id)

    def list_volumes(self) -> list[Volume]:
        return [self.records[v] for v in sorted(self.records)]

    def update(self, volume_id: str,
               change: t.Callable[[Volume | None], Volume | None]) -> tuple[Volume | None, Volume | None]:
        self.log.append(f"update {volume_id}")
        if volume_id in self.refuse:
            raise BackendError(f"writing {volume_id} failed")
        before = self.records.get(volume_id)
        after = change(before)
        if after is None:
            self.records.pop(volume_id, None)
        else:
            self.records[volume_id] = after
        return before, after

    def store_id(self) -> str:
        return "memory"


def _grow(size: int) -> t.Callable[[Volume | None], Volume | None]:
    def change(current: Volume | None) -> Volume | None:
        return Volume(current.volume_id if current else "?", size=size)

    return change


def _refuse(current: Volume | None) -> Volume | None:
    raise IllegalTransition("refused")


def test_without_a_transaction_a_refused_change_puts_back_the_earlier_ones_in_reverse() -> None:
    backend = _MemoryBackend()
    backend.records = {v: Volume(v, size=1) for v in ("a", "b", "c")}
    with pytest.raises(IllegalTransition, match="^refused$"):
        backend.update_many({"a": _grow(2), "b": _grow(3), "c": _refuse})
    assert {v: r.size for v, r in backend.records.items()} == {"a": 1, "b": 1, "c": 1}
    assert backend.log == ["update a", "update b", "update c", "update b", "update a"]


def test_without_a_transaction_what_cannot_be_put_back_is_added_to_the_error() -> None:
    backend = _MemoryBackend()
    backend.records = {v: Volume(v, size=1) for v in ("a", "b", "c", "d")}

    def refuse_after_a_change_to_b(current: Volume | None) -> Volume | None:
        backend.records["b"] = Volume("b", size=9)  # someone else, meanwhile
        backend.refuse.add("a")
        raise IllegalTransition("refused")

    with pytest.raises(IllegalTransition) as err:
        backend.update_many({"a": _grow(2), "b": _grow(3), "c": _grow(4), "d": refuse_after_a_change_to_b})
    assert err.value.msg == ("refused; could NOT put back b (it changed since this call changed it); "
                             "a (writing a failed)")
    assert err.value.details == {"not_put_back": ["b (it changed since this call changed it)", "a (writing a failed)"]}
    assert {v: r.size for v, r in backend.records.items()} == {"a": 2, "b": 9, "c": 1, "d": 1}


def test_a_batch_says_which_records_it_could_not_put_back() -> None:
    backend = _MemoryBackend()
    backend.records = {"a": Volume("a", size=1)}
    service = Reservations(types.SimpleNamespace(check_mode=False), backend)
    reqs = [Request.from_params({"volume_id": "a", "state": ATTACHING, "instance": "i1", "host": "h1"}, lease_ttl=600),
            Request.from_params({"volume_id": "b", "state": IN_USE, "instance": "i1", "connection_info": CI},
                                lease_ttl=600)]
    # Refused (b was never reserved) after a was written; a can be put back:
    with pytest.raises(ReservationError) as err:
        service.apply_all(reqs)
    assert err.value.msg.endswith("; nothing in this batch was changed")
    assert not backend.records["a"].attachments
    # Now the put-back of a fails too: the error must not say nothing changed.
    original = backend.update

    def update(volume_id: str, change: t.Any) -> t.Any:
        if volume_id == "b":
            backend.refuse.add("a")
        return original(volume_id, change)

    backend.update = update  # type: ignore[method-assign]
    with pytest.raises(ReservationError) as err:
        service.apply_all(reqs)
    assert err.value.msg.startswith("volumes[1] (volume b): ")
    assert err.value.msg.endswith("; the batch was undone except: could NOT put back a (writing a failed)")
    assert "nothing in this batch was changed" not in err.value.msg
    assert err.value.details["not_put_back"] == ["a (writing a failed)"]
    assert "i1" in backend.records["a"].attachments
