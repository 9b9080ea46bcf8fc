"""SQLite storage: schema migrations, the group-commit writer thread and read queries.

One thread owns the only write connection. Ingest requests put a record on its queue and
await a future; the thread takes everything queued, inserts it in one transaction, commits
(one WAL fsync for the whole group with ``synchronous=FULL``) and then resolves every future
of the group with a single hop back to the event loop. So a 202 always follows a commit, and
the cost of a commit is shared by all the requests that arrived while the previous one ran.
Reads use their own connections in a small thread pool (WAL lets them run beside the writer).

With several worker processes (``workers > 1``) each has its own writer; they take turns on an
exclusive ``flock`` of ``<db>.lock`` around every transaction. SQLite's own locking would keep
them correct too, but a writer that finds the database locked sleeps in its busy handler
(1, 2, 5, 10 ms ...) instead of waking when the lock is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from collector import summary

T = TypeVar("T")

# Each entry moves the schema from version i to i+1 (PRAGMA user_version); never edit one
# that has shipped, append a new one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE reports (
        id          INTEGER PRIMARY KEY,
        report_id   TEXT NOT NULL UNIQUE,
        host_id     TEXT NOT NULL,
        received_at REAL NOT NULL,
        status      TEXT NOT NULL,
        body        BLOB NOT NULL
    );
    CREATE INDEX reports_by_host ON reports(host_id, id);
    CREATE INDEX reports_by_received ON reports(received_at);
    CREATE TABLE hosts (
        host_id    TEXT PRIMARY KEY,
        latest_id  INTEGER NOT NULL,
        last_seen  REAL NOT NULL,
        status     TEXT NOT NULL,
        interval_s REAL
    ) WITHOUT ROWID;
    """,
    summary.SCHEMA,  # the fleet views' summary rows (collector/summary.py)
)
SCHEMA_VERSION = len(MIGRATIONS)

# ON CONFLICT: the unique report_id is what makes ingest idempotent, also across workers
# (the repeat check before it runs inside the same write transaction).
_INSERT = (
    "INSERT INTO reports(report_id, host_id, received_at, status, body) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT(report_id) DO NOTHING"
)
_IN_CHUNK = 500  # report_ids per IN (...) query, well under SQLite's 32766 variables
# A host's latest report by report_id: executemany() gives no row ids back.
_UPSERT_HOST = (
    "INSERT INTO hosts(host_id, latest_id, last_seen, status, interval_s) "
    "VALUES (?1, (SELECT id FROM reports WHERE report_id = ?2), ?3, ?4, ?5) "
    "ON CONFLICT(host_id) DO UPDATE SET latest_id = excluded.latest_id, "
    "last_seen = excluded.last_seen, status = excluded.status, interval_s = excluded.interval_s"
)
# NOT EXISTS on the hosts primary key: a lookup per candidate row, not a scan of all hosts
_PRUNE = (
    "DELETE FROM reports WHERE id IN ("
    " SELECT r.id FROM reports r WHERE r.received_at < ?"
    " AND NOT EXISTS (SELECT 1 FROM hosts h WHERE h.host_id = r.host_id AND h.latest_id = r.id)"
    " LIMIT ?)"
)


class StoreError(Exception):
    """The database cannot be opened or migrated."""


@dataclass(frozen=True, slots=True)
class Record:
    report_id: str
    host_id: str
    status: str
    interval_s: float | None
    body: bytes
    # what the fleet views keep of the report (None: the host's summary row is not updated)
    brief: summary.HostSummary | None = None


@dataclass(frozen=True)
class HostRow:
    host_id: str
    latest_id: int
    last_seen: float
    status: str
    interval_s: float | None
    body: bytes


@dataclass(frozen=True)
class ReportRow:
    id: int
    received_at: float
    status: str
    body: bytes


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


def open_db(path: Path, synchronous: str = "full") -> sqlite3.Connection:
    """Create the file and its directory if missing, switch to WAL and migrate."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(path, synchronous)
        migrate(conn)
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path}: {e}") from None
    except OSError as e:
        raise StoreError(f"{path}: {e.strerror or e}") from None
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations, each in its own transaction; return the new version."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"database schema version {version} is newer than this collector "
            f"understands ({SCHEMA_VERSION}); upgrade acme-preflight-collector"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        script = MIGRATIONS[target - 1]
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            if target == 2:  # hosts stored before the summary tables existed
                summary.backfill(
                    conn,
                    conn.execute(
                        "SELECT h.host_id, h.status, h.last_seen, h.interval_s, r.body "
                        "FROM hosts h JOIN reports r ON r.id = h.latest_id"
                    ).fetchall(),
                )
            conn.execute(f"PRAGMA user_version={target}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return SCHEMA_VERSION


# ---------------------------------------------------------------- writer


@dataclass
class BatchStats:
    reports: int
    seconds: float


_Job = tuple[Record, "asyncio.Future[bool]"]


class Writer:
    """The single writer thread with group commit.

    Requests are grouped on the event loop, not in the thread: while one group is being
    committed the next one collects in a list, and it is handed over in one piece when the
    commit is done. One thread wake-up per group (instead of per report) matters: every
    hand-over costs a round of GIL contention between the loop and the writer.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        loop: asyncio.AbstractEventLoop,
        on_batch: Callable[[BatchStats], None] | None = None,
        max_batch: int = 4096,
        clock: Callable[[], float] = time.time,
        lock_path: Path | None = None,
    ) -> None:
        self._conn = conn
        self._lock_path = lock_path
        self._lock_fd: int | None = None
        self._clock = clock
        self._loop = loop
        self._on_batch = on_batch
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="collector-writer", daemon=True)
        self._stopping = False
        self._pending: list[_Job] = []
        self._in_flight = False  # a group is being committed
        self._flush_scheduled = False

    def start(self) -> None:
        self._thread.start()

    def submit(self, record: Record) -> asyncio.Future[bool]:
        """Queue a report; the future is True when stored, False for a repeated report_id."""
        fut: asyncio.Future[bool] = self._loop.create_future()
        if self._stopping:
            fut.set_exception(StoreError("the collector is shutting down"))
            return fut
        self._pending.append((record, fut))
        if not self._in_flight and not self._flush_scheduled:
            # let every request handled in this loop iteration join the group
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._in_flight or not self._pending:
            return
        group = self._pending[: self._max_batch]
        del self._pending[: self._max_batch]
        self._in_flight = True
        self._queue.put(group)

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the writer thread between two groups (maintenance)."""
        fut: asyncio.Future[T] = self._loop.create_future()
        self._queue.put((fn, fut))
        return await fut

    async def stop(self) -> None:
        """Commit everything submitted so far, then close the connection."""
        self._stopping = True
        while self._pending or self._in_flight:
            self._flush()
            await asyncio.sleep(0.01)
        self._queue.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """This process's turn to write, when other workers share the database."""
        if self._lock_fd is None:
            yield
            return
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)  # blocks without the GIL
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _run(self) -> None:
        try:
            if self._lock_path is not None:
                self._lock_fd = os.open(
                    self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
            while True:
                item = self._queue.get()
                if item is None:
                    break
                if isinstance(item, list):
                    self._commit(item)
                else:
                    self._call(*item)
        finally:
            self._conn.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)

    def _commit(self, jobs: Sequence[_Job]) -> None:
        t0 = time.perf_counter()
        results: list[bool] = []
        error: BaseException | None = None
        try:
            with self._turn():
                self._insert(jobs, results)
        except BaseException as e:
            error = e
        stats = BatchStats(len(jobs), time.perf_counter() - t0)
        self._loop.call_soon_threadsafe(self._resolve, jobs, results, error, stats)

    def _insert(
        self,
        jobs: Sequence[_Job],
        results: list[bool],
    ) -> None:
        """Insert and commit one group; ``results`` gets True (stored) or False (repeat)."""
        conn = self._conn
        now = self._clock()  # taken in our turn: received_at follows commit order
        latest: dict[str, tuple[str, str, float, str, float | None]] = {}
        fresh: dict[str, summary.Fresh] = {}
        try:
            # IMMEDIATE: take the write lock now; a deferred transaction that must upgrade
            # can fail with SQLITE_BUSY at once, without waiting in the busy handler
            conn.execute("BEGIN IMMEDIATE")
            # Repeats first, in one query (usually none), so that the inserts can go in one
            # executemany: per-row execute() calls cost the writer the GIL once per report.
            ids = [rec.report_id for rec, _ in jobs]
            seen: set[str] = set()
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start : start + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT report_id FROM reports WHERE report_id IN ({marks})"  # noqa: S608
                seen.update(row[0] for row in conn.execute(sql, chunk))
            rows: list[tuple[str, str, float, str, bytes]] = []
            for rec, _ in jobs:
                if rec.report_id in seen:  # stored before, or earlier in this group
                    results.append(False)
                    continue
                seen.add(rec.report_id)
                results.append(True)
                rows.append((rec.report_id, rec.host_id, now, rec.status, rec.body))
                latest[rec.host_id] = (rec.host_id, rec.report_id, now, rec.status, rec.interval_s)
                if rec.brief is not None:
                    fresh[rec.host_id] = summary.Fresh(
                        rec.host_id, rec.report_id, rec.status, rec.interval_s, rec.brief
                    )
                else:
                    fresh.pop(rec.host_id, None)
            if rows:
                conn.executemany(_INSERT, rows)
                conn.executemany(_UPSERT_HOST, latest.values())
                summary.write(conn, list(fresh.values()), now)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _resolve(
        self,
        jobs: Sequence[_Job],
        results: list[bool],
        error: BaseException | None,
        stats: BatchStats,
    ) -> None:
        for i, (_, fut) in enumerate(jobs):
            if fut.done():  # the request was cancelled (client went away): nothing to tell
                continue
            if error is None:
                fut.set_result(results[i])
            else:
                fut.set_exception(StoreError(str(error)))
        if error is None and self._on_batch is not None:
            self._on_batch(stats)
        self._in_flight = False
        if self._pending:
            self._flush()

    def _call(self, fn: Callable[[sqlite3.Connection], Any], fut: asyncio.Future[Any]) -> None:
        try:
            with self._turn():
                try:
                    result = fn(self._conn)
                finally:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
        except BaseException as e:
            self._loop.call_soon_threadsafe(_set_exception, fut, e)
        else:
            self._loop.call_soon_threadsafe(_set_result, fut, result)


def _set_result(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def prune_chunk(conn: sqlite3.Connection, cutoff: float, limit: int = 500) -> int:
    """Delete up to ``limit`` reports received before ``cutoff``, never a host's latest."""
    conn.execute("BEGIN IMMEDIATE")
    n = conn.execute(_PRUNE, (cutoff, limit)).rowcount
    conn.execute("COMMIT")
    return int(n)


# ---------------------------------------------------------------- readers


class Reader:
    """Read-only queries on a small thread pool, one connection per thread."""

    def __init__(self, path: Path, threads: int = 2) -> None:
        self._path = path
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="collector-reader")

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self._path, readonly=True)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self._conn()))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()


def hosts(conn: sqlite3.Connection) -> list[HostRow]:
    rows = conn.execute(
        "SELECT h.host_id, h.latest_id, h.last_seen, h.status, h.interval_s, r.body "
        "FROM hosts h JOIN reports r ON r.id = h.latest_id ORDER BY h.host_id"
    ).fetchall()
    return [HostRow(*row) for row in rows]


def host(conn: sqlite3.Connection, host_id: str) -> HostRow | None:
    row = conn.execute(
        "SELECT h.host_id, h.latest_id, h.last_seen, h.status, h.interval_s, r.body "
        "FROM hosts h JOIN reports r ON r.id = h.latest_id WHERE h.host_id = ?",
        (host_id,),
    ).fetchone()
    return HostRow(*row) if row else None


def host_reports(
    conn: sqlite3.Connection, host_id: str, limit: int, before: int | None
) -> list[ReportRow]:
    """Newest first; ``before`` is the ``id`` cursor of the last row of the previous page."""
    if before is None:
        rows = conn.execute(
            "SELECT id, received_at, status, body FROM reports WHERE host_id = ? "
            "ORDER BY id DESC LIMIT ?",
            (host_id, limit),
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT id, received_at, status, body FROM reports WHERE host_id = ? AND id < ? "
            "ORDER BY id DESC LIMIT ?",
            (host_id, before, limit),
        ).fetchall()
    return [ReportRow(*row) for row in rows]


def host_counts(
    conn: sqlite3.Connection, now: float, stale_intervals: float, default_interval: float
) -> tuple[dict[str, int], int]:
    """Hosts by latest status, and how many are stale."""
    counts: dict[str, int] = {}
    stale = 0
    for status, n, s in conn.execute(
        "SELECT status, COUNT(*), SUM(last_seen < ? - ? * COALESCE(interval_s, ?)) "
        "FROM hosts GROUP BY status",
        (now, stale_intervals, default_interval),
    ):
        counts[str(status)] = int(n)
        stale += int(s or 0)
    return counts, stale
