"""The fleet page and API at scale, and what reading them costs ingest.

Run inside a private network namespace (it only uses 127.0.0.1):

    unshare --net -- sh -c 'ip link set lo up && .venv/bin/python bench/fleet_scale.py'

Builds a store of ``--hosts`` hosts (default 100,000; one report each, 30 % with problems)
through the collector's own writer, starts the real collector on it, then prints:

- ``GET /`` (the fleet page), ``GET /api/v1/hosts`` (first page, and paging on by cursor),
  ``GET /api/v1/problems``, a search and a filter: time (median of several, first one
  apart) and size;
- ingest with wrk at concurrency 32 alone, then with ``--readers`` clients reloading ``/``
  as fast as they get answers: rate, p99, and the ratio of the two rates (the issue's
  target: within 10 %; issue 14 item 4's: ingest p99 under 50 ms with 8 readers on 2,000
  hosts, ``--hosts 2000``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from collector_ingest import TOKEN, build_bodies, free_port, run_wrk, write_wrk_files
from common import ROOT, links

sys.path.insert(0, str(ROOT))
from tests import fleetdb


def fetch(url: str, n: int) -> tuple[float, list[float], int]:
    """First time, then the times of ``n`` more, and the size (bytes) of ``url``. Each with
    an ignored parameter of its own: the collector's read cache never answers these."""
    import urllib.request

    times = []
    size = 0
    for i in range(n + 1):
        t0 = time.perf_counter()
        sep = "&" if "?" in url else "?"
        with urllib.request.urlopen(f"{url}{sep}_={i}", timeout=120) as resp:
            body = resp.read()
        times.append(time.perf_counter() - t0)
        size = len(body)
    return times[0], times[1:], size


def page_through(base: str, limit: int, pages: int) -> tuple[list[float], int]:
    import urllib.request

    times = []
    seen = 0
    url = f"{base}/api/v1/hosts?limit={limit}"
    for _ in range(pages):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=120) as resp:
            data = json.loads(resp.read())
        times.append(time.perf_counter() - t0)
        seen += len(data["hosts"])
        if not data["next_cursor"]:
            break
        url = f"{base}/api/v1/hosts?limit={limit}&cursor={data['next_cursor']}"
    return times, seen


async def readers(url: str, seconds: float, n: int) -> dict[str, Any]:
    """``n`` clients reloading ``url`` back to back for ``seconds``."""
    import aiohttp

    lat: list[float] = []
    sizes: list[int] = []
    end = time.monotonic() + seconds

    async def one(http: aiohttp.ClientSession) -> None:
        while time.monotonic() < end:
            t0 = time.perf_counter()
            async with http.get(url) as resp:
                body = await resp.read()
                assert resp.status == 200, resp.status
            lat.append(time.perf_counter() - t0)
            sizes.append(len(body))

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(one(http) for _ in range(n)))
    lat.sort()
    return {
        "views": len(lat),
        "views_per_s": len(lat) / seconds,
        "p50_ms": statistics.median(lat) * 1000 if lat else 0.0,
        "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1000 if lat else 0.0,
        "bytes": max(sizes, default=0),
    }


async def agents(url: str, seconds: float, rate: float, hosts: int) -> dict[str, Any]:
    """Reports posted at a steady ``rate`` (as a fleet's daemons do, not as fast as possible):
    the latency each one sees, 202 included."""
    import uuid

    import aiohttp

    bodies = build_bodies(hosts, seed=11)
    lat: list[float] = []
    errors = 0

    async def one(http: aiohttp.ClientSession, i: int) -> None:
        nonlocal errors
        pre, post = bodies[i % len(bodies)]
        body = pre + str(uuid.uuid4()).encode() + post
        t0 = time.perf_counter()
        async with http.post(
            url,
            data=body,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        ) as resp:
            await resp.read()
            if resp.status != 202:
                errors += 1
        lat.append(time.perf_counter() - t0)
        slow.append((round(t0 - start, 2), round((time.perf_counter() - t0) * 1000)))

    slow: list[tuple[float, int]] = []
    start = time.perf_counter()
    tasks = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as http:
        start = time.perf_counter()
        for i in range(int(seconds * rate)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(http, i)))
        await asyncio.gather(*tasks)
    lat.sort()
    return {
        "reports": len(lat),
        "errors": errors,
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1000,
        "max_ms": lat[-1] * 1000,
        "slowest": sorted(slow, key=lambda x: -x[1])[:8],
    }


def agent_run(base: str, seconds: float, rate: float, hosts: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--agents-loop",
            base + "/api/v1/reports",
            str(seconds),
            str(rate),
            str(hosts),
        ],
        stdout=subprocess.PIPE,
        check=True,
        timeout=seconds + 120,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def ms(v: float) -> str:
    return f"{v * 1000:.1f} ms"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, default=100_000)
    p.add_argument("--readers", type=int, default=8, help="clients reloading / during ingest")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--ingest-hosts", type=int, default=200, help="hosts the wrk reports come from")
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument(
        "--agent-rate",
        type=float,
        default=200.0,
        help="reports/s of the steady agents whose latency is measured",
    )
    p.add_argument(
        "--readers-loop", nargs=3, metavar=("URL", "SECONDS", "N"), help=argparse.SUPPRESS
    )
    p.add_argument("--agents-loop", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.agents_loop:
        url, secs, rate, hosts = args.agents_loop
        print(json.dumps(asyncio.run(agents(url, float(secs), float(rate), int(hosts)))))
        return
    if args.readers_loop:
        url, secs, n = args.readers_loop
        print(json.dumps(asyncio.run(readers(url, float(secs), int(n)))))
        return
    if links() != ["lo"]:
        sys.exit("run me inside `unshare --net` (only loopback may be used)")
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as d:
        tmp = Path(d)
        db = tmp / "fleet.db"
        t0 = time.perf_counter()
        fleetdb.build(db, args.hosts)
        print(
            f"store: {args.hosts:,} hosts built in {time.perf_counter() - t0:.1f} s "
            f"({db.stat().st_size / 2**20:.0f} MiB)"
        )
        (tmp / "tokens").write_text(TOKEN + "\n")
        cfg = tmp / "collector.toml"
        cfg.write_text('log_level = "warning"\n')
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "collector",
                "serve",
                "--config",
                str(cfg),
                "--listen",
                f"127.0.0.1:{port}",
                "--db",
                str(db),
                "--tokens-file",
                str(tmp / "tokens"),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if b"listening on" not in line:
                raise RuntimeError(f"the collector did not start: {line!r}")
            import psutil

            ps = psutil.Process(proc.pid)
            for name, path in (
                ("GET /", "/"),
                ("GET /api/v1/hosts", "/api/v1/hosts"),
                ("GET /api/v1/problems", "/api/v1/problems"),
                ("GET /?q=web-0999 (search)", "/?q=web-0999"),
                ("GET /?check=clock_skew (filter)", "/?check=clock_skew"),
                ("GET /?status=fail&sort=host", "/?status=fail&sort=host"),
            ):
                first, rest, size = fetch(base + path, 5)
                print(
                    f"{name:34s} first {ms(first):>9s}, uncached median {ms(statistics.median(rest)):>9s}"
                    f" max {ms(max(rest)):>9s}; {size / 1000:,.1f} KB"
                )
            times, seen = page_through(base, 1000, 20)
            print(
                f"{'GET /api/v1/hosts?limit=1000 paged':34s} {len(times)} pages, {seen:,} hosts: "
                f"median {ms(statistics.median(times))}, max {ms(max(times))} per page"
            )
            print(f"collector RSS after the reads: {ps.memory_info().rss / 2**20:.0f} MiB")

            ns = argparse.Namespace(
                warmup=args.warmup,
                seconds=args.seconds,
                wrk_threads=args.wrk_threads,
                concurrency=args.concurrency,
            )
            write_wrk_files(tmp, args.ingest_hosts)
            alone = run_wrk(port, ns, proc, tmp)
            rd = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--readers-loop",
                    base + "/",
                    str(args.warmup + args.seconds),
                    str(args.readers),
                ],
                stdout=subprocess.PIPE,
            )
            ns.warmup = 0.0
            time.sleep(args.warmup)  # the readers are going
            loaded = run_wrk(port, ns, proc, tmp)
            out, _ = rd.communicate(timeout=args.seconds + args.warmup + 120)
            views = json.loads(out)
            print(
                f"ingest alone:                      {alone['rate']:8.0f} reports/s, "
                f"p50 {alone['p50_ms']:.1f} ms, p99 {alone['p99_ms']:.1f} ms"
            )
            print(
                f"ingest with {args.readers} readers on /:        {loaded['rate']:8.0f} reports/s, "
                f"p50 {loaded['p50_ms']:.1f} ms, p99 {loaded['p99_ms']:.1f} ms; "
                f"ratio {loaded['rate'] / alone['rate']:.2f}"
            )
            print(
                f"page views meanwhile:              {views['views_per_s']:8.1f} /s, "
                f"p50 {views['p50_ms']:.0f} ms, p99 {views['p99_ms']:.0f} ms, "
                f"{views['bytes'] / 1000:.0f} KB each"
            )
            # Issue 14 item 4: agents at a steady rate, alone and beside the page readers
            steady = agent_run(base, args.seconds, args.agent_rate, args.ingest_hosts)
            rd = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--readers-loop",
                    base + "/",
                    str(args.seconds + 2),
                    str(args.readers),
                ],
                stdout=subprocess.PIPE,
            )
            time.sleep(1)
            busy = agent_run(base, args.seconds, args.agent_rate, args.ingest_hosts)
            views2 = json.loads(rd.communicate(timeout=args.seconds + 120)[0])
            for name, r in (
                (f"agents at {args.agent_rate:g}/s alone:", steady),
                (f"agents at {args.agent_rate:g}/s, {args.readers} readers:", busy),
            ):
                print(
                    f"{name:34s} p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                    f"max {r['max_ms']:.0f} ms, {r['errors']} errors"
                )
                if os.environ.get("FLEET_BENCH_SLOWEST"):
                    print("   slowest (start s, ms):", r["slowest"])
            print(
                f"page views meanwhile:              {views2['views_per_s']:8.1f} /s, "
                f"p50 {views2['p50_ms']:.0f} ms, p99 {views2['p99_ms']:.0f} ms"
            )
            hwm = next(
                line.split()[1]
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                if line.startswith("VmHWM:")
            )
            print(f"collector peak RSS: {int(hwm) / 1024:.0f} MiB")
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
