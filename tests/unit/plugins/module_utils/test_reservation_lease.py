"""Owners and the lease keeper, with real processes and both real stores."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import typing as t

import pytest
from reservation_lab import BACKENDS, Store, make_store

from ansible_collections.openvolume.compute.plugins.module_utils._reservation import ATTACHING
from ansible_collections.openvolume.compute.plugins.module_utils._reservation_lease import (
    Owner,
    _proc_stat,
    keeper_lock_path,
    keeper_running,
    start_keeper,
)

TREE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "build", "collections")


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: t.Any) -> t.Iterator[Store]:
    yield from make_store(request, tmp_path)


def fake_cli(tmp_path: t.Any, name: str, body: str) -> str:
    """An executable called ``name`` (ansible-playbook, ...) running ``body`` with this Python."""
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


DETECT = f"""
import sys
sys.path.insert(0, {os.path.abspath(TREE)!r})
from ansible_collections.openvolume.compute.plugins.module_utils._reservation_lease import find_run_process
print(find_run_process()[0])
"""


def test_the_run_is_the_playbook_process_not_its_worker(tmp_path: t.Any) -> None:
    # Like ansible-playbook: a forked worker (same command line) starts the
    # module through /bin/sh; the module must find the playbook process.
    detect = tmp_path / "detect.py"
    detect.write_text(DETECT)
    cli = fake_cli(tmp_path, "ansible-playbook", f"""
        import os, subprocess, sys
        pid = os.fork()
        if pid == 0:
            out = subprocess.run(["/bin/sh", "-c", "{sys.executable} {detect}"], capture_output=True, text=True)
            print("module saw", out.stdout.strip(), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        print("playbook", os.getpid(), flush=True)
    """)
    out = subprocess.run([sys.executable, cli, "site.yml"], capture_output=True, text=True, check=True).stdout
    seen = dict(line.rsplit(" ", 1) for line in out.splitlines())
    assert seen["module saw"] == seen["playbook"]


def test_a_playbook_started_by_a_playbook_is_a_run_of_its_own(tmp_path: t.Any) -> None:
    detect = tmp_path / "detect.py"
    detect.write_text(DETECT)
    inner = fake_cli(tmp_path, "ansible-playbook", f"""
        import os, subprocess
        out = subprocess.run(["{sys.executable}", "{detect}"], capture_output=True, text=True)
        print("inner", os.getpid(), out.stdout.strip(), flush=True)
    """)
    outer_dir = tmp_path / "outer"
    outer_dir.mkdir()
    outer = fake_cli(outer_dir, "ansible-playbook", f"""
        import subprocess, sys
        subprocess.run([sys.executable, "{inner}", "inner.yml"], check=True)
    """)
    out = subprocess.run([sys.executable, outer, "outer.yml"], capture_output=True, text=True, check=True).stdout
    _label, inner_pid, detected = out.split()
    assert detected == inner_pid


def test_no_ansible_process_means_no_keeper() -> None:
    owner = Owner(token="explicit")
    assert owner.alive() is None
    assert start_keeper(lambda: None, "/nonexistent/lock", owner, 10) is False  # type: ignore[arg-type,return-value]


def test_keeper_renews_while_the_run_lives_and_stops_with_it(store: Store) -> None:
    run = subprocess.Popen(["sleep", "60"])
    try:
        stat = _proc_stat(run.pid)
        assert stat is not None
        owner = Owner.current(token=f"keeper-test-{run.pid}")
        owner.pid, owner.started = run.pid, stat[1]
        assert owner.alive() is True
        store.apply(volume_id="vol-keep", state="present")
        store.apply(volume_id="vol-keep", state=ATTACHING, instance="i1", host="h1", lease_ttl=3, owner=owner)
        backend = store.open()
        lock = keeper_lock_path(backend, owner.token)
        backend.close()
        assert start_keeper(store.open, lock, owner, 3, poll=0.1)
        # A second call finds the keeper there and starts no other one.
        assert start_keeper(store.open, lock, owner, 3, poll=0.1)
        # Three lease lengths later the run still holds its reservation.
        time.sleep(9)
        att = store.get("vol-keep").attachments["i1"]
        assert not att.lapsed and att.expires_at > time.time()
        assert keeper_running(lock)
    finally:
        run.kill()
        run.wait()
    # The run is gone: the keeper stops at once, and the attachment is
    # lapsed (a dead owner on this controller), never freed.
    deadline = time.time() + 5
    while keeper_running(lock) and time.time() < deadline:
        time.sleep(0.1)
    assert not keeper_running(lock)
    att = store.get("vol-keep").attachments["i1"]
    assert (att.status, att.lapsed) == (ATTACHING, True)


def test_keeper_stops_when_the_run_holds_nothing(store: Store) -> None:
    run = subprocess.Popen(["sleep", "60"])
    try:
        stat = _proc_stat(run.pid)
        assert stat is not None
        owner = Owner.current(token=f"keeper-done-{run.pid}")
        owner.pid, owner.started = run.pid, stat[1]
        store.apply(volume_id="vol-done", state="present")
        store.apply(volume_id="vol-done", state=ATTACHING, instance="i1", host="h1", lease_ttl=3, owner=owner)
        backend = store.open()
        lock = keeper_lock_path(backend, owner.token)
        backend.close()
        assert start_keeper(store.open, lock, owner, 3, poll=0.1)
        store.apply(volume_id="vol-done", state="available", instance="i1", owner=owner)
        deadline = time.time() + 6
        while keeper_running(lock) and time.time() < deadline:
            time.sleep(0.1)
        assert not keeper_running(lock)
    finally:
        run.kill()
        run.wait()
