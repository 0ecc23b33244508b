# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The embedded reservation backend: one SQLite file on the controller.

Every transition runs in a ``BEGIN IMMEDIATE`` transaction: it takes the
write lock before reading, so two controllers' processes that both want a
volume are serialised and the second one reads what the first wrote (the
compare-and-set Cinder added for bug 1096983). WAL mode lets readers (the
lookup) go on while a transition writes. Leases are expiry timestamps that
every read and transition judges (``_reservation.mark_lapsed``): a lapsed
lease marks its attachment, it never deletes it.

The file carries ``PRAGMA application_id`` (so a foreign SQLite file is
recognised and left alone) and ``PRAGMA user_version`` (the schema version;
``MIGRATIONS`` brings an older file up to date in one transaction).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import typing as t

from ansible_collections.openvolume.compute.plugins.module_utils._reservation import (
    Attachment,
    Backend,
    BackendError,
    Volume,
    mark_lapsed,
    same,
)

# "OVRS": openvolume reservation store.
APPLICATION_ID = 0x4F565253

# MIGRATIONS[n] takes a file from schema version n to n + 1.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE volumes (
        volume_id   TEXT PRIMARY KEY,
        multiattach INTEGER NOT NULL DEFAULT 0,
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL
    );
    CREATE TABLE attachments (
        volume_id       TEXT NOT NULL REFERENCES volumes(volume_id) ON DELETE CASCADE,
        instance        TEXT NOT NULL,
        host            TEXT NOT NULL,
        status          TEXT NOT NULL,
        mountpoint      TEXT,
        mode            TEXT NOT NULL DEFAULT 'rw',
        connection_info TEXT,
        expires_at      REAL,
        updated_at      REAL NOT NULL,
        PRIMARY KEY (volume_id, instance)
    );
    """,
    # 2: the run that holds a transitional state (JSON of _reservation.Owner).
    """
    ALTER TABLE attachments ADD COLUMN owner TEXT;
    """,
    # 3: the volume's size in bytes, as the last extend recorded it.
    """
    ALTER TABLE volumes ADD COLUMN size INTEGER;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class SqliteBackend(Backend):
    """Volume records in a SQLite file (``sqlite_path``)."""

    name = "sqlite"

    def __init__(self, path: str, *, busy_timeout: float = 60.0, clock: t.Callable[[], float] = time.time) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self.clock = clock
        self._create_file()
        try:
            # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
            self.conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
            self.conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise self._unusable(exc) from exc

    def _create_file(self) -> None:
        directory = os.path.dirname(self.path)
        try:
            # The file holds connection_info with CHAP secrets: owner only.
            os.makedirs(directory, mode=0o700, exist_ok=True)
            if not os.path.exists(self.path):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError as exc:
            raise BackendError(
                f"sqlite_path: cannot create {self.path}: {exc.strerror}; give a path the controller user may write"
            ) from exc
        if os.path.isdir(self.path):
            raise BackendError(f"sqlite_path: {self.path} is a directory; give the path of a database file")

    def _unusable(self, exc: Exception) -> BackendError:
        return BackendError(
            f"sqlite_path: {self.path} is not a usable openvolume reservation database ({exc}); nothing was "
            "changed. It is corrupted or belongs to something else: restore it from a backup, or move it "
            "away and give a path to a new file"
        )

    def _migrate(self) -> None:
        conn = self.conn
        if self._pragma("application_id") == APPLICATION_ID and self._pragma("user_version") == SCHEMA_VERSION:
            self._ensure_wal()
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            app_id = self._pragma("application_id")
            version = self._pragma("user_version")
            if app_id == 0:
                tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if tables:
                    raise BackendError(
                        f"sqlite_path: {self.path} is a SQLite database of another application "
                        f"({tables} schema objects, no openvolume marker); nothing was changed. Give a path to "
                        "a new file or to an openvolume reservation database"
                    )
            elif app_id != APPLICATION_ID:
                raise BackendError(
                    f"sqlite_path: {self.path} is a SQLite database of another application "
                    f"(application_id {app_id:#x}); nothing was changed. Give a path to a new file or to an "
                    "openvolume reservation database"
                )
            if version > SCHEMA_VERSION:
                raise BackendError(
                    f"sqlite_path: {self.path} has schema version {version}, newer than this collection's "
                    f"{SCHEMA_VERSION}; nothing was changed. Upgrade openvolume.compute on this controller"
                )
            for step in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[step].split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._ensure_wal()

    def _ensure_wal(self) -> None:
        # journal_mode is persistent in the file; switching needs no open
        # transaction, so it happens after the migration, once.
        if self.conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self.conn.execute("PRAGMA journal_mode = WAL")

    def _pragma(self, name: str) -> int:
        return int(self.conn.execute(f"PRAGMA {name}").fetchone()[0])

    def _load(self, volume_id: str) -> Volume | None:
        row = self.conn.execute(
            "SELECT volume_id, multiattach, size FROM volumes WHERE volume_id = ?", (volume_id,)
        ).fetchone()
        if row is None:
            return None
        volume = Volume(row[0], multiattach=bool(row[1]), size=row[2])
        for a in self.conn.execute(
            "SELECT instance, host, status, mountpoint, mode, connection_info, expires_at, owner "
            "FROM attachments WHERE volume_id = ? ORDER BY instance",
            (volume_id,),
        ):
            volume.attachments[a[0]] = Attachment(
                instance=a[0], host=a[1], status=a[2], mountpoint=a[3], mode=a[4],
                connection_info=json.loads(a[5]) if a[5] else None, expires_at=a[6],
                owner=json.loads(a[7]) if a[7] else None,
            )
        return mark_lapsed(volume, self.clock())

    def _store(self, volume_id: str, volume: Volume | None) -> None:
        now = self.clock()
        if volume is None:
            self.conn.execute("DELETE FROM volumes WHERE volume_id = ?", (volume_id,))
            return
        self.conn.execute(
            "INSERT INTO volumes (volume_id, multiattach, size, created_at, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (volume_id) DO UPDATE SET multiattach = excluded.multiattach, size = excluded.size, "
            "updated_at = excluded.updated_at",
            (volume_id, int(volume.multiattach), volume.size, now, now),
        )
        # The record is small: replace its attachments as a whole, inside the
        # same transaction, so connection_info lands with the state (seed 004).
        self.conn.execute("DELETE FROM attachments WHERE volume_id = ?", (volume_id,))
        self.conn.executemany(
            "INSERT INTO attachments (volume_id, instance, host, status, mountpoint, mode, connection_info, "
            "expires_at, owner, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (volume_id, a.instance, a.host, a.status, a.mountpoint, a.mode,
                 json.dumps(a.connection_info, sort_keys=True) if a.connection_info is not None else None,
                 a.expires_at, json.dumps(a.owner, sort_keys=True) if a.owner else None, now)
                for a in volume.attachments.values()
            ],
        )

    def store_id(self) -> str:
        return f"sqlite:{self.path}"

    def get(self, volume_id: str) -> Volume | None:
        try:
            return self._load(volume_id)
        except sqlite3.DatabaseError as exc:
            raise self._unusable(exc) from exc

    def list_volumes(self) -> list[Volume]:
        try:
            ids = [r[0] for r in self.conn.execute("SELECT volume_id FROM volumes ORDER BY volume_id")]
            return [v for v in (self._load(i) for i in ids) if v is not None]
        except sqlite3.DatabaseError as exc:
            raise self._unusable(exc) from exc

    def update(
        self, volume_id: str, change: t.Callable[[Volume | None], Volume | None]
    ) -> tuple[Volume | None, Volume | None]:
        # The write lock before the read (BEGIN IMMEDIATE in update_many): the
        # read is the state the write replaces, whatever other processes do.
        return self.update_many({volume_id: change})[volume_id]

    def update_many(
        self, changes: t.Mapping[str, t.Callable[[Volume | None], Volume | None]]
    ) -> dict[str, tuple[Volume | None, Volume | None]]:
        """All changes in one ``BEGIN IMMEDIATE`` transaction: all or nothing."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise BackendError(
                f"sqlite_path: {self.path} stayed locked by another writer ({exc}); nothing was changed, try again"
            ) from exc
        except sqlite3.DatabaseError as exc:
            raise self._unusable(exc) from exc
        out: dict[str, tuple[Volume | None, Volume | None]] = {}
        try:
            for vid, change in changes.items():
                before = self._load(vid)
                after = change(before)
                if not same(before, after):
                    self._store(vid, after)
                out[vid] = (before, after)
            self.conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            self._rollback()
            raise self._unusable(exc) from exc
        except BaseException:
            self._rollback()
            raise
        return out

    def _rollback(self) -> None:
        # A failed statement may have ended the transaction already.
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()
