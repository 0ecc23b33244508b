# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that turn a volume catalogue entry into what the attach flow needs."""

from __future__ import annotations

import difflib
import re
import typing as t

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.openvolume.compute.plugins.module_utils import _host_usage
from ansible_collections.openvolume.compute.plugins.module_utils._common import SERIAL, is_secret_key
from ansible_collections.openvolume.compute.plugins.module_utils._iscsiadm import (
    IscsiError,
    Portal,
    canonical_host,
    validate_target_name,
)
from ansible_collections.openvolume.compute.plugins.module_utils._scsi_devices import (
    ADDRESSING_MODES,
    MAX_LUN,
    DeviceError,
    kernel_lun_for,
    normalize_wwid,
)


def _unset(value: t.Any) -> bool:
    """None, or an empty string: an unanswered optional survey question comes as one."""
    return value is None or (isinstance(value, str) and not value.strip())


def _flag(where: t.Mapping[str, t.Any], key: str, what: str, default: bool = False) -> bool:
    """A yes/no key of a catalogue entry or request, read as Ansible reads booleans.

    ``"no"`` and ``"false"`` (from an ini lookup, ``-e``, a survey) are
    false, not a non-empty string taken for true; anything but a boolean is
    an error naming ``what`` and the key.
    """
    value = where.get(key)
    if _unset(value):
        return default
    try:
        return boolean(value.strip() if isinstance(value, str) else value, strict=True)
    except TypeError:
        raise AnsibleFilterError(f"{what}: {key} must be true or false, got {value!r}") from None


def _list(volume: t.Mapping[str, t.Any], key: str, what: str) -> list[t.Any]:
    """A list key of a catalogue entry (absent: empty); a string or a dict is refused, never iterated."""
    value = volume.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        hint = f"; write one item as [{value!r}]" if isinstance(value, str) else ""
        raise AnsibleFilterError(f"{what}: {key} must be a list, got {value!r}{hint}")
    return value


def _whole_number(value: t.Any, maximum: int) -> int | None:
    """``value`` as a number from 0 to ``maximum`` (an int, or a string of digits); None when it is not one."""
    text = str(value).strip() if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    return int(text) if text.isdigit() and int(text) <= maximum else None


def _lun(volume: t.Mapping[str, t.Any], what: str) -> int:
    """The catalogue's ``target_lun``: required (which LUN is the volume's is never guessed), 0 to MAX_LUN."""
    value = volume.get("target_lun")
    if value is None:
        raise AnsibleFilterError(
            f"{what}: target_lun is needed, the volume's LUN number on the target (as Cinder's connection_info "
            "gives it; tgt numbers its first disk 1, LIO 0)"
        )
    lun = _whole_number(value, MAX_LUN)
    if lun is None:
        raise AnsibleFilterError(f"{what}: target_lun must be a LUN number from 0 to {MAX_LUN}, got {value!r}")
    return lun


def catalogue_volume(catalogue: t.Mapping[t.Any, t.Any] | None, vid: str, what: str = "volume_attach") -> t.Any:
    """The catalogue's entry of volume ``vid``, flattened (``catalogue_entry``).

    A key YAML read as a number (``1234:``) is found by its digits.
    """
    catalogue = catalogue or {}
    found = [value for key, value in catalogue.items() if str(key) == vid][:1]
    if not found:
        raise AnsibleFilterError(
            f"{what}: volume {vid} is not in the volume catalogue (openvolume_volumes); add it there")
    return catalogue_entry(found[0], f"{what}: volume {vid}")


def catalogue_entry(volume: t.Any, what: str = "volume") -> t.Any:
    """A catalogue entry as the filters read it: Cinder's shape flattened.

    An entry may be what Cinder's ``initialize_connection`` returns,
    ``{driver_volume_type, data: {...}}``, with the collection's own keys
    (``auth_key``, ``attach_mode``, ``multipath``, ``wwn``, ...) beside
    ``data``; its ``data`` keys are then read as if they were the entry's.
    A key on both levels with two values is an error: neither is guessed.
    """
    if not isinstance(volume, t.Mapping) or not isinstance(volume.get("data"), t.Mapping):
        return volume
    flat = dict(volume["data"])
    for key, value in volume.items():
        if key == "data":
            continue
        if key in flat and flat[key] != value:
            raise AnsibleFilterError(f"{what}: {key} is {value!r} beside data and {flat[key]!r} in data; keep one")
        flat[key] = value
    return flat


# The keys a (flattened) catalogue entry may have: the collection's own and
# those Cinder's connection_info carries, read or not (an entry pasted from
# Cinder keeps them). Any other key is tolerated unless it looks like a
# misspelt or misplaced one of these: a read-only or multiattach flag that is
# silently dropped would hand the guest a writable or exclusive disk.
CATALOGUE_KEYS = frozenset((
    # The collection's.
    "id", "driver_volume_type", "attach_mode", "bus", "multipath", "wwn", "ifaces", "portal_group",
    "node_settings", "auth_key", "format", "passphrase",
    # Cinder's iSCSI data.
    "volume_id", "target_iqn", "target_iqns", "target_portal", "target_portals", "target_lun", "target_luns",
    "target_discovered", "auth_method", "auth_username", "auth_password", "auth_username_in", "auth_password_in",
    "discovery_auth_method", "discovery_auth_username", "discovery_auth_password",
    # Cinder's RBD data.
    "name", "hosts", "ports", "cluster_name", "auth_enabled", "secret_type", "secret_uuid", "keyring", "volume_name",
    # Both.
    "access_mode", "multiattach", "encrypted", "qos_specs", "discard", "cacheable", "serial", "device_path",
    "logical_block_size", "physical_block_size", "addressing_mode", "enforce_multipath",
    # What os-brick adds and Nova stores with an attachment's connection_info.
    "multipath_id", "scsi_wwn",
))
# Keys an operator may reach for that mean something else here.
_MISPLACED_KEYS = {
    "readonly": "access_mode: ro", "read_only": "access_mode: ro", "ro": "access_mode: ro",
    "shareable": "multiattach: true", "shared": "multiattach: true",
    "mode": "attach_mode (host or qemu)", "lun": "target_lun", "iqn": "target_iqn",
    "portal": "target_portals (a list)", "portals": "target_portals", "username": "auth_username",
    "password": "auth_password", "encryption": "encrypted: true", "luks": "encrypted: true", "wwid": "wwn",
    "target_dev": "the attachment (openvolume_attachments), not the catalogue",
    "instance": "the attachment (openvolume_attachments), not the catalogue",
}


def _check_keys(volume: t.Mapping[str, t.Any], what: str) -> None:
    """Refuse a key that is a misspelling of a catalogue key or belongs elsewhere (never silently dropped)."""
    for key in volume:
        name = str(key)
        if name in CATALOGUE_KEYS:
            continue
        hint = _MISPLACED_KEYS.get(name.lower().replace("-", "_"))
        if hint is None:
            near = difflib.get_close_matches(name.lower().replace("-", "_"), CATALOGUE_KEYS, n=1, cutoff=0.85)
            hint = near[0] if near else None
        if hint is not None:
            raise AnsibleFilterError(f"{what}: unknown key {name!r}: did you mean {hint}?")


def _kind(volume: t.Mapping[str, t.Any]) -> str:
    """``driver_volume_type``, in any case (os-brick reads ``iSCSI`` and ``RBD`` too); iscsi when absent."""
    return str(volume.get("driver_volume_type") or "iscsi").lower()


def _portals_of_target(volume: t.Mapping[str, t.Any], iqn: str, lun: int, portals: list[str],
                       what: str) -> list[str]:
    """The portals at which ``target_iqn`` shows ``target_lun``, by Cinder's per-portal lists.

    Many arrays give each portal a target of its own (``target_iqns``,
    ``target_luns``: one per portal). os-brick uses ``target_portal``,
    ``target_iqn`` and ``target_lun`` alone for one path, and so does this
    collection: a volume here is one LUN of one target at all its portals,
    so the other targets' portals are left out. With ``multipath`` asked for
    in the entry that would drop paths the operator expects: refused.
    """
    per_portal = []
    for key, value in (("target_iqns", iqn), ("target_luns", lun)):
        values = _list(volume, key, what)
        if values and len(values) != len(portals):
            raise AnsibleFilterError(f"{what}: {key} has {len(values)} entries for {len(portals)} portals; give "
                                     "one per portal")
        # iSCSI names compare without case (RFC 3722), LUNs as numbers written either way.
        per_portal.append([str(v).strip().lower() == str(value).lower() for v in values] or [True] * len(portals))
    kept = [p for p, same_iqn, same_lun in zip(portals, *per_portal, strict=True) if same_iqn and same_lun]
    if len(kept) == len(portals):
        return portals
    others = {key: volume.get(key) for key, same in zip(("target_iqns", "target_luns"), per_portal, strict=True)
              if not all(same)}
    if not kept or _flag(volume, "multipath", what):
        raise AnsibleFilterError(
            f"{what}: {', '.join(f'{k} {v!r}' for k, v in others.items())} name another target or LUN behind some "
            f"portals than {iqn!r} LUN {lun}; multipath here is over the portals of one target: list only the "
            "portals of that target" + ("" if not kept else ", or leave multipath out to use them alone")
        )
    return kept


def connection_info(volume: t.Mapping[str, t.Any], volume_id: str | None = None) -> dict[str, t.Any]:
    """The ``connection_info`` of a volume, shaped as Cinder's ``initialize_connection`` returns it.

    ``volume`` is an entry of the volume catalogue (``openvolume_volumes``).
    iSCSI (``driver_volume_type: iscsi``, the default): ``target_iqn``,
    ``target_portals`` (or ``target_portal``), ``target_lun``, optional
    ``auth_username``/``auth_password`` (CHAP) and
    ``auth_username_in``/``auth_password_in`` (mutual). Ceph RBD
    (``driver_volume_type: rbd``): ``name`` (pool/image), ``hosts`` and
    ``ports`` of the monitors (as Cinder's RBD driver returns them; none:
    the host's ceph.conf), ``auth_username`` (the cephx user) and
    ``auth_key`` (its key: it never enters connection_info). Both:
    ``access_mode`` (rw/ro), ``multiattach`` and ``id``; ``encrypted``
    (LUKS, which QEMU decrypts), ``format`` (``luks``, the only one) and
    ``passphrase`` (it never enters connection_info, which says only
    ``encrypted: true``).
    """
    if not isinstance(volume, t.Mapping):
        raise AnsibleFilterError(
            f"connection_info: expected a volume catalogue entry (a dict), got {type(volume).__name__}"
        )
    volume = catalogue_entry(volume, f"connection_info: volume {volume_id or volume.get('id') or ''}".rstrip())
    vid = volume_id or volume.get("id") or volume.get("volume_id")
    if not vid:
        raise AnsibleFilterError("connection_info: the volume has no id; give it `id` or pass the id as argument")
    kind = _kind(volume)
    if kind not in ("iscsi", "rbd"):
        raise AnsibleFilterError(
            f"connection_info: volume {vid}: driver_volume_type must be iscsi or rbd, got {kind!r}")
    _check_keys(volume, f"connection_info: volume {vid}")
    encrypted = _encrypted(volume, str(vid))
    if kind == "rbd":
        conn = _rbd_connection_info(volume, str(vid))
        if encrypted:
            conn["data"]["encrypted"] = True
        return conn
    try:
        iqn = validate_target_name(str(volume.get("target_iqn") or ""), param=f"volume {vid}: target_iqn")
        raw_portals = (_list(volume, "target_portals", f"connection_info: volume {vid}")
                       or ([volume["target_portal"]] if volume.get("target_portal") else []))
        if not raw_portals:
            raise IscsiError(f"volume {vid}: target_portals: at least one portal is needed")
        portals = [
            str(Portal.parse(str(p), param=f"volume {vid}: target_portals[{i}]")) for i, p in enumerate(raw_portals)
        ]
    except IscsiError as exc:
        raise AnsibleFilterError(f"connection_info: {exc.msg}") from None
    for user_key, secret_key, what in (("auth_username", "auth_password", "CHAP"),
                                       ("auth_username_in", "auth_password_in", "mutual CHAP")):
        if volume.get(user_key) and not volume.get(secret_key):
            raise AnsibleFilterError(f"connection_info: volume {vid}: {secret_key} (the {what} password of "
                                     f"{volume[user_key]}) is needed with {user_key}")
    if volume.get("auth_username_in") and not volume.get("auth_username"):
        raise AnsibleFilterError(f"connection_info: volume {vid}: auth_username_in (mutual CHAP) needs "
                                 "auth_username and auth_password (the target's CHAP) too")
    lun = _lun(volume, f"connection_info: volume {vid}")
    portals = _portals_of_target(volume, iqn, lun, portals, f"connection_info: volume {vid}")
    access_mode = str(volume.get("access_mode") or "rw").lower()
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
        "multiattach": _flag(volume, "multiattach", f"connection_info: volume {vid}"),
        "auth_method": "CHAP" if volume.get("auth_username") else None,
    }
    addressing = _addressing_mode(volume, vid)
    if addressing:
        data["addressing_mode"] = addressing
    if encrypted:
        # As Cinder says it; the passphrase stays in the catalogue.
        data["encrypted"] = True
    data.update(volume_secrets(volume)["chap"])
    return {"driver_volume_type": "iscsi", "data": data}


def _addressing_mode(volume: t.Mapping[str, t.Any], vid: str) -> str | None:
    """Cinder's ``addressing_mode`` (how the array numbers LUNs), spelt as os-brick does; None when not given."""
    value = volume.get("addressing_mode")
    if _unset(value):
        return None
    for mode in ADDRESSING_MODES:
        if str(value).strip().lower() == mode.lower():
            return mode
    raise AnsibleFilterError(f"connection_info: volume {vid}: addressing_mode must be one of "
                             f"{', '.join(ADDRESSING_MODES)} (Cinder's names), got {value!r}")


_CHAP_KEYS = ("auth_username", "auth_password", "auth_username_in", "auth_password_in")


def volume_secrets(volume: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """The one place the filters read a catalogue entry's secrets (its other data is public).

    ``chap``: the CHAP keys connection_info carries (``auth_username``,
    ``auth_password`` and the ``_in`` pair of mutual CHAP; empty for RBD or
    without CHAP); ``libvirt``: the value of the volume's libvirt secret
    (the CHAP password of an iSCSI volume, the cephx key of an RBD one);
    ``passphrase``: the LUKS passphrase of an encrypted volume. Absent ones
    are None.
    """
    volume = catalogue_entry(volume)
    if _kind(volume) == "rbd":
        chap: dict[str, t.Any] = {}
        value = volume.get("auth_key")
    else:
        chap = {key: volume[key] for key in _CHAP_KEYS if volume.get(key)}
        value = volume.get("auth_password")
    return {"chap": chap, "libvirt": value or None,
            "passphrase": (volume.get("passphrase") or None) if _flag(volume, "encrypted", "volume") else None}


ENCRYPTION_FORMATS = ("luks",)
# The disk buses libvirt_disk takes.
BUSES = ("virtio", "scsi", "sata")


def _encrypted(volume: t.Mapping[str, t.Any], vid: str) -> bool:
    """Whether the catalogue entry is an encrypted volume, validated (its passphrase present, the format known)."""
    if not _flag(volume, "encrypted", f"connection_info: volume {vid}"):
        return False
    fmt = volume.get("format", "luks")
    if fmt not in ENCRYPTION_FORMATS:
        raise AnsibleFilterError(f"connection_info: volume {vid}: format must be luks (the only encryption format), "
                                 f"got {fmt!r}")
    if not volume.get("passphrase"):
        raise AnsibleFilterError(
            f"connection_info: volume {vid}: passphrase (the LUKS passphrase, from a vault like the CHAP secrets) "
            "is needed with encrypted: true"
        )
    return True


def luks_secret_usage(volume_id: str) -> str:
    """The usage of the libvirt secret (usage type volume) that holds a volume's LUKS passphrase."""
    return f"openvolume/{volume_id}/luks"


_RBD_NAME = re.compile(r"^[^/@\s]+/[^/@\s]+$")


def _rbd_connection_info(volume: t.Mapping[str, t.Any], vid: str) -> dict[str, t.Any]:
    """Cinder's RBD connection_info: the image, its monitors and the cephx user (never the key)."""
    name = str(volume.get("name") or "")
    if name.count("/") == 2:
        # libvirt (9.x) hands QEMU everything after the pool as the image
        # name: an image in a namespace is never found (checked on the lab).
        raise AnsibleFilterError(f"connection_info: volume {vid}: name {name!r} is an image in an RBD namespace, "
                                 "which libvirt cannot attach (it takes what follows the pool for the image name); "
                                 "use an image outside namespaces (pool/image)")
    if not _RBD_NAME.match(name):
        raise AnsibleFilterError(f"connection_info: volume {vid}: name must be pool/image, got {name!r}")
    hosts = [_monitor(h, f"connection_info: volume {vid}: hosts[{i}]")
             for i, h in enumerate(_list(volume, "hosts", f"connection_info: volume {vid}"))]
    ports = ["" if _unset(p) else str(p).strip() for p in _list(volume, "ports", f"connection_info: volume {vid}")]
    for i, port in enumerate(ports):
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise AnsibleFilterError(f"connection_info: volume {vid}: ports[{i}] must be a TCP port (1-65535), "
                                     f"got {port!r}")
    if ports and len(ports) != len(hosts):
        raise AnsibleFilterError(f"connection_info: volume {vid}: ports must have one entry per host "
                                 f"({len(hosts)} hosts, {len(ports)} ports), or be left out")
    access_mode = str(volume.get("access_mode") or "rw").lower()
    if access_mode not in ("rw", "ro"):
        raise AnsibleFilterError(f"connection_info: volume {vid}: access_mode must be rw or ro, got {access_mode}")
    cluster = "ceph" if _unset(volume.get("cluster_name")) else str(volume["cluster_name"]).strip()
    if cluster != "ceph" and not hosts:
        # libvirt's disk has no cluster name: without monitors librados reads
        # the host's /etc/ceph/ceph.conf, the default cluster's, and would open
        # an image of the same name there.
        raise AnsibleFilterError(
            f"connection_info: volume {vid}: cluster_name {cluster!r} needs hosts (the monitors of that cluster): "
            "without them the host's /etc/ceph/ceph.conf, the cluster named ceph, would be used")
    user = volume.get("auth_username")
    if isinstance(user, str) and user.startswith("client."):
        # The cephx id: librados and rbd --id put "client." in front themselves.
        user = user[len("client."):]
    auth = _rbd_auth_enabled(volume, vid, user)
    if not auth:
        # Cinder sets auth_enabled false and still names its rbd_user when
        # the compute is to use its own cephx settings; this host has none.
        user = None
    if user and not volume.get("auth_key"):
        raise AnsibleFilterError(f"connection_info: volume {vid}: auth_key (the cephx key of {user}) is needed with "
                                 "auth_username")
    data: dict[str, t.Any] = {
        "volume_id": vid,
        "name": name,
        "hosts": hosts,
        "ports": ports,
        "cluster_name": cluster,
        "auth_enabled": auth,
        "auth_username": user,
        "secret_type": "ceph",
        "access_mode": access_mode,
        "multiattach": _flag(volume, "multiattach", f"connection_info: volume {vid}"),
    }
    return {"driver_volume_type": "rbd", "data": data}


def _rbd_auth_enabled(volume: t.Mapping[str, t.Any], vid: str, user: t.Any) -> bool:
    """Whether an RBD entry uses cephx: its ``auth_enabled``, by default whether it names a user."""
    if _unset(volume.get("auth_enabled")):
        return bool(user)
    enabled = _flag(volume, "auth_enabled", f"connection_info: volume {vid}")
    if enabled and not user:
        raise AnsibleFilterError(f"connection_info: volume {vid}: auth_enabled is true but no auth_username (the "
                                 "cephx user) is given; give auth_username and auth_key, or set auth_enabled: false")
    if not enabled and volume.get("auth_key"):
        raise AnsibleFilterError(f"connection_info: volume {vid}: auth_enabled is false but auth_key is given; set "
                                 "auth_enabled: true (or leave it out) to use cephx, or drop auth_key to attach "
                                 "without cephx")
    return enabled


def _monitor(value: t.Any, what: str) -> str:
    """A Ceph monitor of an RBD entry's ``hosts``: an address or host name, IPv6 without brackets, no port."""
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        canonical_host(text)
    except ValueError:
        hint = "; give its port in ports" if text.count(":") == 1 or "]:" in text else ""
        raise AnsibleFilterError(f"{what}: {value!r} is no monitor address or host name{hint}") from None
    return text


def chap_auth(conn: t.Mapping[str, t.Any]) -> dict[str, t.Any] | None:
    """The ``auth`` option of iscsi_node for a connection_info (None without CHAP)."""
    data = conn.get("data", conn)
    if not data.get("auth_username"):
        return None
    auth = {"method": "CHAP", "username": data["auth_username"], "password": data.get("auth_password")}
    if data.get("auth_username_in"):
        auth.update(username_in=data["auth_username_in"], password_in=data.get("auth_password_in"))
    return auth


def node_records(
    items: t.Sequence[t.Mapping[str, t.Any]], catalogue: t.Mapping[str, t.Any] | None = None
) -> list[dict[str, t.Any]]:
    """iscsi_node ``records`` entries for host-mode items, one call for all of them.

    With ``catalogue`` (attach): a record per item and portal with the
    volume's CHAP (read from the catalogue here, never from the plan) and
    ``node_settings``; several ifaces get the portal group tag. Without it
    (detach): an entry per target and ifaces that deletes its records at
    every portal. Entries repeat for LUNs of one target; iscsi_node takes
    the repeats as no change.
    """
    records: list[dict[str, t.Any]] = []
    for item in items:
        if catalogue is None:
            entry: dict[str, t.Any] = {"target": item["target"], "ifaces": item.get("ifaces") or None}
            if entry not in records:
                records.append(entry)
            continue
        vid = item["volume_id"]
        volume = catalogue_volume(catalogue, vid)
        auth = chap_auth(volume_secrets(volume)["chap"])
        tag = f",{item['portal_group']}" if item.get("portal_group") else ""
        for portal in item["portals"]:
            records.append({"target": item["connection_info"]["data"]["target_iqn"], "portal": f"{portal}{tag}",
                            "ifaces": item.get("ifaces") or None, "auth": auth,
                            "settings": volume.get("node_settings")})
    return records


def public_connection_info(conn: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """``conn`` without its secrets (CHAP passwords), for facts and loop items."""
    out = dict(conn)
    out["data"] = {k: v for k, v in conn.get("data", {}).items() if not is_secret_key(k)}
    return out


def stored_connection_info(
    item: t.Mapping[str, t.Any],
    catalogue: t.Mapping[str, t.Any],
    *,
    target_dev: str | None = None,
    device_path: str | None = None,
    wwid: str | None = None,
) -> dict[str, t.Any]:
    """The connection_info an attachment stores: complete (CHAP included, as Cinder stores it).

    Under ``openvolume`` it carries what a detach, a rollback or reconcile
    needs besides: the attach mode, the libvirt secret's usage, the disk's
    serial and target, the device the host used and its WWID. It is stored
    with the reservation already, before anything is connected, so that
    whoever comes after a crash has what it needs (seed 004).
    """
    # The plan item's public connection_info, with the CHAP keys put back:
    # the catalogue is not read again for the rest.
    public = item["connection_info"]
    chap = volume_secrets(catalogue_volume(catalogue, item["volume_id"]))["chap"]
    conn = dict(public, data=dict(public["data"], **chap))
    conn["openvolume"] = {
        "attach_mode": item["mode"],
        "multipath": item.get("multipath", False),
        "secret_usage": item.get("secret_usage"),
        "secret_type": item.get("secret_type"),
        "serial": item["volume_id"],
        "target_dev": target_dev or item.get("target_dev"),
        "device_path": device_path,
        "wwid": wwid or item.get("wwn"),
        "ifaces": item.get("ifaces"),
    }
    if item.get("luks_secret_usage"):
        # The passphrase's secret, never the passphrase.
        conn["openvolume"]["luks_secret_usage"] = item["luks_secret_usage"]
    return conn


def reserve_entries(
    plan: t.Sequence[t.Mapping[str, t.Any]], catalogue: t.Mapping[str, t.Any]
) -> list[dict[str, t.Any]]:
    """volume_reservation entries that reserve (or take over) the plan's attachments, connection_info included.

    Each attachment goes to the transitional state its item names
    (``reserve_state``: ``attaching``, or ``detaching`` for a detach that a
    crashed run left, which this run then rolls back to in-use). A ``present``
    entry first creates the record with the catalogue's multiattach.
    """
    entries: list[dict[str, t.Any]] = []
    for item in plan:
        entries.append({"volume_id": item["volume_id"], "state": "present", "multiattach": item["multiattach"]})
        entry: dict[str, t.Any] = {"volume_id": item["volume_id"], "state": item.get("reserve_state", "attaching"),
                                   "instance": item["instance"], "host": item["host"]}
        if entry["state"] == "attaching":
            entry["mode"] = "ro" if item.get("readonly") else "rw"
            entry["connection_info"] = stored_connection_info(item, catalogue)
        entries.append(entry)
    return entries


def in_use_entries(
    plan: t.Sequence[t.Mapping[str, t.Any]],
    catalogue: t.Mapping[str, t.Any],
    disks: t.Sequence[t.Mapping[str, t.Any]],
    sessions: t.Any = None,
) -> list[dict[str, t.Any]]:
    """volume_reservation entries that mark the plan's attachments in-use.

    ``disks`` are libvirt_disk's per-disk results, in plan order; ``sessions``
    the registered iscsi_session call (each volume's ``device_path``, the one
    device libvirt got, and its WWID).
    Items that are not being attached (a ``repair`` of a disk in use) stay
    as they are.
    """
    by_volume = _session_results(sessions)
    entries = []
    for item, disk in zip(plan, disks, strict=True):
        if item.get("action", "attach") != "attach":
            continue
        res = by_volume.get(item["volume_id"]) or {}
        conn = stored_connection_info(
            item, catalogue, target_dev=disk.get("target_dev"),
            device_path=res.get("device_path"),
            wwid=res.get("wwid") or res.get("wwn"),
        )
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
    ``sessions`` is the registered result of the one iscsi_session call (``volumes``).
    """
    devices = session_devices(sessions)
    specs = []
    for item in plan:
        spec: dict[str, t.Any] = {"domain": item["instance"], "serial": item["volume_id"], "state": state}
        if state == "present":
            if item["mode"] in ("qemu", "rbd"):
                spec["source"] = item["qemu_source"]
            else:
                path = devices.get(item["volume_id"])
                if not path:
                    raise AnsibleFilterError(f"disk_specs: no device for volume {item['volume_id']} from iscsi_session")
                spec["source"] = {"type": "block", "path": path}
            spec["bus"] = item["bus"]
            if item.get("target_dev"):
                spec["target_dev"] = item["target_dev"]
            if item.get("luks_secret_usage"):
                spec["source"] = dict(spec["source"], encryption={"format": "luks",
                                                                  "secret_usage": item["luks_secret_usage"]})
            spec["readonly"] = bool(item.get("readonly"))
            spec["shareable"] = bool(item.get("multiattach"))
        specs.append(spec)
    return specs


def _session_results(sessions: t.Any) -> dict[str, t.Mapping[str, t.Any]]:
    """Volume id -> its result, from the registered iscsi_session call (its ``volumes``)."""
    if not isinstance(sessions, t.Mapping) or sessions.get("skipped"):
        return {}
    return {res["volume_id"]: res for res in sessions.get("volumes") or []
            if isinstance(res, t.Mapping) and res.get("volume_id")}


def session_devices(sessions: t.Any) -> dict[str, str]:
    """Volume id -> the block device iscsi_session says libvirt should get (``device_path``).

    That is the multipath map, or else the by-path link; in check mode, where
    no device exists yet, the by-path name the LUN will have.
    """
    return {vid: res["device_path"] for vid, res in _session_results(sessions).items() if res.get("device_path")}


def session_volumes(items: t.Sequence[t.Mapping[str, t.Any]], resize: bool = False) -> list[dict[str, t.Any]]:
    """iscsi_session ``volumes`` entries, one call for all the volumes of a host.

    From attach plan items (their public connection_info, portals, multipath,
    ifaces and catalogue WWN), or from items that name ``target``, ``lun``,
    ``portals`` (or one ``portal``), ``ifaces`` (or one ``iface``) and
    ``wwid`` (the detach role's release decisions, reconcile's orphan LUNs).
    A volume attached to two domains of the host is one entry.
    """
    entries: list[dict[str, t.Any]] = []
    for item in items:
        if item.get("connection_info"):
            data = item["connection_info"]["data"]
            entry: dict[str, t.Any] = {
                "volume_id": item["volume_id"], "target": data["target_iqn"], "portals": item["portals"],
                "lun": data["target_lun"], "multipath": item["multipath"], "ifaces": item.get("ifaces") or None,
                "wwid": item.get("wwn") or None}
            addressing = data.get("addressing_mode")
        else:
            entry = {
                "volume_id": item.get("volume_id"), "target": item["target"],
                "portals": item.get("portals") or ([item["portal"]] if item.get("portal") else []),
                "lun": item.get("lun") or 0,
                "ifaces": item.get("ifaces") or ([item["iface"]] if item.get("iface") else None),
                "wwid": item.get("wwid") or None}
            addressing = item.get("addressing_mode")
        if addressing:
            # Only when known: iscsi_session's choices refuse a null in an entry.
            entry["addressing_mode"] = addressing
        if resize:
            entry["resize"] = True
        if entry not in entries:
            entries.append(entry)
    return entries


def secret_entries(plan: t.Sequence[t.Mapping[str, t.Any]], catalogue: t.Mapping[str, t.Any]) -> list[dict[str, t.Any]]:
    """``secrets`` entries (libvirt_disk, libvirt_secret): the CHAP password (qemu mode) or cephx key (RBD)
    of each volume, and the LUKS passphrase (usage type volume) of each encrypted one."""
    entries = []
    for item in plan:
        secrets = volume_secrets(catalogue_volume(catalogue, item["volume_id"]))
        if item.get("secret_usage"):
            entries.append({"usage_type": item.get("secret_type", "iscsi"), "usage": item["secret_usage"],
                            "value": secrets["libvirt"]})
        if item.get("luks_secret_usage"):
            entries.append({"usage_type": "volume", "usage": item["luks_secret_usage"], "value": secrets["passphrase"]})
    return entries


def absent_secret_entries(plan: t.Sequence[t.Mapping[str, t.Any]]) -> list[dict[str, t.Any]]:
    """``secrets`` entries (libvirt_disk, libvirt_secret) removing secrets (qemu mode, RBD, LUKS passphrases).

    For plan items: their secrets. For host_release results (items with
    ``remove_secret``): only the secrets the decision removes.
    """
    entries = []
    for i in plan:
        decided = "remove_secret" in i
        usage = i.get("remove_secret") if decided else i.get("secret_usage")
        luks = i.get("remove_luks_secret") if decided else i.get("luks_secret_usage")
        if usage:
            entries.append({"usage_type": i.get("secret_type") or "iscsi", "usage": usage, "state": "absent"})
        if luks:
            entries.append({"usage_type": "volume", "usage": luks, "state": "absent"})
    return entries


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


def _host_mode_keys(vid: str, wwn: t.Any, portal_group: t.Any) -> tuple[str | None, int | None]:
    """The catalogue's ``wwn`` and ``portal_group`` checked before anything is reserved (host mode)."""
    if wwn is not None:
        # YAML reads a WWN of digits alone as a number: its digits are the WWN.
        try:
            normalize_wwid(str(wwn), param=f"volume_attach: volume {vid}: wwn")
        except DeviceError as exc:
            raise AnsibleFilterError(exc.msg) from None
        wwn = str(wwn)
    tag = None if portal_group is None else _whole_number(portal_group, 65535)
    if portal_group is not None and tag is None:
        raise AnsibleFilterError(f"volume_attach: volume {vid}: portal_group must be the target portal group tag, "
                                 f"a number from 0 to 65535, got {portal_group!r}")
    return wwn, tag


def _qemu_lun(data: t.Mapping[str, t.Any], vid: str) -> int:
    """The LUN number QEMU's iSCSI client (libiscsi) is given for the target's LUN.

    libiscsi puts the number's two low bytes into the LUN field as they are,
    so LUN 300 of a target with flat space addressing (tgt, most arrays) is
    16684, as the kernel numbers it (tried on the lab: 300 is "LOGICAL UNIT
    NOT SUPPORTED"); LUNs from 16384 (extended flat space) do not fit.
    """
    lun = int(data["target_lun"])
    number = kernel_lun_for(lun, data.get("addressing_mode"))
    if number > 0xFFFF:
        raise AnsibleFilterError(
            f"volume_attach: volume {vid}: target_lun {lun} cannot be addressed by QEMU's iSCSI client (it sends "
            "two bytes of LUN, and this LUN needs extended addressing); set attach_mode: host (the kernel's "
            "initiator) for it")
    return number


def _identity(volume: t.Any) -> tuple[str, ...] | None:
    """What storage a catalogue entry names, read loosely (None when it cannot tell): iSCSI target and LUN, or
    the RBD cluster and image."""
    if not isinstance(volume, t.Mapping):
        return None
    try:
        volume = catalogue_entry(volume)
    except AnsibleFilterError:
        return None
    if _kind(volume) == "rbd":
        return ("rbd", str(volume.get("cluster_name") or "ceph"), str(volume.get("name") or "")) \
            if volume.get("name") else None
    lun = _whole_number(volume.get("target_lun"), MAX_LUN)
    if not volume.get("target_iqn") or lun is None:
        return None
    return ("iscsi", str(volume["target_iqn"]).strip().lower(), str(lun))


def _one_id_per_volume(catalogue: t.Mapping[t.Any, t.Any] | None, vid: str, entry: t.Mapping[str, t.Any]) -> None:
    """Refuse a catalogue where another id names the same LUN or image (``entry`` is ``vid``'s, already checked):
    the store holds each id's writers apart, so a single-writer volume under two ids could get two writers."""
    mine = _identity(entry)
    for key, other in (catalogue or {}).items():
        if mine is not None and str(key) != vid and _identity(other) == mine:
            what = f"RBD image {mine[2]}" if mine[0] == "rbd" else f"LUN {mine[2]} of {entry['target_iqn']}"
            raise AnsibleFilterError(
                f"volume_attach: volumes {vid} and {key} of the catalogue are both {what}; a volume has one id "
                "(reservations are kept per id): remove one of them")


def attach_plan(
    requests: t.Any,
    catalogue: t.Mapping[str, t.Any],
    records: t.Sequence[t.Mapping[str, t.Any]],
    host: str,
    one_volume: str | None = None,
    one_instance: str | None = None,
    default_mode: str = "host",
    default_bus: str = "virtio",
    truth: t.Mapping[str, t.Any] | None = None,
) -> list[dict[str, t.Any]]:
    """The work of the volume_attach role, one item per requested attachment.

    Each item has the volume's public ``connection_info`` (from the
    catalogue), the attach ``mode`` (``host``: kernel session and block disk;
    ``qemu``: QEMU's own iSCSI client and a libvirt secret), the disk to
    hot-plug, the state the store records (``record_state``) and the
    ``action``:

    * ``attach``: reserve (or take over what a crashed run left:
      ``reserve_state`` is the transitional state to hold), connect,
      hot-plug, mark in-use;
    * ``repair``: in use, but the host's ``truth`` (volume_host_info) shows
      the disk missing from the live domain or the persistent config:
      connect and hot-plug again, the record stays in-use;
    * ``none``: in use and, as far as the truth tells, complete.
    """
    by_id = {r.get("volume_id"): r for r in records or []}
    state = _host_usage.HostTruth(truth)
    plan = []
    seen = set()
    for req in _requests(requests, one_volume, one_instance, "volume_attach"):
        vid, inst = str(req["volume"]), str(req["instance"])
        if not SERIAL.fullmatch(vid):
            # Checked here, before anything is reserved, not at the hot-plug.
            raise AnsibleFilterError(f"volume_attach: volume id {vid!r} is also the disk's serial in the guest: use "
                                     "at most 64 letters, digits, '.', '_', ':' and '-'")
        if (vid, inst) in seen:
            raise AnsibleFilterError(f"volume_attach: {vid} is requested twice for {inst}")
        seen.add((vid, inst))
        entry = catalogue_volume(catalogue, vid)
        conn = connection_info(entry, vid)
        _one_id_per_volume(catalogue, vid, entry)
        if conn["driver_volume_type"] == "rbd":
            # QEMU opens the image itself through librbd: no host session.
            mode = "rbd"
            if req.get("mode") not in (None, "rbd"):
                raise AnsibleFilterError(f"volume_attach: volume {vid} is an RBD volume: QEMU opens it itself, "
                                         f"mode {req.get('mode')!r} does not apply")
        else:
            mode = str(req.get("mode") or entry.get("attach_mode") or default_mode)
            if mode not in ("host", "qemu"):
                raise AnsibleFilterError(f"volume_attach: volume {vid}: attach_mode must be host or qemu, got {mode}")
        att = _attachment(by_id.get(vid), inst)
        if att is not None and att.get("host") not in (None, host):
            raise AnsibleFilterError(
                f"volume_attach: volume {vid} is {att.get('status')} by {inst} on {att.get('host')}, not {host}"
            )
        record_state = str(att.get("status")) if att else "available"
        if record_state == "in-use":
            missing = state.missing_views(inst, vid) if state.known else []
            # A secret removed behind our back leaves the live disk working
            # but the domain unable to start again: it is drift too.
            extra = ((att or {}).get("connection_info") or {}).get("openvolume", {})
            usages = [u for u in (extra.get("secret_usage"), extra.get("luks_secret_usage")) if u]
            lost_secret = state.known and any(u not in state.secrets for u in usages)
            action = "repair" if missing is None or missing or lost_secret else "none"
        else:
            action = "attach"
        data = conn["data"]
        secret_usage = f"openvolume/{vid}" if data.get("auth_username") else None
        # The request's multipath over the catalogue's.
        multipath = (_flag(req, "multipath", f"volume_attach: attachment {vid} on {inst}")
                     if not _unset(req.get("multipath"))
                     else _flag(entry, "multipath", f"volume_attach: volume {vid}")) and mode == "host"
        bus = req.get("bus") or entry.get("bus") or default_bus
        if bus not in BUSES:
            raise AnsibleFilterError(f"volume_attach: volume {vid}: bus must be one of {', '.join(BUSES)}, got {bus!r}")
        ifaces = req.get("ifaces") or entry.get("ifaces")
        if ifaces is not None and (not isinstance(ifaces, list) or not all(isinstance(i, str) and i for i in ifaces)):
            raise AnsibleFilterError(f"volume_attach: volume {vid}: ifaces must be a list of iface names")
        if ifaces and len(ifaces) > 1 and not multipath:
            # Two sessions to one portal give two disks of one LUN; only the
            # multipath map over them is the one device to hand the guest.
            raise AnsibleFilterError(
                f"volume_attach: volume {vid}: ifaces: {len(ifaces)} ifaces make {len(ifaces)} paths to the LUN; "
                "set multipath: true for it"
            )
        wwn = entry.get("wwn")
        portal_group = entry.get("portal_group", 1) if ifaces and len(ifaces) > 1 else entry.get("portal_group")
        if mode == "host":
            wwn, portal_group = _host_mode_keys(vid, wwn, portal_group)
        qemu_source: dict[str, t.Any] | None = None
        if mode == "rbd":
            qemu_source = {
                "type": "network",
                "protocol": "rbd",
                "name": data["name"],
                # A monitor without a port gets none: librbd knows v2 (3300) and v1.
                "hosts": [dict({"name": h}, **({"port": int(p)} if p else {}))
                          for h, p in zip(data["hosts"], data["ports"] or [None] * len(data["hosts"]), strict=True)],
            }
            if secret_usage:
                qemu_source["auth"] = {"username": data["auth_username"], "secret_usage": secret_usage}
        elif mode == "qemu":
            portal = Portal.parse(data["target_portal"])
            qemu_source = {
                "type": "network",
                "protocol": "iscsi",
                "name": f"{data['target_iqn']}/{_qemu_lun(data, vid)}",
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
            "portals": [] if mode == "rbd" else data["target_portals"] if multipath else [data["target_portal"]],
            "qemu_source": qemu_source,
            "multiattach": data["multiattach"],
            "readonly": data["access_mode"] == "ro",
            "target_dev": req.get("target_dev"),
            "bus": bus,
            # Without secrets: the plan is a fact; the secrets are read from
            # the catalogue inside the module arguments that need them.
            "connection_info": public_connection_info(conn),
            "secret_usage": secret_usage if mode in ("qemu", "rbd") else None,
            "secret_type": "ceph" if mode == "rbd" else "iscsi",
            "luks_secret_usage": luks_secret_usage(vid) if data.get("encrypted") else None,
            # Host mode: the volume's WWN to insist on (catalogue ``wwn``),
            # the open-iscsi ifaces to log in through and, with several, the
            # portal group tag their node records need.
            "wwn": wwn,
            "ifaces": ifaces or None,
            "portal_group": portal_group,
            "record_state": record_state,
            "lapsed": bool(att and att.get("lapsed")),
            "reserve_state": "detaching" if record_state in ("detaching", "error_detaching") else "attaching",
            "disk_present": bool(state.disk(inst, vid)),
            "action": action,
            "attached": record_state == "in-use",
        })
    return plan


def attachments_of(records: t.Sequence[t.Mapping[str, t.Any]], volume: str, host: str) -> list[dict[str, str]]:
    """The in-use attachments of ``volume`` recorded on ``host``, as role requests ({volume, instance})."""
    return [{"volume": volume, "instance": str(a.get("instance"))}
            for r in records or [] if r.get("volume_id") == volume
            for a in r.get("attachments") or [] if a.get("host") == host and a.get("status") == "in-use"]


def detach_plan(
    requests: t.Any,
    records: t.Sequence[t.Mapping[str, t.Any]],
    host: str,
    one_volume: str | None = None,
    one_instance: str | None = None,
    truth: t.Mapping[str, t.Any] | None = None,
) -> list[dict[str, t.Any]]:
    """The work of the volume_detach role, one item per requested attachment.

    Everything needed to disconnect comes from the attachment's stored
    ``connection_info`` (the lesson of seed 004), not from the catalogue. An
    attachment that is not there, or not on this host, is ``attached: false``
    and left alone. ``begin_state`` is the transitional state the detach
    holds: ``detaching`` (from in-use, or a detach a crashed run left) or
    ``attaching`` (an attach a crashed run left: it is released, then
    unreserved). ``domain_missing`` (from the host's ``truth``): the domain
    was destroyed and undefined behind our back; its disk went with it.
    """
    by_id = {r.get("volume_id"): r for r in records or []}
    state = _host_usage.HostTruth(truth)
    plan = []
    for req in _requests(requests, one_volume, one_instance, "volume_detach"):
        vid, inst = str(req["volume"]), str(req["instance"])
        att = _attachment(by_id.get(vid), inst)
        item: dict[str, t.Any] = {"volume_id": vid, "instance": inst, "host": host, "attached": False}
        if att is None or att.get("host") not in (None, host):
            plan.append(item)
            continue
        status = str(att.get("status"))
        conn = att.get("connection_info") or {}
        extra = conn.get("openvolume") or {}
        data = conn.get("data") or {}
        # An attaching without it is one of an earlier version that crashed
        # before anything was stored: there is nothing to disconnect.
        if not data and status in ("in-use", "detaching", "error_detaching"):
            raise AnsibleFilterError(
                f"volume_detach: volume {vid} has no connection_info for {inst}; nothing says how to disconnect it"
            )
        item.update(
            attached=True,
            status=status,
            lapsed=bool(att.get("lapsed")),
            begin_state="attaching" if status in ("attaching", "error_attaching") else "detaching",
            mode=extra.get("attach_mode", "host"),
            multipath=bool(extra.get("multipath", False)),
            secret_usage=extra.get("secret_usage"),
            secret_type=extra.get("secret_type") or ("ceph" if extra.get("attach_mode") == "rbd" else "iscsi"),
            luks_secret_usage=extra.get("luks_secret_usage"),
            ifaces=extra.get("ifaces"),
            target=data.get("target_iqn"),
            lun=data.get("target_lun"),
            portals=data.get("target_portals") or ([data["target_portal"]] if data.get("target_portal") else []),
            wwid=extra.get("wwid"),
            connection_info=conn,
            domain_missing=state.domain_exists(inst) is False,
        )
        plan.append(item)
    return plan


def begin_entries(plan: t.Sequence[t.Mapping[str, t.Any]]) -> list[dict[str, t.Any]]:
    """volume_reservation entries with which the detach role holds its attachments (``begin_state``)."""
    return [{"volume_id": i["volume_id"], "state": i["begin_state"], "instance": i["instance"], "host": i["host"]}
            for i in plan]


def detach_rollback_entries(plan: t.Sequence[t.Mapping[str, t.Any]], disks_gone: bool) -> list[dict[str, t.Any]]:
    """volume_reservation entries that end a failed detach.

    Before the disks left the domains: back to in-use (Cinder's
    roll_detaching). After: error_detaching, the host side half
    disconnected, for a re-run, reconcile or an operator. An attach a
    crashed run left (held as attaching) ends error_attaching either way.
    """
    entries = []
    for item in plan:
        if item.get("begin_state") == "attaching":
            state = "error_attaching"
        else:
            state = "error_detaching" if disks_gone else "in-use"
        entries.append({"volume_id": item["volume_id"], "state": state, "instance": item["instance"]})
    return entries


def host_release(
    items: t.Sequence[t.Mapping[str, t.Any]],
    records: t.Sequence[t.Mapping[str, t.Any]],
    host: str,
    truth: t.Mapping[str, t.Any] | None = None,
) -> list[dict[str, t.Any]]:
    """What may be disconnected and removed on ``host`` for these detach-plan items.

    The decision is ``_host_usage.release``: only what no other attachment
    recorded on the host and no other disk of any domain there uses. Each
    result is the item with ``remove_secret``, ``disconnect``,
    ``remove_node_records`` and ``kept`` (why something stays) added.
    """
    decisions = _host_usage.release(items, records, host, truth)
    return [dict(item, **decision) for item, decision in zip(items, decisions, strict=True)]


def attach_undo(
    plan: t.Sequence[t.Mapping[str, t.Any]],
    records: t.Sequence[t.Mapping[str, t.Any]],
    host: str,
    results: t.Mapping[str, t.Any],
    truth: t.Mapping[str, t.Any] | None = None,
) -> dict[str, t.Any]:
    """What the attach role's rollback undoes on the host: only what this run changed, and nobody else uses.

    ``results`` are the registered results of the steps (``reserved``,
    ``nodes``, ``sessions``, ``secrets``, ``disks``). A disk this run
    hot-plugged is detached (a ``repair`` item's disk stays: it was in use
    before); a session this run logged in, a node record or a libvirt secret
    this run created goes only when no other attachment on the host uses it
    (``_host_usage.release``, with the store's records read now).
    """
    todo = [i for i in plan if i.get("action") == "attach"]
    disks = [
        {"domain": d["domain"], "serial": d["serial"], "state": "absent"}
        for d, item in zip(_results(results.get("disks"), "disks"), _non_none(plan), strict=False)
        if d.get("changed") and d.get("serial") and item.get("action") == "attach"
    ]
    created_secrets = {s.get("usage") for s in _results(results.get("secrets"), "secrets")
                       if s.get("changed") and s.get("created")}
    # iscsi_session's one call: the volumes it logged in for, and those that
    # share a session it made (another LUN of the same target).
    connected = list(_session_results(results.get("sessions")).values())
    fresh_targets = {res.get("target") for res in connected if res.get("logged_in")}
    logged_in = {res["volume_id"] for res in connected if res.get("target") in fresh_targets}
    # iscsi_node's one call: per entry, per iface, whether it created the record.
    created_nodes = []
    for res in _results(results.get("nodes"), "records"):
        for rec in res.get("records") or []:
            node = {"target": res.get("target"), "portal": rec.get("portal"), "iface": rec.get("iface") or "default"}
            if rec.get("created") and node not in created_nodes:
                created_nodes.append(node)
    wwids = {vid: res.get("wwid") for vid, res in _session_results(results.get("sessions")).items()}
    items = [
        {"volume_id": i["volume_id"], "instance": i["instance"], "mode": i["mode"],
         "secret_usage": i.get("secret_usage"), "luks_secret_usage": i.get("luks_secret_usage"),
         "target": i["connection_info"]["data"].get("target_iqn"),
         "lun": i["connection_info"]["data"].get("target_lun")}
        for i in todo
    ]
    decisions = {(d["volume_id"], d["instance"]): d for d in _host_usage.release(items, records, host, truth)}
    secrets, sessions, nodes, kept = [], [], [], []
    for item in todo:
        decision = decisions[(item["volume_id"], item["instance"])]
        kept.extend(decision["kept"])
        if decision["remove_secret"] and decision["remove_secret"] in created_secrets:
            secrets.append({"usage_type": item.get("secret_type") or "iscsi", "usage": decision["remove_secret"],
                            "state": "absent"})
        if decision["remove_luks_secret"] and decision["remove_luks_secret"] in created_secrets:
            secrets.append({"usage_type": "volume", "usage": decision["remove_luks_secret"], "state": "absent"})
        if decision["disconnect"] and item["volume_id"] in logged_in:
            data = item["connection_info"]["data"]
            entry = {"volume_id": item["volume_id"], "target": data["target_iqn"], "portals": item["portals"],
                     "lun": data["target_lun"], "ifaces": item.get("ifaces"), "wwid": wwids.get(item["volume_id"])}
            if entry not in sessions:
                sessions.append(entry)
        if decision["remove_node_records"]:
            nodes += [n for n in created_nodes
                      if n["target"] == item["connection_info"]["data"].get("target_iqn") and n not in nodes]
    return {"disks": disks, "secrets": secrets, "sessions": sessions, "nodes": nodes, "kept": kept}


def attach_unreserve_entries(
    plan: t.Sequence[t.Mapping[str, t.Any]],
    reserved: t.Any,
    disks_result: t.Any,
    undo_failed: bool,
) -> list[dict[str, t.Any]]:
    """volume_reservation entries that end what the attach role reserved or took over, after a failure.

    ``available`` only when the domain is left without the disk: it was not
    there before this run, and this run's hot-plug (if any) was undone.
    Otherwise, or when a host-side undo failed, the error state of the
    transition the run held (``error_attaching``/``error_detaching``), for
    reconcile or an operator: never a free volume whose disk is attached.
    """
    # Only what this run holds: a reservation task that failed changed
    # nothing (its batch is all-or-nothing), and ending an attachment this
    # run does not hold would take over someone else's.
    held = {r.get("volume_id") for r in _results(reserved, "volumes") if r.get("changed")}
    attached_now = {d.get("serial") for d, i in zip(_results(disks_result, "disks"), _non_none(plan), strict=False)
                    if d.get("changed") and i.get("action") == "attach"}
    entries = []
    for item in plan:
        if item.get("action") != "attach" or item["volume_id"] not in held:
            continue
        attaching = item.get("reserve_state", "attaching") == "attaching"
        disk_left = item.get("disk_present") or (undo_failed and item["volume_id"] in attached_now)
        if undo_failed or disk_left:
            state = "error_attaching" if attaching else "error_detaching"
        else:
            state = "available"
        entries.append({"volume_id": item["volume_id"], "state": state, "instance": item["instance"]})
    return entries


def _results(result: t.Any, key: str) -> list[t.Mapping[str, t.Any]]:
    if not isinstance(result, t.Mapping) or result.get("skipped"):
        return []
    return [r for r in result.get(key) or [] if isinstance(r, t.Mapping)]


def _non_none(plan: t.Sequence[t.Mapping[str, t.Any]]) -> list[t.Mapping[str, t.Any]]:
    return [i for i in plan if i.get("action") != "none"]


def reconcile_plan(
    records: t.Sequence[t.Mapping[str, t.Any]],
    host: str,
    truth: t.Mapping[str, t.Any] | None,
    catalogue: t.Mapping[str, t.Any] | None = None,
    volumes: t.Sequence[str] | None = None,
) -> dict[str, t.Any]:
    """The differences between the store and one host, and the work that repairs them (``_host_usage.reconcile``).

    ``truth`` None means the host could not be read (unreachable): its
    attachments are listed and left as they are. ``volumes`` (empty: all)
    limits reconcile to those volume ids.
    """
    catalogue = catalogue or {}
    scope = set(volumes) if volumes else None
    if truth is None:
        rows = [{"volume": u.volume_id, "host": host, "instance": u.instance, "store": u.status,
                 "host_has": "unreachable", "action": "none: the host could not be read, left as it is"}
                for u in _host_usage.recorded(records, host) if scope is None or u.volume_id in scope]
        return {"rows": rows, "attach": [], "detach": [], "secrets": [], "luns": [], "nodes": []}
    entries = {str(k): catalogue_entry(v) for k, v in catalogue.items()}
    targets = [str(v["target_iqn"]) for k, v in entries.items()
               if isinstance(v, t.Mapping) and v.get("target_iqn") and (scope is None or k in scope)]
    return _host_usage.reconcile(records, host, truth, our_targets=targets, known_volumes=[str(k) for k in catalogue],
                                 volumes=scope)


def reconcile_elsewhere(
    records: t.Sequence[t.Mapping[str, t.Any]], hosts: t.Iterable[str], volumes: t.Sequence[str] | None = None
) -> list[dict[str, t.Any]]:
    """Rows for the attachments recorded on hosts that are not in this run (left as they are)."""
    here = set(hosts)
    return [
        {"volume": r.get("volume_id"), "host": a.get("host"), "instance": a.get("instance"), "store": a.get("status"),
         "host_has": "-", "action": "none: the host is not in this run"}
        for r in records or [] for a in r.get("attachments") or []
        if a.get("host") not in here and (not volumes or r.get("volume_id") in volumes)
    ]


def reconcile_table(rows: t.Sequence[t.Mapping[str, t.Any]]) -> list[str]:
    """Reconcile's differences as the lines of a text table."""
    if not rows:
        return ["no differences between the reservation store and the hosts"]
    header = ["volume", "host", "instance", "store says", "host has", "action"]
    keys = ["volume", "host", "instance", "store", "host_has", "action"]
    return _table(header, [[r.get(k, "-") for k in keys] for r in rows])


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
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*map(str, r)) for r in rows]
    return [line.rstrip() for line in lines]


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
            "node_records": node_records,
            "attach_plan": attach_plan,
            "in_use_entries": in_use_entries,
            "reservation_entries": reservation_entries,
            "disk_specs": disk_specs,
            "session_devices": session_devices,
            "session_volumes": session_volumes,
            "secret_entries": secret_entries,
            "volume_table": volume_table,
            "disk_table": disk_table,
            "absent_secret_entries": absent_secret_entries,
            "detach_plan": detach_plan,
            "failure_message": failure_message,
            "reserve_entries": reserve_entries,
            "host_release": host_release,
            "begin_entries": begin_entries,
            "detach_rollback_entries": detach_rollback_entries,
            "attach_undo": attach_undo,
            "attach_unreserve_entries": attach_unreserve_entries,
            "reconcile_plan": reconcile_plan,
            "reconcile_table": reconcile_table,
            "reconcile_elsewhere": reconcile_elsewhere,
            "attachments_of": attachments_of,
        }
