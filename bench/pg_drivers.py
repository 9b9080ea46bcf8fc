"""PostgreSQL drivers for the collector's ingest: psycopg 3 (sync, as the writer thread uses
it; and async) against asyncpg, on the collector's own statements and schema.

Each driver commits groups of ``--group`` reports (2.9 KB bodies, a fresh report_id each), one
transaction per group as the collector's writer does: the multi-row
``INSERT ... ON CONFLICT DO NOTHING RETURNING`` into reports, the hosts upsert, COMMIT.
A local server (Debian's postgresql, fsync on, unix socket) is started for the run.
Prints reports/s, ms per group and the client's CPU per report; rounds alternate the drivers.

    .venv/bin/python bench/pg_drivers.py [--groups 300] [--group 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import resource
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from common import ROOT  # noqa: F401  (puts the repository on sys.path)

from collector import store
from tests.lab.postgres import running

BODY = b'{"report":"' + b"x" * 2900 + b'"}'
UPSERT = store._UPSERT_HOST  # the writer's own statement


def insert_sql(rows: int) -> str:
    return (
        "INSERT INTO reports(report_id, host_id, received_at, status, body) "
        f"VALUES {store._marks(rows, 5)} "
        "ON CONFLICT(host_id, report_id) DO NOTHING RETURNING host_id, report_id"
    )


def dollar(sql: str) -> str:
    """``?`` to asyncpg's ``$1, $2 ...``."""
    n = 0

    def repl(_: re.Match[str]) -> str:
        nonlocal n
        n += 1
        return f"${n}"

    return re.sub(r"\?", repl, sql)


def group(size: int, now: float) -> tuple[list[Any], list[tuple[Any, ...]]]:
    flat: list[Any] = []
    hosts: list[tuple[Any, ...]] = []
    for i in range(size):
        rid, host = str(uuid.uuid4()), f"host-{i:04d}"
        flat += [rid, host, now, "pass", BODY]
        hosts.append((host, host, rid, now, "pass", 60.0, now, None))
    return flat, hosts


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(name: str, run: Callable[[], None], reports: int) -> dict[str, float]:
    c0, t0 = cpu(), time.perf_counter()
    run()
    wall, used = time.perf_counter() - t0, cpu() - c0
    return {"rate": reports / wall, "cpu_us": used / reports * 1e6, "wall": wall}


def psycopg_sync(url: str, pw: str, groups: int, size: int) -> None:
    import psycopg

    with psycopg.connect(url, password=pw, autocommit=True) as conn:
        sql, up = store_pg_format(insert_sql(size)), store_pg_format(UPSERT)
        for _ in range(groups):
            flat, hosts = group(size, time.time())
            conn.execute("BEGIN")
            conn.execute(sql, flat).fetchall()
            with conn.cursor() as cur:
                cur.executemany(up, hosts)
            conn.execute("COMMIT")


async def psycopg_async(url: str, pw: str, groups: int, size: int) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, password=pw, autocommit=True) as conn:
        sql, up = store_pg_format(insert_sql(size)), store_pg_format(UPSERT)
        for _ in range(groups):
            flat, hosts = group(size, time.time())
            await conn.execute("BEGIN")
            await (await conn.execute(sql, flat)).fetchall()
            async with conn.cursor() as cur:
                await cur.executemany(up, hosts)
            await conn.execute("COMMIT")


async def asyncpg_run(dsn: dict[str, Any], groups: int, size: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(**dsn)
    try:
        sql, up = dollar(insert_sql(size)), dollar(UPSERT)
        for _ in range(groups):
            flat, hosts = group(size, time.time())
            async with conn.transaction():
                await conn.fetch(sql, *flat)
                await conn.executemany(up, hosts)
    finally:
        await conn.close()


def store_pg_format(sql: str) -> str:
    from collector.store_pg import to_format

    return to_format(sql)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--groups", type=int, default=300)
    p.add_argument("--group", type=int, default=32, help="reports per transaction")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    results: dict[str, list[dict[str, float]]] = {}
    with running(fsync=True) as pg:
        pw = pg.password_file.read_text().strip()
        n = args.groups * args.group
        for _ in range(args.rounds):
            runs: Sequence[tuple[str, Callable[[str], None]]] = (
                ("psycopg (sync)", lambda u: psycopg_sync(u, pw, args.groups, args.group)),
                (
                    "psycopg (async)",
                    lambda u: asyncio.run(psycopg_async(u, pw, args.groups, args.group)),
                ),
                (
                    "asyncpg",
                    lambda u: asyncio.run(
                        asyncpg_run(
                            {
                                "host": str(pg.socket_dir),
                                "port": pg.port,
                                "user": "collector",
                                "password": pw,
                                "database": u.split("/")[3].split("?")[0],
                            },
                            args.groups,
                            args.group,
                        )
                    ),
                ),
            )
            for name, fn in runs:
                db = pg.create_database()
                url = pg.url(db)
                store.prepare(store.open_backend(url, password_file=pg.password_file))
                results.setdefault(name, []).append(
                    measure(name, lambda fn=fn, url=url: fn(url), n)
                )
    print(
        f"{args.group} reports (2.9 KB) per transaction, {args.groups} transactions, "
        f"{args.rounds} rounds, fsync on, unix socket; median of rounds"
    )
    for name, rs in results.items():
        rate = statistics.median(r["rate"] for r in rs)
        cpu_us = statistics.median(r["cpu_us"] for r in rs)
        print(
            f"{name:>16}: {rate:8.0f} reports/s  {args.group / rate * 1000:6.2f} ms/transaction"
            f"  client {cpu_us:5.1f} us CPU/report"
        )


if __name__ == "__main__":
    main()
