"""Durable ingest throughput of the reference collector against a bare aiohttp handler.

Run inside a private network namespace (it only uses 127.0.0.1):

    unshare --net -- sh -c 'ip link set lo up && .venv/bin/python bench/collector_ingest.py'

Three processes per measurement: the server (the real collector with its own SQLite file, or
a bare aiohttp app whose handler reads the body and answers 202), and a load generator
(aiohttp client, concurrency 32) posting realistic reports (all six checks with details,
2-4 KB, a unique report_id each). Prints requests/s, p50/p99 latency and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-0123456789abcdefghij"

BARE_SERVER = r"""
import sys
from aiohttp import web

async def ingest(request):
    await request.read()
    return web.Response(status=202)

app = web.Application()
app.router.add_post("/api/v1/reports", ingest)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def report_template(rng: random.Random, host: int) -> dict[str, Any]:
    """A report shaped like the agent's: six checks with their usual details."""

    def check(
        name: str, status: str, summary: str, reason: str, details: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "name": name,
            "status": status,
            "summary": summary,
            "reason": reason,
            "remediation": ""
            if status == "pass"
            else "Allow outbound TCP 443 from this host to "
            "acme.digicert.com and daas.digicert.com on the firewall, then re-run the check.",
            "duration_ms": round(rng.uniform(1, 900), 3),
            "details": details,
        }

    targets = {
        h: {
            "addresses": [
                f"216.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                "2a00:1450:4001:80b::200e",
            ],
            "dns_ms": round(rng.uniform(1, 40), 3),
            "connect_ms": round(rng.uniform(5, 80), 3),
            "tls_ms": round(rng.uniform(20, 150), 3),
            "tls_version": "TLSv1.3",
            "issuer": "CN=DigiCert Global G2 TLS RSA SHA256 2020 CA1,O=DigiCert Inc,C=US",
            "fingerprint_sha256": uuid.UUID(int=rng.getrandbits(128)).hex * 2,
        }
        for h in ("acme.digicert.com", "daas.digicert.com")
    }
    warn = rng.random() < 0.2
    return {
        "schema": "acme-preflight.report/1",
        "report_id": "00000000-0000-4000-8000-000000000000",
        "agent": {
            "host_id": f"{host:032x}",
            "hostname": f"web-{host:05d}",
            "fqdn": f"web-{host:05d}.prod.example.com",
            "version": "0.1.0",
        },
        "started_at": "2026-11-27T00:43:13.123Z",
        "finished_at": "2026-11-27T00:43:14.456Z",
        "status": "warn" if warn else "pass",
        "interval_s": 60,
        "checks": [
            check(
                "privileges",
                "pass",
                "Running as real root with full capabilities",
                "root",
                {
                    "euid": 0,
                    "uid_map": "0 0 4294967295",
                    "cap_eff": "000001ffffffffff",
                    "selinux": "disabled",
                },
            ),
            check(
                "outbound_https",
                "pass",
                "All DigiCert endpoints reachable over HTTPS",
                "ok",
                {"targets": targets, "directory_status": 200, "new_nonce": True},
            ),
            check(
                "digicert_ip",
                "warn" if warn else "pass",
                "216.168.244.42:443 reachable; DNS answers another address"
                if warn
                else "216.168.244.42:443 reachable",
                "dns_mismatch" if warn else "ok",
                {
                    "ip": "216.168.244.42",
                    "port": 443,
                    "connect_ms": 12.5,
                    "resolved": {"acme.digicert.com": ["216.168.244.42"]},
                },
            ),
            check(
                "fqdn_resolution",
                "pass",
                "2 names resolve to this host",
                "ok",
                {
                    "names": {
                        f"www{i}.example.com": {
                            "hosts_file": None,
                            "dns": ["192.0.2.10"],
                            "system": ["192.0.2.10"],
                            "local": True,
                        }
                        for i in range(2)
                    },
                    "discovered_from": ["/etc/nginx/sites-enabled/default"],
                },
            ),
            check("sensor_port", "skip", "No DigiCert sensor configured", "not_configured", {}),
            check(
                "clock_skew",
                "pass",
                "Clock within 0.4 s of acme.digicert.com",
                "ok",
                {
                    "skew_s": round(rng.uniform(-1, 1), 3),
                    "server_date": "Fri, 27 Nov 2026 00:43:14 GMT",
                    "warn_s": 60,
                    "fail_s": 300,
                },
            ),
        ],
    }


def build_bodies(hosts: int, seed: int = 7) -> list[tuple[bytes, bytes]]:
    """(prefix, suffix) pairs per host; the report_id goes between them."""
    rng = random.Random(seed)
    out = []
    marker = "00000000-0000-4000-8000-000000000000"
    for h in range(hosts):
        text = json.dumps(report_template(rng, h))
        pre, _, post = text.partition(marker)
        out.append((pre.encode(), post.encode()))
    return out


async def load(
    url: str, seconds: float, warmup: float, concurrency: int, hosts: int, use_gzip: bool
) -> dict[str, Any]:
    import aiohttp

    bodies = build_bodies(hosts)
    sizes = [len(p) + 36 + len(s) for p, s in bodies]
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    if use_gzip:
        headers["Content-Encoding"] = "gzip"
    latencies: list[float] = []
    counts = {"ok": 0, "bad": 0}
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(wid: int) -> None:
            i = wid
            clock = time.perf_counter
            while True:
                pre, post = bodies[i % hosts]
                i += concurrency
                body = pre + str(uuid.uuid4()).encode() + post
                if use_gzip:
                    body = gzip.compress(body, 1)
                t0 = clock()
                if t0 >= stop_at:
                    return
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    status = resp.status
                t1 = clock()
                if t0 >= measure_from:
                    if status in (200, 202):
                        counts["ok"] += 1
                        latencies.append(t1 - t0)
                    else:
                        counts["bad"] += 1

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "errors": counts["bad"],
        "rate": n / seconds,
        "p50_ms": latencies[n // 2] * 1000 if n else float("nan"),
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000 if n else float("nan"),
        "body_bytes": [min(sizes), max(sizes)],
    }


async def load_raw(
    url: str, seconds: float, warmup: float, concurrency: int, hosts: int, use_gzip: bool
) -> dict[str, Any]:
    """The same requests over raw asyncio streams: shows the server's capacity when the
    aiohttp client itself is the bottleneck (one request in flight per connection)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    bodies = build_bodies(hosts)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\n{'Content-Encoding: gzip' + chr(13) + chr(10) if use_gzip else ''}"
    ).encode()
    latencies: list[float] = []
    bad = 0
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds

    async def worker(wid: int) -> None:
        nonlocal bad
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        i = wid
        clock = time.perf_counter
        while True:
            pre, post = bodies[i % hosts]
            i += concurrency
            body = pre + str(uuid.uuid4()).encode() + post
            if use_gzip:
                body = gzip.compress(body, 1)
            t0 = clock()
            if t0 >= stop_at:
                writer.close()
                return
            writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            t1 = clock()
            if t0 >= measure_from:
                if status_line[9:12] in (b"200", b"202"):
                    latencies.append(t1 - t0)
                else:
                    bad += 1

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    latencies.sort()
    n = len(latencies)
    sizes = [len(p) + 36 + len(s) for p, s in bodies]
    return {
        "requests": n,
        "errors": bad,
        "rate": n / seconds,
        "p50_ms": latencies[n // 2] * 1000 if n else float("nan"),
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000 if n else float("nan"),
        "body_bytes": [min(sizes), max(sizes)],
    }


def bench_parsing(hosts: int = 200, rounds: int = 3) -> dict[str, float]:
    """Per-report CPU of the parsing steps, in this process: why the validator is hand-written."""
    from jsonschema import Draft202012Validator

    from agent.schema import report_schema
    from collector.validate import parse_json, validate

    bodies = [p + str(uuid.uuid4()).encode() + s for p, s in build_bodies(hosts)]
    docs = [json.loads(b) for b in bodies]
    reference = Draft202012Validator(report_schema())

    def per_item(fn: Any, items: list[Any]) -> float:
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            for x in items:
                fn(x)
            best = min(best, (time.perf_counter() - t0) / len(items))
        return best * 1e6

    return {
        "json_us": per_item(parse_json, bodies),
        "validate_us": per_item(validate, docs),
        "jsonschema_us": per_item(reference.validate, docs[:50]),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


def run_loadgen(
    port: int, args: argparse.Namespace, server: subprocess.Popen[bytes]
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--loadgen",
        f"http://127.0.0.1:{port}/api/v1/reports",
        "--seconds",
        str(args.seconds),
        "--warmup",
        str(args.warmup),
        "--concurrency",
        str(args.concurrency),
        "--hosts",
        str(args.hosts),
        "--client",
        args.client,
    ] + (["--gzip"] if args.gzip else [])
    import psutil

    srv = psutil.Process(server.pid)
    gen = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    time.sleep(args.warmup)
    cpu0 = srv.cpu_times()
    time.sleep(args.seconds)
    cpu1 = srv.cpu_times()
    out, _ = gen.communicate(timeout=60)
    if gen.returncode:
        raise RuntimeError(f"load generator failed ({gen.returncode})")
    result: dict[str, Any] = json.loads(out)
    used = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    result["server_cpu"] = used / args.seconds  # cores busy
    result["server_us_per_report"] = used / max(1, result["requests"]) * 1e6
    return result


def bench_bare(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)])
    try:
        wait_port(port, proc)
        return run_loadgen(port, args, proc)
    finally:
        proc.terminate()
        proc.wait(10)


def bench_collector(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    port = free_port()
    (tmp / "tokens").write_text(TOKEN + "\n")
    db = tmp / "bench.db"
    cfg = tmp / "collector.toml"
    cfg.write_text(f'synchronous = "{args.synchronous}"\nlog_level = "warning"\n')
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
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc)
        result = run_loadgen(port, args, proc)
    finally:
        proc.terminate()
        proc.wait(30)
    import sqlite3

    with sqlite3.connect(db) as conn:
        result["stored"] = conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0]
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--hosts", type=int, default=2000)
    p.add_argument("--gzip", action="store_true", help="gzip each body (as the agent does)")
    p.add_argument("--synchronous", choices=("full", "normal"), default="full")
    p.add_argument("--only", choices=("bare", "collector"))
    p.add_argument(
        "--client",
        choices=("aiohttp", "raw"),
        default="aiohttp",
        help="load generator: aiohttp.ClientSession (default) or raw asyncio streams",
    )
    p.add_argument("--loadgen", metavar="URL", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.loadgen:
        fn = load if args.client == "aiohttp" else load_raw
        res = asyncio.run(
            fn(args.loadgen, args.seconds, args.warmup, args.concurrency, args.hosts, args.gzip)
        )
        print(json.dumps(res))
        return
    # this namespace's links as its kernel reports them (/sys/class/net may show the host's)
    if [name for _, name in socket.if_nameindex()] != ["lo"]:
        sys.exit("run me inside `unshare --net` (only loopback may be used)")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="collector-bench-") as d:
        if args.only in (None, "bare"):
            results["bare"] = bench_bare(args)
        if args.only in (None, "collector"):
            results["collector"] = bench_collector(args, Path(d))
    lo, hi = next(iter(results.values()))["body_bytes"]
    print(
        f"reports {lo}-{hi} bytes{' gzipped' if args.gzip else ''}, concurrency {args.concurrency}, "
        f"{args.seconds:g} s after {args.warmup:g} s warm-up, synchronous={args.synchronous}, "
        f"{args.client} client, {os.cpu_count()} CPUs"
    )
    for name, r in results.items():
        extra = f", stored {r['stored']}" if "stored" in r else ""
        print(
            f"{name:>9}: {r['rate']:9.0f} reports/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms"
            f"  server {r['server_cpu']:.2f} cores, {r['server_us_per_report']:.0f} us CPU/report"
            f"  ({r['requests']} ok, {r['errors']} errors{extra})"
        )
    if len(results) == 2:
        print(f"    ratio: {results['collector']['rate'] / results['bare']['rate']:.2f} of bare")
    parsing = bench_parsing()
    print(
        f"  parsing: json {parsing['json_us']:.1f} us, hand-written validator "
        f"{parsing['validate_us']:.1f} us, jsonschema {parsing['jsonschema_us']:.0f} us per report"
    )


if __name__ == "__main__":
    main()
