"""Spool drain: N spooled reports delivered to the real collector by the daemon's sender.

The agent side is the daemon's own code: reports committed to the real SQLite spool
(``agent.daemon.spool.Spool``, WAL, ``synchronous=FULL``), then drained by the daemon's
delivery (``agent.daemon.delivery.Delivery``: oldest first, gzip, ``Sender`` over a
small pool of keep-alive connections, deleting each acknowledged report from the spool). The collector is the real
one (``python -m collector serve``, its own SQLite with ``synchronous=FULL``) in a child
process, bearer token required. Reports are shaped like the agent's (all six checks with
details, 2-4 KB).

Baseline in the same run: the same bodies POSTed one at a time by a bare aiohttp client
(gzip, same headers) to the same collector, with no spool at all: what one report at a time
costs the collector alone.

    python bench/spool_drain.py [--reports 10000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import resource
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from common import emit_json, ensure_isolated, header, verdict
from procs import TOKEN, CollectorProcess

TARGET_RATE = 2000.0


def bodies(n: int, seed: int = 11) -> list[tuple[str, bytes]]:
    """(report_id, JSON) pairs shaped like the agent's reports, 50 hosts."""
    from collector_ingest import report_template

    rng = random.Random(seed)
    templates = [report_template(rng, h) for h in range(50)]
    out = []
    for i in range(n):
        data = dict(templates[i % len(templates)])
        data["report_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        out.append((data["report_id"], json.dumps(data, separators=(",", ":")).encode()))
    return out


def fill(spool: Any, items: list[tuple[str, bytes]]) -> None:
    """Put ``items`` in the spool in one transaction (its own table; a fast setup, not measured)."""
    now = time.time()
    db = spool._db
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "INSERT INTO reports (report_id, body, size, spooled_at) VALUES (?, ?, ?, ?)",
        [(rid, body, len(body), now) for rid, body in items],
    )
    db.execute("COMMIT")


async def drain(
    state: Path, url: str, token_file: Path, items: list[tuple[str, bytes]], window: int
) -> dict[str, float]:
    """Spool ``items``, then time the daemon's real drain loop; wall and CPU seconds."""
    from agent.config import from_mapping
    from agent.daemon.delivery import Delivery
    from agent.daemon.metrics import Metrics
    from agent.daemon.sender import Sender
    from agent.daemon.spool import SPOOL_FILE, Spool

    config = from_mapping(
        {
            "agent": {"state_dir": str(state), "checks": ["privileges"], "log_level": "warning"},
            "collector": {"url": url, "token_file": str(token_file)},
            "status": {"listen": ""},
        }
    )
    spool = await asyncio.to_thread(
        Spool, state / SPOOL_FILE, len(items) + 10, config.collector.spool_max_bytes
    )
    # The first reports go through the spool's own add() (one fsynced commit each), the
    # rest in one transaction: the drain is what is measured.
    for report_id, body in items[:50]:
        spool.add(report_id, body)
    fill(spool, items[50:])
    spool.close()
    sender = Sender(config.collector, token_file.read_text().strip(), connections=window)
    metrics = Metrics("bench")
    delivery = Delivery(state, len(items) + 10, config.collector.spool_max_bytes, metrics, sender)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    task = asyncio.create_task(delivery.run())
    while metrics.delivered < len(items) and not metrics.delivery_failures:
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await delivery.close()
    left = Spool(state / SPOOL_FILE, len(items) + 10, config.collector.spool_max_bytes)
    depth = left.depth()
    left.close()
    if depth.reports or depth.dead_letters or metrics.delivery_failures:
        raise RuntimeError(
            f"drain incomplete: {depth}, {metrics.delivery_failures} failed attempts"
        )
    return {"wall_s": elapsed, "cpu_s": cpu}


async def bare_posts(url: str, items: list[tuple[str, bytes]]) -> float:
    """The same bodies, one at a time, by a plain aiohttp client: the collector's share."""
    import aiohttp

    headers = {
        "Authorization": f"Bearer {TOKEN}",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    async with aiohttp.ClientSession() as session:
        t0 = time.perf_counter()
        for _, body in items:
            async with session.post(
                url, data=gzip.compress(body, 6, mtime=0), headers=headers
            ) as r:
                await r.read()
                if r.status != 202:
                    raise RuntimeError(f"collector answered {r.status}")
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reports", type=int, default=10_000)
    p.add_argument(
        "--window", type=int, default=None, help="reports in flight (default: the agent's)"
    )
    p.add_argument("--quick", action="store_true", help="150 reports: does it still run?")
    p.add_argument("--profile", metavar="FILE", help="write a cProfile of the drain")
    p.add_argument("--json-out", metavar="FILE", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.reports = 150
    ensure_isolated()
    header(f"spool drain: {args.reports} spooled reports to the real collector")
    from agent import log
    from agent.daemon.sender import DELIVERY_WINDOW

    window = args.window or DELIVERY_WINDOW
    # The daemon's default log level (info: a line per delivered report), to a file.
    log.configure("info", stream=open(os.devnull, "w"))  # noqa: SIM115
    items = bodies(args.reports)
    base_items = bodies(args.reports, seed=12)
    sizes = sorted(len(b) for _, b in items)
    with tempfile.TemporaryDirectory(prefix="bench-drain-") as d:
        tmp = Path(d)
        token_file = tmp / "token"
        token_file.write_text(TOKEN + "\n")
        with CollectorProcess(tmp / "collector") as col:
            url = col.url + "/api/v1/reports"
            base = asyncio.run(bare_posts(url, base_items))
            import psutil

            server = psutil.Process(col.pid)
            c0 = server.cpu_times()
            prof = None
            if args.profile:
                import cProfile

                prof = cProfile.Profile()
                prof.enable()
            got = asyncio.run(drain(tmp / "state", col.url, token_file, items, window))
            if prof is not None:
                prof.disable()
                prof.dump_stats(args.profile)
            c1 = server.cpu_times()
            stored = col.stored()
    took = got["wall_s"]
    collector_cpu = (c1.user + c1.system) - (c0.user + c0.system)
    n = args.reports
    res: dict[str, Any] = {
        "reports": n,
        "body_bytes": [sizes[0], sizes[-1]],
        "drain_s": took,
        "drain_rate": n / took,
        "baseline_s": base,
        "baseline_rate": n / base,
        "stored": stored,
        "window": window,
        "agent_cpu_us_per_report": got["cpu_s"] / n * 1e6,
        "collector_cpu_us_per_report": collector_cpu / n * 1e6,
    }
    print(f"report bodies {sizes[0]}-{sizes[-1]} bytes (gzipped on the wire)")
    print(
        f"  baseline: bare aiohttp client, one POST at a time, no spool: "
        f"{res['baseline_rate']:8.0f} reports/s ({base:.2f} s)"
    )
    print(
        f"  daemon drain (spool -> sender -> collector), window {window}: "
        f"{res['drain_rate']:8.0f} reports/s ({took:.2f} s)"
    )
    print(
        f"  CPU per report during the drain: agent {res['agent_cpu_us_per_report']:.0f} us, "
        f"collector {res['collector_cpu_us_per_report']:.0f} us"
    )
    print(
        f"  ratio drain/baseline: {res['drain_rate'] / res['baseline_rate']:.2f}; "
        f"collector stored {stored} (expected {2 * n}); "
        f"target >= {TARGET_RATE:g}/s: {verdict(res['drain_rate'] >= TARGET_RATE)}"
    )
    if stored != 2 * n:
        raise SystemExit("the collector did not store every report exactly once")
    emit_json(args.json_out, "spool_drain", res)


if __name__ == "__main__":
    main()
