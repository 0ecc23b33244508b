# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pieces every openvolume.compute module shares.

* ``OpenVolumeError`` is the root of the exceptions module_utils raise. Each
  component (iscsiadm, libvirt, reservation) derives its own base from it and
  ``run_module`` turns any of them into one ``fail_json`` call.
* ``mask_secrets`` is the single place secrets are hidden from results, diffs
  and error messages.
* ``skip_if_check_mode`` is the single choke point for check mode.
* ``apply_batch`` is the one batch-with-undo loop (all or nothing) and
  ``dispatch_state`` the one way from ``state`` to a ``state_<state>`` method.
* ``OpenVolumeModule`` is the AnsibleModule every module of the collection is
  built on: it keeps the secrets of free-form parameters out of the
  invocation Ansible logs to syslog or the journal.
"""

from __future__ import annotations

import functools
import re
import time
import typing as t

from ansible.module_utils.basic import AnsibleModule

MASK = "********"

# Keys whose values are secrets wherever they appear in a structure
# (connection_info, auth dicts, settings). ``node.session.auth.password`` and
# ``auth_password_in`` and a LUKS ``passphrase`` match; ``username`` and
# ``key_id``-style ids do not.
_SECRET_KEY = re.compile(r"(password|passwd|passphrase|secret|_key$|^key$|token|credential)", re.IGNORECASE)
# Key names that look secret but hold only references to a secret.
_NOT_SECRET_KEY = re.compile(r"(secret_(uuid|usage|type)|usage)$", re.IGNORECASE)


class OpenVolumeError(Exception):
    """An error the user can act on.

    ``msg`` says what failed, names the parameter when one is at fault and
    says how to fix it. ``details`` are extra result keys for ``fail_json``.
    """

    def __init__(self, msg: str, **details: t.Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details


# A disk's serial, which the roles make the volume id: libvirt_disk's rule,
# checked by the attach plan too, before anything is reserved.
SERIAL = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def bracketed(host: str) -> str:
    """``host`` for ``host:port`` text: an IPv6 address in brackets, as iSCSI, Ceph and QEMU read it."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def is_secret_key(key: object) -> bool:
    """Tell whether a mapping key names a secret value."""
    if not isinstance(key, str):
        return False
    return bool(_SECRET_KEY.search(key)) and not _NOT_SECRET_KEY.search(key)


def mask_secrets(value: t.Any, secrets: t.Iterable[str | None] = ()) -> t.Any:
    """Return a copy of ``value`` with secrets replaced by ``MASK``.

    Values under secret-looking keys are masked whatever their content, and
    every occurrence of a known secret string (``secrets``) is masked inside
    any string, so a password echoed in an error text does not leak either.
    """
    known = sorted({s for s in secrets if s}, key=len, reverse=True)

    def scrub_text(text: str) -> str:
        for secret in known:
            text = text.replace(secret, MASK)
        return text

    def walk(item: t.Any) -> t.Any:
        if isinstance(item, t.Mapping):
            return {
                k: (MASK if is_secret_key(k) and _is_scalar(v) and v not in (None, "") and not _is_masked(v)
                    else walk(v))
                for k, v in item.items()
            }
        if isinstance(item, (list, tuple)):
            return type(item)(walk(v) for v in item)
        if isinstance(item, str):
            return scrub_text(item)
        return item

    return walk(value)


def _is_scalar(value: t.Any) -> bool:
    # A list or dict under a secret-looking key (a module's "secrets" results)
    # is walked, so only the secret values inside it are masked.
    return not isinstance(value, (t.Mapping, list, tuple))


def _is_masked(value: t.Any) -> bool:
    # A value a module masked already, possibly with a note such as
    # "******** (changed)", stays as it is.
    return isinstance(value, str) and value.startswith(MASK)


class _HasModule(t.Protocol):
    module: t.Any


F = t.TypeVar("F", bound=t.Callable[..., t.Any])


def skip_if_check_mode(method: F) -> F:
    """Make a state-changing method a no-op in check mode.

    Methods decorated with this are the only ones that change a host; the
    callers compute before/after snapshots as usual, so check mode reports
    the same ``changed`` and ``diff`` as a real run.
    """

    @functools.wraps(method)
    def wrapper(self: _HasModule, *args: t.Any, **kwargs: t.Any) -> t.Any:
        if self.module.check_mode:
            return None
        return method(self, *args, **kwargs)

    return t.cast(F, wrapper)


def run_module(module: t.Any, handler: t.Callable[[], dict[str, t.Any]], secrets: t.Iterable[str | None] = ()) -> None:
    """Run ``handler`` and exit the module with its masked result.

    ``OpenVolumeError`` becomes one ``fail_json`` with the message and the
    details, both masked. Other exceptions are bugs and keep their traceback.
    """
    secrets = list(secrets)
    error: OpenVolumeError | None = None
    try:
        result = handler()
    except OpenVolumeError as exc:
        error = exc
    # fail_json is called outside the except block: ansible-core 2.19 would
    # otherwise attach a traceback to what is a plain, expected failure.
    if error is not None:
        module.fail_json(msg=mask_secrets(error.msg, secrets), **mask_secrets(error.details, secrets))
    module.exit_json(**mask_secrets(result, secrets))


# Undo steps: (what the step undoes, the callable that undoes it).
UndoSteps = t.Iterable[tuple[str, t.Callable[[], object]]]


def undo_after(error: OpenVolumeError, steps: UndoSteps) -> list[str]:
    """Run the undo ``steps`` of a failed call; a failed undo is added to ``error``, never put in its place.

    Each step is (what it undoes, callable). The caller re-raises ``error``
    afterwards: the user sees the original failure and, after it, what could
    not be undone (also in the result as ``not_undone``). Returns what was
    undone (the labels), for a caller that words it.
    """
    done, stuck = [], []
    for label, step in steps:
        try:
            step()
            done.append(label)
        except OpenVolumeError as exc:
            stuck.append(f"{label} ({exc.msg})")
    if stuck:
        error.msg = f"{error.msg}; and could NOT undo: {'; '.join(stuck)}"
        error.args = (error.msg,)
        error.details["not_undone"] = stuck
    return done


T = t.TypeVar("T")
R = t.TypeVar("R")


def apply_batch(
    items: t.Sequence[T],
    apply: t.Callable[[T], R],
    undo: t.Callable[[T, R], UndoSteps],
    *,
    report: t.Callable[[OpenVolumeError, UndoSteps], object] = undo_after,
) -> list[R]:
    """Apply ``apply`` to each item in order, all or nothing.

    When an item fails with ``OpenVolumeError``, the items done before it are
    undone in reverse order: ``undo(item, outcome)`` gives the steps (label,
    callable) that take back what that item changed (none when it changed
    nothing). ``report(error, steps)`` runs the steps and adds what could not
    be undone to the error, which is then raised again: ``undo_after``
    unless a module words that its own way. Returns the outcomes in item order.
    """
    done: list[tuple[T, R]] = []
    try:
        for item in items:
            done.append((item, apply(item)))
    except OpenVolumeError as exc:
        report(exc, [step for item, outcome in reversed(done) for step in undo(item, outcome)])
        raise
    return [outcome for _item, outcome in done]


def dispatch_state(handler: object, state: str, *args: t.Any, method: str = "state_{}") -> t.Any:
    """Call the method of ``handler`` for ``state`` with ``args``: ``state_present`` for ``present``, and so on.

    ``method`` spells the method's name when it is not ``state_<state>``
    (``"{}_all"``: ``present_all`` and ``absent_all`` of a batch). The
    argument spec's choices keep ``state`` to the methods there are; a state
    without one is an ``OpenVolumeError`` that names it.
    """
    name = method.format(state)
    func = getattr(handler, name, None)
    if not callable(func):
        raise OpenVolumeError(f"state: '{state}' is not a state of {type(handler).__name__} (it has no {name})")
    return func(*args)


def batch_entries(
    params: t.Mapping[str, t.Any],
    key: str,
    single_options: t.Iterable[str],
    *,
    error: type[OpenVolumeError] = OpenVolumeError,
    unset: tuple[t.Any, ...] = (None,),
) -> list[dict[str, t.Any]]:
    """The entries of a module's batch option (``records``, ``volumes``), checked before anything changes.

    Options of the single form given beside the batch are refused, naming
    them (``iface`` and ``ifaces`` excepted: at the top level they are the
    entries' default, what a module_defaults group sets once); so is an
    entry with both ``iface`` and ``ifaces``. A value in ``unset`` counts as
    not given.
    """
    given = [opt for opt in single_options if opt not in ("iface", "ifaces") and params.get(opt) not in unset]
    if given:
        raise error(f"{key}: give either {key} or {', '.join(given)} (the single form), not both; "
                    f"put those options into each entry of {key}")
    entries = []
    for i, entry in enumerate(params[key]):
        if entry.get("iface") and entry.get("ifaces"):
            raise error(f"{key}[{i}]: iface and ifaces are mutually exclusive; give one of them")
        if not entry.get("iface") and not entry.get("ifaces"):
            entry = dict(entry, iface=params.get("iface"), ifaces=params.get("ifaces"))
        entries.append(entry)
    return entries


def wait_until(predicate: t.Callable[[], bool], *, timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds have passed.

    The bounded, fast wait used for devices, maps and hot-unplugs: one
    bound on the total time instead of growing sleeps.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def secret_values(value: t.Any) -> set[str]:
    """Every value under a secret-looking key anywhere in ``value``, as text.

    A value appears in a log as part of ``str()`` of its dict or list, which
    escapes quotes, backslashes and non-ASCII characters, so that spelling is
    returned too.
    """
    found: set[str] = set()

    def walk(item: t.Any) -> None:
        if isinstance(item, t.Mapping):
            for k, v in item.items():
                if is_secret_key(k) and _is_scalar(v) and v not in (None, "") and not _is_masked(v):
                    text = str(v)
                    found.add(text)
                    found.add(repr(text)[1:-1])
                else:
                    walk(v)
        elif isinstance(item, (list, tuple)):
            for v in item:
                walk(v)

    walk(value)
    return found


class OpenVolumeModule(AnsibleModule):
    """AnsibleModule that never logs a secret of its parameters.

    AnsibleModule logs its invocation (to syslog or the journal) while it is
    being constructed, masking only the values of options marked ``no_log``;
    a CHAP password inside a free-form dict (``connection_info``) would be
    logged before the module could register it. Every log line goes through
    ``log``, so that is where the secrets found anywhere in the parameters
    (``is_secret_key``) join ``no_log_values`` first; the result and error
    messages are then masked by Ansible too.
    """

    def log(self, msg: t.Any, log_args: dict[str, t.Any] | None = None) -> None:
        self._register_secrets()
        if log_args:
            log_args = {k: mask_secrets(v, self.no_log_values) for k, v in log_args.items()}
        super().log(msg, log_args=log_args)

    def exit_json(self, **kwargs: t.Any) -> t.NoReturn:
        self._register_secrets()
        super().exit_json(**kwargs)
        raise SystemExit(0)  # not reached: exit_json exits

    def fail_json(self, msg: t.Any, **kwargs: t.Any) -> t.NoReturn:
        self._register_secrets()
        super().fail_json(msg, **kwargs)
        raise SystemExit(1)  # not reached: fail_json exits

    def _register_secrets(self) -> None:
        params = getattr(self, "params", None)
        if params:
            self.no_log_values.update(secret_values(params))
