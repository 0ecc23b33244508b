# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Node records of open-iscsi: the logic of the iscsi_node module.

A node record says how this host logs in to one target through one portal:
CHAP credentials, startup mode and the session's tunables. This file turns
the module's options into the ``node.*`` keys iscsiadm stores, compares them
with the record, and changes only what differs (FLOW.md attach step 6).
"""

from __future__ import annotations

import functools
import typing as t
from dataclasses import dataclass, field

from ansible_collections.openvolume.compute.plugins.module_utils._common import (
    MASK,
    apply_batch,
    batch_entries,
    dispatch_state,
    run_module,
    skip_if_check_mode,
    undo_after,
)
from ansible_collections.openvolume.compute.plugins.module_utils._iscsiadm import (
    Iscsiadm,
    IscsiError,
    NodeEntry,
    Portal,
    validate_target_name,
)

AUTH_KEYS = {
    "method": "authmethod",
    "username": "username",
    "password": "password",
    "username_in": "username_in",
    "password_in": "password_in",
}
SECRET_FIELDS = ("password", "password_in")

# Keys with an option of their own; in ``settings`` they would fight it.
_RESERVED_KEYS = {
    "node.startup": "startup",
    "node.name": "target",
    "node.conn[0].address": "portal",
    "node.conn[0].port": "portal",
}

# The node.* keys of an open-iscsi 2.1 record (iscsiadm -m node -T T -p P).
# Used to validate ``settings`` when no record exists yet (check mode); once
# a record exists its own keys are the reference.
KNOWN_NODE_KEYS = frozenset(
    """
node.name node.tpgt node.startup node.leading_login node.discovery_address node.discovery_port
node.discovery_type node.session.initial_cmdsn node.session.initial_login_retry_max
node.session.xmit_thread_priority node.session.cmds_max node.session.queue_depth node.session.nr_sessions
node.session.auth.authmethod node.session.auth.username node.session.auth.password
node.session.auth.username_in node.session.auth.password_in node.session.auth.chap_algs
node.session.timeo.replacement_timeout node.session.err_timeo.abort_timeout
node.session.err_timeo.lu_reset_timeout node.session.err_timeo.tgt_reset_timeout
node.session.err_timeo.host_reset_timeout node.session.iscsi.FastAbort node.session.iscsi.InitialR2T
node.session.iscsi.ImmediateData node.session.iscsi.FirstBurstLength node.session.iscsi.MaxBurstLength
node.session.iscsi.DefaultTime2Retain node.session.iscsi.DefaultTime2Wait node.session.iscsi.MaxConnections
node.session.iscsi.MaxOutstandingR2T node.session.iscsi.ERL node.session.scan node.session.reopen_max
node.conn[0].address node.conn[0].port node.conn[0].startup node.conn[0].tcp.window_size
node.conn[0].tcp.type_of_service node.conn[0].timeo.logout_timeout node.conn[0].timeo.login_timeout
node.conn[0].timeo.auth_timeout node.conn[0].timeo.noop_out_interval node.conn[0].timeo.noop_out_timeout
node.conn[0].iscsi.MaxXmitDataSegmentLength node.conn[0].iscsi.MaxRecvDataSegmentLength
node.conn[0].iscsi.HeaderDigest node.conn[0].iscsi.DataDigest node.conn[0].iscsi.IFMarker
node.conn[0].iscsi.OFMarker
""".split()
)


def setting_value(value: t.Any) -> str:
    """The string iscsiadm stores for a YAML value (booleans are Yes/No)."""
    if isinstance(value, bool):
        return "Yes" if value else "No"
    return "" if value is None else str(value)


def auth_settings(auth: t.Mapping[str, t.Any] | None, *, prefix: str, param: str = "auth") -> dict[str, str]:
    """The record keys for an ``auth`` option (node or discovery CHAP).

    ``method: None`` clears the credentials too, so that no password is left
    in the node database of a host that stopped using CHAP.
    """
    if auth is None:
        return {}
    method = auth.get("method") or "CHAP"
    fields = {k: auth.get(k) or "" for k in ("username", "password", "username_in", "password_in")}
    if method == "None":
        if any(fields.values()):
            raise IscsiError(f"{param}: method is None but credentials are given; set method: CHAP or drop them")
        return {f"{prefix}.{AUTH_KEYS[k]}": "" for k in fields} | {f"{prefix}.authmethod": "None"}
    if not fields["username"] or not fields["password"]:
        raise IscsiError(f"{param}: CHAP needs both username and password")
    if bool(fields["username_in"]) != bool(fields["password_in"]):
        raise IscsiError(f"{param}: mutual CHAP needs both username_in and password_in (or neither)")
    return {f"{prefix}.authmethod": "CHAP"} | {f"{prefix}.{AUTH_KEYS[k]}": v for k, v in fields.items()}


def is_secret_setting(key: str) -> bool:
    return key.endswith((".password", ".password_in"))


def masked_view(
    record: t.Mapping[str, str], keys: t.Iterable[str], changed_secrets: t.Container[str] = ()
) -> dict[str, str]:
    """The managed keys of a record as shown in results and diffs, secrets masked.

    A secret shows as ``MASK`` when set (``MASK (changed)`` when this run sets a
    new one), so a diff tells that a password changes without showing it.
    """
    view = {}
    for key in sorted(keys):
        value = record.get(key, "")
        if is_secret_setting(key) and value:
            value = f"{MASK} (changed)" if key in changed_secrets else MASK
        view[key] = value
    return view


@dataclass
class NodeRequest:
    """What the user asked of the node records of one target and portal, validated."""

    target: str
    portal: Portal | None
    ifaces: list[str]
    desired: dict[str, str] = field(default_factory=dict)
    tpgt: int | None = None
    state: str = "present"
    # Where the request came from in a batch (``records[2]``), for errors.
    where: str = ""

    @property
    def iface(self) -> str:
        return self.ifaces[0]

    @classmethod
    def from_params(cls, params: t.Mapping[str, t.Any]) -> NodeRequest:
        target = params.get("target")
        if target is not None:
            validate_target_name(target)
        portal = Portal.parse(params["portal"]) if params.get("portal") else None
        tpgt = None
        if params.get("portal") and "," in params["portal"]:
            tag = params["portal"].rsplit(",", 1)[1].strip()
            if not tag.isdigit():
                raise IscsiError(f"portal: '{tag}' after the comma is not a portal group tag (a number)")
            tpgt = int(tag)
        desired = auth_settings(params.get("auth"), prefix="node.session.auth")
        if params.get("startup"):
            desired["node.startup"] = params["startup"]
        for key, value in (params.get("settings") or {}).items():
            if key in _RESERVED_KEYS:
                raise IscsiError(f"settings: '{key}' is set by the option '{_RESERVED_KEYS[key]}'; use that instead")
            if key.startswith("node.session.auth."):
                raise IscsiError(f"settings: '{key}' is set by the option 'auth'; use that instead")
            if not key.startswith("node."):
                raise IscsiError(f"settings: '{key}' is not a node record key; keys start with 'node.' "
                                 "(for example node.session.timeo.replacement_timeout)")
            desired[key] = setting_value(value)
        ifaces = list(params.get("ifaces") or [params.get("iface") or "default"])
        if len(set(ifaces)) != len(ifaces) or not all(ifaces):
            raise IscsiError("ifaces: list each iface once, by its name in `iscsiadm -m iface`")
        if len(ifaces) > 1 and portal is not None and tpgt is None and not params.get("discover"):
            raise IscsiError(
                "portal: several ifaces need the portal group tag after the portal (192.0.2.10:3260,1, as "
                "SendTargets discovery reports it): without one open-iscsi keeps a single record per portal, "
                "and each iface's record replaces the one before"
            )
        return cls(target=target or "", portal=portal, ifaces=ifaces, desired=desired, tpgt=tpgt,
                   state=params.get("state") or "present")

    def check_known(self, known: t.Collection[str]) -> None:
        unknown = sorted(k for k in self.desired if k not in known)
        if unknown:
            raise IscsiError(
                f"settings: iscsiadm does not know {', '.join(unknown)}; "
                "see `iscsiadm -m node -T TARGET -p PORTAL` for the keys of a node record"
            )


class IscsiNode:
    """Brings one node record (or the records of a discovery) to the requested state."""

    def __init__(self, module: t.Any, iscsiadm: Iscsiadm | None = None) -> None:
        self.module = module
        self.iscsiadm = iscsiadm or Iscsiadm(module)
        # Check mode only: the records as this call would leave them, so that a
        # later entry of a batch for the same record predicts what a real run
        # does (it would find the record the earlier entry created).
        self._planned: dict[tuple[str, str, str], dict[str, str] | None] = {}
        # The node records as listed once for the whole call (a batch of 40
        # records would list them 40 times): a record this call creates is
        # added; a delete or a re-creation makes the next entry list again.
        self._listing: list[NodeEntry] | None = None

    def _nodes(self) -> list[NodeEntry]:
        if self._listing is None:
            self._listing = self.iscsiadm.nodes()
        return self._listing

    # changes: the only methods that touch the host --------------------------
    @skip_if_check_mode
    def _create(self, req: NodeRequest, portal: Portal, iface: str) -> None:
        self.iscsiadm.node_new(target=req.target, portal=portal, iface=iface, tpgt=req.tpgt)

    @skip_if_check_mode
    def _update(self, req: NodeRequest, portal: Portal, iface: str, changes: t.Mapping[str, str],
                previous: t.Mapping[str, str]) -> None:
        """Set ``changes``; if one fails, put back the keys already set from ``previous``."""
        applied: list[str] = []
        # authmethod last: a record never says CHAP while its credentials are
        # still the old ones.
        try:
            for key in sorted(changes, key=lambda k: k.endswith(".authmethod")):
                # Counted before the call: iscsiadm may store a bad value
                # half-way (an unknown HeaderDigest leaves it empty) and fail.
                applied.append(key)
                self.iscsiadm.node_update(target=req.target, portal=portal, iface=iface, name=key,
                                          value=changes[key], secret=is_secret_setting(key))
        except IscsiError as exc:
            undo_after(exc, [(f"resetting {key}",
                              functools.partial(self._set, req.target, portal, iface, key, previous.get(key, "")))
                             for key in reversed(applied)])
            raise

    @skip_if_check_mode
    def _set(self, target: str, portal: Portal, iface: str, key: str, value: str) -> None:
        self.iscsiadm.node_update(target=target, portal=portal, iface=iface, name=key, value=value,
                                  secret=is_secret_setting(key))

    @skip_if_check_mode
    def _recreate(self, entry: NodeEntry, saved: t.Mapping[str, str]) -> None:
        """Make a deleted record again with the keys it had (the undo of a delete)."""
        iface = entry.iface or "default"
        self._listing = None
        self.iscsiadm.node_new(target=entry.target, portal=entry.portal, iface=iface,
                               tpgt=entry.tpgt if entry.tpgt >= 0 else None)
        fresh = self.iscsiadm.node_record(target=entry.target, portal=entry.portal, iface=iface) or {}
        # The record's identity (name, address, port, tag) came with -o new.
        identity = {"node.name", "node.tpgt", "node.conn[0].address", "node.conn[0].port"}
        keys = [k for k in saved if k.startswith("node.") and k not in identity and fresh.get(k, "") != saved[k]]
        for key in sorted(keys, key=lambda k: k.endswith(".authmethod")):
            self._set(entry.target, entry.portal, iface, key, saved[key])

    @skip_if_check_mode
    def _delete(self, req: NodeRequest, portal: Portal | None, iface: str) -> None:
        self._listing = None
        self.iscsiadm.node_delete(target=req.target, portal=portal, iface=iface)

    # states ------------------------------------------------------------------
    def apply(self, req: NodeRequest) -> dict[str, t.Any]:
        """Bring the records of one request to its state (the dispatch of one record of a batch)."""
        try:
            return t.cast("dict[str, t.Any]", dispatch_state(self, req.state, req))
        except IscsiError as exc:
            if req.where:
                exc.msg = f"{req.where}{_where_sep(exc.msg)}{exc.msg}"
                exc.args = (exc.msg,)
            raise

    def apply_all(self, reqs: t.Sequence[NodeRequest]) -> list[dict[str, t.Any]]:
        """Apply every request in order, all or nothing.

        When one fails, the records the earlier ones created are deleted
        again, the keys they changed set back and the records they deleted
        made again. Each outcome keeps its undo steps under ``_undo``.
        """
        return apply_batch(reqs, self.apply, lambda _req, outcome: outcome["_undo"])

    def state_present(self, req: NodeRequest) -> dict[str, t.Any]:
        if req.portal is None:
            raise IscsiError("portal: required with state=present (host[:port], e.g. 192.0.2.10:3260)")
        portal = req.portal
        nodes = self._nodes()
        # One record per iface, all or nothing as well.
        results = apply_batch(req.ifaces, lambda iface: self._present_one(req, portal, iface, nodes),
                              lambda _iface, outcome: outcome["_undo"])
        first = results[0]
        result: dict[str, t.Any] = {
            "changed": any(r["changed"] for r in results),
            "created": any(r["created"] for r in results),
            "record": first["record"],
            "records": [{k: r[k] for k in ("iface", "portal", "created", "record")} for r in results],
            "_undo": [step for r in reversed(results) for step in r["_undo"]],
        }
        if len(results) == 1:
            result["diff"] = first["diff"]
        else:
            header = f"{req.target} {req.portal}"
            result["diff"] = {
                "before": {r["iface"]: r["diff"]["before"] for r in results},
                "after": {r["iface"]: r["diff"]["after"] for r in results},
                "before_header": header,
                "after_header": header,
            }
        return result

    def _read(self, target: str, portal: Portal, iface: str) -> dict[str, str] | None:
        key = (target, str(portal), iface)
        if self.module.check_mode and key in self._planned:
            return self._planned[key]
        return self.iscsiadm.node_record(target=target, portal=portal, iface=iface)

    def _present_one(self, req: NodeRequest, wanted: Portal, iface: str, nodes: list[NodeEntry]) -> dict[str, t.Any]:
        # An existing record of the portal is addressed in its own spelling:
        # `-o new` with another one (upper case, uncompressed IPv6) would make
        # a second record of the same portal.
        portal = next((n.portal for n in nodes if n.target == req.target and n.portal == wanted
                       and (n.iface or "default") == iface), wanted)
        before = self._read(req.target, portal, iface)
        planned = (req.target, str(portal), iface) in self._planned
        # A record only planned (check mode) holds just the keys set so far.
        req.check_known(before.keys() if before and not planned else KNOWN_NODE_KEYS | set(before or ()))
        if before is None and req.tpgt is not None:
            # iscsiadm -o new with a tag removes a record of the same portal
            # kept without one (the old one-file layout), whatever its iface.
            old = [n for n in nodes if n.target == req.target and n.portal == wanted and n.tpgt == -1]
            if old:
                raise IscsiError(
                    f"portal: {req.target} at {wanted} has a record without portal group tag (iface "
                    f"{old[0].iface or 'default'}) that creating one with tag {req.tpgt} would delete; delete it "
                    "first (state=absent) or leave the tag out"
                )
        current = before if before is not None else {}
        created = before is None
        label = f"the record of {req.target} at {portal} (iface {iface})"
        if created:
            self._create(req, portal, iface)
            if not self.module.check_mode:
                current = self.iscsiadm.node_record(target=req.target, portal=portal, iface=iface) or {}
                # A later request of the batch for this record finds it.
                nodes.append(NodeEntry(portal=portal, tpgt=req.tpgt if req.tpgt is not None else -1,
                                       target=req.target, iface=iface))
        changes = {k: v for k, v in req.desired.items() if current.get(k, "") != v}
        delete = (f"deleting {label}", functools.partial(self._delete, req, portal, iface))
        try:
            self._update(req, portal, iface, changes, current)
        except IscsiError as exc:
            if created:
                # Leave nothing half-done: the record this call made goes again.
                undo_after(exc, [delete])
            raise
        after = dict(current) | changes
        if self.module.check_mode:
            self._planned[(req.target, str(portal), iface)] = after
        if created:
            undo = [delete]
        else:
            undo = [(f"setting {key} back on {label}", functools.partial(self._set, req.target, portal, iface, key,
                                                                         current.get(key, "")))
                    for key in sorted(changes, key=lambda k: not k.endswith(".authmethod"))]
        changed_secrets = {k for k in changes if is_secret_setting(k) and before and before.get(k)}
        keys = set(req.desired) | ({"node.startup", "node.session.auth.authmethod"} & after.keys())
        header = f"{req.target} {portal} (iface {iface})"
        return {
            "iface": iface,
            "portal": str(portal),
            "changed": created or bool(changes),
            "created": created,
            "record": masked_view(after, keys),
            "diff": {
                "before": masked_view(before, keys) if before is not None else {},
                "after": masked_view(after, keys, changed_secrets),
                "before_header": header,
                "after_header": header,
            },
            "_undo": undo,
        }

    def state_absent(self, req: NodeRequest) -> dict[str, t.Any]:
        """Delete the records of target at portal, or of target at every portal, for each iface."""
        nodes = list(self._nodes())
        # Check mode: records an earlier entry of the batch would have made.
        nodes += [NodeEntry(portal=Portal.parse(p), tpgt=-1, target=tg, iface=i)
                  for (tg, p, i), rec in self._planned.items()
                  if rec is not None and not any(n.target == tg and str(n.portal) == p and (n.iface or "default") == i
                                                 for n in nodes)]
        present = [
            n for n in nodes
            if n.target == req.target and (req.portal is None or n.portal == req.portal)
            and (n.iface or "default") in req.ifaces
            and self._planned.get((n.target, str(n.portal), n.iface or "default"), {}) is not None
        ]
        before = {f"{n.target} {n.portal} (iface {n.iface or 'default'})": "present" for n in present}
        # What each record held, secrets included, so that a failed batch can
        # make it again; kept in memory only.
        saved = {n: (self.iscsiadm.node_record(target=n.target, portal=n.portal, iface=n.iface or "default") or {})
                 if not self.module.check_mode else {} for n in present}
        if req.portal is None:
            for iface in sorted({n.iface or "default" for n in present}):
                self._delete(req, None, iface)
        else:
            for n in present:
                # The record's own spelling of the portal (see _present_one).
                self._delete(req, n.portal, n.iface or "default")
        if self.module.check_mode:
            self._planned.update({(n.target, str(n.portal), n.iface or "default"): None for n in present})
        return {
            "changed": bool(present),
            "removed": [{"target": n.target, "portal": str(n.portal), "tpgt": n.tpgt, "iface": n.iface or "default"}
                        for n in present],
            "diff": {"before": before, "after": {}},
            "_undo": [(f"making the record of {n.target} at {n.portal} (iface {n.iface or 'default'}) again",
                       functools.partial(self._recreate, n, saved[n])) for n in present],
        }

    # discovery ---------------------------------------------------------------
    def discover(self, req: NodeRequest, discovery_auth: t.Mapping[str, t.Any] | None) -> dict[str, t.Any]:
        """SendTargets discovery at ``portal``; writes the records it finds.

        In check mode the discovery still runs (it reads the target's list)
        but with ``-o nonpersistent``, so no record is written.
        """
        if req.portal is None:
            raise IscsiError("portal: discover needs the portal to send SendTargets to")
        portal = req.portal
        desired_auth = auth_settings(discovery_auth, prefix="discovery.sendtargets.auth", param="discovery_auth")
        secrets = [v for k, v in desired_auth.items() if is_secret_setting(k) and v]
        changed = False
        if desired_auth:
            record = self.iscsiadm.discoverydb_record(portal=portal, iface=req.iface)
            if record is None:
                changed = True
                self._discoverydb_new(portal, req.iface)
                record = {}
            changes = {k: v for k, v in desired_auth.items() if record.get(k, "") != v}
            changed = changed or bool(changes)
            self._discoverydb_update(portal, req.iface, changes)
        known_before = {(n.target, n.portal, n.iface or "default") for n in self.iscsiadm.nodes()}
        found = self.iscsiadm.discover(portal=portal, ifaces=req.ifaces, persist=not self.module.check_mode,
                                       with_record=bool(desired_auth) and not self.module.check_mode,
                                       secrets=secrets)
        new = [n for n in found if any((n.target, n.portal, i) not in known_before for i in req.ifaces)]
        targets: list[NodeEntry] = [n for n in found if not req.target or n.target == req.target]
        for node in targets:
            if req.desired:
                sub = NodeRequest(target=node.target, portal=node.portal, ifaces=req.ifaces,
                                  desired=dict(req.desired))
                changed = self.state_present(sub)["changed"] or changed
        return {
            "changed": changed or bool(new),
            "discovered": [{"target": n.target, "portal": str(n.portal), "tpgt": n.tpgt} for n in found],
            "created": [{"target": n.target, "portal": str(n.portal)} for n in new],
        }

    @skip_if_check_mode
    def _discoverydb_new(self, portal: Portal, iface: str) -> None:
        self.iscsiadm.discoverydb_new(portal=portal, iface=iface)

    @skip_if_check_mode
    def _discoverydb_update(self, portal: Portal, iface: str, changes: t.Mapping[str, str]) -> None:
        for key in sorted(changes, key=lambda k: k.endswith(".authmethod")):
            self.iscsiadm.discoverydb_update(portal=portal, iface=iface, name=key, value=changes[key],
                                             secret=is_secret_setting(key))


def chap_spec() -> dict[str, t.Any]:
    """Argument spec of a CHAP dict (``auth``, ``discovery_auth``)."""
    return {
        "type": "dict",
        "options": {
            "method": {"type": "str", "choices": ["CHAP", "None"], "default": "CHAP"},
            "username": {"type": "str"},
            "password": {"type": "str", "no_log": True},
            "username_in": {"type": "str"},
            "password_in": {"type": "str", "no_log": True},
        },
    }


# The options one record takes, at the top level (the single form) and in
# each entry of ``records`` (the batch form).
RECORD_OPTIONS = ("target", "portal", "iface", "ifaces", "auth", "startup", "settings")
# Options only the single form takes.
SINGLE_ONLY = ("discover", "discovery_auth")


def _where_sep(msg: str) -> str:
    """``records[2].portal: ...`` when the message names an option, else ``records[2]: ...``."""
    option = msg.split(":", 1)[0]
    return "." if option in RECORD_OPTIONS else ": "


def record_spec() -> dict[str, t.Any]:
    """Argument spec of one node record: the single form's options, or one entry of ``records``."""
    return {
        "target": {"type": "str"},
        "portal": {"type": "str"},
        "iface": {"type": "str"},
        "ifaces": {"type": "list", "elements": "str"},
        "auth": chap_spec(),
        "startup": {"type": "str", "choices": ["manual", "automatic", "onboot"]},
        "settings": {"type": "dict"},
    }


def argument_spec() -> dict[str, t.Any]:
    """Argument spec of the iscsi_node module."""
    entry = record_spec()
    entry["target"]["required"] = True
    entry["state"] = {"type": "str", "choices": ["present", "absent"]}
    return dict(
        record_spec(),
        # The list holds secrets only inside its entries' auth (no_log there).
        records={"type": "list", "elements": "dict", "options": entry, "no_log": False},
        state={"type": "str", "choices": ["present", "absent"], "default": "present"},
        discovery_auth=chap_spec(),
        discover={"type": "bool", "default": False},
    )


MODULE_KWARGS: dict[str, t.Any] = {
    "supports_check_mode": True,
    "required_if": [("discover", True, ("portal",))],
    "mutually_exclusive": [("iface", "ifaces")],
}


def batch_requests(params: t.Mapping[str, t.Any]) -> list[NodeRequest] | None:
    """The validated requests of ``records``, or None for the single form.

    Every entry is checked before anything changes; an error names the
    entry (``records[2].portal: ...``).
    """
    if params.get("records") is None:
        return None
    reqs = []
    # The top-level state is the entries' default too.
    for i, entry in enumerate(batch_entries(params, "records", RECORD_OPTIONS + SINGLE_ONLY, error=IscsiError,
                                            unset=(None, {}, [], False))):
        try:
            req = NodeRequest.from_params(dict(entry, state=entry.get("state") or params["state"]))
            if req.state == "present" and req.portal is None:
                raise IscsiError("portal: required with state=present (host[:port], e.g. 192.0.2.10:3260)")
        except IscsiError as exc:
            raise IscsiError(f"records[{i}]{_where_sep(exc.msg)}{exc.msg}", **exc.details) from None
        req.where = f"records[{i}]"
        reqs.append(req)
    return reqs


def _shown(req: NodeRequest, outcome: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    result = {k: v for k, v in outcome.items() if not k.startswith("_")}
    result.update(target=req.target, iface=req.iface, ifaces=req.ifaces, state=req.state)
    if req.portal is not None:
        result["portal"] = str(req.portal)
    return result


def run(module: t.Any) -> None:
    """Entry point of the iscsi_node module."""
    params = module.params
    secrets = [
        (auth or {}).get(key)
        for auth in [params.get("auth"), params.get("discovery_auth")]
        + [entry.get("auth") for entry in params.get("records") or []]
        for key in SECRET_FIELDS
    ]

    def handle() -> dict[str, t.Any]:
        reqs = batch_requests(params)
        node = IscsiNode(module)
        if reqs is not None:
            outcomes = [_shown(req, o) for req, o in zip(reqs, node.apply_all(reqs), strict=True)]
            result: dict[str, t.Any] = {
                "changed": any(o["changed"] for o in outcomes),
                "records": [{k: v for k, v in o.items() if k != "diff"} for o in outcomes],
                "diff": [o["diff"] for o in outcomes if o["changed"]],
            }
        else:
            if not params.get("target") and not params["discover"]:
                raise IscsiError("target: required (the target's IQN), or give records for several records")
            if params["discover"] and params["state"] == "absent":
                raise IscsiError(
                    "discover: cannot be combined with state=absent; delete records with target (and portal)")
            req = NodeRequest.from_params(dict(params, settings=params.get("settings") or {}))
            if params["discover"]:
                result = node.discover(req, params.get("discovery_auth"))
            else:
                result = node.apply_all([req])[0]
            result = _shown(req, result)
            result.pop("state")
        if not module._diff:
            result.pop("diff", None)
        return result

    run_module(module, handle, secrets=[s for s in secrets if s])
