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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ansible_collections.openvolume.compute.plugins.module_utils._common import (
    batch_entries,
    dispatch_state,
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
    ADDRESSING_MODES,
    MAX_LUN,
    DeviceError,
    Disk,
    MultipathMap,
    ScsiDevices,
    ScsiLun,
    SysfsSession,
    by_path_name,
    initiator_name,
    kernel_lun_for,
    normalize_wwid,
)

# Logins of one call run side by side, at most this many at a time (os-brick
# logs in to a multipath volume's portals in parallel too): each waits on the
# target's answer, not on this host.
PARALLEL_LOGINS = 8


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
    # The target's LUN numbering (Cinder's addressing_mode), when known.
    addressing: str | None = None
    # In a batch: the caller's name for the volume (returned as is) and
    # where the entry is (``volumes[2]``), for errors.
    volume_id: str | None = None
    where: str = ""

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
                   resize=bool(params.get("resize")), volume_id=params.get("volume_id"),
                   addressing=params.get("addressing_mode"))

    def named(self, msg: str) -> str:
        """``msg`` with the batch entry it is about in front (``volumes[2] (vol-7): ...``)."""
        if not self.where:
            return msg
        return f"{self.where}{f' ({self.volume_id})' if self.volume_id else ''}: {msg}"

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


@dataclass
class _Connect:
    """What the login phase of a batch did (or would do) for one volume."""

    existing: dict[Path, SessionDetail]
    wanted: list[Path]
    logged_in: list[Path]
    # Paths with a session made by this call (for this volume or an earlier one).
    fresh: set[Path]


def _path_of(s: SessionDetail) -> Path:
    # The parser gives every session a persistent portal (its current one if
    # iscsiadm printed none).
    return Path(s.persistent_portal or Portal(""), s.iface or "default")


class IscsiSession:
    """Brings a target's sessions and one LUN's device to the requested state."""

    # The node records, listed once per call: logins change no record's identity.
    _listing: list[NodeEntry] | None = None

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
        # in would make every iscsid start retry it. Set without reading the
        # record first: one iscsiadm run instead of two, and no read of its
        # CHAP secrets.
        self.iscsiadm.node_update(target=req.target, portal=record.portal, iface=iface,
                                  name="node.startup", value="automatic", secret=False)

    @skip_if_check_mode
    def _logout(self, s: SessionDetail) -> None:
        if s.sid is not None:
            self.iscsiadm.logout_session(sid=s.sid, what=f"{s.target} at {_path_of(s)}")

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
        if self._listing is None:
            self._listing = self.iscsiadm.nodes()
        for node in self._listing:
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

    def _rollback(self, logged: list[tuple[str, Path]], error: IscsiError) -> None:
        """Log out of the sessions this call logged in to (found again by target and path).

        A logout that fails is added to ``error``, which the caller raises.
        """
        if not logged:
            return
        undo_after(error, [(f"logout from {s.target} at {s.persistent_portal or s.portal}",
                            lambda s=s: self._logout(s))  # type: ignore[misc]
                           for s in self.iscsiadm.session_details()
                           if s.sid is not None and (s.target, _path_of(s)) in logged])

    # states -------------------------------------------------------------------------
    def state_present(self, req: SessionRequest) -> dict[str, t.Any]:
        return self.present_all([req])[0]

    def present_all(self, reqs: t.Sequence[SessionRequest]) -> list[dict[str, t.Any]]:
        """Connect every volume of a batch, all or nothing.

        First the logins of all volumes (a session that an earlier volume of
        the batch made, or one that existed, serves every LUN of its target:
        one login per target and path), then one rescan of the sessions that
        existed before, then one bounded poll for all the LUNs' disks under
        one ``wait_timeout``, then each volume's checks (WWID, links,
        multipath map). Any failure logs out of every session this call
        logged in to.
        """
        # One bound for the whole call, counted from before the first login.
        deadline = _Deadline(max(req.wait_timeout for req in reqs))
        details = self.iscsiadm.session_details()
        logged: list[tuple[str, Path]] = []
        try:
            owners = {} if self.module.check_mode else self._login_side_by_side(reqs, details, logged)
            plans = []
            for i, req in enumerate(reqs):
                try:
                    plan = self._connect(req, details, logged)
                except IscsiError as exc:
                    raise type(exc)(req.named(exc.msg), **exc.details) from None
                # A login made side by side belongs to the volume that asked for it.
                plan.logged_in += [p for p in plan.wanted if owners.get((req.target, p)) == i
                                   and p not in plan.logged_in]
                plans.append(plan)
            if self.module.check_mode:
                return [self._predicted(req, plan) for req, plan in zip(reqs, plans, strict=True)]
            details = self.iscsiadm.session_details()
            # New sessions scan by themselves; an existing one learns of a
            # LUN mapped since its login (and of a changed one) only by a
            # rescan: once per session, however many LUNs it carries.
            self._rescan(sorted({s.sid for req, plan in zip(reqs, plans, strict=True) if req.rescan
                                 for p, s in plan.existing.items() if p in plan.wanted and s.sid is not None}))
            sessions = [self._sessions_of(req, plan, details) for req, plan in zip(reqs, plans, strict=True)]
            pairs = [(req, s) for req, ordered in zip(reqs, sessions, strict=True) for s in ordered[0]]
            appeared = self.devices.wait_for_luns(
                [(SysfsSession(s.sid or 0), req.lun, req.addressing) for req, s in pairs], timeout=deadline.left())
            waits = {(id(req), s.sid): appeared.get(i) for i, (req, s) in enumerate(pairs)}
            results = []
            for req, plan, (ordered, others) in zip(reqs, plans, sessions, strict=True):
                try:
                    results.append(self._finish(req, plan, ordered, others, waits, deadline))
                except IscsiError as exc:
                    raise type(exc)(req.named(exc.msg), **exc.details) from None
        except IscsiError as exc:
            # No half-done state: log out of what this call logged in to.
            self._rollback(logged, exc)
            raise
        return results

    def _login_side_by_side(self, reqs: t.Sequence[SessionRequest], details: list[SessionDetail],
                            logged: list[tuple[str, Path]]) -> dict[tuple[str, Path], int]:
        """Make the batch's logins that do not depend on each other at once, at most PARALLEL_LOGINS at a time.

        Every path of a multipath volume without a session, and the first
        path that works of a volume without multipath whose target has no
        session yet (its paths tried in order, as one job). A volume of a
        target whose job is still open is left to :meth:`_connect`, which
        sees the job's session then. Every job is waited for; the logins
        that went through are added to ``logged`` (the caller logs out of
        them if anything fails), and the first failure in batch order is
        raised, named by its volume. Returns which volume (its index) asked
        for each login made.
        """
        jobs: list[tuple[int, SessionRequest, list[tuple[Path, NodeEntry]]]] = []
        planned: set[tuple[str, Path]] = set()
        open_targets: set[str] = set()
        for i, req in enumerate(reqs):
            paths = req.paths()
            have = {_path_of(s) for s in details if req.owns(s) and s.sid is not None}
            have |= {p for tg, p in planned if tg == req.target}
            try:
                if req.target in open_targets:
                    continue  # which path that job takes decides this volume's logins
                if req.multipath:
                    to_login = [p for p in paths if p not in have]
                    records = self._records(req, to_login)
                    jobs += [(i, req, [(p, records[p])]) for p in to_login]
                    planned |= {(req.target, p) for p in to_login}
                elif not have:
                    records = self._records(req, paths)
                    jobs.append((i, req, [(p, records[p]) for p in paths]))
                    open_targets.add(req.target)
            except IscsiError as exc:
                raise type(exc)(req.named(exc.msg), **exc.details) from None
        if not jobs:
            return {}

        def attempt(job: tuple[int, SessionRequest, list[tuple[Path, NodeEntry]]]) -> Path | IscsiError:
            _i, req, candidates = job
            try:
                return self._first_login(req, candidates)
            except IscsiError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=min(PARALLEL_LOGINS, len(jobs))) as pool:
            outcomes = list(pool.map(attempt, jobs))
        owners: dict[tuple[str, Path], int] = {}
        failure: IscsiError | None = None
        for (i, req, _candidates), outcome in zip(jobs, outcomes, strict=True):
            if isinstance(outcome, IscsiError):
                failure = failure or type(outcome)(req.named(outcome.msg), **outcome.details)
                continue
            logged.append((req.target, outcome))
            owners[(req.target, outcome)] = i
        if failure:
            raise failure
        return owners

    def _first_login(self, req: SessionRequest, candidates: t.Sequence[tuple[Path, NodeEntry]]) -> Path:
        """Log in through the first of ``candidates`` that works (a volume without multipath needs one path).

        Raises when none does: with one path its own error (iscsiadm's exit
        code kept), with several every path's message.
        """
        errors: list[IscsiError] = []
        for path, record in candidates:
            try:
                self._login(req, record)
            except IscsiError as exc:
                errors.append(exc)
                continue
            return path
        if len(errors) == 1:
            raise errors[0]
        raise IscsiError("; ".join(e.msg for e in errors))

    def _connect(self, req: SessionRequest, details: list[SessionDetail],
                 logged: list[tuple[str, Path]]) -> _Connect:
        """Log in where the volume has no session yet; ``logged`` collects the logins of the whole call."""
        existing = {_path_of(s): s for s in details if req.owns(s) and s.sid is not None}
        paths = req.paths()
        made = {p for tg, p in logged if tg == req.target and p in paths}
        have = set(existing) | made
        if req.multipath:
            wanted = paths
        else:
            wanted = [p for p in paths if p in have][:1] or paths[:1]
        to_login = [p for p in wanted if p not in have]
        if self.module.check_mode:
            # The record may be one an earlier task would have created (the
            # volume_attach role's): report the login only.
            logged.extend((req.target, p) for p in to_login)
            return _Connect(existing, wanted, to_login, made | set(to_login))
        # Without multipath and without a session, any path may be the one
        # that logs in: all need their record.
        records = self._records(req, to_login if req.multipath or have else paths)
        logged_in: list[Path] = []
        if not req.multipath and not have:
            path = self._first_login(req, [(p, records[p]) for p in paths])
            logged.append((req.target, path))
            logged_in, wanted = [path], [path]
        else:
            for path in to_login:
                self._login(req, records[path])
                logged.append((req.target, path))
                logged_in.append(path)
        return _Connect(existing, wanted, logged_in, made | set(logged_in))

    def _base_result(self, req: SessionRequest, plan: _Connect) -> dict[str, t.Any]:
        before = sorted(str(p) for p in plan.existing)
        return {
            "changed": bool(plan.logged_in),
            "logged_in": [str(p.portal) for p in plan.logged_in],
            "initiator": initiator_name(),
            "diff": {"before": {"sessions": before},
                     "after": {"sessions": sorted(before + [str(p) for p in plan.logged_in])}},
        }

    def _predicted(self, req: SessionRequest, plan: _Connect) -> dict[str, t.Any]:
        result = self._base_result(req, plan)
        # No device exists yet: the by-path name the LUN will get through the
        # first path (under the target's addressing_mode; without it, flat
        # space addressing from LUN 256, as most targets use).
        first = plan.wanted[0].portal
        kernel_lun = kernel_lun_for(req.lun, req.addressing)
        name = by_path_name(address=first.literal, port=first.port, target=req.target, kernel_lun=kernel_lun)
        result["device_path"] = f"/dev/disk/by-path/{name}"
        result["sessions"] = [{"portal": str(p.portal), "iface": p.iface, "sid": s.sid}
                              for p, s in plan.existing.items()]
        result["waited"] = {"devices": {}, "links": 0.0, "multipath": None, "total": 0.0}
        return result

    def _sessions_of(self, req: SessionRequest, plan: _Connect,
                     details: list[SessionDetail]) -> tuple[list[SessionDetail], list[SessionDetail]]:
        """The volume's sessions in the order of its paths, and the target's other sessions."""
        sessions = {_path_of(s): s for s in details
                    if req.owns(s) and s.sid is not None and _path_of(s) in plan.wanted}
        lost = [str(p) for p in plan.wanted if p not in sessions]
        if lost:
            raise IscsiError(req.named(
                f"portals: no session for {req.target} at {', '.join(lost)} after the login; "
                "the target may have dropped it (see the target's log and dmesg)"))
        # Sessions of the target through other ifaces share by-path names
        # with ours (see _links).
        others = [s for s in details if s.target == req.target and s.sid is not None
                  and (s.transport is None or s.transport in SESSION_TRANSPORTS) and s not in sessions.values()]
        return [sessions[p] for p in plan.wanted], others

    def _finish(self, req: SessionRequest, plan: _Connect, ordered: list[SessionDetail],
                others: list[SessionDetail], waits: dict[tuple[int, int | None], float | None],
                deadline: _Deadline) -> dict[str, t.Any]:
        result = self._base_result(req, plan)
        result.update(self._devices(req, ordered, others, fresh=plan.fresh, deadline=deadline,
                                    appeared={s.sid: waits.get((id(req), s.sid)) for s in ordered}))
        result["waited"]["total"] = deadline.elapsed()
        resized = result.get("resized")
        if resized and resized["after"] > resized["before"]:
            result["changed"] = True
            result["diff"]["before"]["size"] = resized["before"]
            result["diff"]["after"]["size"] = resized["after"]
        result["sessions"] = [{"portal": str(p.portal), "iface": p.iface, "sid": s.sid}
                              for p, s in zip(plan.wanted, ordered, strict=True)]
        result["device_path"] = result["multipath_device"] or result["by_path"]
        return result

    def _devices(self, req: SessionRequest, sessions: list[SessionDetail], others: list[SessionDetail], *,
                 fresh: set[Path], deadline: _Deadline, appeared: dict[int | None, float | None]) -> dict[str, t.Any]:
        """Find, check and describe the LUN's disk below every session.

        ``appeared`` is the one poll's result (``wait_for_luns``): per
        session id, the seconds until the LUN's disk showed, None when it
        did not within the deadline.
        """
        found: list[_Found] = []
        times: dict[str, float] = {}
        for s in sessions:
            sysfs = SysfsSession(s.sid or 0)
            lun = sysfs.find_lun(req.lun, req.addressing) if appeared.get(s.sid) is not None else None
            if lun is not None:
                times[f"/dev/{lun.disk}"] = appeared[s.sid] or 0.0
            if lun is None:
                seen = ", ".join(d.hctl + (f" ({d.disk})" if d.disk else "") for d in sysfs.luns()) or "none"
                raise DeviceError(
                    f"lun: LUN {req.lun} of {req.target} did not appear at {_path_of(s)} within "
                    f"{deadline.seconds:g}s (the session has SCSI devices: {seen}); check the LUN number"
                    + (f" and addressing_mode (under {req.addressing} it is the kernel's LUN "
                       f"{kernel_lun_for(req.lun, req.addressing)})" if req.addressing else "")
                    + " and that the target maps it to this initiator, or raise wait_timeout"
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
        waited: dict[str, t.Any] = {"devices": times, "links": round(time.monotonic() - began, 2), "multipath": None}
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
            lun = sysfs.find_lun(req.lun, req.addressing)
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
        return self.absent_all([req])[0]

    def absent_all(self, reqs: t.Sequence[SessionRequest]) -> list[dict[str, t.Any]]:
        """Disconnect every volume of a batch.

        Every volume's disks are found and checked (``wwid``) before anything
        is removed, so a refusal removes nothing. Then the multipath maps and
        disks of all volumes go, then each session that carries no other
        disk (one of a LUN this batch does not remove) is logged out, once.
        """
        details = self.iscsiadm.session_details()
        plans = []
        for req in reqs:
            try:
                plans.append(self._absent_plan(req, details))
            except IscsiError as exc:
                raise type(exc)(req.named(exc.msg), **exc.details) from None
        # The kernel LUN numbers each session loses in this call; what else
        # it carries keeps it (another LUN of the target attached on this host).
        removed: dict[int, set[int]] = {}
        for plan in plans:
            for sess, _disk, kernel_lun in plan["found"]:
                removed.setdefault(sess.sid or 0, set()).add(kernel_lun)
        staying = {sid: sorted(d.lun for d in SysfsSession(sid).luns()
                               if d.disk and d.lun not in removed.get(sid, set()))
                   for sid in {sess.sid or 0 for plan in plans for sess in plan["sessions"]}}
        done_maps: set[str] = set()
        done_disks: set[str] = set()
        results = []
        for req, plan in zip(reqs, plans, strict=True):
            # Each removal waits until the kernel let go of the map or disk; the
            # times go into the result (a slow flush is a guest's I/O still draining).
            waited: dict[str, t.Any] = {"devices": {}, "multipath": None}
            began = time.monotonic()
            for mpath in plan["maps"]:
                if mpath.dm not in done_maps:
                    self._remove_map(mpath, req.wait_timeout)
                    done_maps.add(mpath.dm)
            if plan["maps"]:
                waited["multipath"] = round(time.monotonic() - began, 2)
            for _sess, disk, _lun in plan["found"]:
                if disk.name in done_disks:
                    continue
                step = time.monotonic()
                self._delete_disk(disk, req.wait_timeout)
                done_disks.add(disk.name)
                waited["devices"][disk.dev] = round(time.monotonic() - step, 2)
            waited["total"] = round(time.monotonic() - began, 2)
            results.append(waited)
        logged_out: set[int] = set()
        out = []
        for plan, waited in zip(plans, results, strict=True):
            sessions = plan["sessions"]
            to_logout = [sess for sess in sessions if not staying.get(sess.sid or 0)]
            kept = [sess for sess in sessions if sess not in to_logout]
            for sess in to_logout:
                if (sess.sid or 0) not in logged_out:
                    self._logout(sess)
                    logged_out.add(sess.sid or 0)
            disks = [d for _s, d, _l in plan["found"]]
            out.append({
                "changed": bool(disks or plan["maps"] or to_logout),
                "diff": {
                    "before": {"sessions": sorted(str(_path_of(x)) for x in sessions),
                               "devices": [d.dev for d in disks]},
                    "after": {"sessions": sorted(str(_path_of(x)) for x in kept), "devices": []},
                },
                "removed_devices": [d.dev for d in disks],
                "waited": waited,
                "removed_multipath": [m.dev for m in plan["maps"]],
                "logged_out": [str(_path_of(x).portal) for x in to_logout],
                "kept_sessions": [
                    {"portal": str(_path_of(x).portal), "iface": _path_of(x).iface, "sid": x.sid,
                     "luns_in_use": staying.get(x.sid or 0, [])}
                    for x in kept
                ],
            })
        return out

    def _absent_plan(self, req: SessionRequest, details: list[SessionDetail]) -> dict[str, t.Any]:
        """A volume's sessions, its disk below each (with the kernel's LUN number) and the maps to remove."""
        sessions = [x for x in details if req.owns(x) and x.sid is not None]
        found: list[tuple[SessionDetail, Disk, int]] = []
        for sess in sessions:
            lun = SysfsSession(sess.sid or 0).find_lun(req.lun, req.addressing)
            if lun is not None:
                found.append((sess, Disk(str(lun.disk)), lun.lun))
        disks = [d for _s, d, _l in found]
        if req.expected_wwid and disks:
            self._refresh_identity(disks)
            wrong = [(x, d, d.wwid()) for x, d, _l in found if d.wwid() != req.expected_wwid]
            if wrong:
                listed = ", ".join(f"{d.dev} at {_path_of(x)} has {w or 'no WWID'}" for x, d, w in wrong)
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
        return {"sessions": sessions, "found": found, "maps": list(maps.values())}


# The options of one volume, at the top level (the single form) and in each
# entry of ``volumes`` (the batch form); the rest are shared by the batch.
VOLUME_OPTIONS = ("target", "portals", "lun", "addressing_mode", "iface", "ifaces", "multipath", "wwid", "resize")


def volume_spec() -> dict[str, t.Any]:
    """Argument spec of one volume: the single form's options, or one entry of ``volumes``."""
    return {
        "target": {"type": "str"},
        "portals": {"type": "list", "elements": "str"},
        "lun": {"type": "int"},
        "addressing_mode": {"type": "str", "choices": list(ADDRESSING_MODES)},
        "iface": {"type": "str"},
        "ifaces": {"type": "list", "elements": "str"},
        "multipath": {"type": "bool"},
        "wwid": {"type": "str", "aliases": ["wwn"]},
        "resize": {"type": "bool"},
    }


def argument_spec() -> dict[str, t.Any]:
    """Argument spec of the iscsi_session module."""
    entry = volume_spec()
    entry["target"]["required"] = True
    entry["volume_id"] = {"type": "str"}
    return dict(
        volume_spec(),
        volumes={"type": "list", "elements": "dict", "options": entry},
        state={"type": "str", "choices": ["present", "absent"], "default": "present"},
        wait_timeout={"type": "float", "default": 30.0},
        rescan={"type": "bool", "default": True},
    )


MODULE_KWARGS: dict[str, t.Any] = {
    "supports_check_mode": True,
    "mutually_exclusive": [("iface", "ifaces")],
}

# The single form's defaults; the batch's entries take the same.
_DEFAULTS = {"portals": [], "lun": 1, "multipath": False, "resize": False}


def requests(params: t.Mapping[str, t.Any]) -> tuple[list[SessionRequest], bool]:
    """The validated requests, and whether they came as a batch (``volumes``).

    Every entry is checked before anything changes; an error names the
    entry (``volumes[2].lun: ...``).
    """
    shared = {k: params[k] for k in ("state", "wait_timeout", "rescan")}
    if params.get("volumes") is None:
        if not params.get("target"):
            raise IscsiError("target: required (the target's IQN), or give volumes for several volumes")
        single = {k: params.get(k) if params.get(k) is not None else _DEFAULTS.get(k) for k in VOLUME_OPTIONS}
        return [SessionRequest.from_params(single | shared)], False
    reqs = []
    for i, entry in enumerate(batch_entries(params, "volumes", VOLUME_OPTIONS, error=IscsiError)):
        values = {k: entry.get(k) if entry.get(k) is not None else _DEFAULTS.get(k) for k in VOLUME_OPTIONS}
        try:
            req = SessionRequest.from_params(values | shared | {"volume_id": entry.get("volume_id")})
        except IscsiError as exc:
            raise IscsiError(f"volumes[{i}].{exc.msg}", **exc.details) from None
        req.where = f"volumes[{i}]"
        reqs.append(req)
    return reqs, True


def run(module: t.Any) -> None:
    """Entry point of the iscsi_session module."""

    def handle() -> dict[str, t.Any]:
        reqs, batch = requests(module.params)
        session = IscsiSession(module)
        if not reqs:
            outcomes: list[dict[str, t.Any]] = []
        else:
            outcomes = dispatch_state(session, module.params["state"], reqs, method="{}_all")
        for req, outcome in zip(reqs, outcomes, strict=True):
            outcome.update(target=req.target, lun=req.lun, ifaces=req.ifaces)
            if batch:
                outcome["volume_id"] = req.volume_id
        if batch:
            result: dict[str, t.Any] = {
                "changed": any(o["changed"] for o in outcomes),
                "volumes": [{k: v for k, v in o.items() if k != "diff"} for o in outcomes],
                "diff": [o["diff"] for o in outcomes if o["changed"]],
            }
        else:
            result = outcomes[0]
        if not module._diff:
            result.pop("diff", None)
        return result

    run_module(module, handle)
