# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that turn a volume catalogue entry into what the attach flow needs."""

from __future__ import annotations

import typing as t

from ansible.errors import AnsibleFilterError

from ansible_collections.openvolume.compute.plugins.module_utils._common import is_secret_key
from ansible_collections.openvolume.compute.plugins.module_utils._iscsiadm import (
    IscsiError,
    Portal,
    validate_target_name,
)


def connection_info(volume: t.Mapping[str, t.Any], volume_id: str | None = None) -> dict[str, t.Any]:
    """The ``connection_info`` of a volume, shaped as Cinder's ``initialize_connection`` returns it.

    ``volume`` is an entry of the volume catalogue (``openvolume_volumes``):
    ``target_iqn``, ``target_portals`` (or ``target_portal``), ``target_lun``,
    optional ``auth_username``/``auth_password`` (CHAP) and
    ``auth_username_in``/``auth_password_in`` (mutual), ``access_mode``
    (rw/ro), ``multiattach`` and ``id``.
    """
    if not isinstance(volume, t.Mapping):
        raise AnsibleFilterError(
            f"connection_info: expected a volume catalogue entry (a dict), got {type(volume).__name__}"
        )
    vid = volume_id or volume.get("id")
    if not vid:
        raise AnsibleFilterError("connection_info: the volume has no id; give it `id` or pass the id as argument")
    try:
        iqn = validate_target_name(str(volume.get("target_iqn") or ""), param=f"volume {vid}: target_iqn")
        raw_portals = volume.get("target_portals") or ([volume["target_portal"]] if volume.get("target_portal") else [])
        if not raw_portals:
            raise IscsiError(f"volume {vid}: target_portals: at least one portal is needed")
        portals = [
            str(Portal.parse(str(p), param=f"volume {vid}: target_portals[{i}]")) for i, p in enumerate(raw_portals)
        ]
    except IscsiError as exc:
        raise AnsibleFilterError(f"connection_info: {exc.msg}") from None
    lun = int(volume.get("target_lun", 1))
    access_mode = volume.get("access_mode", "rw")
    if access_mode not in ("rw", "ro"):
        raise AnsibleFilterError(f"connection_info: volume {vid}: access_mode must be rw or ro, got {access_mode}")
    data: dict[str, t.Any] = {
        "volume_id": vid,
        "target_iqn": iqn,
        "target_portal": portals[0],
        "target_portals": portals,
        "target_iqns": [iqn] * len(portals),
        "target_lun": lun,
        "target_luns": [lun] * len(portals),
        "access_mode": access_mode,
        "multiattach": bool(volume.get("multiattach", False)),
        "auth_method": "CHAP" if volume.get("auth_username") else None,
    }
    for key in ("auth_username", "auth_password", "auth_username_in", "auth_password_in"):
        if volume.get(key):
            data[key] = volume[key]
    return {"driver_volume_type": "iscsi", "data": data}


def chap_auth(conn: t.Mapping[str, t.Any]) -> dict[str, t.Any] | None:
    """The ``auth`` option of iscsi_node for a connection_info (None without CHAP)."""
    data = conn.get("data", conn)
    if not data.get("auth_username"):
        return None
    auth = {"method": "CHAP", "username": data["auth_username"], "password": data.get("auth_password")}
    if data.get("auth_username_in"):
        auth.update(username_in=data["auth_username_in"], password_in=data.get("auth_password_in"))
    return auth


def public_connection_info(conn: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """``conn`` without its secrets (CHAP passwords), for facts and loop items."""
    out = dict(conn)
    out["data"] = {k: v for k, v in conn.get("data", {}).items() if not is_secret_key(k)}
    return out


def in_use_entries(
    plan: t.Sequence[t.Mapping[str, t.Any]],
    catalogue: t.Mapping[str, t.Any],
    disks: t.Sequence[t.Mapping[str, t.Any]],
    devices: t.Mapping[str, str] | None = None,
) -> list[dict[str, t.Any]]:
    """volume_reservation entries that mark the plan's attachments in-use.

    ``connection_info`` is complete (CHAP included, as Cinder stores it) and
    carries what the detach needs under ``openvolume``: the attach mode, the
    device the host used, the disk's target and the libvirt secret's usage.
    ``disks`` are libvirt_disk's per-disk results, in plan order.
    """
    entries = []
    for item, disk in zip(plan, disks, strict=True):
        conn = connection_info(catalogue[item["volume_id"]], item["volume_id"])
        conn["openvolume"] = {
            "attach_mode": item["mode"],
            "multipath": item.get("multipath", False),
            "secret_usage": item.get("secret_usage"),
            "device_path": (devices or {}).get(item["volume_id"]),
            "target_dev": disk.get("target_dev"),
        }
        entries.append({
            "volume_id": item["volume_id"],
            "state": "in-use",
            "instance": item["instance"],
            "host": item["host"],
            "mountpoint": f"/dev/{disk['target_dev']}" if disk.get("target_dev") else None,
            "connection_info": conn,
        })
    return entries


def reservation_entries(plan: t.Sequence[t.Mapping[str, t.Any]], state: str) -> list[dict[str, t.Any]]:
    """volume_reservation ``volumes`` entries moving the plan's attachments to ``state``.

    ``attaching`` entries are preceded by a ``present`` entry that creates the
    record (with the catalogue's multiattach) when it is missing.
    """
    entries: list[dict[str, t.Any]] = []
    for item in plan:
        if state == "attaching":
            entries.append({"volume_id": item["volume_id"], "state": "present", "multiattach": item["multiattach"]})
        entry = {"volume_id": item["volume_id"], "state": state, "instance": item["instance"]}
        if state == "attaching":
            entry["host"] = item["host"]
            entry["mode"] = "ro" if item.get("readonly") else "rw"
        entries.append(entry)
    return entries


def disk_specs(
    plan: t.Sequence[t.Mapping[str, t.Any]],
    sessions: t.Any = None,
    state: str = "present",
) -> list[dict[str, t.Any]]:
    """libvirt_disk ``disks`` entries for the plan's attachments.

    In host mode the source is the block device iscsi_session returned for
    the volume (the multipath map when there is one, else the by-path link);
    ``sessions`` is the registered result of the iscsi_session loop.
    """
    devices = session_devices(sessions)
    specs = []
    for item in plan:
        spec: dict[str, t.Any] = {"domain": item["instance"], "serial": item["volume_id"], "state": state}
        if state == "present":
            if item["mode"] == "qemu":
                spec["source"] = item["qemu_source"]
            else:
                path = devices.get(item["volume_id"])
                if not path:
                    raise AnsibleFilterError(f"disk_specs: no device for volume {item['volume_id']} from iscsi_session")
                spec["source"] = {"type": "block", "path": path}
            spec["bus"] = item["bus"]
            if item.get("target_dev"):
                spec["target_dev"] = item["target_dev"]
            spec["readonly"] = bool(item.get("readonly"))
            spec["shareable"] = bool(item.get("multiattach"))
        specs.append(spec)
    return specs


def session_devices(sessions: t.Any) -> dict[str, str]:
    """Volume id -> block device path, from the registered iscsi_session loop.

    In check mode no device exists yet; the by-path name the LUN will have is
    used, so the disk's diff still shows where it would come from.
    """
    devices: dict[str, str] = {}
    for res in (sessions or {}).get("results", []) if isinstance(sessions, t.Mapping) else []:
        item = res.get("item") or {}
        vid = item.get("volume_id")
        if not vid or res.get("skipped"):
            continue
        path = res.get("multipath_device") or res.get("by_path")
        if not path and item.get("connection_info"):
            data = item["connection_info"]["data"]
            path = f"/dev/disk/by-path/ip-{data['target_portal']}-iscsi-{data['target_iqn']}-lun-{data['target_lun']}"
        if path:
            devices[vid] = path
    return devices


def undo_disk_specs(disks_result: t.Any) -> list[dict[str, t.Any]]:
    """libvirt_disk ``disks`` entries that detach what a libvirt_disk batch attached."""
    if not isinstance(disks_result, t.Mapping):
        return []
    return [
        {"domain": d["domain"], "serial": d["serial"], "state": "absent"}
        for d in disks_result.get("disks") or []
        if d.get("changed") and d.get("serial")
    ]


def secret_entries(plan: t.Sequence[t.Mapping[str, t.Any]], catalogue: t.Mapping[str, t.Any]) -> list[dict[str, t.Any]]:
    """libvirt_secret ``secrets`` entries with the CHAP passwords of the plan's qemu-mode volumes."""
    return [
        {"usage_type": "iscsi", "usage": item["secret_usage"], "value": catalogue[item["volume_id"]]["auth_password"]}
        for item in plan
        if item.get("secret_usage")
    ]


def absent_secret_entries(plan: t.Sequence[t.Mapping[str, t.Any]]) -> list[dict[str, t.Any]]:
    """libvirt_secret ``secrets`` entries removing the secrets of the plan's qemu-mode volumes."""
    return [
        {"usage_type": "iscsi", "usage": i["secret_usage"], "state": "absent"} for i in plan if i.get("secret_usage")
    ]


def undo_secret_specs(secrets_result: t.Any) -> list[dict[str, t.Any]]:
    """libvirt_secret ``secrets`` entries removing what a libvirt_secret batch created or changed."""
    if not isinstance(secrets_result, t.Mapping):
        return []
    return [
        {"usage_type": s.get("usage_type", "iscsi"), "usage": s["usage"], "state": "absent"}
        for s in secrets_result.get("secrets") or []
        if s.get("changed")
    ]


def _attachment(record: t.Mapping[str, t.Any] | None, instance: str) -> t.Mapping[str, t.Any] | None:
    for att in (record or {}).get("attachments") or []:
        if att.get("instance") == instance:
            return t.cast(t.Mapping[str, t.Any], att)
    return None


def _requests(requests: t.Any, volume: str | None, instance: str | None, role: str) -> list[dict[str, t.Any]]:
    if volume or instance:
        if not (volume and instance):
            raise AnsibleFilterError(f"{role}: give both volume and instance (-e volume=ID -e instance=DOMAIN)")
        return [{"volume": volume, "instance": instance}]
    if not isinstance(requests, list):
        raise AnsibleFilterError(f"{role}: the attachments must be a list of {{volume, instance}} dicts")
    out = []
    for i, req in enumerate(requests):
        if not isinstance(req, t.Mapping) or not req.get("volume") or not req.get("instance"):
            raise AnsibleFilterError(f"{role}: attachments[{i}] needs volume and instance, got {req!r}")
        out.append(dict(req))
    return out


def attach_plan(
    requests: t.Any,
    catalogue: t.Mapping[str, t.Any],
    records: t.Sequence[t.Mapping[str, t.Any]],
    host: str,
    one_volume: str | None = None,
    one_instance: str | None = None,
    default_mode: str = "host",
    default_bus: str = "virtio",
) -> list[dict[str, t.Any]]:
    """The work of the volume_attach role, one item per requested attachment.

    Each item has the volume's ``connection_info`` (from the catalogue), the
    attach ``mode`` (``host``: kernel session and block disk; ``qemu``: QEMU's
    own iSCSI client and a libvirt secret), the disk to hot-plug, and
    ``attached``: whether the reservation store already has the attachment
    in use, in which case the role leaves it alone.
    """
    by_id = {r.get("volume_id"): r for r in records or []}
    plan = []
    seen = set()
    for req in _requests(requests, one_volume, one_instance, "volume_attach"):
        vid, inst = str(req["volume"]), str(req["instance"])
        if (vid, inst) in seen:
            raise AnsibleFilterError(f"volume_attach: {vid} is requested twice for {inst}")
        seen.add((vid, inst))
        entry = (catalogue or {}).get(vid)
        if entry is None:
            raise AnsibleFilterError(
                f"volume_attach: volume {vid} is not in the volume catalogue (openvolume_volumes); add it there"
            )
        conn = connection_info(entry, vid)
        mode = str(req.get("mode") or entry.get("attach_mode") or default_mode)
        if mode not in ("host", "qemu"):
            raise AnsibleFilterError(f"volume_attach: volume {vid}: attach_mode must be host or qemu, got {mode}")
        att = _attachment(by_id.get(vid), inst)
        if att is not None and att.get("status") == "in-use" and att.get("host") not in (None, host):
            raise AnsibleFilterError(
                f"volume_attach: volume {vid} is in use by {inst} on {att.get('host')}, not {host}"
            )
        data = conn["data"]
        secret_usage = f"openvolume/{vid}" if data.get("auth_username") else None
        multipath = bool(req.get("multipath", entry.get("multipath", False)))
        qemu_source: dict[str, t.Any] | None = None
        if mode == "qemu":
            portal = Portal.parse(data["target_portal"])
            qemu_source = {
                "type": "network",
                "protocol": "iscsi",
                "name": f"{data['target_iqn']}/{data['target_lun']}",
                "hosts": [{"name": portal.host, "port": portal.port}],
            }
            if secret_usage:
                qemu_source["auth"] = {"username": data["auth_username"], "secret_usage": secret_usage}
        plan.append({
            "volume_id": vid,
            "instance": inst,
            "host": host,
            "mode": mode,
            "multipath": multipath,
            "portals": data["target_portals"] if multipath else [data["target_portal"]],
            "qemu_source": qemu_source,
            "multiattach": data["multiattach"],
            "readonly": data["access_mode"] == "ro",
            "target_dev": req.get("target_dev"),
            "bus": req.get("bus") or entry.get("bus") or default_bus,
            # Without secrets: the plan is a fact; the secrets are read from
            # the catalogue inside the module arguments that need them.
            "connection_info": public_connection_info(conn),
            "secret_usage": secret_usage if mode == "qemu" else None,
            "attached": bool(att is not None and att.get("status") == "in-use"),
        })
    return plan


def detach_plan(
    requests: t.Any,
    records: t.Sequence[t.Mapping[str, t.Any]],
    host: str,
    one_volume: str | None = None,
    one_instance: str | None = None,
) -> list[dict[str, t.Any]]:
    """The work of the volume_detach role, one item per requested attachment.

    Everything needed to disconnect comes from the attachment's stored
    ``connection_info`` (the lesson of seed 004), not from the catalogue. An
    attachment that is not there, or not on this host, is ``attached: false``
    and left alone.
    """
    by_id = {r.get("volume_id"): r for r in records or []}
    plan = []
    for req in _requests(requests, one_volume, one_instance, "volume_detach"):
        vid, inst = str(req["volume"]), str(req["instance"])
        att = _attachment(by_id.get(vid), inst)
        item: dict[str, t.Any] = {"volume_id": vid, "instance": inst, "host": host, "attached": False}
        if att is None or att.get("host") not in (None, host):
            plan.append(item)
            continue
        if att.get("status") not in ("in-use", "detaching", "error_detaching"):
            raise AnsibleFilterError(
                f"volume_detach: volume {vid} is {att.get('status')} for {inst}; wait for the attach to finish "
                "or repair it with openvolume.compute.volume_reservation"
            )
        conn = att.get("connection_info") or {}
        extra = conn.get("openvolume") or {}
        if not conn.get("data"):
            raise AnsibleFilterError(
                f"volume_detach: volume {vid} has no connection_info for {inst}; nothing says how to disconnect it"
            )
        item.update(
            attached=True,
            status=att.get("status"),
            mode=extra.get("attach_mode", "host"),
            multipath=bool(extra.get("multipath", False)),
            secret_usage=extra.get("secret_usage"),
            connection_info=conn,
        )
        plan.append(item)
    return plan


def failure_message(result: t.Any) -> str:
    """The message of a failed task result, for the roles' rescue.

    A failed loop says only "One or more items failed": the failed items'
    own messages are what the user needs.
    """
    if not isinstance(result, t.Mapping):
        return str(result)
    items = [r for r in result.get("results") or [] if isinstance(r, t.Mapping) and r.get("failed")]
    messages = [str(r["msg"]) for r in items if r.get("msg")]
    return "; ".join(messages) or str(result.get("msg", result))


def _table(header: list[str], rows: t.Sequence[t.Sequence[t.Any]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*map(str, r)) for r in rows]


def volume_table(records: t.Sequence[t.Mapping[str, t.Any]]) -> list[str]:
    """Volume records (the volumes lookup) as the lines of a text table."""
    rows = []
    for rec in sorted(records or [], key=lambda r: str(r.get("volume_id"))):
        atts = rec.get("attachments") or [{}]
        for att in atts:
            rows.append([rec.get("volume_id"), rec.get("status"), "yes" if rec.get("multiattach") else "no",
                         att.get("instance") or "-", att.get("host") or "-", att.get("mountpoint") or "-",
                         att.get("status") or "-"])
    return _table(["volume", "status", "multiattach", "instance", "host", "mountpoint", "attachment"], rows)


def disk_table(domains: t.Sequence[t.Mapping[str, t.Any]]) -> list[str]:
    """libvirt_disk_info's domains as the lines of a text table."""
    rows = []
    for dom in domains or []:
        for disk in dom.get("disks") or [{}]:
            src = disk.get("source") or {}
            rows.append([dom.get("name"), dom.get("state"), disk.get("target_dev") or "-", disk.get("bus") or "-",
                         disk.get("serial") or "-", src.get("path") or src.get("name") or "-"])
    return _table(["domain", "state", "target", "bus", "serial", "source"], rows)


class FilterModule:
    """openvolume.compute filters."""

    def filters(self) -> dict[str, t.Callable[..., t.Any]]:
        return {
            "connection_info": connection_info,
            "chap_auth": chap_auth,
            "attach_plan": attach_plan,
            "in_use_entries": in_use_entries,
            "reservation_entries": reservation_entries,
            "disk_specs": disk_specs,
            "session_devices": session_devices,
            "undo_disk_specs": undo_disk_specs,
            "secret_entries": secret_entries,
            "volume_table": volume_table,
            "disk_table": disk_table,
            "absent_secret_entries": absent_secret_entries,
            "undo_secret_specs": undo_secret_specs,
            "detach_plan": detach_plan,
            "failure_message": failure_message,
        }
