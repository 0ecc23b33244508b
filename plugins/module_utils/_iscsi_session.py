# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""iSCSI sessions and the LUN's block device: the logic of the iscsi_session module.

FLOW.md attach steps 7-9 and detach step 3, what os-brick's iSCSI connector
does for Nova: log in only where no session exists (duplicate logins crashed
iscsiadm under load), set automatic startup after a good login, wait for the
LUN's by-path link and, with multipath, for the dm map. Detach removes the
map and the SCSI disks and logs out only when no other LUN of the target is
still in use on the host.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from ansible_collections.openvolume.compute.plugins.module_utils._common import run_module, skip_if_check_mode
from ansible_collections.openvolume.compute.plugins.module_utils._iscsiadm import (
    Iscsiadm,
    IscsiError,
    Portal,
    SessionDetail,
    validate_target_name,
)
from ansible_collections.openvolume.compute.plugins.module_utils._scsi_devices import (
    Disk,
    MultipathMap,
    ScsiDevices,
    by_path,
    initiator_name,
)


@dataclass
class SessionRequest:
    target: str
    portals: list[Portal]
    lun: int
    iface: str
    multipath: bool
    wait_timeout: float
    rescan: bool

    @classmethod
    def from_params(cls, params: t.Mapping[str, t.Any]) -> SessionRequest:
        target = validate_target_name(params["target"])
        portals = [Portal.parse(p, param=f"portals[{i}]") for i, p in enumerate(params.get("portals") or [])]
        if len(set(portals)) != len(portals):
            raise IscsiError("portals: a portal is listed twice; list each portal once")
        if params["state"] == "present" and not portals:
            raise IscsiError("portals: at least one portal is needed with state=present")
        if params["lun"] < 0 or params["lun"] > 16383:
            raise IscsiError(f"lun: {params['lun']} is not a LUN number (0-16383)")
        if params["wait_timeout"] <= 0:
            raise IscsiError("wait_timeout: must be a positive number of seconds")
        return cls(target=target, portals=portals, lun=params["lun"], iface=params["iface"],
                   multipath=params["multipath"], wait_timeout=float(params["wait_timeout"]),
                   rescan=params["rescan"])


class IscsiSession:
    """Brings a target's sessions and one LUN's device to the requested state."""

    def __init__(self, module: t.Any) -> None:
        self.module = module
        self.iscsiadm = Iscsiadm(module)
        self.devices = ScsiDevices(module)

    # the only methods that change the host ------------------------------------
    @skip_if_check_mode
    def _login(self, req: SessionRequest, portal: Portal) -> None:
        self.iscsiadm.login(target=req.target, portal=portal, iface=req.iface)
        # After a good login only: a record set to automatic that cannot log
        # in would make every iscsid start retry it.
        record = self.iscsiadm.node_record(target=req.target, portal=portal, iface=req.iface) or {}
        if record.get("node.startup") != "automatic":
            self.iscsiadm.node_update(target=req.target, portal=portal, iface=req.iface,
                                      name="node.startup", value="automatic", secret=False)

    @skip_if_check_mode
    def _logout(self, req: SessionRequest, portal: Portal) -> None:
        self.iscsiadm.logout(target=req.target, portal=portal, iface=req.iface)

    @skip_if_check_mode
    def _rescan(self, sids: list[int]) -> None:
        for sid in sids:
            self.iscsiadm.rescan(sid=sid)

    @skip_if_check_mode
    def _remove_map(self, mpath: MultipathMap, timeout: float) -> None:
        self.devices.remove_map(mpath, timeout=timeout)

    @skip_if_check_mode
    def _delete_disk(self, disk: Disk, timeout: float) -> None:
        self.devices.delete(disk, timeout=timeout)

    # helpers ----------------------------------------------------------------------
    def _sessions(self, req: SessionRequest) -> list[SessionDetail]:
        return [
            s for s in self.iscsiadm.session_details()
            if s.target == req.target and (not req.portals or s.portal in req.portals)
        ]

    def _require_records(self, req: SessionRequest, portals: list[Portal]) -> None:
        known = {(n.target, n.portal) for n in self.iscsiadm.nodes()}
        missing = [str(p) for p in portals if (req.target, p) not in known]
        if missing:
            raise IscsiError(
                f"portals: no node record for {req.target} at {', '.join(missing)}; create it first with "
                "openvolume.compute.iscsi_node (it holds the CHAP settings the login needs)"
            )

    # states -------------------------------------------------------------------------
    def state_present(self, req: SessionRequest) -> dict[str, t.Any]:
        existing = {s.portal for s in self._sessions(req) if s.portal is not None}
        wanted = req.portals if req.multipath else ([p for p in req.portals if p in existing] or req.portals)[:1]
        to_login = [p for p in wanted if p not in existing]
        if not self.module.check_mode:
            # In check mode the record may be one an earlier task would have
            # created (the volume_attach role does): report the login only.
            self._require_records(req, to_login)
        logged_in: list[Portal] = []
        result: dict[str, t.Any] = {
            "changed": bool(to_login),
            "logged_in": [str(p) for p in to_login],
            "initiator": initiator_name(),
        }
        before = sorted(str(p) for p in existing)
        result["diff"] = {"before": {"sessions": before}, "after": {"sessions": sorted(before + result["logged_in"])}}
        if self.module.check_mode:
            result["sessions"] = [{"portal": p} for p in before]
            return result
        try:
            if not req.multipath and not existing:
                # One path: try the portals in order until one logs in.
                errors = []
                for portal in req.portals:
                    try:
                        self._login(req, portal)
                    except IscsiError as exc:
                        errors.append(exc.msg)
                        continue
                    logged_in, wanted = [portal], [portal]
                    break
                if not logged_in:
                    raise IscsiError("; ".join(errors))
            else:
                for portal in to_login:
                    self._login(req, portal)
                    logged_in.append(portal)
            result["logged_in"] = [str(p) for p in logged_in]
            result["changed"] = bool(logged_in)
            result["diff"]["after"]["sessions"] = sorted(before + result["logged_in"])
            sessions = [s for s in self._sessions(req) if s.portal in wanted]
            if req.rescan:
                # New sessions scan by themselves; an existing one learns of a
                # LUN mapped since its login only by a rescan.
                self._rescan([s.sid for s in sessions if s.portal in existing and s.sid is not None])
            result.update(self._wait_for_device(req, wanted))
            result["sessions"] = [{"portal": str(s.portal), "sid": s.sid} for s in sessions]
        except IscsiError:
            # No half-done state: log out of what this call logged in to.
            for portal in logged_in:
                self._logout(req, portal)
            raise
        return result

    def _wait_for_device(self, req: SessionRequest, portals: list[Portal]) -> dict[str, t.Any]:
        paths = [by_path(p, req.target, req.lun) for p in portals]
        missing = self.devices.wait_for_paths(paths, timeout=req.wait_timeout)
        if missing:
            raise IscsiError(
                f"lun: LUN {req.lun} of {req.target} did not appear within {req.wait_timeout:g}s "
                f"(missing {', '.join(missing)}); check the LUN number and that the target maps it to this "
                "initiator, or raise wait_timeout"
            )
        disks = [Disk.from_path(p) for p in paths]
        out: dict[str, t.Any] = {
            "by_path": paths[0],
            "by_paths": paths,
            "device": disks[0].dev,
            "devices": [d.dev for d in disks],
            "size": disks[0].size(),
            "wwn": disks[0].wwid(),
            "multipath_device": None,
        }
        if req.multipath:
            mpath = self.devices.wait_for_map(disks, timeout=req.wait_timeout)
            if mpath is None:
                raise IscsiError(
                    f"multipath: no multipath map over {', '.join(d.dev for d in disks)} within "
                    f"{req.wait_timeout:g}s; check that multipathd runs and does not blacklist these disks"
                )
            out["multipath_device"] = mpath.dev
            out["multipath_name"] = mpath.name
            out["wwn"] = mpath.wwid
        return out

    def state_absent(self, req: SessionRequest) -> dict[str, t.Any]:
        sessions = self._sessions(req)
        disks = [Disk(s.disks[req.lun]) for s in sessions if req.lun in s.disks]
        maps = {m.dm: m for m in (MultipathMap.of_disk(d) for d in disks) if m is not None}
        # Log out only of sessions that keep no other disk: another LUN of the
        # same target may be attached to another instance on this host.
        to_logout = [s for s in sessions if not (set(s.disks) - {req.lun})]
        kept = [s for s in sessions if s not in to_logout]
        for mpath in maps.values():
            self._remove_map(mpath, req.wait_timeout)
        for disk in disks:
            self._delete_disk(disk, req.wait_timeout)
        for s in to_logout:
            if s.portal is not None:
                self._logout(req, s.portal)
        return {
            "changed": bool(disks or maps or to_logout),
            "diff": {
                "before": {"sessions": sorted(str(s.portal) for s in sessions), "devices": [d.dev for d in disks]},
                "after": {"sessions": sorted(str(s.portal) for s in kept), "devices": []},
            },
            "removed_devices": [d.dev for d in disks],
            "removed_multipath": [m.dev for m in maps.values()],
            "logged_out": [str(s.portal) for s in to_logout],
            "kept_sessions": [
                {"portal": str(s.portal), "luns_in_use": sorted(set(s.disks) - {req.lun})} for s in kept
            ],
        }


def argument_spec() -> dict[str, t.Any]:
    """Argument spec of the iscsi_session module."""
    return {
        "target": {"type": "str", "required": True},
        "portals": {"type": "list", "elements": "str", "default": []},
        "lun": {"type": "int", "default": 1},
        "iface": {"type": "str", "default": "default"},
        "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        "multipath": {"type": "bool", "default": False},
        "wait_timeout": {"type": "float", "default": 30.0},
        "rescan": {"type": "bool", "default": True},
    }


def run(module: t.Any) -> None:
    """Entry point of the iscsi_session module."""

    def handle() -> dict[str, t.Any]:
        req = SessionRequest.from_params(module.params)
        session = IscsiSession(module)
        if module.params["state"] == "present":
            result = session.state_present(req)
        else:
            result = session.state_absent(req)
        result.update(target=req.target, lun=req.lun)
        if not module._diff:
            result.pop("diff", None)
        return result

    run_module(module, handle)
