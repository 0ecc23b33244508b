# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shared reservation backend: etcd v3 through etcd3gw (its JSON gateway).

For teams whose plays run from several controllers. A volume is a directory
of keys under ``etcd_prefix``::

    volumes/<id>/volume               {"volume_id", "multiattach"}; rewritten by every transition
    volumes/<id>/attachment/<inst>    one attachment, in any state, with its owner and lease end

One range read gets the whole record at one revision. A transition is one
etcd transaction that compares the ``mod_revision`` of the ``volume`` key,
and writes it (which bumps its revision) with its other changes: of two
concurrent writers one wins and the other sees the comparison fail, reads
again and decides again.

Leases are lease ends stored in the attachment, judged by the reading
controller's clock, exactly as the SQLite backend does, so both backends
behave the same: a lease that ends marks the attachment lapsed, it deletes
nothing. Controllers sharing a store must keep their clocks in sync (NTP);
a skew far below ``lease_ttl`` does not matter. Records written by earlier
versions, with transitional states in ``lease/<inst>`` keys bound to etcd
leases, are still read and are rewritten in this layout by the next
transition.
"""

from __future__ import annotations

import base64
import json
import random
import re
import time
import typing as t
import urllib.parse

from ansible_collections.openvolume.compute.plugins.module_utils._reservation import (
    ATTACHING,
    Attachment,
    Backend,
    BackendError,
    ReservationError,
    Volume,
    mark_lapsed,
    same,
)

try:
    import etcd3gw
    from etcd3gw import exceptions as etcd_exc

    HAS_ETCD3GW = True
    ETCD3GW_IMPORT_ERROR: ImportError | None = None
except ImportError as _exc:
    HAS_ETCD3GW = False
    ETCD3GW_IMPORT_ERROR = _exc

# Compare-and-set retries before giving up; each retry re-reads and re-plans,
# so only writers that keep changing the same volume can exhaust them.
MAX_ATTEMPTS = 50
# etcd's default --max-txn-ops: operations one transaction may hold.
MAX_TXN_OPS = 128


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _dumps(value: t.Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class _Endpoint(t.NamedTuple):
    url: str
    protocol: str
    host: str
    port: int


def parse_endpoint(url: str) -> _Endpoint:
    """Split ``http(s)://host:port`` or raise naming ``etcd_endpoints``."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or 2379
    except ValueError as exc:
        raise BackendError(f"etcd_endpoints: {url!r} has a bad port ({exc})") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise BackendError(
            f"etcd_endpoints: {url!r} is not an etcd client URL; give http://HOST:PORT or https://HOST:PORT"
        )
    return _Endpoint(url, parts.scheme, parts.hostname, port)


class EtcdBackend(Backend):
    """Volume records in etcd v3."""

    name = "etcd"

    def __init__(
        self,
        endpoints: t.Sequence[str],
        *,
        username: str | None = None,
        password: str | None = None,
        ca_cert: str | None = None,
        prefix: str = "/openvolume/",
        timeout: float = 5.0,
    ) -> None:
        if not HAS_ETCD3GW:
            from ansible.module_utils.basic import missing_required_lib

            raise BackendError(
                missing_required_lib("etcd3gw") + ". It is needed on the controller (in AWX: in the execution "
                "environment) for backend=etcd",
                exception=str(ETCD3GW_IMPORT_ERROR),
            )
        if not endpoints:
            raise BackendError("etcd_endpoints: give at least one URL, e.g. http://127.0.0.1:2379")
        if (username is None) != (password is None):
            raise BackendError("etcd_username, etcd_password: give both or neither")
        if not prefix.startswith("/"):
            raise BackendError(f"etcd_prefix: {prefix!r} must start with /")
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.endpoints = [parse_endpoint(u) for u in endpoints]
        self.client = self._connect(username, password, ca_cert, timeout)

    # Connection -----------------------------------------------------------

    def _connect(self, username: str | None, password: str | None, ca_cert: str | None, timeout: float) -> t.Any:
        errors = []
        for ep in self.endpoints:
            client = etcd3gw.Etcd3Client(
                host=ep.host, port=ep.port, protocol=ep.protocol, ca_cert=ca_cert, timeout=timeout
            )
            try:
                # Discovers the API path (GET /version): proves the endpoint answers.
                client.get_url("/")
            except etcd_exc.Etcd3Exception as exc:
                errors.append(f"{ep.url}: {self._reason(exc)}")
                continue
            if username is not None:
                try:
                    token = client.post(
                        client.get_url("/auth/authenticate"), json={"name": username, "password": password}
                    )["token"]
                except etcd_exc.Etcd3Exception as exc:
                    raise BackendError(
                        f"etcd at {ep.url} refused the login of etcd_username {username!r}: {self._reason(exc)}; "
                        "nothing was changed. Check etcd_username and etcd_password"
                    ) from exc
                client.session.headers["Authorization"] = token
            return client
        raise BackendError(
            f"etcd is unreachable ({'; '.join(errors)}); nothing was changed. Check etcd_endpoints and that etcd "
            "runs and listens there"
        )

    @staticmethod
    def _reason(exc: Exception) -> str:
        detail = getattr(exc, "detail_text", None) or str(exc) or type(exc).__name__
        # requests nests the socket error deep in its text; the errno part is what helps.
        errno = re.search(r"\[Errno -?\d+\][^'\")]*", str(detail))
        if errno:
            return errno.group(0).strip()
        if "timed out" in str(detail).lower():
            return "timed out"
        try:
            body = json.loads(detail)
        except (TypeError, ValueError):
            return str(detail).strip()
        return str(body.get("message") or body.get("error") or detail).strip()

    def _call(self, what: str, func: t.Callable[..., t.Any], *args: t.Any, changed: str = "", **kwargs: t.Any) -> t.Any:
        try:
            return func(*args, **kwargs)
        except etcd_exc.Etcd3Exception as exc:
            reason = self._reason(exc)
            hint = " Check etcd_username/etcd_password and the role's permissions on etcd_prefix." if (
                "permission denied" in reason or "user name is empty" in reason or "invalid auth token" in reason
            ) else ""
            raise BackendError(
                f"etcd at {self.client.base_url} failed to {what}: {reason}; "
                f"{changed or 'nothing was changed'}.{hint}"
            ) from exc

    # Layout -----------------------------------------------------------------

    def _dir(self, volume_id: str) -> str:
        return f"{self.prefix}volumes/{_quote(volume_id)}/"

    def _read(self, volume_id: str) -> tuple[Volume | None, dict[str, tuple[str, int, int]]]:
        """The record and its raw keys: key -> (value, mod_revision, lease id)."""
        raw: dict[str, tuple[str, int, int]] = {}
        for value, meta in self._call(f"read volume {volume_id}", self.client.get_prefix, self._dir(volume_id)):
            key = meta["key"].decode() if isinstance(meta["key"], bytes) else meta["key"]
            raw[key] = (value.decode(), int(meta.get("mod_revision", 0)), int(meta.get("lease", 0)))
        return self._decode(volume_id, raw), raw

    def _decode(self, volume_id: str, raw: dict[str, tuple[str, int, int]]) -> Volume | None:
        base = self._dir(volume_id)
        meta = raw.get(base + "volume")
        if meta is None:
            return None
        try:
            doc = json.loads(meta[0])
            volume = Volume(volume_id, multiattach=bool(doc.get("multiattach", False)), size=doc.get("size"))
            legacy = {}
            for key, (value, _mod, _lease) in raw.items():
                rest = key[len(base):]
                if rest.startswith("attachment/"):
                    att = Attachment.from_dict(json.loads(value))
                    volume.attachments[att.instance] = att
                elif rest.startswith("lease/"):
                    entry = json.loads(value)
                    legacy[entry["instance"]] = entry
            for inst, entry in legacy.items():
                # The layout of 0.1.0 pre-releases: a transitional state in a
                # key bound to an etcd lease, the durable state underneath.
                if entry["status"] == ATTACHING:
                    volume.attachments[inst] = Attachment.from_dict(entry)
                elif inst in volume.attachments:
                    volume.attachments[inst].status = entry["status"]
                    volume.attachments[inst].expires_at = entry.get("expires_at")
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendError(
                f"etcd record of volume {volume_id} under {base} is not an openvolume record ({exc}); "
                "nothing was changed. Something else writes under etcd_prefix: give this collection its own prefix"
            ) from exc
        return mark_lapsed(volume, time.time())

    def _encode(self, volume: Volume) -> dict[str, str]:
        """Keys of a record: key -> value."""
        base = self._dir(volume.volume_id)
        doc: dict[str, t.Any] = {"volume_id": volume.volume_id, "multiattach": volume.multiattach}
        if volume.size is not None:
            doc["size"] = volume.size
        keys = {base + "volume": _dumps(doc)}
        for inst, att in volume.attachments.items():
            keys[f"{base}attachment/{_quote(inst)}"] = _dumps(att.stored())
        return keys

    def store_id(self) -> str:
        return f"etcd:{self.endpoints[0].url}{self.prefix}"

    # Backend ----------------------------------------------------------------

    def get(self, volume_id: str) -> Volume | None:
        return self._read(volume_id)[0]

    def list_volumes(self) -> list[Volume]:
        root = f"{self.prefix}volumes/"
        by_volume: dict[str, dict[str, tuple[str, int, int]]] = {}
        for value, meta in self._call("list volumes", self.client.get_prefix, root):
            key = meta["key"].decode() if isinstance(meta["key"], bytes) else meta["key"]
            vid = urllib.parse.unquote(key[len(root):].split("/", 1)[0])
            by_volume.setdefault(vid, {})[key] = (
                value.decode(), int(meta.get("mod_revision", 0)), int(meta.get("lease", 0))
            )
        volumes = [self._decode(vid, raw) for vid, raw in sorted(by_volume.items())]
        return [v for v in volumes if v is not None]

    def update(
        self, volume_id: str, change: t.Callable[[Volume | None], Volume | None]
    ) -> tuple[Volume | None, Volume | None]:
        base = self._dir(volume_id)
        for attempt in range(MAX_ATTEMPTS):
            before, raw = self._read(volume_id)
            after = change(before)
            if same(before, after):
                return before, after
            compare = [{"key": _b64(base + "volume"), "result": "EQUAL", "target": "MOD",
                        "mod_revision": raw.get(base + "volume", ("", 0, 0))[1]}]
            result = self._call(
                f"write volume {volume_id}", self.client.transaction,
                {"compare": compare, "success": self._operations(base, raw, after), "failure": []},
                changed="the transition may or may not have been applied: read the record "
                        "(openvolume.compute.volumes lookup) before retrying",
            )
            if result.get("succeeded"):
                return before, after
            # Lost the race: back off a little, read again, decide again.
            time.sleep(random.uniform(0, 0.005 * (attempt + 1)))
        raise ReservationError(
            f"volume {volume_id} kept changing under this transition ({MAX_ATTEMPTS} attempts); nothing was "
            "changed, try again"
        )

    def update_many(
        self, changes: t.Mapping[str, t.Callable[[Volume | None], Volume | None]]
    ) -> dict[str, tuple[Volume | None, Volume | None]]:
        """All changes in one etcd transaction: the records read in one, written in one, all or nothing.

        The write compares the revision of every volume key read, so a
        concurrent writer of any of them makes it fail as a whole; it is then
        read and decided again. A batch larger than one transaction may hold
        (etcd's --max-txn-ops, 128 by default) falls back to one transaction
        per volume, putting back what it changed when a later one fails.
        """
        ids = list(changes)
        for attempt in range(MAX_ATTEMPTS):
            raws = self._read_many(ids)
            out: dict[str, tuple[Volume | None, Volume | None]] = {}
            compare: list[dict[str, t.Any]] = []
            ops: list[dict[str, t.Any]] = []
            for vid in ids:
                raw = raws[vid]
                before = self._decode(vid, raw)
                after = changes[vid](before)
                out[vid] = (before, after)
                if same(before, after):
                    continue
                base = self._dir(vid)
                compare.append({"key": _b64(base + "volume"), "result": "EQUAL", "target": "MOD",
                                "mod_revision": raw.get(base + "volume", ("", 0, 0))[1]})
                ops += self._operations(base, raw, after)
            if not ops:
                return out
            if len(ops) > MAX_TXN_OPS:
                return super().update_many(changes)
            result = self._call(
                f"write volumes {', '.join(ids)}", self.client.transaction,
                {"compare": compare, "success": ops, "failure": []},
                changed="the batch may or may not have been applied: read the records "
                        "(openvolume.compute.volumes lookup) before retrying",
            )
            if result.get("succeeded"):
                return out
            time.sleep(random.uniform(0, 0.005 * (attempt + 1)))
        raise ReservationError(
            f"volumes {', '.join(ids)} kept changing under this batch ({MAX_ATTEMPTS} attempts); nothing was "
            "changed, try again"
        )

    def _read_many(self, ids: t.Sequence[str]) -> dict[str, dict[str, tuple[str, int, int]]]:
        """The raw keys of several volumes, read in one transaction (one revision)."""
        reads = [{"request_range": {"key": _b64(self._dir(vid)), "range_end": _b64(_next_prefix(self._dir(vid)))}}
                 for vid in ids]
        result = self._call(f"read volumes {', '.join(ids)}", self.client.transaction,
                            {"compare": [], "success": reads, "failure": []})
        out: dict[str, dict[str, tuple[str, int, int]]] = {}
        for vid, response in zip(ids, result.get("responses") or [], strict=True):
            raw: dict[str, tuple[str, int, int]] = {}
            for kv in (response.get("response_range") or {}).get("kvs") or []:
                key = base64.b64decode(kv["key"]).decode()
                value = base64.b64decode(kv.get("value", "")).decode()
                raw[key] = (value, int(kv.get("mod_revision", 0)), int(kv.get("lease", 0)))
            out[vid] = raw
        return out

    def _operations(
        self, base: str, raw: dict[str, tuple[str, int, int]], after: Volume | None
    ) -> list[dict[str, t.Any]]:
        if after is None:
            return [{"request_delete_range": {"key": _b64(base), "range_end": _b64(_next_prefix(base))}}]
        wanted = self._encode(after)
        ops: list[dict[str, t.Any]] = []
        for key, value in wanted.items():
            old = raw.get(key)
            # The volume key is always written: that is what serialises writers.
            if old is not None and old[0] == value and not key.endswith("/volume"):
                continue
            ops.append({"request_put": {"key": _b64(key), "value": _b64(value)}})
        ops += [{"request_delete_range": {"key": _b64(key)}} for key in raw if key not in wanted]
        return ops

    def close(self) -> None:
        self.client.session.close()


def _b64(text: str) -> str:
    # The gateway speaks JSON, so keys and values travel base64-encoded.
    return base64.b64encode(text.encode()).decode()


def _next_prefix(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)
