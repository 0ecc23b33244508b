# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Volume reservation: the collection's Cinder.

A volume record says which instances a volume is attached to and in which
state each attachment is. Every change is one legal transition of the table
``TRANSITIONS``, applied atomically by a backend (``_reservation_sqlite``,
``_reservation_etcd``) as a compare-and-set: Cinder bug 1096983 was two
reservations of one volume that both read "available".

States of one attachment (volume, instance)::

    available -> attaching -> in-use -> detaching -> available
                     |                     |
                error_attaching      error_detaching

``available`` means "no attachment for this instance".

Owners and leases. The transitional states ``attaching`` and ``detaching``
belong to the run that set them (its ``owner`` token: by default the
ansible-playbook process on this controller) and carry a lease that a
background keeper renews while that run lives. Another run for the same
attachment is refused while the owner is alive. When the lease runs out (or
the owner is provably dead), the attachment is *lapsed*: it is NOT freed,
because the run may have died after the disk was hot-plugged (a freed volume
would then get a second writer). A lapsed attachment still counts as a
holder of the volume; the run that establishes its truth on the recorded
host takes it over (same instance) and completes or releases it. That is
the lesson of seed 004 one step further: every transition leaves enough
recorded state (``connection_info`` is stored from the reservation on) for
whoever comes next, and no state is a dead end.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import functools
import os
import time
import typing as t

from ansible.module_utils.errors import AnsibleFallbackNotFound

from ansible_collections.openvolume.compute.plugins.module_utils._common import (
    OpenVolumeError,
    UndoSteps,
    apply_batch,
    is_secret_key,
    mask_secrets,
    skip_if_check_mode,
)
from ansible_collections.openvolume.compute.plugins.module_utils._reservation_lease import (
    Owner,
    keeper_lock_path,
    owner_alive,
    start_keeper,
    when,
)

AVAILABLE = "available"
ATTACHING = "attaching"
IN_USE = "in-use"
DETACHING = "detaching"
ERROR_ATTACHING = "error_attaching"
ERROR_DETACHING = "error_detaching"
PRESENT = "present"
ABSENT = "absent"

ATTACHMENT_STATES = (ATTACHING, IN_USE, DETACHING, ERROR_ATTACHING, ERROR_DETACHING)
STATES = (PRESENT, AVAILABLE, *ATTACHMENT_STATES, ABSENT)
MODES = ("rw", "ro")
DEFAULT_LEASE_TTL = 600
DEFAULT_SQLITE_PATH = "~/.local/state/openvolume/volumes.db"
DEFAULT_ETCD_PREFIX = "/openvolume/"

# The store options a task leaves out come from these environment variables of
# the controller: what an AWX credential type injects (meta/awx/credential_types),
# so that no job template, inventory or survey ever carries the etcd password.
STORE_ENV: dict[str, str] = {
    "backend": "OV_RESERVATION_BACKEND",
    "etcd_endpoints": "OV_ETCD_ENDPOINTS",
    "etcd_username": "OV_ETCD_USERNAME",
    "etcd_password": "OV_ETCD_PASSWORD",
    "etcd_ca_cert": "OV_ETCD_CA_CERT",
    "etcd_prefix": "OV_ETCD_PREFIX",
}


def env_fallback_set(*names: str) -> str:
    """The first of the environment variables ``names`` that is set and not empty.

    Unlike Ansible's env_fallback, an empty value counts as not given: an AWX
    credential injects every variable of its type, with an empty value for a
    field left blank (no etcd user, no CA file).
    """
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    raise AnsibleFallbackNotFound


# The legal transitions of one attachment, named after the Cinder call that
# does the same. Anything else is refused with the current state and holder.
TRANSITIONS: dict[tuple[str, str], str] = {
    (AVAILABLE, ATTACHING): "reserve",
    (ATTACHING, IN_USE): "attach",
    (ATTACHING, AVAILABLE): "unreserve",
    (ATTACHING, ERROR_ATTACHING): "attach_failed",
    (IN_USE, DETACHING): "begin_detaching",
    (DETACHING, AVAILABLE): "detach",
    (DETACHING, IN_USE): "roll_detaching",
    (DETACHING, ERROR_DETACHING): "detach_failed",
    # Repairs after a rollback that failed (by an operator, a re-run or
    # reconcile, which establish the truth on the host first): no error
    # state is a dead end.
    (ERROR_ATTACHING, AVAILABLE): "reset_attaching",
    (ERROR_ATTACHING, ATTACHING): "retry_attaching",
    (ERROR_DETACHING, IN_USE): "reset_detaching",
    (ERROR_DETACHING, DETACHING): "retry_detaching",
    (ERROR_DETACHING, AVAILABLE): "force_detach",
}

# The transitional states: owned by one run, under a lease.
TRANSITIONAL = (ATTACHING, DETACHING)

# What to do instead, for the illegal transitions people will try.
_HINTS = {
    (AVAILABLE, IN_USE): "reserve it first with state=attaching",
    (AVAILABLE, DETACHING): "there is nothing to detach",
    (IN_USE, AVAILABLE): "begin with state=detaching, detach the disk, then state=available",
    (IN_USE, ATTACHING): "it is attached to this instance already; a volume is never attached twice to one instance",
    (DETACHING, ATTACHING): "finish (state=available) or roll back (state=in-use) the detach first",
    (ATTACHING, DETACHING): "finish (state=in-use) or roll back (state=available) the attach first",
}


class ReservationError(OpenVolumeError):
    """Base of the reservation errors; nothing was changed unless it says so."""


class IllegalTransition(ReservationError):
    """The requested state cannot be reached from the current one."""


class BackendError(ReservationError):
    """The store cannot be used: unreachable, refused, corrupted or foreign."""


@dataclasses.dataclass
class Attachment:
    """One instance's attachment of a volume."""

    instance: str
    host: str
    status: str
    mountpoint: str | None = None
    mode: str = "rw"
    connection_info: dict[str, t.Any] | None = None
    # Seconds since the epoch at which a transitional state's lease ends.
    expires_at: float | None = None
    # The run holding a transitional state (Owner.to_dict()).
    owner: dict[str, t.Any] | None = None
    # Derived when read, never stored: the transitional state's owner is
    # gone (lease lapsed, or its process is provably dead).
    lapsed: bool = False

    def to_dict(self) -> dict[str, t.Any]:
        return dataclasses.asdict(self)

    def stored(self) -> dict[str, t.Any]:
        """What a backend stores (without the derived ``lapsed``)."""
        out = self.to_dict()
        out.pop("lapsed")
        return out

    @classmethod
    def from_dict(cls, data: t.Mapping[str, t.Any]) -> Attachment:
        fields = {f.name for f in dataclasses.fields(cls)} - {"lapsed"}
        return cls(**{k: v for k, v in data.items() if k in fields})

    @property
    def transitional(self) -> bool:
        return self.status in TRANSITIONAL

    def describe(self) -> str:
        """``attaching by vm1 on host1`` plus who holds it and its lease, for messages."""
        text = f"{self.status} by {self.instance} on {self.host}"
        if not self.transitional:
            return text
        owner = Owner.from_dict(self.owner)
        who = owner.label() if owner else "an unknown run"
        if self.lapsed:
            return (f"{text} (lapsed: {who} is gone, its lease ended {when(self.expires_at)}; its state must be "
                    f"established on {self.host} first: run playbooks/reconcile.yml for {self.host}, or attach or "
                    f"detach {self.instance} again there)")
        since = f" since {when(owner.since)}" if owner and owner.since else ""
        return f"{text} (held by {who}{since}, lease ends {when(self.expires_at)})"


@dataclasses.dataclass
class Volume:
    """A volume record: its id, whether it is multiattach, its attachments."""

    volume_id: str
    multiattach: bool = False
    attachments: dict[str, Attachment] = dataclasses.field(default_factory=dict)
    # Bytes, as the last extend recorded it (None: never recorded).
    size: int | None = None

    @property
    def status(self) -> str:
        """The volume's status, derived from its attachments.

        ``available`` without attachments, ``in-use`` when every attachment
        is in use, else the first of error_attaching, error_detaching,
        attaching, detaching that one of them is in.
        """
        states = {a.status for a in self.attachments.values()}
        if not states:
            return AVAILABLE
        for status in (ERROR_ATTACHING, ERROR_DETACHING, ATTACHING, DETACHING):
            if status in states:
                return status
        return IN_USE

    def holders(self, exclude: str | None = None) -> str:
        """Text naming the attachments: ``in-use by vm1 on host1, ...``."""
        return ", ".join(
            a.describe() for a in sorted(self.attachments.values(), key=lambda a: a.instance) if a.instance != exclude
        )

    def to_dict(self) -> dict[str, t.Any]:
        """The record as stored (secrets in clear): status, attachments sorted by instance."""
        return {
            "volume_id": self.volume_id,
            "status": self.status,
            "multiattach": self.multiattach,
            "size": self.size,
            "attachments": [self.attachments[k].to_dict() for k in sorted(self.attachments)],
        }

    def to_result(self) -> dict[str, t.Any]:
        """The record for results, diffs and lookups: secrets masked."""
        return t.cast("dict[str, t.Any]", mask_secrets(self.to_dict()))

    @classmethod
    def from_dict(cls, data: t.Mapping[str, t.Any]) -> Volume:
        atts = [Attachment.from_dict(a) for a in data.get("attachments", [])]
        return cls(
            volume_id=data["volume_id"],
            multiattach=bool(data.get("multiattach", False)),
            attachments={a.instance: a for a in atts},
            size=data.get("size"),
        )

    def copy(self) -> Volume:
        return copy.deepcopy(self)


def same(a: Volume | None, b: Volume | None) -> bool:
    """Tell whether two records are equal (``None`` is no record)."""
    if a is None or b is None:
        return a is b
    return a.to_dict() == b.to_dict()


def mark_lapsed(
    volume: Volume | None, now: float, alive: t.Callable[[t.Mapping[str, t.Any] | None], bool | None] = owner_alive
) -> Volume | None:
    """Set ``lapsed`` on the transitional attachments whose owner is gone.

    Gone means: the lease ended, or the owner's process is provably dead
    (same controller). Nothing is freed here: a lapsed attachment still
    holds the volume until its truth is established on its host.
    """
    if volume is None:
        return None
    for att in volume.attachments.values():
        att.lapsed = att.transitional and (
            (att.expires_at is not None and att.expires_at <= now) or alive(att.owner) is False
        )
    return volume


@dataclasses.dataclass(frozen=True)
class Request:
    """One requested state of one volume, validated."""

    volume_id: str
    state: str
    instance: str | None = None
    host: str | None = None
    mountpoint: str | None = None
    mode: str | None = None
    connection_info: dict[str, t.Any] | None = None
    multiattach: bool | None = None
    size: int | None = None
    lease_ttl: int = DEFAULT_LEASE_TTL
    owner: Owner | None = None

    @classmethod
    def from_params(
        cls, params: t.Mapping[str, t.Any], *, lease_ttl: int, where: str = "", owner: Owner | None = None
    ) -> Request:
        """Build and check a request; ``where`` prefixes parameter names (``volumes[2].``)."""

        def fail(msg: str) -> t.NoReturn:
            raise ReservationError(msg)

        volume_id = params.get("volume_id")
        state = params.get("state") or PRESENT
        if not isinstance(volume_id, str) or not volume_id.strip() or volume_id != volume_id.strip():
            fail(f"{where}volume_id: give the volume's id, a non-empty string without surrounding spaces")
        if state not in STATES:
            fail(f"{where}state: {state!r} is not one of {', '.join(STATES)}")
        if not isinstance(lease_ttl, int) or lease_ttl < 2:
            fail(f"lease_ttl: {lease_ttl!r} is too short; give at least 2 seconds")
        instance = params.get("instance")
        host = params.get("host")
        for name, value in (("instance", instance), ("host", host), ("mountpoint", params.get("mountpoint"))):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                fail(f"{where}{name}: give a non-empty string or leave it out")
        if state in ATTACHMENT_STATES and not instance:
            fail(f"{where}instance: required with state={state} (the attachment's instance)")
        if state == ATTACHING and not host:
            fail(f"{where}host: required with state=attaching (the compute host the instance runs on)")
        if state in (PRESENT, ABSENT) and instance:
            fail(f"{where}instance: state={state} is about the whole volume; leave instance out "
                 "or use state=available to detach one instance")
        mode = params.get("mode")
        if mode is not None and mode not in MODES:
            fail(f"{where}mode: {mode!r} is not one of rw, ro")
        ci = params.get("connection_info")
        if ci is not None:
            if not isinstance(ci, t.Mapping) or not isinstance(ci.get("driver_volume_type"), str) \
                    or not isinstance(ci.get("data"), t.Mapping):
                fail(f"{where}connection_info: give a dict with driver_volume_type (e.g. iscsi) and data "
                     "(target_iqn, target_portal, target_lun, auth_*), as Cinder's initialize_connection returns")
            if state not in (ATTACHING, IN_USE, DETACHING, ERROR_DETACHING):
                fail(f"{where}connection_info: stored with state=attaching or state=in-use (and kept through "
                     f"detaching); leave it out with state={state}")
            ci = copy.deepcopy(dict(ci))
        multiattach = params.get("multiattach")
        if multiattach is not None and state not in (PRESENT, AVAILABLE):
            fail(f"{where}multiattach: set when the record is created, with state=present or state=available")
        size = params.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
            fail(f"{where}size: give the volume's size in bytes, a positive integer")
        if size is not None and state not in (PRESENT, AVAILABLE, IN_USE):
            fail(f"{where}size: recorded with state=present (or available, in-use), not with state={state}")
        return cls(
            volume_id=volume_id, state=state, instance=instance, host=host,
            mountpoint=params.get("mountpoint"), mode=mode, connection_info=ci,
            multiattach=multiattach, size=size, lease_ttl=lease_ttl, owner=owner,
        )


def plan(current: Volume | None, req: Request, now: float) -> tuple[Volume | None, str | None]:
    """Return the record after ``req`` and the name of the change (``None``: nothing to do).

    Pure but for the clock: the backends call it inside their atomic section
    with the record they just read (``lapsed`` already marked), so the rules
    below always see the current state.
    """
    vid = req.volume_id
    if req.state == ABSENT:
        if current is None:
            return None, None
        if current.attachments:
            raise IllegalTransition(
                f"volume {vid} is {current.holders()}; detach every attachment before state=absent"
            )
        return None, "remove"
    if current is None:
        if req.state in (PRESENT, AVAILABLE):
            return Volume(vid, multiattach=bool(req.multiattach), size=req.size), "create"
        raise IllegalTransition(
            f"volume {vid} is not registered in the reservation store; register it first with "
            f"state=present (and multiattach if it is one), then state={req.state}"
        )
    new = current.copy()
    change: str | None = None
    if req.multiattach is not None and req.multiattach != current.multiattach:
        if current.attachments:
            raise IllegalTransition(
                f"volume {vid} is {current.holders()}; multiattach can only change while it has no attachment"
            )
        new.multiattach = req.multiattach
        change = "update"
    if req.size is not None and req.size != current.size:
        # The volume's size as the last extend left it (volumes only grow).
        if current.size is not None and req.size < current.size:
            raise IllegalTransition(
                f"volume {vid} is recorded with {current.size} bytes; size {req.size} would shrink it, and volumes "
                "only grow"
            )
        new.size = req.size
        change = "resize"
    if req.state == PRESENT:
        return new, change
    if req.instance is None:
        # state=available for the whole volume.
        if current.attachments:
            raise IllegalTransition(
                f"volume {vid} is {current.holders()}; give instance to detach one attachment "
                "(state=detaching, then state=available)"
            )
        return new, change

    inst = req.instance
    att = current.attachments.get(inst)
    frm = att.status if att else AVAILABLE
    to = req.state
    holder = f"volume {vid} is {att.describe()}" if att else f"volume {vid} has no attachment for {inst}"
    if att is not None and req.host is not None and req.host != att.host:
        raise IllegalTransition(f"{holder}; not on {req.host}: give the host the attachment was reserved for")

    taking_over = False
    if att is not None and att.transitional:
        held = Owner.from_dict(att.owner)
        mine = req.owner is not None and held is not None and held.token == req.owner.token
        if not mine:
            if not att.lapsed:
                # Two runs for one attachment would race through login,
                # hot-plug and rollback: the second one waits its turn.
                raise IllegalTransition(
                    f"{holder}; another run cannot change it while that run lives: wait for it to finish"
                )
            taking_over = True

    if frm == to:
        if att is None:
            return new, change
        updated = _with_details(att, req)
        if taking_over:
            # The caller establishes this attachment now: it holds it, with a
            # fresh lease. Its own repeats change nothing (the keeper renews).
            _hold(updated, req, now)
        if updated.stored() != att.stored() or taking_over:
            new.attachments[inst] = updated
            change = "take_over" if taking_over else (change or "update")
        return new, change

    name = TRANSITIONS.get((frm, to))
    if name is None:
        legal = [b for (a, b) in TRANSITIONS if a == frm]
        hint = _HINTS.get((frm, to))
        raise IllegalTransition(
            f"{holder}; it cannot go to {to} (from {frm} the legal states are {', '.join(legal)})"
            + (f": {hint}" if hint else "")
        )

    if name == "reserve":
        others = [a for a in current.attachments.values() if a.instance != inst]
        if others and not current.multiattach:
            # A lapsed attaching of another instance holds the volume too: its
            # disk may be live in that domain (the run died after the hot-plug).
            raise IllegalTransition(
                f"volume {vid} is {new.holders(exclude=inst)}; it is not multiattach, so it cannot be reserved "
                f"for {inst} on {req.host}"
            )
        reserved = Attachment(
            # Request.from_params made sure host is there for state=attaching.
            instance=inst, host=t.cast(str, req.host), status=ATTACHING, mountpoint=req.mountpoint,
            mode=req.mode or "rw", connection_info=copy.deepcopy(req.connection_info),
        )
        _hold(reserved, req, now)
        new.attachments[inst] = reserved
        return new, name
    if att is None:  # only "reserve" leaves "available"; the table has no other way
        raise IllegalTransition(f"{holder}; it cannot go to {to}")
    if to == AVAILABLE:
        del new.attachments[inst]
        return new, name
    updated = _with_details(att, req)
    updated.status = to
    if to in TRANSITIONAL:
        _hold(updated, req, now)
    else:
        updated.expires_at = None
        updated.owner = None
        updated.lapsed = False
    if to == IN_USE and not updated.connection_info:
        # Seed 004: a volume in use without connection_info cannot be detached.
        raise IllegalTransition(
            f"{holder}; connection_info is required for state=in-use and is stored in the same transaction, "
            "so that a later detach has what it needs (give the dict initialize_connection returned)"
        )
    new.attachments[inst] = updated
    return new, name


def _hold(att: Attachment, req: Request, now: float) -> None:
    """Make ``req``'s run the holder of a transitional attachment, with a fresh lease."""
    held = Owner.from_dict(att.owner)
    if req.owner is None:
        owner = held or Owner(token="unknown")
    elif held is not None and held.token == req.owner.token:
        owner = held
    else:
        owner = dataclasses.replace(req.owner, since=now)
    att.owner = owner.to_dict()
    att.expires_at = now + req.lease_ttl
    att.lapsed = False


def _with_details(att: Attachment, req: Request) -> Attachment:
    """The attachment with the mountpoint, mode and connection_info the request gives."""
    updated = copy.deepcopy(att)
    if req.mountpoint is not None:
        updated.mountpoint = req.mountpoint
    if req.mode is not None:
        updated.mode = req.mode
    if req.connection_info is not None:
        updated.connection_info = copy.deepcopy(req.connection_info)
    return updated


class Backend(abc.ABC):
    """A store of volume records with an atomic read-modify-write."""

    name = "backend"

    @abc.abstractmethod
    def get(self, volume_id: str) -> Volume | None:
        """The record of ``volume_id`` (``lapsed`` marked), or ``None``."""

    @abc.abstractmethod
    def list_volumes(self) -> list[Volume]:
        """Every record, sorted by volume id."""

    @abc.abstractmethod
    def update(
        self, volume_id: str, change: t.Callable[[Volume | None], Volume | None]
    ) -> tuple[Volume | None, Volume | None]:
        """Atomically replace the record by ``change(record)``; return (before, after).

        ``change`` may raise; then nothing is written. A record ``change``
        returns unchanged is not written either.
        """

    @abc.abstractmethod
    def store_id(self) -> str:
        """A text naming this store (for the lease keeper's lock)."""

    def update_many(
        self, changes: t.Mapping[str, t.Callable[[Volume | None], Volume | None]]
    ) -> dict[str, tuple[Volume | None, Volume | None]]:
        """Replace several records at once, all or nothing; return volume id -> (before, after).

        When a ``change`` raises, nothing is written and the exception goes
        on. The backends do this in one transaction; this fallback, for a
        backend without one, applies the changes in turn and puts back what
        it changed (if nobody changed it since) before raising.
        """

        def put_back(item: tuple[str, t.Any], outcome: tuple[Volume | None, Volume | None]) -> UndoSteps:
            vid, (before, after) = item[0], outcome

            def restore(current: Volume | None) -> Volume | None:
                if not same(current, after):
                    raise ReservationError("it changed since this call changed it")
                return before

            return [(vid, functools.partial(self.update, vid, restore))]

        def report(error: OpenVolumeError, steps: UndoSteps) -> None:
            stuck = []
            for vid, step in steps:
                try:
                    step()
                except ReservationError as undo:
                    stuck.append(f"{vid} ({undo.msg})")
            if stuck:
                error.msg += f"; could NOT put back {'; '.join(stuck)}"
                error.args = (error.msg,)
                # For a caller that words the error again (Reservations.apply_all).
                error.details["not_put_back"] = stuck

        done = apply_batch(list(changes.items()), lambda item: self.update(*item), put_back, report=report)
        return dict(zip(changes, done, strict=True))

    def renew(self, token: str, expires_at: float) -> int:
        """Extend the leases ``token`` holds to ``expires_at``; return how many it holds.

        Each volume is one compare-and-set of its own: an attachment taken
        over meanwhile (another token) is left alone.
        """
        held = 0
        for volume in self.list_volumes():
            mine = [a.instance for a in volume.attachments.values()
                    if a.transitional and (a.owner or {}).get("token") == token]
            if not mine:
                continue

            def extend(current: Volume | None, mine: list[str] = mine) -> Volume | None:
                if current is None:
                    return None
                new = current.copy()
                for inst in mine:
                    att = new.attachments.get(inst)
                    if att is not None and att.transitional and (att.owner or {}).get("token") == token:
                        att.expires_at = max(att.expires_at or 0.0, expires_at)
                return new

            _before, after = self.update(volume.volume_id, extend)
            held += sum(1 for inst in mine if after is not None and inst in after.attachments
                        and (after.attachments[inst].owner or {}).get("token") == token)
        return held

    def close(self) -> None:  # noqa: B027 - optional for backends
        """Release connections."""


@dataclasses.dataclass
class Outcome:
    """What one request did (or would do, in check mode)."""

    request: Request
    before: Volume | None
    after: Volume | None
    transition: str | None

    @property
    def changed(self) -> bool:
        return self.transition is not None

    def taken_over_from(self) -> dict[str, t.Any] | None:
        """The run this request took a lapsed attachment over from, if it did."""
        inst = self.request.instance
        if not self.changed or inst is None or self.before is None:
            return None
        old = self.before.attachments.get(inst)
        new = self.after.attachments.get(inst) if self.after else None
        if old is None or not old.lapsed:
            return None
        if new is not None and new.owner and (old.owner or {}).get("token") == new.owner.get("token"):
            return None
        return old.owner or {}

    def takeover_note(self) -> str | None:
        """A warning for a takeover: whose lapsed attachment this request took."""
        previous = Owner.from_dict(self.taken_over_from())
        if previous is None and self.taken_over_from() is None:
            return None
        who = previous.label() if previous else "an unknown run"
        return (f"volume {self.request.volume_id}: took over the lapsed {self._state(self.before)} of "
                f"{self.request.instance} from {who}")

    def to_result(self) -> dict[str, t.Any]:
        before_state = self._state(self.before)
        after_state = self._state(self.after)
        result = {
            "volume_id": self.request.volume_id,
            "changed": self.changed,
            "transition": {"name": self.transition, "from": before_state, "to": after_state}
            if self.changed else None,
            "volume": self.after.to_result() if self.after else None,
        }
        previous = self.taken_over_from()
        if previous is not None:
            result["taken_over_from"] = previous
        return result

    def _state(self, volume: Volume | None) -> str:
        if volume is None:
            return ABSENT
        if self.request.instance is not None:
            att = volume.attachments.get(self.request.instance)
            return att.status if att else AVAILABLE
        return volume.status


class Reservations:
    """Applies requests to a backend; the only place that writes."""

    def __init__(self, module: t.Any, backend: Backend, clock: t.Callable[[], float] = time.time) -> None:
        # ``module`` only needs ``check_mode`` (skip_if_check_mode reads it).
        self.module = module
        self.backend = backend
        self.clock = clock

    def apply(self, req: Request, predicted: dict[str, Volume | None] | None = None) -> Outcome:
        """Perform one request; in check mode, say what it would do.

        ``predicted`` carries, in check mode, the records earlier requests of
        the same batch would have written, so that a batch touching one volume
        twice is predicted in order.
        """
        committed = self._commit(req)
        if committed is not None:
            return committed
        # Check mode: the same decision on the record as it is now, unwritten.
        if predicted is not None and req.volume_id in predicted:
            before = copy.deepcopy(predicted[req.volume_id])
        else:
            before = self.backend.get(req.volume_id)
        after, name = plan(before, req, self.clock())
        return Outcome(req, before, after if name else before, name)

    @skip_if_check_mode
    def _commit(self, req: Request) -> Outcome | None:
        names: list[str | None] = []

        def change(current: Volume | None) -> Volume | None:
            # Called again by a backend that lost a compare-and-set race.
            names.clear()
            after, name = plan(current, req, self.clock())
            names.append(name)
            return after

        before, after = self.backend.update(req.volume_id, change)
        return Outcome(req, before, after, names[-1] if names else None)

    def apply_all(self, reqs: t.Sequence[Request]) -> list[Outcome]:
        """Perform requests in order, all or nothing: one transaction for the whole batch.

        Requests for one volume are planned in their order on the record the
        earlier ones leave. When one is refused, nothing of the batch is
        written and the error names the entry.
        """
        if self.module.check_mode:
            return self._predict_all(reqs)
        groups: dict[str, list[tuple[int, Request]]] = {}
        for index, req in enumerate(reqs):
            groups.setdefault(req.volume_id, []).append((index, req))
        steps: dict[int, tuple[Volume | None, Volume | None, str | None]] = {}

        def change_of(vid: str) -> t.Callable[[Volume | None], Volume | None]:
            def change(current: Volume | None) -> Volume | None:
                # Called again by a backend that lost a compare-and-set race.
                record = current
                for index, req in groups[vid]:
                    try:
                        after, name = plan(record, req, self.clock())
                    except ReservationError as exc:
                        raise _EntryRefused(index, exc) from exc
                    steps[index] = (record, after if name else record, name)
                    record = after if name else record
                return record

            return change

        try:
            self.backend.update_many({vid: change_of(vid) for vid in groups})
        except _EntryRefused as refused:
            req, exc = reqs[refused.index], refused.error
            stuck = refused.details.get("not_put_back")
            if stuck:
                # A backend without one transaction could not put everything
                # back: say which records this batch left changed.
                raise type(exc)(f"volumes[{refused.index}] (volume {req.volume_id}): {exc.msg}; the batch was undone "
                                f"except: could NOT put back {'; '.join(stuck)}", failed_index=refused.index,
                                not_put_back=stuck) from exc
            raise type(exc)(f"volumes[{refused.index}] (volume {req.volume_id}): {exc.msg}; nothing in this batch "
                            "was changed", failed_index=refused.index) from exc
        return [Outcome(req, *steps[index]) for index, req in enumerate(reqs)]

    def _predict_all(self, reqs: t.Sequence[Request]) -> list[Outcome]:
        """Check mode: what the batch would do, each entry on the record the earlier ones would leave."""
        predicted: dict[str, Volume | None] = {}
        outcomes = []
        for index, req in enumerate(reqs):
            try:
                outcome = self.apply(req, predicted)
            except ReservationError as exc:
                raise type(exc)(f"volumes[{index}] (volume {req.volume_id}): {exc.msg}", failed_index=index) from exc
            predicted[req.volume_id] = outcome.after
            outcomes.append(outcome)
        return outcomes


class _EntryRefused(ReservationError):
    """A batch entry that ``plan`` refused (carries its index through the backend)."""

    def __init__(self, index: int, error: ReservationError) -> None:
        super().__init__(error.msg)
        self.index = index
        self.error = error


# --- options and the task ------------------------------------------------------------------------
def backend_argument_spec() -> dict[str, t.Any]:
    """Options that choose and reach the store, shared by the module and the lookup.

    Those in STORE_ENV fall back to their environment variable when the task
    leaves them out (before defaults apply). The action plugin validates with
    this spec in the controller's process, so that is the controller's
    environment, the one an AWX job gets from its credentials.
    """
    spec: dict[str, t.Any] = {
        "backend": {"type": "str", "choices": ["sqlite", "etcd"], "default": "sqlite"},
        "sqlite_path": {"type": "path", "default": DEFAULT_SQLITE_PATH},
        "etcd_endpoints": {"type": "list", "elements": "str", "default": ["http://127.0.0.1:2379"]},
        "etcd_username": {"type": "str"},
        "etcd_password": {"type": "str", "no_log": True},
        "etcd_ca_cert": {"type": "path"},
        "etcd_prefix": {"type": "str", "default": DEFAULT_ETCD_PREFIX},
        "etcd_timeout": {"type": "float", "default": 5.0},
    }
    for name, var in STORE_ENV.items():
        spec[name]["fallback"] = (env_fallback_set, [var])
    return spec


def open_backend(params: t.Mapping[str, t.Any]) -> Backend:
    """Open the backend the options choose."""
    if params.get("backend", "sqlite") == "etcd":
        from ansible_collections.openvolume.compute.plugins.module_utils._reservation_etcd import EtcdBackend

        # Empty strings (a lookup's options from empty environment variables)
        # mean not given, as in the module's fallback.
        return EtcdBackend(
            params.get("etcd_endpoints") or ["http://127.0.0.1:2379"],
            username=params.get("etcd_username") or None,
            password=params.get("etcd_password") or None,
            ca_cert=params.get("etcd_ca_cert") or None,
            prefix=params.get("etcd_prefix") or DEFAULT_ETCD_PREFIX,
            timeout=float(params.get("etcd_timeout") or 5.0),
        )
    from ansible_collections.openvolume.compute.plugins.module_utils._reservation_sqlite import SqliteBackend

    return SqliteBackend(params.get("sqlite_path") or DEFAULT_SQLITE_PATH)


def module_argument_spec() -> dict[str, t.Any]:
    """The argument spec of the volume_reservation module."""
    per_volume: dict[str, dict[str, t.Any]] = {
        "volume_id": {"type": "str", "required": True},
        "state": {"type": "str", "choices": list(STATES), "default": PRESENT},
        "instance": {"type": "str"},
        "host": {"type": "str"},
        "mountpoint": {"type": "str"},
        "mode": {"type": "str", "choices": list(MODES)},
        "connection_info": {"type": "dict"},
        "multiattach": {"type": "bool"},
        "size": {"type": "int"},
    }
    spec: dict[str, t.Any] = {name: dict(opt) for name, opt in per_volume.items()}
    spec["volume_id"] = {"type": "str"}
    spec["volumes"] = {"type": "list", "elements": "dict", "options": per_volume}
    spec["lease_ttl"] = {"type": "int", "default": DEFAULT_LEASE_TTL}
    spec["owner"] = {"type": "str"}
    spec.update(backend_argument_spec())
    return spec


MODULE_KWARGS: dict[str, t.Any] = {
    "mutually_exclusive": [
        ("volume_id", "volumes"),
        *[("volumes", opt) for opt in ("instance", "host", "mountpoint", "mode", "connection_info", "multiattach",
                                       "size")],
    ],
    "required_one_of": [("volume_id", "volumes")],
}


def secret_strings(value: t.Any) -> list[str]:
    """Every string under a secret-looking key in ``value`` (for no_log and masking)."""
    found: list[str] = []
    if isinstance(value, t.Mapping):
        for key, item in value.items():
            if is_secret_key(key) and isinstance(item, str) and item:
                found.append(item)
            else:
                found.extend(secret_strings(item))
    elif isinstance(value, (list, tuple)):
        for item in value:
            found.extend(secret_strings(item))
    return found


def param_secrets(params: t.Mapping[str, t.Any]) -> list[str]:
    """The secret strings among the task's options (etcd password, CHAP inside connection_info)."""
    found = [params.get("etcd_password")] + secret_strings(params.get("connection_info")) \
        + secret_strings(params.get("volumes"))
    return [s for s in found if s]


def handle(
    params: t.Mapping[str, t.Any], *, check_mode: bool, diff: bool, run_pid: int | None = None
) -> dict[str, t.Any]:
    """The task: apply the requested states; the result (secrets still in clear: the caller masks).

    Shared by the action plugin (which runs it in the controller's process
    and knows the run's process, ``run_pid``) and the module (for direct
    use). Raises ReservationError.
    """
    owner = Owner.current(params.get("owner"), run_pid=run_pid)
    batch = params.get("volumes") is not None
    if batch:
        entries = params["volumes"]
        if not entries:
            raise ReservationError("volumes: give at least one volume, or use volume_id for one")
        reqs = [
            Request.from_params(e, lease_ttl=params["lease_ttl"], where=f"volumes[{i}].", owner=owner)
            for i, e in enumerate(entries)
        ]
    else:
        reqs = [Request.from_params(params, lease_ttl=params["lease_ttl"], owner=owner)]
    backend = open_backend(params)
    try:
        service = Reservations(_CheckMode(check_mode), backend)
        outcomes = service.apply_all(reqs) if batch else [service.apply(reqs[0])]
        lock = keeper_lock_path(backend, owner.token)
    finally:
        # Closed before the keeper forks: a SQLite connection open across a
        # fork leaves the child's own connections stuck on its locks.
        backend.close()
    holds = any(
        o.after is not None and any(a.transitional and (a.owner or {}).get("token") == owner.token
                                    for a in o.after.attachments.values())
        for o in outcomes
    )
    kept = False
    if holds and not check_mode:
        kept = start_keeper(lambda: open_backend(params), lock, owner, params["lease_ttl"])
    result: dict[str, t.Any] = {"changed": any(o.changed for o in outcomes),
                                "owner": owner.to_dict(), "lease_kept": kept}
    if batch:
        result["volumes"] = [o.to_result() for o in outcomes]
        result["diff"] = _batch_diff(outcomes)
    else:
        one = outcomes[0].to_result()
        result.update(transition=one["transition"], volume=one["volume"])
        if "taken_over_from" in one:
            result["taken_over_from"] = one["taken_over_from"]
        result["diff"] = {
            "before": outcomes[0].before.to_result() if outcomes[0].before else {},
            "after": outcomes[0].after.to_result() if outcomes[0].after else {},
        }
    notes = [o.takeover_note() for o in outcomes]
    if any(notes):
        result["warnings"] = [n for n in notes if n]
    if not diff:
        result.pop("diff")
    return result


@dataclasses.dataclass
class _CheckMode:
    check_mode: bool


def run(module: t.Any) -> None:
    """Entry point of the volume_reservation module (the action plugin calls ``handle`` itself)."""
    from ansible_collections.openvolume.compute.plugins.module_utils._common import run_module

    params = module.params
    secrets = param_secrets(params)
    # CHAP secrets inside connection_info are free-form, so the argument spec
    # cannot mark them no_log: register them, so Ansible scrubs them from the
    # invocation in the result too.
    module.no_log_values.update(secrets)
    run_module(module, lambda: handle(params, check_mode=module.check_mode, diff=module._diff), secrets=secrets)


def _batch_diff(outcomes: t.Sequence[Outcome]) -> dict[str, t.Any]:
    before: dict[str, t.Any] = {}
    after: dict[str, t.Any] = {}
    for o in outcomes:
        if not o.changed:
            continue
        vid = o.request.volume_id
        if vid not in before:
            before[vid] = o.before.to_result() if o.before else None
        after[vid] = o.after.to_result() if o.after else None
    return {"before": before, "after": after}
