"""The collector's SQLite layer: migrations, WAL, the group-commit writer."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from collector import store
from collector.store import Record, StoreError


def record(report_id: str, host: str = "h1", status: str = "pass") -> Record:
    return Record(report_id, host, status, 60.0, b'{"x": 1}')


def test_open_creates_directories_migrates_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c.db"
    conn = store.open_db(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"reports", "hosts"} <= tables
    finally:
        conn.close()
    # opening again is a no-op migration and keeps the data
    conn = store.open_db(path, "normal")
    try:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert store.migrate(conn) == store.SCHEMA_VERSION
    finally:
        conn.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version={store.SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this collector"):
        store.open_db(path)


def test_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=str(path)):
        store.open_db(path)


async def test_writer_groups_and_reports_duplicates(tmp_path: Path) -> None:
    conn = store.open_db(tmp_path / "w.db")
    sizes: list[int] = []
    writer = store.Writer(conn, asyncio.get_running_loop(), lambda s: sizes.append(s.reports))
    writer.start()
    try:
        ids = [f"id-{i}" for i in range(50)]
        results = await asyncio.gather(
            *(writer.submit(record(i, f"h{n % 3}")) for n, i in enumerate(ids))
        )
        assert results == [True] * 50
        assert sum(sizes) == 50 and len(sizes) < 50  # submitted together, committed in groups
        again = await asyncio.gather(writer.submit(record("id-0")), writer.submit(record("new")))
        assert again == [False, True]
        hosts = await writer.call(lambda c: c.execute("SELECT COUNT(*) FROM hosts").fetchone()[0])
        assert hosts == 3  # one row per host: h0, h1, h2
    finally:
        await writer.stop()


async def test_a_failed_commit_fails_the_group_and_the_writer_goes_on(tmp_path: Path) -> None:
    conn = store.open_db(tmp_path / "f.db")
    writer = store.Writer(conn, asyncio.get_running_loop())
    writer.start()
    try:
        await writer.call(lambda c: c.execute("PRAGMA query_only=1"))
        with pytest.raises(StoreError, match="readonly"):
            await writer.submit(record("r1"))
        await writer.call(lambda c: c.execute("PRAGMA query_only=0"))
        assert await writer.submit(record("r1")) is True
    finally:
        await writer.stop()


async def test_stop_commits_what_was_submitted(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    writer = store.Writer(store.open_db(path), asyncio.get_running_loop())
    writer.start()
    futures = [writer.submit(record(f"s{i}")) for i in range(20)]
    await writer.stop()
    assert all(f.done() and f.result() is True for f in futures)
    with pytest.raises(StoreError, match="shutting down"):
        await writer.submit(record("late"))
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0] == 20
