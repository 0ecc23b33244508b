# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""libvirt secrets: the logic of the libvirt_secret module.

A network disk with CHAP (iSCSI) or cephx (RBD) names a libvirt secret; the
secret holds the password. The value is compared inside this process and is
never returned, logged or shown in a diff.

A ceph secret holds the cephx key's bytes, not its text: libvirt hands QEMU
the stored bytes base64-encoded, which is the form ``ceph auth get-key``
prints (``virsh secret-set-value --base64 KEY`` stores it the same way). The
module takes the key as printed and stores its bytes; storing the text would
make librbd fail with "error connecting: Invalid argument".
"""

from __future__ import annotations

import base64
import binascii
import functools
import struct
import typing as t
from dataclasses import dataclass

from ansible_collections.openvolume.compute.plugins.module_utils import _libvirt as lv
from ansible_collections.openvolume.compute.plugins.module_utils._common import (
    MASK,
    UndoSteps,
    apply_batch,
    dispatch_state,
    skip_if_check_mode,
)
from ansible_collections.openvolume.compute.plugins.module_utils._libvirt import LibvirtError

# usage_type -> (libvirt constant name, the XML element under <usage>)
USAGE = {
    "iscsi": ("VIR_SECRET_USAGE_TYPE_ISCSI", "target"),
    "ceph": ("VIR_SECRET_USAGE_TYPE_CEPH", "name"),
    "volume": ("VIR_SECRET_USAGE_TYPE_VOLUME", "volume"),
}


@dataclass
class SecretSpec:
    usage_type: str
    usage: str
    uuid: str | None
    value: str | None
    state: str
    where: str = ""

    @classmethod
    def from_params(cls, p: t.Mapping[str, t.Any], where: str = "") -> SecretSpec:
        spec = cls(usage_type=p.get("usage_type") or "iscsi", usage=p.get("usage") or "", uuid=p.get("uuid"),
                   value=p.get("value"), state=p.get("state") or "present", where=where)
        if not spec.usage:
            raise LibvirtError(f"{where}usage: required (the iSCSI target, ceph name or volume the secret is for)")
        if spec.state == "present" and spec.value is None:
            raise LibvirtError(f"{where}value: required with state=present")
        if spec.state == "present":
            spec.stored_value()
        return spec

    def stored_value(self) -> bytes:
        """The bytes libvirt keeps for ``value`` (validated; the value never enters a message)."""
        value = self.value or ""
        if self.usage_type != "ceph":
            return value.encode()
        try:
            raw = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        # A cephx key (CryptoKey): type u16, created u32+u32, length u16, then
        # the secret of that length.
        if len(raw) < 12 or struct.unpack("<H", raw[10:12])[0] != len(raw) - 12:
            raise LibvirtError(
                f"{self.where}value: a ceph secret's value is the user's cephx key as 'ceph auth get-key "
                "client.NAME' prints it (base64, like AQD...==); the value given is not one"
            )
        return raw

    def xml(self) -> str:
        sub = lv.etree.SubElement
        secret = lv.etree.Element("secret", ephemeral="no", private="no")
        if self.uuid:
            sub(secret, "uuid").text = self.uuid
        sub(secret, "description").text = f"openvolume.compute {self.usage_type} secret for {self.usage}"
        usage = sub(secret, "usage", type=self.usage_type)
        sub(usage, USAGE[self.usage_type][1]).text = self.usage
        return lv.to_text(secret)


class LibvirtSecrets:
    """Defines, updates and removes secrets; compares values without revealing them.

    ``_store`` and ``_undefine`` are the only methods that change libvirt,
    and the only place check mode is guarded.
    """

    def __init__(self, module: lv.LibvirtModule) -> None:
        self.module = module

    def lookup(self, spec: SecretSpec) -> t.Any | None:
        conn = self.module.conn
        try:
            if spec.uuid:
                return conn.secretLookupByUUIDString(spec.uuid)
            return conn.secretLookupByUsage(getattr(lv.libvirt, USAGE[spec.usage_type][0]), spec.usage)
        except lv.libvirt.libvirtError as exc:
            if lv.error_code(exc) == lv.libvirt.VIR_ERR_NO_SECRET:
                return None
            raise LibvirtError(f"{spec.where}looking up the secret for {spec.usage} failed: {lv.describe(exc)}") \
                from None

    @staticmethod
    def _value_matches(secret: t.Any, value: bytes) -> bool:
        try:
            return bool(secret.value() == value)
        except lv.libvirt.libvirtError:
            # No value yet, or a private secret whose value cannot be read:
            # set it again, which is what makes it right.
            return False

    def state_present(self, spec: SecretSpec) -> dict[str, t.Any]:
        secret = self.lookup(spec)
        if secret is None and spec.uuid:
            other = self.lookup(SecretSpec(spec.usage_type, spec.usage, None, None, "present", spec.where))
            if other is not None:
                raise LibvirtError(
                    f"{spec.where}uuid: the usage '{spec.usage}' already belongs to secret {other.UUIDString()}; "
                    "give that uuid or leave uuid out"
                )
        before: dict[str, t.Any] = {}
        if secret is not None:
            if secret.usageID() != spec.usage or secret.usageType() != getattr(lv.libvirt, USAGE[spec.usage_type][0]):
                raise LibvirtError(
                    f"{spec.where}uuid: secret {secret.UUIDString()} is for '{secret.usageID()}', not "
                    f"{spec.usage_type} '{spec.usage}'; use another uuid or leave it out"
                )
            before = {"uuid": secret.UUIDString(), "usage_type": spec.usage_type, "usage": spec.usage, "value": MASK}
        same_value = secret is not None and self._value_matches(secret, spec.stored_value())
        changed = secret is None or not same_value
        after = {"uuid": before.get("uuid") or spec.uuid or "(new)", "usage_type": spec.usage_type,
                 "usage": spec.usage, "value": MASK if same_value else f"{MASK} (changed)"}
        created = secret is None
        if changed:
            # None in check mode (skip_if_check_mode).
            done = t.cast("tuple[t.Any, bool] | None", self._store(spec, secret))
            stored, adopted = done or (None, False)
            if stored is not None:
                after["uuid"] = stored.UUIDString()
            # Another run on this host defined it since the lookup: it is
            # that run's to remove, not this one's (an undo keeps it).
            created = created and not adopted
        return {"changed": changed, "created": created,
                "uuid": after["uuid"] if after["uuid"] != "(new)" else None,
                "usage_type": spec.usage_type, "usage": spec.usage, "diff": {"before": before, "after": after}}

    @skip_if_check_mode
    def _store(self, spec: SecretSpec, secret: t.Any | None) -> tuple[t.Any, bool]:
        """Define the secret if needed and set its value.

        Returns the secret (None in check mode) and whether it was another's:
        a run attaching the same volume to another domain on this host that
        defined the usage's secret between the lookup and the define.
        """
        adopted = False
        try:
            if secret is None:
                try:
                    secret = self.module.conn.secretDefineXML(spec.xml())
                except lv.libvirt.libvirtError:
                    secret = None if spec.uuid else self.lookup(spec)
                    if secret is None:
                        raise
                    adopted = True
            secret.setValue(spec.stored_value())
        except lv.libvirt.libvirtError as exc:
            raise LibvirtError(f"{spec.where}defining the secret for {spec.usage} failed: {lv.describe(exc)}") \
                from None
        return secret, adopted

    def state_absent(self, spec: SecretSpec) -> dict[str, t.Any]:
        secret = self.lookup(spec)
        if secret is None:
            return {"changed": False, "uuid": None, "usage_type": spec.usage_type, "usage": spec.usage,
                    "diff": {"before": {}, "after": {}}}
        uuid = secret.UUIDString()
        self._undefine(spec, secret)
        return {"changed": True, "uuid": uuid, "usage_type": spec.usage_type, "usage": spec.usage,
                "diff": {"before": {"uuid": uuid, "usage": spec.usage, "value": MASK}, "after": {}}}

    @skip_if_check_mode
    def _undefine(self, spec: SecretSpec, secret: t.Any) -> None:
        try:
            secret.undefine()
        except lv.libvirt.libvirtError as exc:
            raise LibvirtError(f"{spec.where}removing the secret for {spec.usage} failed: {lv.describe(exc)}") \
                from None


def list_secrets(conn: t.Any, prefix: str = "openvolume/") -> list[dict[str, t.Any]]:
    """The host's libvirt secrets whose usage starts with ``prefix`` (ours), without values."""
    kinds = {getattr(lv.libvirt, const): name for name, (const, _tag) in USAGE.items()}
    out = []
    try:
        for secret in conn.listAllSecrets(0):
            usage = secret.usageID()
            if usage and usage.startswith(prefix):
                out.append({"uuid": secret.UUIDString(), "usage_type": kinds.get(secret.usageType(), "other"),
                            "usage": usage})
    except lv.libvirt.libvirtError as exc:
        raise LibvirtError(f"listing the libvirt secrets failed: {lv.describe(exc)}") from None
    return sorted(out, key=lambda s: s["usage"])


def _per_secret() -> dict[str, t.Any]:
    return {
        "usage_type": {"type": "str", "choices": sorted(USAGE), "default": "iscsi"},
        "usage": {"type": "str"},
        "uuid": {"type": "str"},
        "value": {"type": "str", "no_log": True},
        "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    }


def secrets_option() -> dict[str, t.Any]:
    """The ``secrets`` list option (of libvirt_secret, and of libvirt_disk for the secrets its disks name)."""
    entry = _per_secret()
    entry["usage"] = {"type": "str", "required": True}
    # The list holds secrets in its entries' value (no_log there), not itself.
    return {"type": "list", "elements": "dict", "options": entry, "no_log": False}


def argument_spec() -> dict[str, t.Any]:
    return dict(secrets=secrets_option(), **_per_secret())


def secret_specs(entries: t.Sequence[t.Mapping[str, t.Any]] | None) -> list[SecretSpec]:
    """The ``secrets`` option's entries, validated (``secrets[N].`` names a bad one)."""
    return [SecretSpec.from_params(s, where=f"secrets[{i}].") for i, s in enumerate(entries or [])]


def _undo(manager: LibvirtSecrets, spec: SecretSpec, outcome: t.Mapping[str, t.Any]) -> UndoSteps:
    # Nothing half-done: a secret this call defined goes again.
    if spec.state == "present" and outcome.get("created"):
        return [(f"removing the secret {spec.usage}", functools.partial(manager.state_absent, spec))]
    return []


def apply_secrets(manager: LibvirtSecrets, specs: t.Sequence[SecretSpec]) -> list[dict[str, t.Any]]:
    """Apply every spec in order, all or nothing: when one fails, the secrets this call defined go again."""
    return apply_batch(specs, lambda spec: dispatch_state(manager, spec.state, spec), functools.partial(_undo, manager))


def undo_created(manager: LibvirtSecrets, specs: t.Sequence[SecretSpec],
                 outcomes: t.Sequence[t.Mapping[str, t.Any]]) -> UndoSteps:
    """The steps that remove again the secrets ``apply_secrets`` defined, newest first (a later step failed)."""
    return [step for spec, outcome in reversed(list(zip(specs, outcomes, strict=True)))
            for step in _undo(manager, spec, outcome)]


def secret_result(outcome: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """One entry of a ``secrets`` result: the outcome without its diff."""
    return {k: v for k, v in outcome.items() if k != "diff"}


def run(module: lv.LibvirtModule) -> None:
    """Entry point of the libvirt_secret module."""
    params = module.params
    values = [params.get("value")] + [s.get("value") for s in params.get("secrets") or []]

    def handle() -> dict[str, t.Any]:
        batch = params.get("secrets") is not None
        if batch and (params.get("usage") or params.get("value") or params.get("uuid")):
            raise LibvirtError("secrets: give either secrets or usage/value/uuid for one secret, not both")
        specs = secret_specs(params["secrets"]) if batch else [SecretSpec.from_params(params)]
        outcomes = apply_secrets(LibvirtSecrets(module), specs)
        if batch:
            result: dict[str, t.Any] = {
                "changed": any(o["changed"] for o in outcomes),
                "secrets": [secret_result(o) for o in outcomes],
                "diff": [o["diff"] for o in outcomes if o["changed"]],
            }
        else:
            result = dict(outcomes[0])
        if not module.diff_mode:
            result.pop("diff")
        return result

    module.run(handle, secrets=[v for v in values if v])
