"""The SQLite backend's own promises: file handling, schema, WAL, refusals."""

from __future__ import annotations

import os
import sqlite3
import stat
import typing as t

import pytest
from reservation_lab import CI, Store

from ansible_collections.openvolume.compute.plugins.module_utils._reservation import (
    Attachment,
    BackendError,
    Volume,
)
from ansible_collections.openvolume.compute.plugins.module_utils._reservation_sqlite import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    SqliteBackend,
)


def sqlite_store(path: t.Any) -> Store:
    return Store({"backend": "sqlite", "sqlite_path": str(path)})


def test_new_file_private_versioned_wal(tmp_path: t.Any) -> None:
    path = tmp_path / "state" / "openvolume" / "volumes.db"
    SqliteBackend(str(path)).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_default_path_expands_home(tmp_path: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    backend = SqliteBackend("~/.local/state/openvolume/volumes.db")
    assert backend.path == str(tmp_path / ".local/state/openvolume/volumes.db")
    backend.close()


def test_garbage_file_is_refused_and_left_alone(tmp_path: t.Any) -> None:
    path = tmp_path / "volumes.db"
    garbage = b"this is not a database, it is a shopping list\n" * 100
    path.write_bytes(garbage)
    with pytest.raises(BackendError, match=r"sqlite_path: .* is not a usable openvolume reservation database.*"
                       r"nothing was changed"):
        sqlite_store(path).apply(volume_id="v", state="present")
    assert path.read_bytes() == garbage


def test_foreign_database_is_refused_and_left_alone(tmp_path: t.Any) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE songs (title TEXT)")
    conn.execute("INSERT INTO songs VALUES ('la')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(BackendError, match="is a SQLite database of another application"):
        SqliteBackend(str(path))
    assert path.read_bytes() == before


def test_foreign_application_id_is_refused(tmp_path: t.Any) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.close()
    with pytest.raises(BackendError, match=r"another application \(application_id 0x4d2\)"):
        SqliteBackend(str(path))


def test_newer_schema_is_refused(tmp_path: t.Any) -> None:
    path = tmp_path / "volumes.db"
    SqliteBackend(str(path)).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(BackendError, match="newer than this collection's"):
        SqliteBackend(str(path))


def test_corrupted_pages_are_a_clear_error(tmp_path: t.Any) -> None:
    path = tmp_path / "volumes.db"
    store = sqlite_store(path)
    for i in range(50):
        store.apply(volume_id=f"vol-{i:03}", state="present")
    # Checkpoint the WAL into the main file, then overwrite its pages after the header.
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    data = bytearray(path.read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)
    path.write_bytes(bytes(data))
    with pytest.raises(BackendError, match="is not a usable openvolume reservation database"):
        backend = SqliteBackend(str(path))
        backend.list_volumes()


def test_unwritable_directory_names_the_parameter(tmp_path: t.Any) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BackendError, match="sqlite_path: cannot create"):
        SqliteBackend(str(blocker / "volumes.db"))


def test_migration_from_empty_file(tmp_path: t.Any) -> None:
    # An empty file is a SQLite database of schema version 0: it is migrated.
    path = tmp_path / "volumes.db"
    path.write_bytes(b"")
    store = sqlite_store(path)
    store.apply(volume_id="v", state="present")
    store.apply(volume_id="v", state="attaching", instance="i", host="h")
    store.apply(volume_id="v", state="in-use", instance="i", connection_info=CI)
    assert store.get("v").attachments["i"].connection_info == CI


def test_lapsed_lease_honoured_by_reads_and_transitions(tmp_path: t.Any) -> None:
    # The sqlite leases follow the backend's clock: move it instead of sleeping.
    path = str(tmp_path / "volumes.db")
    now = [1000.0]
    backend = SqliteBackend(path, clock=lambda: now[0])
    backend.update("v", lambda _: Volume("v"))

    def reserve(volume: t.Any) -> t.Any:
        volume = volume.copy()
        volume.attachments["i"] = Attachment("i", "h", "attaching", expires_at=1010.0)
        return volume

    backend.update("v", reserve)
    assert backend.get("v").status == "attaching"
    assert not backend.get("v").attachments["i"].lapsed
    now[0] = 1010.0
    # Lapsed, but still there: only establishing its truth frees it.
    att = backend.get("v").attachments["i"]
    assert (att.status, att.lapsed) == ("attaching", True)
    # A transition starts from the lapsed state too.
    before, _after = backend.update("v", lambda v: v)
    assert before.attachments["i"].lapsed


def test_schema_1_files_are_migrated_to_keep_owners(tmp_path: t.Any) -> None:
    import sqlite3

    from ansible_collections.openvolume.compute.plugins.module_utils._reservation_sqlite import (
        APPLICATION_ID,
        MIGRATIONS,
    )

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0])
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO volumes VALUES ('v', 0, 1, 1)")
    conn.execute("INSERT INTO attachments (volume_id, instance, host, status, mode, updated_at) "
                 "VALUES ('v', 'i', 'h', 'in-use', 'rw', 1)")
    conn.commit()
    conn.close()
    store = sqlite_store(path)
    assert store.get("v").attachments["i"].status == "in-use"
    store.apply(volume_id="v", state="detaching", instance="i")
    assert store.get("v").attachments["i"].owner["token"] == "test-run"
