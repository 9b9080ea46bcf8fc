"""The SQLite backend: one file, WAL, one machine (the default ``[store] url``).

With several worker processes (``workers > 1``) each has its own writer; they take turns on an
exclusive ``flock`` of ``<db>.lock`` around every transaction. SQLite's own locking would keep
them correct too, but a writer that finds the database locked sleeps in its busy handler
(1, 2, 5, 10 ms ...) instead of waking when the lock is free.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from collector.store import Cursor, StoreError


class SqliteConn:
    """sqlite3 already speaks ``?``; this adds the transaction verbs of :class:`store.Conn`."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.raw = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self.raw.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.raw.executemany(sql, rows)

    def begin(self) -> None:
        # IMMEDIATE: take the write lock now; a deferred transaction that must upgrade
        # can fail with SQLITE_BUSY at once, without waiting in the busy handler
        self.raw.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.raw.execute("COMMIT")

    def rollback(self) -> None:
        self.raw.execute("ROLLBACK")

    @property
    def in_transaction(self) -> bool:
        return self.raw.in_transaction

    def close(self) -> None:
        self.raw.close()


def connect(path: Path, synchronous: str = "full", readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
        )
    else:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class SqliteBackend:
    dialect = "sqlite"

    def __init__(self, path: Path, synchronous: str = "full", shared: bool = False) -> None:
        """``shared``: other processes write this file too (workers): take turns on a flock."""
        self.path = path
        self.synchronous = synchronous
        self._lock_path = path.with_name(path.name + ".lock") if shared else None
        self._lock_fd: int | None = None
        self._fd_lock = threading.Lock()

    def describe(self) -> str:
        return str(self.path)

    def connect(self) -> SqliteConn:
        """Create the file and its directory if missing and switch to WAL."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return SqliteConn(connect(self.path, self.synchronous))
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: {e}") from None
        except OSError as e:
            raise StoreError(f"{self.path}: {e.strerror or e}") from None

    def reader(self) -> SqliteConn:
        return SqliteConn(connect(self.path, readonly=True))

    def schema_version(self, conn: Any) -> int:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])

    def set_schema_version(self, conn: Any, version: int) -> None:
        conn.execute(f"PRAGMA user_version={int(version)}")

    def migration_lock(self, conn: Any) -> None:
        """BEGIN IMMEDIATE already holds the database's only write lock."""

    @contextlib.contextmanager
    def write_turn(self) -> Iterator[None]:
        if self._lock_path is None:
            yield
            return
        with self._fd_lock:
            if self._lock_fd is None:
                self._lock_fd = os.open(
                    self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
            fd = self._lock_fd
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocks without the GIL
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def try_job(self, conn: Any, name: str) -> bool:
        """One machine: the process that runs retention (worker 0) is chosen by the caller."""
        return True

    def end_job(self, conn: Any, name: str) -> None:
        pass

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
