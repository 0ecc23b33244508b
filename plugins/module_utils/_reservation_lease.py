# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Owners of transitional states and the keeper that renews their leases.

An ``attaching`` or ``detaching`` attachment belongs to one run. By default
the run is the ansible-playbook process the task runs under, found by
walking up the process tree; the token names it, and where the process
lives (controller, boot id, pid, start time) lets a reader on the same
controller tell a dead run from a live one at once. The keeper is a small
detached process that renews the run's leases while the run lives, so that
a long step never loses its reservation and a crashed run's leases lapse.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import os
import socket
import tempfile
import time
import typing as t

from ansible_collections.openvolume.compute.plugins.module_utils._common import OpenVolumeError

if t.TYPE_CHECKING:  # pragma: no cover
    from ansible_collections.openvolume.compute.plugins.module_utils._reservation import Backend


def when(ts: float | None) -> str:
    """A timestamp as people read it in messages (UTC, to the second)."""
    if ts is None:
        return "never"
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_ANSIBLE_CLIS = ("ansible-playbook", "ansible", "ansible-console", "ansible-pull")


def _proc_cmdline(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks since boot) of a process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name (field 2) may hold spaces and parentheses.
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19])


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def find_run_process(pid: int | None = None) -> tuple[int, int] | None:
    """The ansible-playbook (or ansible) process this code runs under: (pid, start time).

    Modules run in a child of a worker, action plugins in the worker; a
    worker is a fork of the ansible-playbook process and shares its command
    line. So: climb to the first ancestor that is an Ansible CLI, then on
    while the parent has the very same command line. An ansible-playbook
    started by another playbook (a test running playbooks) is a run of its
    own: its parent's command line differs.
    """
    current = pid or os.getpid()
    found: int | None = None
    cmdline: list[str] | None = None
    for _depth in range(64):
        argv = _proc_cmdline(current)
        if argv is None:
            break
        if found is None:
            if any(os.path.basename(a) in _ANSIBLE_CLIS for a in argv[:2]):
                found, cmdline = current, argv
        elif argv == cmdline:
            found = current
        else:
            break
        stat = _proc_stat(current)
        if stat is None or stat[0] <= 1:
            break
        current = stat[0]
    if found is None:
        return None
    stat = _proc_stat(found)
    return (found, stat[1]) if stat else None


@dataclasses.dataclass
class Owner:
    """Who holds a transitional state: a token, and where its run lives.

    ``token`` tells runs apart (two runs never share one). ``controller``,
    ``boot_id``, ``pid`` and ``started`` locate the run's process, so that a
    reader on the same controller can tell a dead run from a live one without
    waiting for the lease; from elsewhere only the lease tells.
    """

    token: str
    controller: str | None = None
    boot_id: str | None = None
    pid: int | None = None
    started: int | None = None
    since: float | None = None

    @classmethod
    def current(cls, token: str | None = None, now: float | None = None, run_pid: int | None = None) -> Owner:
        """The owner of this run: by default the ansible-playbook process it runs under.

        ``run_pid`` is that process when the caller knows it (an action
        plugin runs in a worker forked from it: its parent); otherwise it
        is looked for up the process tree.
        """
        controller = socket.gethostname()
        stat = _proc_stat(run_pid) if run_pid else None
        run = (run_pid, stat[1]) if run_pid and stat else find_run_process()
        pid, started = run if run else (None, None)
        if not token:
            token = f"{controller}:{pid}:{started}" if run else f"{controller}:{os.getpid()}:{time.time():.6f}"
        return cls(token=token, controller=controller, boot_id=_boot_id(), pid=pid, started=started,
                   since=now if now is not None else time.time())

    @classmethod
    def from_dict(cls, data: t.Mapping[str, t.Any] | None) -> Owner | None:
        if not data or not data.get("token"):
            return None
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})

    def to_dict(self) -> dict[str, t.Any]:
        return dataclasses.asdict(self)

    def label(self) -> str:
        if self.pid is not None:
            return f"run {self.token} (pid {self.pid} on {self.controller})"
        return f"run {self.token}"

    def alive(self) -> bool | None:
        """True or False when this controller can tell, None when only the lease can."""
        if self.pid is None or self.controller != socket.gethostname() or self.boot_id != _boot_id():
            return None
        stat = _proc_stat(self.pid)
        return stat is not None and stat[1] == self.started


def owner_alive(owner: t.Mapping[str, t.Any] | None) -> bool | None:
    """Liveness of a stored owner, as far as this controller can tell."""
    parsed = Owner.from_dict(owner)
    return parsed.alive() if parsed else None


def keeper_lock_path(backend: Backend, token: str) -> str:
    digest = hashlib.sha256(f"{backend.store_id()}\0{token}".encode()).hexdigest()[:20]
    return os.path.join(tempfile.gettempdir(), f"openvolume-lease-{digest}.lock")


def keeper_running(lock_path: str) -> bool:
    """Whether a keeper holds ``lock_path`` (it keeps an exclusive flock for its lifetime)."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def start_keeper(
    open_store: t.Callable[[], Backend], lock_path: str, owner: Owner, lease_ttl: int, *, poll: float = 0.5
) -> bool:
    """Renew ``owner``'s leases in a background process while its run lives.

    The reservation task returns at once; the keeper (a double-forked,
    detached child, one per store and owner, serialised by an flock) renews
    every lease the owner holds each ``lease_ttl / 3`` seconds, so a long
    step never loses its reservation. It stops when the owner's process ends
    (a crashed run's leases then lapse and wait to be established) or when
    the owner holds nothing any more. It needs nothing from disk after the
    fork: the code is in memory, the store is opened anew in the child (the
    caller must have closed its own connections to it: SQLite's locks do not
    survive a fork). Returns False when no keeper can run (the owner's
    process is unknown).
    """
    if owner.pid is None or owner.started is None:
        return False
    if keeper_running(lock_path):
        return True
    pid = os.fork()
    if pid:
        # The intermediate child exits at once; reap it.
        os.waitpid(pid, 0)
        return True
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        _detach_stdio()
        _keep(open_store, lock_path, owner, lease_ttl, poll)
    finally:
        os._exit(0)


def _detach_stdio() -> None:
    # Ansible reads the task's output until it closes: the keeper must hold
    # none of the parent's descriptors.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.closerange(3, 65536)


def _keep(open_store: t.Callable[[], Backend], lock_path: str, owner: Owner, lease_ttl: int, poll: float) -> None:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another keeper has it
    interval = max(1.0, lease_ttl / 3)
    next_renewal = time.monotonic() + interval
    backend: Backend | None = None
    try:
        while owner.alive():
            if time.monotonic() >= next_renewal:
                try:
                    backend = backend or open_store()
                    if backend.renew(owner.token, time.time() + lease_ttl) == 0:
                        return
                    next_renewal = time.monotonic() + interval
                except (OpenVolumeError, OSError):
                    # The store is away for now: try again soon; a lease that
                    # ends meanwhile lapses, which blocks, never frees.
                    with contextlib.suppress(Exception):
                        if backend is not None:
                            backend.close()
                    backend = None
                    next_renewal = time.monotonic() + min(interval, 5.0)
            time.sleep(poll)
    finally:
        with contextlib.suppress(Exception):
            if backend is not None:
                backend.close()
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        os.close(fd)
