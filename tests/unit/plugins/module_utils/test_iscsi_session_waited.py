"""iscsi_session says how long it waited (offline: the host's sysfs and tools replaced)."""

from __future__ import annotations

import time
import typing as t
from unittest import mock

import pytest

from ansible_collections.openvolume.compute.plugins.module_utils import _iscsi_session as mod
from ansible_collections.openvolume.compute.plugins.module_utils._iscsiadm import Portal, SessionDetail

IQN = "iqn.2026-11.org.openvolume.lab:vol-01"


class FakeLun:
    def __init__(self, lun: int, disk: str) -> None:
        self.lun, self.disk, self.hctl = lun, disk, f"2:0:0:{lun}"


class FakeSysfs:
    """Session 1 has LUN 1 as sdq and nothing else."""

    def __init__(self, sid: int) -> None:
        self.sid = sid

    def find_lun(self, lun: int, addressing: str | None = None) -> FakeLun | None:
        return FakeLun(lun, "sdq") if lun == 1 else None

    def luns(self) -> list[FakeLun]:
        return [FakeLun(1, "sdq")]


def _session() -> mod.IscsiSession:
    session = mod.IscsiSession.__new__(mod.IscsiSession)
    session.module = mock.MagicMock(check_mode=False)
    session.iscsiadm = mock.MagicMock()
    portal = Portal.parse("127.0.0.1:3260", param="portals[0]")
    session.iscsiadm.session_details.return_value = [
        SessionDetail(target=IQN, portal=portal, persistent_portal=portal, iface="default", sid=1, transport="tcp")]
    session.devices = mock.MagicMock()
    # The kernel takes a while to let go of the disk.
    session.devices.delete.side_effect = lambda disk, timeout: time.sleep(0.2)
    return session


def _request() -> mod.SessionRequest:
    return mod.SessionRequest.from_params({"target": IQN, "portals": ["127.0.0.1:3260"], "lun": 1, "iface": None,
                                           "ifaces": None, "state": "absent", "multipath": False,
                                           "wait_timeout": 5.0, "rescan": True, "wwid": None})


def test_absent_says_how_long_each_removal_took(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mod, "SysfsSession", FakeSysfs)
    monkeypatch.setattr(mod.MultipathMap, "of_disk", classmethod(lambda cls, disk: None))
    result: dict[str, t.Any] = _session().state_absent(_request())
    assert result["removed_devices"] == ["/dev/sdq"]
    waited = result["waited"]
    assert waited["multipath"] is None
    assert 0.2 <= waited["devices"]["/dev/sdq"] < 1.0
    assert waited["total"] >= waited["devices"]["/dev/sdq"]


def test_deadline_counts_from_its_start() -> None:
    deadline = mod._Deadline(5.0)
    time.sleep(0.05)
    assert 0.05 <= deadline.elapsed() < 1.0
    assert deadline.left() <= 4.95


# Batches (volumes) ---------------------------------------------------------------


class TwoLunSysfs(FakeSysfs):
    """Session 1 carries LUN 1 (sdq) and LUN 2 (sdr); LUN 3 never shows."""

    def find_lun(self, lun: int, addressing: str | None = None) -> FakeLun | None:
        return {1: FakeLun(1, "sdq"), 2: FakeLun(2, "sdr")}.get(lun)

    def luns(self) -> list[FakeLun]:
        return [FakeLun(1, "sdq"), FakeLun(2, "sdr")]


def _batch(*luns: int, state: str = "present") -> list[mod.SessionRequest]:
    reqs, batch = mod.requests({"volumes": [{"target": IQN, "portals": ["127.0.0.1:3260"], "lun": lun,
                                             "volume_id": f"vol-{lun}"} for lun in luns],
                                "state": state, "wait_timeout": 0.3, "rescan": True})
    assert batch
    return reqs


def test_absent_batch_logs_out_once_after_the_last_lun_of_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mod, "SysfsSession", TwoLunSysfs)
    monkeypatch.setattr(mod.MultipathMap, "of_disk", classmethod(lambda cls, disk: None))
    session = _session()
    session.devices.delete.side_effect = None
    one = session.absent_all(_batch(1, state="absent"))
    # LUN 2 stays: the session carries it, so it is kept.
    assert one[0]["logged_out"] == [] and one[0]["kept_sessions"][0]["luns_in_use"] == [2]
    both = session.absent_all(_batch(1, 2, state="absent"))
    assert [r["removed_devices"] for r in both] == [["/dev/sdq"], ["/dev/sdr"]]
    assert session.iscsiadm.logout_session.call_count == 1
    assert [r["kept_sessions"] for r in both] == [[], []]


def test_present_batch_logs_in_once_per_target_and_path_and_fails_without_leaving_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ansible_collections.openvolume.compute.plugins.module_utils._iscsiadm import IscsiError, NodeEntry
    from ansible_collections.openvolume.compute.plugins.module_utils._scsi_devices import ScsiDevices

    monkeypatch.setattr(mod, "SysfsSession", TwoLunSysfs)
    monkeypatch.setattr(mod, "initiator_name", lambda: "iqn.test:initiator")
    session = _session()
    portal = Portal.parse("127.0.0.1:3260")
    detail = session.iscsiadm.session_details.return_value[0]
    session.iscsiadm.session_details.side_effect = [[], [detail], [detail]]
    session.iscsiadm.nodes.return_value = [NodeEntry(portal=portal, tpgt=1, target=IQN, iface="default")]
    session.iscsiadm.node_record.return_value = {"node.startup": "automatic"}
    session.devices.wait_for_luns.side_effect = lambda pairs, timeout: ScsiDevices.wait_for_luns(
        session.devices, pairs, timeout=timeout)
    # LUN 3 of volumes[0] never shows: the call fails naming it and logs out
    # of the one session it logged in to for both volumes.
    with pytest.raises(IscsiError) as err:
        session.present_all(_batch(3, 2))
    assert err.value.msg.startswith("volumes[0] (vol-3): lun: LUN 3 of")
    assert session.iscsiadm.login.call_count == 1
    assert session.iscsiadm.logout_session.call_count == 1


def test_present_batch_check_mode_predicts_one_login_for_two_luns() -> None:
    session = _session()
    session.module.check_mode = True
    session.iscsiadm.session_details.return_value = []
    result = session.present_all(_batch(1, 2))
    assert [r["logged_in"] for r in result] == [["127.0.0.1:3260"], []]
    assert [r["changed"] for r in result] == [True, False]
    session.iscsiadm.login.assert_not_called()


def test_batch_errors_name_the_entry() -> None:
    with pytest.raises(mod.IscsiError, match=r"^volumes\[1\]\.lun: -1 is not a LUN number"):
        mod.requests({"volumes": [{"target": IQN, "portals": ["p"]}, {"target": IQN, "portals": ["p"], "lun": -1}],
                      "state": "present", "wait_timeout": 1.0, "rescan": True})
    with pytest.raises(mod.IscsiError, match="^volumes: give either volumes or target"):
        mod.requests({"volumes": [], "target": IQN, "state": "present", "wait_timeout": 1.0, "rescan": True})


def test_batch_takes_the_top_level_iface_as_the_entries_default() -> None:
    reqs, _batch = mod.requests({"volumes": [{"target": IQN, "portals": ["p"]}, {"target": IQN, "iface": "own"}],
                                 "iface": "shared", "state": "absent", "wait_timeout": 1.0, "rescan": True})
    assert [r.ifaces for r in reqs] == [["shared"], ["own"]]


# Logins side by side --------------------------------------------------------------

IQN2 = "iqn.2026-11.org.openvolume.lab:vol-02"
PORTALS = ["127.0.0.1:3260", "127.0.0.1:3261"]


def _login_session(logins: t.Callable[..., t.Any]) -> mod.IscsiSession:
    from ansible_collections.openvolume.compute.plugins.module_utils._iscsiadm import NodeEntry

    session = _session()
    session.iscsiadm.session_details.side_effect = None
    session.iscsiadm.session_details.return_value = []
    session.iscsiadm.nodes.return_value = [NodeEntry(portal=Portal.parse(p), tpgt=1, target=tg, iface="default")
                                           for tg in (IQN, IQN2) for p in PORTALS]
    session.iscsiadm.login.side_effect = logins
    return session


def _two_targets(multipath: bool) -> list[mod.SessionRequest]:
    reqs, _batch = mod.requests({"volumes": [{"target": tg, "portals": PORTALS, "lun": 1, "volume_id": vid,
                                              "multipath": multipath}
                                             for tg, vid in ((IQN, "vol-a"), (IQN2, "vol-b"), (IQN, "vol-c"))],
                                 "state": "present", "wait_timeout": 0.3, "rescan": True})
    return reqs


def test_multipath_logins_of_a_batch_are_made_side_by_side() -> None:
    import threading

    # Four logins (two targets, two portals each; vol-c shares vol-a's
    # target): each waits until all four are in flight, which only happens
    # when they run at the same time.
    barrier = threading.Barrier(4, timeout=5)
    session = _login_session(lambda **kw: barrier.wait() is not None)
    logged: list[tuple[str, mod.Path]] = []
    owners = session._login_side_by_side(_two_targets(True), [], logged)
    assert session.iscsiadm.login.call_count == 4
    assert sorted((tg, str(p.portal)) for tg, p in logged) == sorted((tg, p) for tg in (IQN, IQN2) for p in PORTALS)
    # Each login belongs to the first volume that asked for it; vol-c asked for none.
    assert sorted(set(owners.values())) == [0, 1]
    # node.startup is set after each good login.
    assert session.iscsiadm.node_update.call_count == 4


def test_a_failed_login_among_parallel_ones_names_its_volume_and_reports_the_others() -> None:
    from ansible_collections.openvolume.compute.plugins.module_utils._iscsiadm import IscsiadmError

    def login(*, target: str, portal: Portal, iface: str) -> bool:
        if target == IQN2 and str(portal) == PORTALS[1]:
            raise IscsiadmError("login to it failed: iscsiadm exit 24", rc=24, cmd=["iscsiadm"], stderr="")
        return True

    session = _login_session(login)
    logged: list[tuple[str, mod.Path]] = []
    with pytest.raises(IscsiadmError) as err:
        session._login_side_by_side(_two_targets(True), [], logged)
    assert err.value.msg.startswith("volumes[1] (vol-b): login to it failed")
    assert err.value.rc == 24
    # The three logins that went through are there for the caller to log out of.
    assert len(logged) == 3 and (IQN2, mod.Path(Portal.parse(PORTALS[1]), "default")) not in logged


def test_without_multipath_one_job_per_target_tries_its_portals_in_order() -> None:
    from ansible_collections.openvolume.compute.plugins.module_utils._iscsiadm import IscsiadmError

    def login(*, target: str, portal: Portal, iface: str) -> bool:
        if str(portal) == PORTALS[0]:
            raise IscsiadmError("portal down", rc=8, cmd=["iscsiadm"], stderr="")
        return True

    session = _login_session(login)
    logged: list[tuple[str, mod.Path]] = []
    owners = session._login_side_by_side(_two_targets(False), [], logged)
    # vol-a and vol-b: the first portal fails, the second logs in; vol-c
    # (vol-a's target) waits for vol-a's job and needs no login of its own.
    assert sorted((tg, str(p.portal)) for tg, p in logged) == [(IQN, PORTALS[1]), (IQN2, PORTALS[1])]
    assert session.iscsiadm.login.call_count == 4
    assert sorted(owners.values()) == [0, 1]


def test_a_missing_node_record_fails_before_any_login() -> None:
    session = _login_session(lambda **kw: True)
    session.iscsiadm.nodes.return_value = session.iscsiadm.nodes.return_value[:2]  # only IQN's records
    with pytest.raises(mod.IscsiError, match=r"^volumes\[1\] \(vol-b\): portals: no node record for"):
        session._login_side_by_side(_two_targets(True), [], [])
    session.iscsiadm.login.assert_not_called()
