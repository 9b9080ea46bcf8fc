"""Several collectors, one PostgreSQL database: stateless peers (issue 16).

Real collector processes, a real PostgreSQL server (tests/lab/postgres.py), real HTTP.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

from collector import store
from tests.collectorutil import TOKENS_TEXT, auth, report, serve, server_process, settings
from tests.lab.plugin import StoreTarget
from tests.lab.postgres import PostgresServer


def _config(tmp_path: Path, pg: PostgresServer, db: str, name: str) -> Path:
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS_TEXT)
    tokens.chmod(0o600)
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(
        f'tokens_file = "{tokens}"\n'
        "[store]\n"
        f'url = "{pg.url(db)}"\n'
        f'password_file = "{pg.password_file}"\n'
    )
    return cfg


async def _post(http: aiohttp.ClientSession, url: str, doc: dict[str, Any]) -> tuple[int, Any]:
    async with http.post(f"{url}/api/v1/reports", json=doc, headers=auth()) as resp:
        return resp.status, await resp.json(content_type=None)


async def _get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


def test_two_collector_processes_share_one_database(tmp_path: Path, postgres: Any) -> None:
    db = postgres.create_database()
    cfg_a = _config(tmp_path, postgres, db, "a")
    cfg_b = _config(tmp_path, postgres, db, "b")
    with server_process("--config", cfg_a) as a, server_process("--config", cfg_b) as b:

        async def scenario() -> None:
            async with aiohttp.ClientSession() as http:
                # hosts spread over both collectors, all in flight together
                docs = [report(f"host-{i % 10}") for i in range(60)]
                answers = await asyncio.gather(
                    *(_post(http, (a.url, b.url)[i % 2], d) for i, d in enumerate(docs))
                )
                assert [s for s, _ in answers] == [202] * 60
                # the same reports posted to both at once: stored once, each told "stored"
                twice = [report(f"dup-{i}") for i in range(15)]
                pairs = await asyncio.gather(
                    *(_post(http, url, d) for d in twice for url in (a.url, b.url))
                )
                for first, second in zip(pairs[::2], pairs[1::2], strict=True):
                    assert sorted((first[0], second[0])) == [200, 202]
                    assert first[1]["stored"] and second[1]["stored"]
                # each serves what the other stored
                for url in (a.url, b.url):
                    listed = await _get(http, f"{url}/api/v1/hosts?limit=100")
                    ids = {h["host_id"] for h in listed["hosts"]}
                    assert ids == {f"host-{i}" for i in range(10)} | {f"dup-{i}" for i in range(15)}
                for host in ("host-0", "host-1"):  # host-0 went to a, host-1 to b
                    for url in (a.url, b.url):
                        hist = await _get(http, f"{url}/api/v1/hosts/{host}/reports")
                        assert len(hist["reports"]) == 6
                async with http.get(f"{b.url}/") as resp:
                    assert resp.status == 200
                    assert 'data-host-id="host-0"' in await resp.text()

        asyncio.run(scenario())
        assert a.stop() == 0 and b.stop() == 0
    backend = store.open_backend(postgres.url(db), password_file=postgres.password_file)
    conn = backend.reader()
    try:
        assert store.report_count(conn) == 75
    finally:
        conn.close()


def test_collectors_starting_together_migrate_once(postgres: Any) -> None:
    """Four processes' worth of start-ups at once on a new database: the advisory lock
    serialises them; each sees the schema complete."""
    db = postgres.create_database()
    results: list[object] = []

    def start() -> None:
        backend = store.open_backend(postgres.url(db), password_file=postgres.password_file)
        try:
            results.append(store.prepare(backend))
        except Exception as e:  # collected: the assertion below names it
            results.append(e)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [store.SCHEMA_VERSION] * 4


def test_one_collector_at_a_time_runs_retention(postgres: Any) -> None:
    db = postgres.create_database()
    backend = store.open_backend(postgres.url(db), password_file=postgres.password_file)
    store.prepare(backend)
    one, two = backend.connect(), backend.connect()
    try:
        assert backend.try_job(one, "retention") is True
        assert backend.try_job(two, "retention") is False  # another collector holds it
        backend.end_job(one, "retention")
        assert backend.try_job(two, "retention") is True
        two.close()  # a collector that dies releases it with its connection...
        deadline = time.monotonic() + 10
        while not backend.try_job(one, "retention"):  # ...once its server process has ended
            assert time.monotonic() < deadline, "the lock outlived its connection"
            time.sleep(0.05)
    finally:
        one.close()


async def test_two_writers_on_one_database_never_deadlock(postgres: Any) -> None:
    """Two collectors' writers (two connections) committing groups for the same hosts at the
    same time, each in a different host order: every report stored exactly once and no group
    fails (writers lock rows in key order, so PostgreSQL never has to break a deadlock)."""
    db = postgres.create_database()
    loop = asyncio.get_running_loop()
    backends = [
        store.open_backend(postgres.url(db), password_file=postgres.password_file) for _ in range(2)
    ]
    store.prepare(backends[0])
    writers = [store.Writer(b, loop, max_batch=8) for b in backends]
    for w in writers:
        w.start()
    body = b'{"r": 1}'
    hosts = [f"h{i}" for i in range(8)]
    try:
        futures = []
        for n in range(60):  # many overlapping groups, each touching every host
            for w, order in zip(writers, (hosts, hosts[::-1]), strict=True):
                tag = "a" if w is writers[0] else "b"
                futures += [
                    w.submit(store.Record(f"{tag}-{n}-{h}", h, "pass", 60.0, body)) for h in order
                ]
        results = await asyncio.gather(*futures, return_exceptions=True)
    finally:
        for w in writers:
            await w.stop()
    assert [r for r in results if r is not store.Outcome.STORED] == []
    conn = backends[0].reader()
    try:
        assert store.report_count(conn) == 960
        assert len(store.hosts(conn)) == 8
    finally:
        conn.close()


async def test_reads_and_ingest_survive_the_server_closing_connections(
    tmp_path: Path, postgres: Any
) -> None:
    """A PostgreSQL restart or failover closes every connection: reads retry once on a new
    connection (no error for the reader), ingest answers 503 for the group in flight at most,
    and both work again without restarting the collector."""
    db = postgres.create_database()
    target = StoreTarget("postgresql", postgres.url(db), postgres.password_file, postgres)
    async with serve(settings(tmp_path, target)) as srv, aiohttp.ClientSession() as http:
        assert (await _post(http, srv.url, report("before")))[0] == 202
        await _get(http, f"{srv.url}/api/v1/hosts")  # the readers have their connections
        postgres.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{db}' AND pid <> pg_backend_pid()",
            db,
        )
        for path in ("/api/v1/hosts", "/api/v1/hosts", "/healthz"):  # both reader threads
            await _get(http, srv.url + path)
        statuses = [(await _post(http, srv.url, report("after")))[0] for _ in range(2)]
        assert statuses in ([202, 202], [503, 202])
        listed = await _get(http, f"{srv.url}/api/v1/hosts")
        assert {h["host_id"] for h in listed["hosts"]} == {"before", "after"}
