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

    def find_lun(self, lun: int) -> FakeLun | None:
        return FakeLun(lun, "sdq") if lun == 1 else None

    def other_disks(self, lun: int) -> list[FakeLun]:
        return []


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
