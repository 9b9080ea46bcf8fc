"""The SQLite spool: durability settings, FIFO order, bounds, dead letters, the dropped count."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent.daemon.spool import DEAD_LETTER_KEEP, Spool


def make(tmp_path: Path, max_reports: int = 100, max_bytes: int = 10_000) -> Spool:
    return Spool(tmp_path / "spool.sqlite3", max_reports, max_bytes)


def test_wal_and_full_sync_and_private_file(tmp_path: Path) -> None:
    spool = make(tmp_path)
    try:
        assert spool._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert spool._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        spool.close()
    assert (tmp_path / "spool.sqlite3").stat().st_mode & 0o777 == 0o600


def test_oldest_first_and_survives_reopen(tmp_path: Path) -> None:
    spool = make(tmp_path)
    for i in range(3):
        assert spool.add(f"id-{i}", b'{"n": %d}' % i) == 0
    spool.add("id-1", b"again")  # the same report_id is spooled once
    spool.close()
    spool = make(tmp_path)
    first = spool.oldest()
    assert first is not None and first.report_id == "id-0" and first.body == b'{"n": 0}'
    spool.failed(first.seq, "boom")
    spool.delivered(first.seq, 0)
    second = spool.oldest()
    assert second is not None and second.report_id == "id-1" and second.attempts == 0
    assert spool.depth().reports == 2
    spool.close()


def test_count_bound_drops_oldest_and_counts_until_delivered(tmp_path: Path) -> None:
    spool = make(tmp_path, max_reports=2)
    dropped = [spool.add(f"id-{i}", b"{}") for i in range(5)]
    assert dropped == [0, 0, 1, 1, 1]
    assert spool.dropped_since_delivery() == 3
    spool.close()
    spool = make(tmp_path, max_reports=2)  # the count survives a restart
    assert spool.dropped_since_delivery() == 3
    oldest = spool.oldest()
    assert oldest is not None and oldest.report_id == "id-3"
    spool.delivered(oldest.seq, 3)
    assert spool.dropped_since_delivery() == 0
    spool.close()


def test_byte_bound_keeps_the_newest_even_when_it_alone_is_too_big(tmp_path: Path) -> None:
    spool = make(tmp_path, max_bytes=25)
    spool.add("a", b"x" * 10)
    spool.add("b", b"x" * 10)
    assert spool.add("c", b"x" * 10) == 1  # 30 > 25: "a" goes
    assert spool.depth().bytes == 20
    assert spool.add("huge", b"x" * 100) == 2
    d = spool.depth()
    assert (d.reports, d.bytes) == (1, 100)
    spool.close()


def test_dead_letter_moves_the_report(tmp_path: Path) -> None:
    spool = make(tmp_path)
    spool.add("bad", b'{"x": 1}')
    spool.add("good", b"{}")
    bad = spool.oldest()
    assert bad is not None
    spool.dead_letter(bad.seq, 422, "HTTP 422: schema")
    nxt = spool.oldest()
    assert nxt is not None and nxt.report_id == "good"
    assert spool.depth().dead_letters == 1
    spool.close()
    db = sqlite3.connect(tmp_path / "spool.sqlite3")
    assert db.execute(
        "SELECT report_id, body, http_status, reason FROM dead_letters"
    ).fetchall() == [("bad", b'{"x": 1}', 422, "HTTP 422: schema")]
    db.close()


def test_dead_letters_are_bounded(tmp_path: Path) -> None:
    spool = make(tmp_path, max_reports=10**6)
    for i in range(DEAD_LETTER_KEEP + 5):
        spool.add(f"r{i}", b"{}")
        item = spool.oldest()
        assert item is not None
        spool.dead_letter(item.seq, 400, "bad")
    assert spool.depth().dead_letters == DEAD_LETTER_KEEP
    spool.close()
