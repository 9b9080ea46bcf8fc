"""The durable spool: every report is committed to SQLite before it is sent.

WAL with ``synchronous=FULL`` so a committed report survives power loss; a row is
deleted only after the collector answered 2xx. Reports the collector rejects for
good (400/413/422) move to ``dead_letters``. The spool is bounded by count and
bytes: when full the oldest reports are dropped and counted, and the count since
the last delivery is kept in ``meta`` so it survives a restart.

A file SQLite finds damaged (``PRAGMA quick_check`` at open, or SQLITE_CORRUPT /
SQLITE_NOTADB in use; see ``is_corrupt``) is for the caller to move aside with
``quarantine`` and replace with a fresh spool.

All methods are blocking (fsync); the daemon calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SPOOL_FILE = "spool.sqlite3"
DEAD_LETTER_KEEP = 1000  # dead letters are for inspection; keep the newest this many
# SQLite's primary result codes for a damaged file (the extended codes share the low byte).
# SQLITE_CORRUPT and SQLITE_NOTADB (the sqlite3 module names them only from Python 3.11 on).
_CORRUPT_CODES = frozenset({11, 26})
# Python 3.10's exceptions carry no ``sqlite_errorcode``: SQLite's own texts for those codes.
_CORRUPT_TEXTS = ("database disk image is malformed", "file is not a database")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    report_id TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL,
    size INTEGER NOT NULL,
    spooled_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    report_id TEXT NOT NULL,
    body BLOB NOT NULL,
    http_status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    spooled_at REAL NOT NULL,
    dead_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class SpoolCorrupt(sqlite3.DatabaseError):
    """``PRAGMA quick_check`` found the spool file damaged."""


def is_corrupt(e: BaseException) -> bool:
    """True when ``e`` says the spool file is damaged (not full, locked or read-only)."""
    if isinstance(e, SpoolCorrupt):
        return True
    if not isinstance(e, sqlite3.DatabaseError):
        return False
    code = getattr(e, "sqlite_errorcode", None)
    if code is None:  # Python 3.10
        return any(text in str(e) for text in _CORRUPT_TEXTS)
    return code & 0xFF in _CORRUPT_CODES


def count_damaged(path: Path) -> int | None:
    """How many reports a damaged spool seems to hold, when SQLite can still say."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        (n,) = db.execute("SELECT COUNT(*) FROM reports").fetchone()
        return int(n)
    except sqlite3.Error:
        return None
    finally:
        db.close()


def quarantine(path: Path, now: float | None = None) -> Path:
    """Move a damaged spool (and its -wal/-shm files) aside under a timestamped name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, target.with_name(target.name + suffix))
    os.replace(path, target)
    return target


@dataclass(frozen=True)
class Spooled:
    seq: int
    report_id: str
    body: bytes
    attempts: int


@dataclass(frozen=True)
class Depth:
    reports: int
    bytes: int
    dead_letters: int


class Spool:
    """A bounded FIFO of report bodies (JSON bytes) in ``state_dir/spool.sqlite3``."""

    def __init__(self, path: Path, max_reports: int, max_bytes: int) -> None:
        self.path = path
        self.max_reports = max_reports
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # isolation_level=None: explicit BEGIN IMMEDIATE ... COMMIT, one fsync per change.
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            # Every page, without the index cross-checks of integrity_check: a damaged
            # page found now is a fresh spool, not a traceback at the first read.
            problems = [str(r[0]) for r in self._db.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise SpoolCorrupt("; ".join(problems)[:500])
            self._db.executescript(_SCHEMA)
            path.chmod(0o600)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def set_bounds(self, max_reports: int, max_bytes: int) -> None:
        with self._lock:
            self.max_reports, self.max_bytes = max_reports, max_bytes

    def add(self, report_id: str, body: bytes) -> int:
        """Commit a report; returns how many old reports the bounds dropped to make room."""
        with self._lock, self._tx():
            self._db.execute(
                "INSERT OR IGNORE INTO reports (report_id, body, size, spooled_at)"
                " VALUES (?, ?, ?, ?)",
                (report_id, body, len(body), time.time()),
            )
            dropped = self._enforce_bounds()
            if dropped:
                self._bump("dropped_since_delivery", dropped)
            return dropped

    def _enforce_bounds(self) -> int:
        dropped = 0
        while True:
            count, size = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM reports"
            ).fetchone()
            # The newest report is always kept, even when it alone exceeds max_bytes.
            if count <= 1 or (count <= self.max_reports and size <= self.max_bytes):
                return dropped
            # Over the count: drop the excess at once; over in bytes: one at a time.
            n = min(count - self.max_reports if count > self.max_reports else 1, count - 1)
            self._db.execute(
                "DELETE FROM reports WHERE seq IN (SELECT seq FROM reports ORDER BY seq LIMIT ?)",
                (n,),
            )
            dropped += n

    def oldest(self) -> Spooled | None:
        with self._lock:
            row = self._db.execute(
                "SELECT seq, report_id, body, attempts FROM reports ORDER BY seq LIMIT 1"
            ).fetchone()
        return Spooled(int(row[0]), str(row[1]), bytes(row[2]), int(row[3])) if row else None

    def oldest_batch(self, limit: int, max_bytes: int, after: int = 0) -> list[Spooled]:
        """Up to ``limit`` oldest reports after seq ``after``, at most ``max_bytes`` of them
        (at least one)."""
        with self._lock:
            sizes = self._db.execute(
                "SELECT seq, size FROM reports WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
            ).fetchall()
            if not sizes:
                return []
            last, total = sizes[0][0], 0
            for seq, size in sizes:
                total += size
                if total > max_bytes and seq != sizes[0][0]:
                    break
                last = seq
            rows = self._db.execute(
                "SELECT seq, report_id, body, attempts FROM reports"
                " WHERE seq > ? AND seq <= ? ORDER BY seq",
                (after, last),
            ).fetchall()
        return [Spooled(int(r[0]), str(r[1]), bytes(r[2]), int(r[3])) for r in rows]

    def delivered(self, seq: int, dropped_reported: int) -> None:
        """Delete a report the collector accepted; it carried ``dropped_reported``."""
        self.delivered_many((seq,), dropped_reported)

    def delivered_many(self, seqs: Sequence[int], dropped_reported: int) -> None:
        """Delete reports the collector accepted, in one transaction (one fsync)."""
        with self._lock, self._tx():
            self._db.executemany("DELETE FROM reports WHERE seq = ?", [(s,) for s in seqs])
            if dropped_reported:
                self._bump("dropped_since_delivery", -dropped_reported)

    def failed(self, seq: int, error: str) -> None:
        with self._lock, self._tx():
            self._db.execute(
                "UPDATE reports SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
                (error[:500], seq),
            )

    def dead_letter(self, seq: int, http_status: int, reason: str) -> int:
        """Move a report the collector rejected for good out of the queue; how many of the
        oldest dead letters the DEAD_LETTER_KEEP bound deleted to make room."""
        with self._lock, self._tx():
            self._db.execute(
                "INSERT INTO dead_letters"
                " (report_id, body, http_status, reason, spooled_at, dead_at)"
                " SELECT report_id, body, ?, ?, spooled_at, ? FROM reports WHERE seq = ?",
                (http_status, reason[:2000], time.time(), seq),
            )
            self._db.execute("DELETE FROM reports WHERE seq = ?", (seq,))
            cur = self._db.execute(
                "DELETE FROM dead_letters WHERE seq <= (SELECT MAX(seq) FROM dead_letters) - ?",
                (DEAD_LETTER_KEEP,),
            )
            return max(cur.rowcount, 0)

    def add_dropped(self, n: int) -> None:
        """Count reports lost outside the bounds (a damaged spool replaced by this one)."""
        with self._lock, self._tx():
            self._bump("dropped_since_delivery", n)

    def dropped_since_delivery(self) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM meta WHERE key = 'dropped_since_delivery'"
            ).fetchone()
        return max(int(row[0]), 0) if row else 0

    def depth(self) -> Depth:
        with self._lock:
            count, size = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM reports"
            ).fetchone()
            (dead,) = self._db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()
        return Depth(int(count), int(size), int(dead))

    def _bump(self, key: str, delta: int) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, MAX(?, 0))"
            " ON CONFLICT(key) DO UPDATE SET value = MAX(value + ?, 0)",
            (key, delta, delta),
        )

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
