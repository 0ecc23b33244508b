# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Node records of open-iscsi: the logic of the iscsi_node module.

A node record says how this host logs in to one target through one portal:
CHAP credentials, startup mode and the session's tunables. This file turns
the module's options into the ``node.*`` keys iscsiadm stores, compares them
with the record, and changes only what differs (FLOW.md attach step 6).
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, field

from ansible_collections.openvolume.compute.plugins.module_utils._common import (
    MASK,
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
        return cls(target=target or "", portal=portal, ifaces=ifaces, desired=desired, tpgt=tpgt)

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
            undo_after(exc, [(f"resetting {key}", lambda key=key: self.iscsiadm.node_update(  # type: ignore[misc]
                target=req.target, portal=portal, iface=iface, name=key, value=previous.get(key, ""),
                secret=is_secret_setting(key))) for key in reversed(applied)])
            raise

    @skip_if_check_mode
    def _delete(self, req: NodeRequest, portal: Portal | None, iface: str) -> None:
        self.iscsiadm.node_delete(target=req.target, portal=portal, iface=iface)

    # states ------------------------------------------------------------------
    def state_present(self, req: NodeRequest) -> dict[str, t.Any]:
        if req.portal is None:
            raise IscsiError("portal: required with state=present (host[:port], e.g. 192.0.2.10:3260)")
        nodes = self.iscsiadm.nodes()
        results = [self._present_one(req, req.portal, iface, nodes) for iface in req.ifaces]
        first = results[0]
        result: dict[str, t.Any] = {
            "changed": any(r["changed"] for r in results),
            "created": any(r["created"] for r in results),
            "record": first["record"],
            "records": [{k: r[k] for k in ("iface", "portal", "created", "record")} for r in results],
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

    def _present_one(self, req: NodeRequest, wanted: Portal, iface: str, nodes: list[NodeEntry]) -> dict[str, t.Any]:
        # An existing record of the portal is addressed in its own spelling:
        # `-o new` with another one (upper case, uncompressed IPv6) would make
        # a second record of the same portal.
        portal = next((n.portal for n in nodes if n.target == req.target and n.portal == wanted
                       and (n.iface or "default") == iface), wanted)
        before = self.iscsiadm.node_record(target=req.target, portal=portal, iface=iface)
        req.check_known(before.keys() if before else KNOWN_NODE_KEYS)
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
        if created:
            self._create(req, portal, iface)
            if not self.module.check_mode:
                current = self.iscsiadm.node_record(target=req.target, portal=portal, iface=iface) or {}
        changes = {k: v for k, v in req.desired.items() if current.get(k, "") != v}
        try:
            self._update(req, portal, iface, changes, current)
        except IscsiError as exc:
            if created:
                # Leave nothing half-done: the record this call made goes again.
                undo_after(exc, [(f"deleting the record of {req.target} at {portal} (iface {iface})",
                                  lambda: self._delete(req, portal, iface))])
            raise
        after = dict(current) | changes
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
        }

    def state_absent(self, req: NodeRequest) -> dict[str, t.Any]:
        """Delete the records of target at portal, or of target at every portal, for each iface."""
        present = [
            n for n in self.iscsiadm.nodes()
            if n.target == req.target and (req.portal is None or n.portal == req.portal)
            and (n.iface or "default") in req.ifaces
        ]
        before = {f"{n.target} {n.portal} (iface {n.iface or 'default'})": "present" for n in present}
        if req.portal is None:
            for iface in sorted({n.iface or "default" for n in present}):
                self._delete(req, None, iface)
        else:
            for n in present:
                # The record's own spelling of the portal (see _present_one).
                self._delete(req, n.portal, n.iface or "default")
        return {
            "changed": bool(present),
            "removed": [{"target": n.target, "portal": str(n.portal), "tpgt": n.tpgt, "iface": n.iface or "default"}
                        for n in present],
            "diff": {"before": before, "after": {}},
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


def argument_spec() -> dict[str, t.Any]:
    """Argument spec of the iscsi_node module."""
    return {
        "target": {"type": "str"},
        "portal": {"type": "str"},
        "iface": {"type": "str"},
        "ifaces": {"type": "list", "elements": "str"},
        "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        "auth": chap_spec(),
        "discovery_auth": chap_spec(),
        "startup": {"type": "str", "choices": ["manual", "automatic", "onboot"]},
        "settings": {"type": "dict", "default": {}},
        "discover": {"type": "bool", "default": False},
    }


MODULE_KWARGS: dict[str, t.Any] = {
    "supports_check_mode": True,
    "required_if": [("discover", False, ("target",)), ("discover", True, ("portal",))],
    "mutually_exclusive": [("iface", "ifaces")],
}


def run(module: t.Any) -> None:
    """Entry point of the iscsi_node module."""
    params = module.params
    secrets = [
        (params.get(opt) or {}).get(key)
        for opt in ("auth", "discovery_auth")
        for key in SECRET_FIELDS
    ]

    def handle() -> dict[str, t.Any]:
        if params["discover"] and params["state"] == "absent":
            raise IscsiError("discover: cannot be combined with state=absent; delete records with target (and portal)")
        req = NodeRequest.from_params(params)
        node = IscsiNode(module)
        if params["discover"]:
            result = node.discover(req, params.get("discovery_auth"))
        elif params["state"] == "present":
            result = node.state_present(req)
        else:
            result = node.state_absent(req)
        result.update(target=req.target, iface=req.iface, ifaces=req.ifaces)
        if req.portal is not None:
            result["portal"] = str(req.portal)
        if not module._diff:
            result.pop("diff", None)
        return result

    run_module(module, handle, secrets=[s for s in secrets if s])
