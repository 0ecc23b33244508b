# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""iSCSI sessions and the LUN's block device: the logic of the iscsi_session module.

FLOW.md attach steps 7-9 and detach step 3, what os-brick's iSCSI connector
does for Nova: log in only where no session exists (duplicate logins crashed
iscsiadm under load), set automatic startup after a good login, find the
LUN's disk below each session in sysfs and its by-path link and, with
multipath, the dm map. Detach removes the map and the SCSI disks and logs out
only when no other LUN of the target is still in use on the host.

A path is a portal and an iface: two ifaces bound to two NICs give two
sessions to one portal (multipath over one portal). A session is "ours" when
its target, its node record's (persistent) portal and its iface are among
those asked for, and its transport is tcp or iser; sessions of other ifaces
or of an offload HBA's own are left alone.

The disk handed on is checked to be the volume (the CVE-2023-2088 class of
bugs: a stale or foreign device given to an instance): every path must
report one WWID, the catalogue's WWN when it is known, and a by-path link
counts only when it resolves to the disk found below the current session.
"""

from __future__ import annotations

import time
import typing as t
from dataclasses import dataclass

from ansible_collections.openvolume.compute.plugins.module_utils._common import (
    run_module,
    skip_if_check_mode,
    undo_after,
)
from ansible_collections.openvolume.compute.plugins.module_utils._iscsiadm import (
    SESSION_TRANSPORTS,
    Iscsiadm,
    IscsiError,
    NodeEntry,
    Portal,
    SessionDetail,
    validate_target_name,
)
from ansible_collections.openvolume.compute.plugins.module_utils._scsi_devices import (
    DeviceError,
    Disk,
    MultipathMap,
    ScsiDevices,
    ScsiLun,
    SysfsSession,
    by_path_name,
    initiator_name,
    normalize_wwid,
)

MAX_LUN = 2**32 - 1


@dataclass(frozen=True)
class Path:
    """One way to the target: a portal through an iface."""

    portal: Portal
    iface: str

    def __str__(self) -> str:
        return str(self.portal) if self.iface == "default" else f"{self.portal} via {self.iface}"


@dataclass
class SessionRequest:
    target: str
    portals: list[Portal]
    lun: int
    ifaces: list[str]
    multipath: bool
    wait_timeout: float
    rescan: bool
    expected_wwid: str | None = None
    resize: bool = False

    @classmethod
    def from_params(cls, params: t.Mapping[str, t.Any]) -> SessionRequest:
        target = validate_target_name(params["target"])
        portals = [Portal.parse(p, param=f"portals[{i}]") for i, p in enumerate(params.get("portals") or [])]
        if len(set(portals)) != len(portals):
            raise IscsiError("portals: a portal is listed twice (compared as addresses: [2001:DB8::1] and "
                             "[2001:db8:0::1] are one portal); list each portal once")
        if params["state"] == "present" and not portals:
            raise IscsiError("portals: at least one portal is needed with state=present")
        ifaces = list(params.get("ifaces") or [params.get("iface") or "default"])
        if len(set(ifaces)) != len(ifaces) or not all(ifaces):
            raise IscsiError("ifaces: list each iface once, by its name in `iscsiadm -m iface`")
        if not 0 <= params["lun"] <= MAX_LUN:
            raise IscsiError(f"lun: {params['lun']} is not a LUN number (0-{MAX_LUN})")
        if params["wait_timeout"] <= 0:
            raise IscsiError("wait_timeout: must be a positive number of seconds")
        wwid = params.get("wwid")
        return cls(target=target, portals=portals, lun=params["lun"], ifaces=ifaces,
                   multipath=params["multipath"], wait_timeout=float(params["wait_timeout"]),
                   rescan=params["rescan"], expected_wwid=normalize_wwid(wwid, param="wwid") if wwid else None,
                   resize=bool(params.get("resize")))

    def paths(self) -> list[Path]:
        """Every path asked for, portals first, in the order given."""
        return [Path(p, i) for p in self.portals for i in self.ifaces]

    def owns(self, s: SessionDetail) -> bool:
        """Whether a session of the host is one this request manages."""
        return (
            s.target == self.target
            and (s.transport is None or s.transport in SESSION_TRANSPORTS)
            and (s.iface or "default") in self.ifaces
            and (not self.portals or s.persistent_portal in self.portals)
        )


class _Deadline:
    """One bound on the total wait of a call (devices, links, map)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.monotonic()
        self.end = self.start + seconds

    def elapsed(self) -> float:
        """Seconds since the wait began, for the results' ``waited``."""
        return round(time.monotonic() - self.start, 2)

    def left(self) -> float:
        return max(self.end - time.monotonic(), 0.0)


@dataclass
class _Found:
    """The LUN's disk below one session."""

    session: SessionDetail
    sysfs: SysfsSession
    lun: ScsiLun
    disk: Disk


def _path_of(s: SessionDetail) -> Path:
    # The parser gives every session a persistent portal (its current one if
    # iscsiadm printed none).
    return Path(s.persistent_portal or Portal(""), s.iface or "default")


class IscsiSession:
    """Brings a target's sessions and one LUN's device to the requested state."""

    def __init__(self, module: t.Any) -> None:
        self.module = module
        self.iscsiadm = Iscsiadm(module)
        self.devices = ScsiDevices(module)

    # the only methods that change the host ------------------------------------
    @skip_if_check_mode
    def _login(self, req: SessionRequest, record: NodeEntry) -> None:
        iface = record.iface or "default"
        self.iscsiadm.login(target=req.target, portal=record.portal, iface=iface)
        # After a good login only: a record set to automatic that cannot log
        # in would make every iscsid start retry it.
        current = self.iscsiadm.node_record(target=req.target, portal=record.portal, iface=iface) or {}
        if current.get("node.startup") != "automatic":
            self.iscsiadm.node_update(target=req.target, portal=record.portal, iface=iface,
                                      name="node.startup", value="automatic", secret=False)

    @skip_if_check_mode
    def _logout(self, req: SessionRequest, s: SessionDetail) -> None:
        if s.sid is not None:
            self.iscsiadm.logout_session(sid=s.sid, what=f"{req.target} at {_path_of(s)}")

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

    def _refresh_identity(self, disks: list[Disk]) -> None:
        # Not guarded by check mode: a rescan changes nothing on the host but
        # the kernel's copy of the disk's identity, and without it check mode
        # would compare the expected WWID with what the disk was at login.
        for disk in disks:
            self.devices.rescan(disk)

    # helpers ----------------------------------------------------------------------
    def _sessions(self, req: SessionRequest) -> list[SessionDetail]:
        return [s for s in self.iscsiadm.session_details() if req.owns(s) and s.sid is not None]

    def _records(self, req: SessionRequest, paths: list[Path]) -> dict[Path, NodeEntry]:
        """The node record of each path (its portal as spelt in the record); error if one is missing."""
        records: dict[Path, NodeEntry] = {}
        for node in self.iscsiadm.nodes():
            path = Path(node.portal, node.iface or "default")
            if node.target == req.target and path in paths:
                records.setdefault(path, node)
        missing = [str(p) for p in paths if p not in records]
        if missing:
            raise IscsiError(
                f"portals: no node record for {req.target} at {', '.join(missing)}; create it first with "
                "openvolume.compute.iscsi_node (it holds the CHAP settings the login needs)"
            )
        return records

    def _rollback(self, req: SessionRequest, logged_in: list[Path], error: IscsiError) -> None:
        """Log out of the sessions this call logged in to (found again by their path).

        A logout that fails is added to ``error``, which the caller raises.
        """
        if not logged_in:
            return
        undo_after(error, [(f"logout from {req.target} at {s.persistent_portal or s.portal}",
                            lambda s=s: self._logout(req, s))  # type: ignore[misc]
                           for s in self._sessions(req) if _path_of(s) in logged_in])

    # states -------------------------------------------------------------------------
    def state_present(self, req: SessionRequest) -> dict[str, t.Any]:
        existing = {_path_of(s): s for s in self._sessions(req)}
        paths = req.paths()
        if req.multipath:
            wanted = paths
        else:
            wanted = [p for p in paths if p in existing][:1] or paths[:1]
        to_login = [p for p in wanted if p not in existing]
        records: dict[Path, NodeEntry] = {}
        if not self.module.check_mode:
            # In check mode the record may be one an earlier task would have
            # created (the volume_attach role does): report the login only.
            # Without multipath and without a session, any path may be the one
            # that logs in: all need their record.
            records = self._records(req, to_login if req.multipath or existing else paths)
        before = sorted(str(p) for p in existing)
        result: dict[str, t.Any] = {
            "changed": bool(to_login),
            "logged_in": [str(p.portal) for p in to_login],
            "initiator": initiator_name(),
            "diff": {"before": {"sessions": before},
                     "after": {"sessions": sorted(before + [str(p) for p in to_login])}},
        }
        if self.module.check_mode:
            result["sessions"] = [{"portal": str(p.portal), "iface": p.iface, "sid": s.sid}
                                  for p, s in existing.items()]
            result["waited"] = {"devices": {}, "links": 0.0, "multipath": None, "total": 0.0}
            return result
        logged_in: list[Path] = []
        deadline = _Deadline(req.wait_timeout)
        try:
            if not req.multipath and not existing:
                # One path: try them in order until one logs in.
                errors = []
                for path in paths:
                    try:
                        self._login(req, records[path])
                    except IscsiError as exc:
                        errors.append(exc.msg)
                        continue
                    logged_in, wanted = [path], [path]
                    break
                if not logged_in:
                    raise IscsiError("; ".join(errors))
            else:
                for path in to_login:
                    self._login(req, records[path])
                    logged_in.append(path)
            result["logged_in"] = [str(p.portal) for p in logged_in]
            result["changed"] = bool(logged_in)
            result["diff"]["after"]["sessions"] = sorted(before + [str(p) for p in logged_in])
            details = self.iscsiadm.session_details()
            sessions = {_path_of(s): s for s in details
                        if req.owns(s) and s.sid is not None and _path_of(s) in wanted}
            # Sessions of the target through other ifaces share by-path names
            # with ours (see _links).
            others = [s for s in details if s.target == req.target and s.sid is not None
                      and (s.transport is None or s.transport in SESSION_TRANSPORTS) and s not in sessions.values()]
            lost = [str(p) for p in wanted if p not in sessions]
            if lost:
                raise IscsiError(f"portals: no session for {req.target} at {', '.join(lost)} after the login; "
                                 "the target may have dropped it (see the target's log and dmesg)")
            ordered = [sessions[p] for p in wanted]
            if req.rescan:
                # New sessions scan by themselves; an existing one learns of a
                # LUN mapped since its login (and of a changed one) only by a rescan.
                self._rescan([s.sid for p, s in sessions.items() if p in existing and s.sid is not None])
            result.update(self._devices(req, ordered, others, fresh=set(logged_in), deadline=deadline))
            result["waited"]["total"] = deadline.elapsed()
            resized = result.get("resized")
            if resized and resized["after"] > resized["before"]:
                result["changed"] = True
                result["diff"]["before"]["size"] = resized["before"]
                result["diff"]["after"]["size"] = resized["after"]
            result["sessions"] = [{"portal": str(p.portal), "iface": p.iface, "sid": sessions[p].sid}
                                  for p in wanted]
        except IscsiError as exc:
            # No half-done state: log out of what this call logged in to.
            self._rollback(req, logged_in, exc)
            raise
        return result

    def _devices(self, req: SessionRequest, sessions: list[SessionDetail], others: list[SessionDetail], *,
                 fresh: set[Path], deadline: _Deadline) -> dict[str, t.Any]:
        """Find, check and describe the LUN's disk below every session."""
        found: list[_Found] = []
        # The LUN shows up below every session at once (the kernel scans them
        # in parallel), so waiting for one after the other under one deadline
        # is waiting for all together; each device's time counts from the
        # start, which is what an operator wants to see.
        phase = time.monotonic()
        appeared: dict[str, float] = {}
        for s in sessions:
            sysfs = SysfsSession(s.sid or 0)
            lun = self.devices.wait_for_lun(sysfs, req.lun, timeout=deadline.left())
            if lun is not None:
                appeared[f"/dev/{lun.disk}"] = round(time.monotonic() - phase, 2)
            if lun is None:
                seen = ", ".join(d.hctl + (f" ({d.disk})" if d.disk else "") for d in sysfs.luns()) or "none"
                raise DeviceError(
                    f"lun: LUN {req.lun} of {req.target} did not appear at {_path_of(s)} within "
                    f"{deadline.seconds:g}s (the session has SCSI devices: {seen}); check the LUN number and "
                    "that the target maps it to this initiator, or raise wait_timeout"
                )
            found.append(_Found(s, sysfs, lun, Disk(str(lun.disk))))
        size_before = found[0].disk.size() if found else 0
        if req.expected_wwid or req.resize:
            # A disk of a session that was there before this call may still
            # carry the identity (and size) it had at its login.
            self._refresh_identity([f.disk for f in found if _path_of(f.session) not in fresh])
        wwids = [f.disk.wwid() for f in found]
        if len(set(wwids)) > 1:
            listed = ", ".join(f"{f.disk.dev} at {_path_of(f.session)}: {f.disk.wwid() or 'none'}" for f in found)
            raise DeviceError(
                f"lun: the paths of LUN {req.lun} of {req.target} are not one volume ({listed}); every path of a "
                "volume must report the same WWID. Check the LUN mapping of each portal on the target"
            )
        wwid = wwids[0]
        devices = [f.disk.dev for f in found]
        if req.expected_wwid and wwid != req.expected_wwid:
            raise DeviceError(
                f"wwid: LUN {req.lun} of {req.target} is {', '.join(devices)} with WWID {wwid}, not the volume's "
                f"{req.expected_wwid}; another volume is mapped behind that LUN (or the catalogue is wrong). "
                "Nothing was handed on; check the target's LUN mapping"
            )
        began = time.monotonic()
        links = self._links(req, found, others, wwid, deadline)
        waited: dict[str, t.Any] = {"devices": appeared, "links": round(time.monotonic() - began, 2), "multipath": None}
        out: dict[str, t.Any] = {
            "by_path": links[0],
            "by_paths": links,
            "device": devices[0],
            "devices": devices,
            "hctls": [f.lun.hctl for f in found],
            "size": found[0].disk.size(),
            "resized": {"before": size_before, "after": found[0].disk.size()} if req.resize else None,
            "wwid": wwid,
            "wwn": wwid,
            "multipath_device": None,
            "waited": waited,
        }
        if req.multipath:
            disks = [f.disk for f in found]
            began = time.monotonic()
            mpath = self.devices.wait_for_map(disks, timeout=max(deadline.left(), 0.5))
            waited["multipath"] = round(time.monotonic() - began, 2)
            if mpath is not None and req.resize:
                before = mpath.size()
                # The map keeps the size it was made with until multipathd
                # is told its paths grew (os-brick's extend does the same).
                self.devices.multipath.resize(mpath=mpath)
                out["resized"] = {"before": before, "after": mpath.size()}
                out["size"] = mpath.size()
            if mpath is None:
                raise DeviceError(
                    f"multipath: no multipath map over {', '.join(devices)} within {deadline.seconds:g}s; "
                    "check that multipathd runs and does not blacklist these disks"
                )
            # All paths of the map, including any this call did not ask for,
            # must be the same volume.
            foreign = [p for p in mpath.paths() if Disk(p).wwid() != wwid]
            if mpath.wwid != wwid or foreign:
                raise DeviceError(
                    f"multipath: the map {mpath.name} (WWID {mpath.wwid}, paths {', '.join(mpath.paths())}) is not "
                    f"only LUN {req.lun} of {req.target} (WWID {wwid}"
                    + (f"; paths of another volume: {', '.join(foreign)}" if foreign else "")
                    + "); flush the stale map (multipath -f) after checking nothing uses it"
                )
            out["multipath_device"] = mpath.dev
            out["multipath_name"] = mpath.name
        return out

    def _links(self, req: SessionRequest, found: list[_Found], others: list[SessionDetail], wwid: str | None,
               deadline: _Deadline) -> list[str]:
        """The by-path link of each found disk, named as udev's path_id names it.

        path_id has no iface in the name: two sessions to one portal through
        two ifaces give their disks one name, and the link points to one of
        them, possibly a disk of a session of another iface. A link counts
        when it resolves to a disk of a current session of the target with
        that name and the volume's WWID; one left from an earlier session
        never does.
        """
        def name_of(sysfs: SysfsSession, kernel_lun: int) -> str | None:
            persistent = sysfs.persistent_address()
            if persistent is None:
                return None
            return by_path_name(address=persistent[0], port=persistent[1], target=req.target, kernel_lun=kernel_lun)

        names = []
        for f in found:
            name = name_of(f.sysfs, f.lun.lun)
            if name is None:
                raise DeviceError(f"the session {f.session.sid} of {req.target} vanished while its disk was looked up")
            names.append(name)
        candidates: dict[str, list[str]] = {}
        for f, name in zip(found, names, strict=True):
            candidates.setdefault(name, []).append(f.disk.name)
        for s in others:
            sysfs = SysfsSession(s.sid or 0)
            lun = sysfs.find_lun(req.lun)
            if lun is not None and lun.disk and Disk(lun.disk).wwid() == wwid:
                name = name_of(sysfs, lun.lun)
                if name in candidates:
                    candidates[name].append(lun.disk)
        links: dict[str, str] = {}
        for name, disks in candidates.items():
            link = self.devices.wait_for_link(disks, name, timeout=max(deadline.left(), 0.5))
            if link is None:
                raise DeviceError(
                    f"lun: udev made no by-path link {name} for {', '.join('/dev/' + d for d in disks)} "
                    f"(LUN {req.lun}) within {deadline.seconds:g}s, or it points to another disk; check that udev "
                    f"runs (udevadm trigger /sys/block/{disks[0]} repairs a stale link)"
                )
            links[name] = link
        return [links[n] for n in names]

    def state_absent(self, req: SessionRequest) -> dict[str, t.Any]:
        sessions = self._sessions(req)
        found: list[tuple[SessionDetail, Disk]] = []
        others: dict[int | None, list[int]] = {}
        for s in sessions:
            sysfs = SysfsSession(s.sid or 0)
            lun = sysfs.find_lun(req.lun)
            if lun is not None:
                found.append((s, Disk(str(lun.disk))))
            others[s.sid] = [d.lun for d in sysfs.other_disks(req.lun)]
        disks = [d for _s, d in found]
        if req.expected_wwid and disks:
            self._refresh_identity(disks)
            wrong = [(s, d, d.wwid()) for s, d in found if d.wwid() != req.expected_wwid]
            if wrong:
                listed = ", ".join(f"{d.dev} at {_path_of(s)} has {w or 'no WWID'}" for s, d, w in wrong)
                raise DeviceError(
                    f"wwid: LUN {req.lun} of {req.target} is no longer the volume {req.expected_wwid} ({listed}); "
                    "nothing was deleted. Another volume is mapped behind that LUN now: detach it from the "
                    "instances using it, or clear the attachment by hand"
                )
        # A map goes only with its last path: one that keeps paths of other
        # ifaces or portals (another user of the volume) stays, without ours.
        names = {d.name for d in disks}
        maps = {m.dm: m for m in (MultipathMap.of_disk(d) for d in disks)
                if m is not None and set(m.paths()) <= names}
        # Log out only of sessions that keep no other disk: another LUN of the
        # same target may be attached to another instance on this host.
        to_logout = [s for s in sessions if not others.get(s.sid or 0)]
        kept = [s for s in sessions if s not in to_logout]
        # Each removal waits until the kernel let go of the map or disk; the
        # times go into the result (a slow flush is a guest's I/O still draining).
        waited: dict[str, t.Any] = {"devices": {}, "multipath": None}
        began = time.monotonic()
        for mpath in maps.values():
            self._remove_map(mpath, req.wait_timeout)
        if maps:
            waited["multipath"] = round(time.monotonic() - began, 2)
        for disk in disks:
            step = time.monotonic()
            self._delete_disk(disk, req.wait_timeout)
            waited["devices"][disk.dev] = round(time.monotonic() - step, 2)
        waited["total"] = round(time.monotonic() - began, 2)
        for s in to_logout:
            self._logout(req, s)
        return {
            "changed": bool(disks or maps or to_logout),
            "diff": {
                "before": {"sessions": sorted(str(_path_of(s)) for s in sessions), "devices": [d.dev for d in disks]},
                "after": {"sessions": sorted(str(_path_of(s)) for s in kept), "devices": []},
            },
            "removed_devices": [d.dev for d in disks],
            "waited": waited,
            "removed_multipath": [m.dev for m in maps.values()],
            "logged_out": [str(_path_of(s).portal) for s in to_logout],
            "kept_sessions": [
                {"portal": str(_path_of(s).portal), "iface": _path_of(s).iface, "sid": s.sid,
                 "luns_in_use": sorted(others.get(s.sid or 0, []))}
                for s in kept
            ],
        }


def argument_spec() -> dict[str, t.Any]:
    """Argument spec of the iscsi_session module."""
    return {
        "target": {"type": "str", "required": True},
        "portals": {"type": "list", "elements": "str", "default": []},
        "lun": {"type": "int", "default": 1},
        "iface": {"type": "str"},
        "ifaces": {"type": "list", "elements": "str"},
        "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        "multipath": {"type": "bool", "default": False},
        "wait_timeout": {"type": "float", "default": 30.0},
        "rescan": {"type": "bool", "default": True},
        "wwid": {"type": "str", "aliases": ["wwn"]},
        "resize": {"type": "bool", "default": False},
    }


MODULE_KWARGS: dict[str, t.Any] = {
    "supports_check_mode": True,
    "mutually_exclusive": [("iface", "ifaces")],
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
        result.update(target=req.target, lun=req.lun, ifaces=req.ifaces)
        if not module._diff:
            result.pop("diff", None)
        return result

    run_module(module, handle)
