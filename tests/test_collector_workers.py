"""``serve --workers N``: several processes on one port (SO_REUSEPORT) and one database."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sqlite3
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector import store
from tests.collectorutil import TOKEN, report, server_process
from tests.test_collector_server import run_collector, tokens_file

INGEST = "/api/v1/reports"


def stored(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0])


async def post_all(
    url: str, bodies: Sequence[dict[str, Any]], connections: int, token: str = TOKEN
) -> list[int]:
    """Post every body at once over ``connections`` fresh keep-alive connections."""
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(body: dict[str, Any]) -> int:
            headers = {"Authorization": f"Bearer {token}"}
            async with http.post(f"{url}{INGEST}", json=body, headers=headers) as resp:
                await resp.read()
                return resp.status

        return list(await asyncio.gather(*(one(b) for b in bodies)))


def workers_of(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children()


def established(proc: psutil.Process, port: int) -> int:
    return sum(
        1
        for c in proc.net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
    )


async def metric(url: str, sample: str, **labels: str) -> float:
    # a fresh connection each time: any worker may answer
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise AssertionError(f"no {sample} {labels}")


async def test_workers_share_the_port_the_database_and_the_metrics(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    with server_process(
        "--tokens-file", tokens_file(tmp_path), "--db", db, "--workers", "2"
    ) as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        workers = workers_of(srv.proc.pid)
        assert len(workers) == 2
        reports = [report(f"host-{i % 9}") for i in range(120)]
        connector = aiohttp.TCPConnector(limit=24)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def one(body: dict[str, Any]) -> int:
                async with http.post(
                    f"{srv.url}{INGEST}", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
                ) as resp:
                    await resp.read()
                    return resp.status

            assert await asyncio.gather(*(one(r) for r in reports)) == [202] * 120
            # 24 keep-alive connections, hashed over the two workers' sockets: both serve
            # (all on one worker has probability 2 * 2**-24)
            assert all(established(w, port) > 0 for w in workers)
        # repeats, possibly to the other worker: acknowledged, not stored again
        assert await post_all(srv.url, reports[:30], 12) == [200] * 30
        assert stored(db) == 120
        # every scrape sums both workers, whichever one answers it
        p = "acme_preflight_collector_"
        for _ in range(6):
            total = f"{p}reports_received_total"
            assert await metric(srv.url, total, outcome="accepted") == 120
            assert await metric(srv.url, total, outcome="duplicate") == 30
            lat = f"{p}request_duration_seconds_count"
            assert await metric(srv.url, lat, handler="ingest") == 150
        async with aiohttp.ClientSession() as http, http.get(f"{srv.url}/api/v1/hosts") as resp:
            hosts = (await resp.json())["hosts"]
        assert sorted(h["host_id"] for h in hosts) == sorted(f"host-{i}" for i in range(9))
        assert srv.stop() == 0
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


async def test_one_report_racing_through_both_workers_is_stored_once(tmp_path: Path) -> None:
    db = tmp_path / "race.db"
    with server_process(
        "--tokens-file", tokens_file(tmp_path), "--db", db, "--workers", "2"
    ) as srv:
        for _ in range(3):
            r = report("racer")
            statuses = await post_all(srv.url, [r] * 24, 24)
            assert sorted(statuses) == [200] * 23 + [202]
        assert stored(db) == 3


async def test_sighup_reaches_every_worker(tmp_path: Path) -> None:
    tf = tokens_file(tmp_path)
    new = "rotated-token-0123456789abcdef"
    with server_process("--tokens-file", tf, "--db", tmp_path / "h.db", "--workers", "2") as srv:
        assert set(await post_all(srv.url, [report() for _ in range(8)], 8, new)) == {401}
        tf.write_text(f"{new}\n")
        srv.proc.send_signal(signal.SIGHUP)
        statuses: list[int] = []
        for _ in range(50):
            await asyncio.sleep(0.1)
            statuses = await post_all(srv.url, [report() for _ in range(24)], 24, new)
            if set(statuses) == {202}:
                break
        assert set(statuses) == {202}  # 24 fresh connections: both workers took the new token
        assert srv.stop() == 0


def test_a_dead_worker_stops_the_collector(tmp_path: Path) -> None:
    with server_process(
        "--tokens-file", tokens_file(tmp_path), "--db", tmp_path / "d.db", "--workers", "2"
    ) as srv:
        victim, other = workers_of(srv.proc.pid)
        victim.send_signal(signal.SIGKILL)
        assert srv.proc.wait(20) == 128 + signal.SIGKILL
        assert srv.proc.stderr is not None
        assert "exited (" in srv.proc.stderr.read()
        other.wait(5)  # stopped by the supervisor, not left behind


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers: 0 is out of range 1..64"),
        (["--workers", "65"], "--workers: 65 is out of range 1..64"),
    ],
)
def test_bad_workers_flag_is_a_config_error(tmp_path: Path, args: list[str], message: str) -> None:
    proc = run_collector(
        "serve", "--tokens-file", str(tokens_file(tmp_path)), "--db", str(tmp_path / "x.db"), *args
    )
    assert proc.returncode == 78
    assert message in proc.stderr


def test_bad_workers_key_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("workers = '2'\n")
    proc = run_collector("serve", "--config", str(cfg), "--tokens-file", str(tokens_file(tmp_path)))
    assert proc.returncode == 78
    assert "workers: expected an integer, got a string" in proc.stderr


def test_port_in_use_with_workers_exits_69(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_collector(
            "serve",
            "--tokens-file",
            str(tokens_file(tmp_path)),
            "--db",
            str(tmp_path / "p.db"),
            "--listen",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
        )
    assert proc.returncode == 69
    assert "cannot listen on" in proc.stderr


def test_unusable_db_with_workers_exits_73(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    proc = run_collector(
        "serve",
        "--tokens-file",
        str(tokens_file(tmp_path)),
        "--db",
        str(tmp_path / "file" / "x.db"),
        "--workers",
        "2",
    )
    assert proc.returncode == 73
    assert "database error" in proc.stderr


# ---------------------------------------------------------------- writers taking turns


async def test_writers_with_a_lock_file_take_turns_and_store_each_report_once(
    tmp_path: Path,
) -> None:
    """Two writers (as two workers have) on one database: overlapping groups, no losses."""
    db = tmp_path / "turns.db"
    lock = tmp_path / "turns.db.lock"
    loop = asyncio.get_running_loop()
    store.prepare(store.open_backend(str(db)))
    writers = [store.Writer(store.open_backend(str(db), shared=True), loop) for _ in range(2)]
    for w in writers:
        w.start()
    body = json.dumps(report()).encode()
    ids = [str(uuid.uuid4()) for _ in range(300)]

    def record(rid: str, i: int) -> store.Record:
        return store.Record(rid, f"h{i % 5}", "pass", 60.0, body)

    t0 = time.monotonic()
    # every report_id submitted to both writers at once
    futures = [w.submit(record(rid, i)) for i, rid in enumerate(ids) for w in writers]
    results = await asyncio.gather(*futures)
    assert time.monotonic() - t0 < 30
    for w in writers:
        await w.stop()
    pairs = list(zip(results[::2], results[1::2], strict=True))
    # stored by exactly one of the two
    assert all({*p} == {store.Outcome.STORED, store.Outcome.DUPLICATE} for p in pairs)
    assert stored(db) == 300
    with sqlite3.connect(db) as conn:
        latest = conn.execute(
            "SELECT COUNT(*) FROM hosts h JOIN reports r ON r.id = h.latest_id"
        ).fetchone()[0]
    assert latest == 5
    assert lock.exists()
