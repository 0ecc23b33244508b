# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who uses what on a compute host, what may go when attachments go, and what reconcile repairs.

Before Nova disconnects a volume from a host it asks whether another
attachment on that host still uses the connection; removing a session, a
SCSI disk or a libvirt secret under a live guest takes its disk away. This
file answers that question in one place, from two sources:

* the reservation store's records of the host (attachments in any state: an
  attach in flight has a session before it has a disk), and
* the host's truth, as volume_host_info reads it: every domain's disks by
  serial, live and persistent, with the block devices under them, the iSCSI
  sessions with the disk of each LUN, the node records and our secrets.

The same two sources decide what ``reconcile`` does: complete or release
lapsed transitions, re-add the missing side of a disk in use, free the
volumes of a domain that no longer exists, and remove our orphans (secrets
``openvolume/<volume>``, sessions and node records of our targets) that no
attachment uses. Things that are not ours (not named by a record, not an
``openvolume/`` secret, not a target of our volumes) are never touched.

Everything here is pure: dicts in (the volumes lookup's records, the probe's
result), dicts out; the filters of the roles call it on the controller.
"""

from __future__ import annotations

import dataclasses
import re
import typing as t

from ansible_collections.openvolume.compute.plugins.module_utils._scsi_devices import lun_numbers

SECRET_PREFIX = "openvolume/"
IN_USE = "in-use"
TRANSITIONAL = ("attaching", "detaching")
ERRORS = ("error_attaching", "error_detaching")
VIEWS = ("live", "config")

# udev's path_id name of an iSCSI LUN, possibly behind a PCI prefix (offload
# HBAs): ...ip-PORTAL-iscsi-IQN-lun-N (N decimal, or 0x... at 256 and over).
_BY_PATH = re.compile(r"ip-.+-iscsi-(?P<target>.+)-lun-(?P<lun>\d+|0x[0-9a-f]+)$")


@dataclasses.dataclass(frozen=True)
class Use:
    """One attachment recorded on a host, in terms of what it uses there."""

    volume_id: str
    instance: str
    status: str
    lapsed: bool
    mode: str
    target: str | None
    lun: int | None
    secret_usage: str | None
    owner: t.Mapping[str, t.Any] | None = None
    expires_at: float | None = None
    # The libvirt secret with the LUKS passphrase of an encrypted volume.
    luks_secret_usage: str | None = None

    @property
    def secrets(self) -> set[str]:
        """The usages of the libvirt secrets the attachment uses."""
        return {s for s in (self.secret_usage, self.luks_secret_usage) if s}

    @property
    def key(self) -> tuple[str, str]:
        return (self.volume_id, self.instance)

    @property
    def lun_key(self) -> tuple[str, int] | None:
        if self.mode != "host" or self.target is None or self.lun is None:
            return None
        return (self.target, self.lun)


def _use(record: t.Mapping[str, t.Any], att: t.Mapping[str, t.Any]) -> Use:
    conn = att.get("connection_info") or {}
    data = conn.get("data") or {}
    extra = conn.get("openvolume") or {}
    lun = data.get("target_lun")
    return Use(
        volume_id=str(record.get("volume_id")), instance=str(att.get("instance")), status=str(att.get("status")),
        lapsed=bool(att.get("lapsed")), mode=str(extra.get("attach_mode") or "host"),
        target=data.get("target_iqn"), lun=int(lun) if lun is not None else None,
        secret_usage=extra.get("secret_usage"), owner=att.get("owner"), expires_at=att.get("expires_at"),
        luks_secret_usage=extra.get("luks_secret_usage"),
    )


def recorded(records: t.Iterable[t.Mapping[str, t.Any]], host: str) -> list[Use]:
    """The attachments the store records on ``host``."""
    return [
        _use(record, att)
        for record in records or []
        for att in record.get("attachments") or []
        if att.get("host") == host
    ]


def parse_by_path(path: str) -> tuple[str, int] | None:
    """(target, kernel LUN) from a by-path link name, or None."""
    m = _BY_PATH.search(path.rsplit("/", 1)[-1])
    if not m:
        return None
    raw = m["lun"]
    if not raw.startswith("0x"):
        return (m["target"], int(raw))
    # path_id writes LUNs >= 256 as the first four bytes of the SCSI LUN in
    # hex; the kernel's integer has those two 16-bit levels swapped.
    value = int(raw, 16) >> 32
    return (m["target"], ((value >> 16) & 0xFFFF) | ((value & 0xFFFF) << 16))


class HostTruth:
    """The probe's result (volume_host_info), indexed for the questions asked here."""

    def __init__(self, info: t.Mapping[str, t.Any] | None) -> None:
        info = info or {}
        self.known = bool(info)
        self.domains: dict[str, t.Mapping[str, t.Any]] = {d["name"]: d for d in info.get("domains") or []}
        self.missing = set(info.get("missing_domains") or [])
        # usage -> usage_type of our libvirt secrets.
        self.secrets: dict[str, str] = {s["usage"]: s.get("usage_type", "iscsi") for s in info.get("secrets") or []}
        iscsi = info.get("iscsi") or {}
        self.sessions: list[t.Mapping[str, t.Any]] = list(iscsi.get("sessions") or [])
        self.nodes: list[t.Mapping[str, t.Any]] = list(iscsi.get("nodes") or [])
        # Kernel disk (sdb) -> (target, kernel LUN number), from the sessions.
        self.lun_of_device: dict[str, tuple[str, int]] = {
            lun["device"]: (s["target"], int(lun["lun"]))
            for s in self.sessions for lun in s.get("luns") or [] if lun.get("device")
        }

    @staticmethod
    def lun_keys(target: str, kernel_lun: int) -> set[tuple[str, int]]:
        """(target, LUN) for every LUN number a catalogue may give for a kernel LUN (300 for 16684)."""
        return {(target, n) for n in lun_numbers(kernel_lun)}

    def domain(self, name: str) -> t.Mapping[str, t.Any] | None:
        for dom in self.domains.values():
            if name in (dom["name"], dom.get("uuid")):
                return dom
        return None

    def domain_exists(self, name: str) -> bool | None:
        """True, False, or None when the probe did not look."""
        if not self.known:
            return None
        return self.domain(name) is not None

    def disk(self, instance: str, serial: str) -> t.Mapping[str, t.Any] | None:
        dom = self.domain(instance)
        if dom is None:
            return None
        return next((d for d in dom.get("disks") or [] if d.get("serial") == serial), None)

    def missing_views(self, instance: str, serial: str) -> list[str] | None:
        """The sides (live, config) of the domain that lack the disk; None when the domain is gone."""
        dom = self.domain(instance)
        if dom is None:
            return None
        wanted = [v for v, has in (("live", dom.get("active")), ("config", dom.get("persistent"))) if has]
        disk = self.disk(instance, serial)
        views = set(disk.get("views") or []) if disk else set()
        return [v for v in wanted if v not in views]

    def disks(self) -> t.Iterator[tuple[str, t.Mapping[str, t.Any]]]:
        for name, dom in self.domains.items():
            for disk in dom.get("disks") or []:
                yield name, disk

    def disk_secrets(self, disk: t.Mapping[str, t.Any]) -> set[str]:
        """The usages of the libvirt secrets a domain's disk names (CHAP or cephx, and a LUKS passphrase)."""
        src = disk.get("source") or {}
        refs = ((src.get("auth") or {}).get("secret_usage"), (src.get("encryption") or {}).get("secret_usage"))
        return {r for r in refs if r}

    def disk_luns(self, disk: t.Mapping[str, t.Any]) -> set[tuple[str, int]]:
        """The iSCSI LUNs (target, LUN number as a catalogue gives it) a domain's block disk sits on."""
        src = disk.get("source") or {}
        if src.get("type") != "block":
            return set()
        found: set[tuple[str, int]] = set()
        dev = disk.get("block_device") or {}
        for name in [dev.get("name"), *(dev.get("slaves") or [])]:
            if name and name in self.lun_of_device:
                found |= self.lun_keys(*self.lun_of_device[name])
        named = parse_by_path(str(src.get("path") or ""))
        if named:
            found |= self.lun_keys(*named)
        return found


def _who(uses: t.Iterable[Use], disks: t.Iterable[tuple[str, t.Mapping[str, t.Any]]]) -> str:
    parts = [f"{u.instance} ({u.volume_id}, {u.status})" for u in uses]
    parts += [f"domain {name} (disk {d.get('serial') or d.get('target_dev')})" for name, d in disks]
    return ", ".join(parts)


def release(
    items: t.Sequence[t.Mapping[str, t.Any]],
    records: t.Iterable[t.Mapping[str, t.Any]],
    host: str,
    truth: t.Mapping[str, t.Any] | None = None,
) -> list[dict[str, t.Any]]:
    """What may go on ``host`` when the attachments ``items`` go.

    ``items`` are dicts with ``volume_id``, ``instance`` and what they use:
    ``mode`` (host or qemu), ``target``, ``lun``, ``secret_usage`` and
    ``luks_secret_usage`` (the detach plan's items, from each attachment's
    stored connection_info).
    A LUN, a target's session and node records, or a secret goes only when
    no other attachment recorded on the host (any state) and no disk of any
    domain on the host (live or persistent, other than the disks going) uses
    it; several items sharing one thing release it once. One result per
    item, in order: ``remove_secret`` and ``remove_luks_secret`` (the
    usages to remove, or None),
    ``disconnect`` (the LUN's devices and, if nothing else of the target
    remains, its sessions), ``remove_node_records``, and ``kept`` (why
    something stays, for the task's output).
    """
    going = {(str(i["volume_id"]), str(i["instance"])) for i in items}
    state = HostTruth(truth)
    others = [u for u in recorded(records, host) if u.key not in going]
    other_disks = [(name, d) for name, d in state.disks() if (str(d.get("serial")), name) not in going]
    done_secrets: set[str] = set()
    done_luns: set[tuple[str, int]] = set()
    done_targets: set[str] = set()
    out = []
    for item in items:
        kept: list[str] = []
        result: dict[str, t.Any] = {"volume_id": item["volume_id"], "instance": item["instance"],
                                    "remove_secret": None, "remove_luks_secret": None, "disconnect": False,
                                    "remove_node_records": False}
        for decision, usage in (("remove_secret", item.get("secret_usage")),
                                ("remove_luks_secret", item.get("luks_secret_usage"))):
            if not usage:
                continue
            users = [u for u in others if usage in u.secrets]
            disks = [(n, d) for n, d in other_disks if usage in state.disk_secrets(d)]
            if users or disks:
                kept.append(f"secret {usage} stays: used by {_who(users, disks)}")
            elif usage not in done_secrets:
                result[decision] = usage
                done_secrets.add(usage)
        target, lun = item.get("target"), item.get("lun")
        if item.get("mode") == "host" and target is not None and lun is not None:
            key = (str(target), int(lun))
            users = [u for u in others if u.lun_key == key]
            disks = [(n, d) for n, d in other_disks if key in state.disk_luns(d)]
            if users or disks:
                kept.append(f"LUN {lun} of {target} stays connected: used by {_who(users, disks)}")
            elif key not in done_luns:
                result["disconnect"] = True
                done_luns.add(key)
            users = [u for u in others if u.mode == "host" and u.target == target]
            disks = [(n, d) for n, d in other_disks if any(k[0] == target for k in state.disk_luns(d))]
            if users or disks:
                kept.append(f"node records of {target} stay: used by {_who(users, disks)}")
            elif target not in done_targets:
                result["remove_node_records"] = True
                done_targets.add(str(target))
        result["kept"] = kept
        out.append(result)
    return out


# --- reconcile ------------------------------------------------------------------------------------
LUKS_SUFFIX = "/luks"


def _volume_of_secret(usage: str) -> str | None:
    """The volume a secret of ours is for: ``openvolume/<volume>`` or ``openvolume/<volume>/luks``."""
    if not usage.startswith(SECRET_PREFIX):
        return None
    vid = usage[len(SECRET_PREFIX):]
    return vid[:-len(LUKS_SUFFIX)] if vid.endswith(LUKS_SUFFIX) else vid


def reconcile(
    records: t.Iterable[t.Mapping[str, t.Any]],
    host: str,
    truth: t.Mapping[str, t.Any],
    our_targets: t.Iterable[str] = (),
    known_volumes: t.Iterable[str] = (),
    volumes: t.Collection[str] | None = None,
) -> dict[str, t.Any]:
    """Compare the store's records of ``host`` with the host's truth.

    Returns ``rows`` (volume, host, instance, store, host_has, action), one
    per difference, and the work that repairs them: ``attach`` (attachments
    to converge with the attach role: re-add a missing side, complete a
    lapsed transition whose disk is there), ``detach`` (to finish with the
    detach role: release a lapsed transition whose disk is not there, free
    the volumes of a domain that no longer exists), ``secrets`` (orphan
    ``openvolume/`` secrets), ``luns`` (orphan LUNs of our targets: sessions
    to disconnect) and ``nodes`` (orphan node records of our targets).
    ``our_targets`` are the IQNs of the volume catalogue; the records' add
    to them. ``known_volumes`` are the catalogue's ids (a disk with such a
    serial that no record names is reported, never touched). ``volumes``
    limits everything (attachments, disks, orphans) to those volume ids;
    the caller then gives ``our_targets`` of those volumes only.
    """
    state = HostTruth(truth)

    def in_scope(volume_id: str | None) -> bool:
        return volumes is None or volume_id in volumes

    uses = [u for u in recorded(records, host) if in_scope(u.volume_id)]
    rows: list[dict[str, t.Any]] = []
    attach: list[dict[str, str]] = []
    detach: list[dict[str, str]] = []

    def row(use_or_vol: Use | str, instance: str, store: str, has: str, action: str) -> None:
        vid = use_or_vol.volume_id if isinstance(use_or_vol, Use) else use_or_vol
        rows.append({"volume": vid, "host": host, "instance": instance, "store": store, "host_has": has,
                     "action": action})

    for use in uses:
        dom_exists = state.domain_exists(use.instance)
        disk = state.disk(use.instance, use.volume_id)
        has = "no domain" if not dom_exists else (
            f"disk {disk.get('target_dev')} ({'+'.join(disk.get('views') or [])})" if disk else "no disk")
        store = use.status + (" (lapsed)" if use.lapsed else "")
        request = {"volume": use.volume_id, "instance": use.instance}
        if use.status == IN_USE:
            if not dom_exists:
                row(use, use.instance, store, has, "free: the domain is gone (detach, host side disconnected)")
                detach.append(request)
                continue
            missing = state.missing_views(use.instance, use.volume_id) or []
            if missing:
                row(use, use.instance, store, has,
                    "re-add the " + " and ".join("persistent" if v == "config" else v for v in missing) + " disk")
                attach.append(request)
            elif any(s not in state.secrets for s in use.secrets):
                # The live disk goes on without it, but the domain cannot
                # start again (QEMU reads the secret when it opens the disk).
                lost = ", ".join(sorted(s for s in use.secrets if s not in state.secrets))
                row(use, use.instance, store, f"{has}, no secret {lost}", "re-create the secret")
                attach.append(request)
            continue
        if use.status in TRANSITIONAL and not use.lapsed:
            owner = (use.owner or {}).get("token", "an unknown run")
            row(use, use.instance, store, has, f"none: run {owner} holds it")
            continue
        # Lapsed transitions and error states: establish the truth.
        if not dom_exists:
            row(use, use.instance, store, has, "release: the domain is gone (host side disconnected)")
            detach.append(request)
        elif disk is not None:
            row(use, use.instance, store, has, "complete: in-use (the disk is attached)")
            attach.append(request)
        else:
            row(use, use.instance, store, has, "release: available (no disk attached)")
            detach.append(request)

    recorded_keys = {(u.volume_id, u.instance) for u in uses}
    known = set(known_volumes) | {u.volume_id for u in uses} | {
        str(r.get("volume_id")) for r in records or []}
    for name, disk in state.disks():
        serial = disk.get("serial")
        if serial in known and in_scope(serial) and (serial, name) not in recorded_keys:
            row(str(serial), name, "no attachment", f"disk {disk.get('target_dev')}",
                "none: not recorded (attach or detach it with the roles)")

    # Orphans: ours, and used by no attachment recorded here and no disk.
    going = {(r["volume"], r["instance"]) for r in detach}
    staying = [u for u in uses if u.key not in going]
    secrets = []
    for usage in sorted(state.secrets):
        vid = _volume_of_secret(usage)
        if vid is None or not in_scope(vid):
            continue
        if any(usage in u.secrets for u in uses) or any(usage in state.disk_secrets(d) for _n, d in state.disks()):
            continue
        row(vid, "-", "no attachment on this host", f"secret {usage}", "remove the orphan secret")
        secrets.append({"usage_type": state.secrets[usage], "usage": usage, "state": "absent"})
    targets = set(our_targets) | {u.target for u in uses if u.target}
    luns = []
    for session in state.sessions:
        target = session.get("target")
        if target not in targets:
            continue
        users_here = [u for u in uses if u.mode == "host" and u.target == target]
        disk_keys = {k for _n, d in state.disks() for k in state.disk_luns(d)}
        for lun in session.get("luns") or [{"lun": None, "device": None}]:
            keys = state.lun_keys(target, int(lun["lun"])) if lun["lun"] is not None else set()
            if lun["lun"] is not None and (any(u.lun_key in keys for u in users_here) or keys & disk_keys):
                continue
            if lun["lun"] is None and (users_here or any(k[0] == target for k in disk_keys)):
                continue
            entry = {"target": target, "portal": session.get("portal"), "lun": lun["lun"],
                     "iface": session.get("iface") or "default"}
            if entry not in luns:
                what = f"LUN {lun['lun']} ({lun['device']})" if lun["lun"] is not None else "a session"
                row("-", "-", "no attachment on this host", f"{what} of {target} at {session.get('portal')}",
                    "disconnect the orphan")
                luns.append(entry)
    nodes = []
    session_targets = {s.get("target") for s in state.sessions}
    for node in state.nodes:
        target = node.get("target")
        if target not in targets or target in session_targets:
            continue
        if any(u.mode == "host" and u.target == target for u in staying):
            continue
        entry = {"target": target, "portal": node.get("portal"), "iface": node.get("iface") or "default"}
        if entry not in nodes:
            row("-", "-", "no attachment on this host", f"node record {target} at {node.get('portal')}",
                "remove the orphan node record")
            nodes.append(entry)
    return {"rows": rows, "attach": attach, "detach": detach, "secrets": secrets, "luns": luns, "nodes": nodes}
