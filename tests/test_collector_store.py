"""The collector's store on both backends (SQLite, a real PostgreSQL): migrations, the
group-commit writer, idempotency per (host_id, report_id), the new-host cap, host retention."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from collector import store, summary
from collector.store import Outcome, Record, StoreError
from tests.collectorutil import report
from tests.lab.plugin import StoreTarget

STORED, DUPLICATE, CONFLICT, HOST_LIMIT = (
    Outcome.STORED,
    Outcome.DUPLICATE,
    Outcome.CONFLICT,
    Outcome.HOST_LIMIT,
)


def record(
    report_id: str,
    host: str = "h1",
    status: str = "pass",
    body: bytes = b'{"x": 1}',
    creator: str | None = None,
) -> Record:
    return Record(report_id, host, status, 60.0, body, creator=creator)


def backend_of(target: StoreTarget, **kw: Any) -> store.Backend:
    return store.open_backend(target.url, password_file=target.password_file, **kw)


@pytest.fixture
async def writer_of(
    store_target: StoreTarget,
) -> AsyncIterator[Callable[..., store.Writer]]:
    """Started writers on a migrated database of each backend; stopped at the end."""
    backend = backend_of(store_target)
    store.prepare(backend)
    started: list[store.Writer] = []

    def make(**kw: Any) -> store.Writer:
        w = store.Writer(backend, asyncio.get_running_loop(), **kw)
        w.start()
        started.append(w)
        return w

    yield make
    for w in started:
        await w.stop()


def test_open_creates_directories_migrates_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c.db"
    backend = store.open_backend(str(path))
    assert store.prepare(backend) == store.SCHEMA_VERSION
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"reports", "hosts", "counters"} <= tables
    c = store.open_backend(str(path), synchronous="normal").connect()
    try:
        assert c.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    finally:
        c.close()
    # opening again is a no-op migration
    assert store.prepare(backend) == store.SCHEMA_VERSION


def test_prepare_twice_and_a_newer_schema_is_refused(store_target: StoreTarget) -> None:
    backend = backend_of(store_target)
    assert store.prepare(backend) == store.SCHEMA_VERSION
    assert store.prepare(backend) == store.SCHEMA_VERSION
    conn = backend.connect()
    try:
        conn.begin()
        backend.set_schema_version(conn, store.SCHEMA_VERSION + 1)
        conn.commit()
    finally:
        conn.close()
    with pytest.raises(StoreError, match="newer than this collector"):
        store.prepare(backend)


def test_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=str(path)):
        store.prepare(store.open_backend(str(path)))


def test_a_wrong_password_is_a_store_error_without_the_password(
    postgres: Any, tmp_path: Path
) -> None:
    wrong = tmp_path / "pw"
    wrong.write_text("not-the-password-0123\n")
    backend = store.open_backend(postgres.url("postgres"), password_file=wrong)
    with pytest.raises(StoreError, match="password authentication failed") as e:
        store.prepare(backend)
    assert "not-the-password" not in str(e.value)
    missing = store.open_backend(postgres.url("postgres"), password_file=tmp_path / "none")
    with pytest.raises(StoreError, match="password_file"):
        store.prepare(missing)


async def test_writer_groups_and_reports_duplicates(
    writer_of: Callable[..., store.Writer],
) -> None:
    sizes: list[int] = []
    writer = writer_of(on_batch=lambda s: sizes.append(s.reports))
    ids = [f"id-{i}" for i in range(50)]
    results = await asyncio.gather(
        *(writer.submit(record(i, f"h{n % 3}")) for n, i in enumerate(ids))
    )
    assert results == [STORED] * 50
    assert sum(sizes) == 50 and len(sizes) < 50  # submitted together, committed in groups
    again = await asyncio.gather(
        writer.submit(record("id-0", "h0")), writer.submit(record("new", "h0"))
    )
    assert again == [DUPLICATE, STORED]
    hosts = await writer.call(lambda c: c.execute("SELECT COUNT(*) FROM hosts").fetchone()[0])
    assert hosts == 3  # one row per host: h0, h1, h2


async def test_idempotency_is_per_host_and_a_different_body_is_a_conflict(
    writer_of: Callable[..., store.Writer],
) -> None:
    """Host A cannot pre-claim host B's report_id (issue 14 item 2)."""
    writer = writer_of()
    rid = "5f0c6f52-7d1e-4a43-9b8c-1e2d3c4b5a69"
    assert await writer.submit(record(rid, "host-a", body=b'{"from": "a"}')) is STORED
    # B's own report under the same id is stored, and is B's latest
    assert await writer.submit(record(rid, "host-b", body=b'{"from": "b"}')) is STORED
    assert await writer.submit(record(rid, "host-b", body=b'{"from": "b"}')) is DUPLICATE
    assert await writer.submit(record(rid, "host-b", body=b'{"other": 1}')) is CONFLICT
    # the same within one group: first stored, an identical repeat, a different body
    rid2 = "6f0c6f52-7d1e-4a43-9b8c-1e2d3c4b5a69"
    group = await asyncio.gather(
        writer.submit(record(rid2, "host-c", body=b"1")),
        writer.submit(record(rid2, "host-c", body=b"1")),
        writer.submit(record(rid2, "host-c", body=b"2")),
    )
    assert group == [STORED, DUPLICATE, CONFLICT]

    def latest(conn: store.Conn) -> dict[str, bytes]:
        rows = conn.execute(
            "SELECT h.host_id, r.body FROM hosts h JOIN reports r ON r.id = h.latest_id"
        ).fetchall()
        return {h: bytes(b) for h, b in rows}

    assert await writer.call(latest) == {
        "host-a": b'{"from": "a"}',
        "host-b": b'{"from": "b"}',
        "host-c": b"1",
    }


async def test_the_fleet_summary_is_written_with_the_host(
    writer_of: Callable[..., store.Writer],
) -> None:
    doc = report("web-9", {"privileges": "fail"}, hostname="web9")
    writer = writer_of()
    rec = Record(
        doc["report_id"],
        "web-9",
        "fail",
        None,
        json.dumps(doc).encode(),
        summary.HostSummary.from_report(doc),
    )
    assert await writer.submit(rec) is STORED
    st = summary.Staleness(0.0, 3, 300)
    line = await writer.call(lambda c: summary.host_line(c, "web-9", st))
    assert line is not None
    assert (line.report_id, line.status, line.hostname) == (doc["report_id"], "fail", "web9")
    groups, _ = await writer.call(lambda c: summary.problems(c, 10))
    assert [(g.check, g.hosts) for g in groups] == [("privileges", 1)]


async def test_new_host_cap_per_token(writer_of: Callable[..., store.Writer]) -> None:
    """One fleet-wide token creates at most N new host_ids an hour; known hosts go on."""
    now = [1_000_000.0]
    writer = writer_of(new_hosts_per_hour=3, clock=lambda: now[0])
    first = await asyncio.gather(
        *(writer.submit(record(f"a{i}", f"fake-{i}", creator="tok-a")) for i in range(5))
    )
    assert first == [STORED] * 3 + [HOST_LIMIT] * 2
    # at the cap: a known host still reports, another token still creates, no token: no cap
    assert await writer.submit(record("a9", "fake-0", creator="tok-a")) is STORED
    assert await writer.submit(record("b0", "other", creator="tok-b")) is STORED
    assert await writer.submit(record("c0", "bound", creator=None)) is STORED
    assert await writer.submit(record("a10", "fake-7", creator="tok-a")) is HOST_LIMIT
    assert await writer.call(lambda c: store.host(c, "fake-3")) is None
    now[0] += 3601  # an hour later the token may create again
    assert await writer.submit(record("a11", "fake-7", creator="tok-a")) is STORED


async def test_retire_hosts_not_seen_and_count_them(
    writer_of: Callable[..., store.Writer],
) -> None:
    now = [1_000_000.0]
    writer = writer_of(clock=lambda: now[0])
    await writer.submit(record("old", "gone"))
    now[0] += 10 * 86400
    await writer.submit(record("new", "here"))
    retired = await writer.call(lambda c: store.retire_hosts(c, now[0] - 86400))
    assert retired == 1
    assert [h.host_id for h in await writer.call(store.hosts)] == ["here"]
    assert await writer.call(lambda c: store.counter(c, "hosts_retired")) == 1
    # its reports are no one's latest now: report retention may take them
    assert await writer.call(lambda c: store.prune_chunk(c, now[0] - 86400)) == 1
    assert await writer.call(lambda c: store.report_count(c)) == 1
    # a retired host that comes back is a host again
    assert await writer.submit(record("back", "gone")) is STORED
    assert len(await writer.call(store.hosts)) == 2


async def test_a_failed_commit_fails_the_group_and_the_writer_goes_on(
    writer_of: Callable[..., store.Writer],
) -> None:
    writer = writer_of()
    read_only = {
        True: {
            "sqlite": "PRAGMA query_only=1",
            "postgresql": "SET default_transaction_read_only=on",
        },
        False: {
            "sqlite": "PRAGMA query_only=0",
            "postgresql": "SET default_transaction_read_only=off",
        },
    }
    await writer.call(lambda c: c.execute(read_only[True][c.dialect]))
    with pytest.raises(StoreError, match=r"read.?only"):
        await writer.submit(record("r1"))
    await writer.call(lambda c: c.execute(read_only[False][c.dialect]))
    assert await writer.submit(record("r1")) is STORED


async def test_the_writer_reconnects_after_its_connection_is_killed(
    postgres: Any,
) -> None:
    """A PostgreSQL restart or failover: the group fails (503, the agent retries), the next
    group is written on a new connection."""
    db = postgres.create_database()
    backend = store.open_backend(postgres.url(db), password_file=postgres.password_file)
    store.prepare(backend)
    writer = store.Writer(backend, asyncio.get_running_loop())
    writer.start()
    try:
        assert await writer.submit(record("k1")) is STORED
        pid = await writer.call(lambda c: c.execute("SELECT pg_backend_pid()").fetchone()[0])
        postgres.psql(f"SELECT pg_terminate_backend({int(pid)})", db)
        with pytest.raises(StoreError):
            await writer.submit(record("k2"))
        assert await writer.submit(record("k2")) is STORED
        assert await writer.call(lambda c: store.report_count(c)) == 2
    finally:
        await writer.stop()


async def test_stop_commits_what_was_submitted(store_target: StoreTarget) -> None:
    backend = backend_of(store_target)
    store.prepare(backend)
    writer = store.Writer(backend, asyncio.get_running_loop())
    writer.start()
    futures = [writer.submit(record(f"s{i}")) for i in range(20)]
    await writer.stop()
    assert all(f.done() and f.result() is STORED for f in futures)
    with pytest.raises(StoreError, match="shutting down"):
        await writer.submit(record("late"))
    conn = backend.reader()
    try:
        assert store.report_count(conn) == 20
    finally:
        conn.close()


def test_migrating_a_version_1_database_keeps_its_reports(tmp_path: Path) -> None:
    """A collector upgraded in place: v1's unique report_id becomes (host_id, report_id)."""
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(str(store.MIGRATIONS[0]))
        body = json.dumps(report("old", hostname="old-web"))
        conn.execute(
            "INSERT INTO reports(report_id, host_id, received_at, status, body) "
            "VALUES ('r1', 'old', 5.0, 'pass', ?)",
            (body.encode(),),
        )
        conn.execute("INSERT INTO hosts VALUES ('old', 1, 5.0, 'pass', 60)")
        conn.execute("PRAGMA user_version=1")
    backend = store.open_backend(str(path))
    assert store.prepare(backend) == store.SCHEMA_VERSION
    conn2 = backend.connect()
    try:
        row = store.host(conn2, "old")
        assert row is not None and (row.last_seen, row.body) == (5.0, body.encode())
        conn2.begin()
        out = store.write_group(
            conn2, [record("r1", "other-host"), record("r1", "old", body=body.encode())], 6.0
        )
        conn2.commit()
        assert out == [STORED, DUPLICATE]  # the same report_id, another host; the old one kept
    finally:
        conn2.close()


def test_postgresql_columns_are_as_wide_as_sqlites(postgres: Any) -> None:
    """SQLite's INTEGER is 64-bit and REAL a double; PostgreSQL's are 32-bit and a float4
    (epoch seconds to the nearest ~2 minutes): the migrations are translated."""
    db = postgres.create_database()
    store.prepare(store.open_backend(postgres.url(db), password_file=postgres.password_file))
    out = postgres.psql(
        "SELECT table_name || '.' || column_name || '=' || data_type FROM "
        "information_schema.columns WHERE table_schema = 'public' ORDER BY 1",
        db,
    )
    types = dict(line.split("=", 1) for line in out.splitlines())
    assert types["reports.id"] == "bigint"
    assert types["hosts.latest_id"] == "bigint"
    assert types["hosts.last_seen"] == "double precision"
    assert types["host_summary.last_seen"] == "double precision"
    assert types["reports.body"] == "bytea"
    narrow = {c for c, t in types.items() if t in ("integer", "real")}
    assert narrow == {"schema_version.version"}  # a small number, not from the migrations
