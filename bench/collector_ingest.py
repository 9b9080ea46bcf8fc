"""Durable ingest throughput of the reference collector against a bare aiohttp handler.

Run inside a private network namespace (it only uses 127.0.0.1):

    unshare --net -- sh -c 'ip link set lo up && .venv/bin/python bench/collector_ingest.py'

Two processes per measurement: the server (the real collector with its own SQLite file, or
a bare aiohttp app whose handler reads the body and answers 202) and a load generator posting
realistic reports (all six checks with details, 2-4 KB, a unique report_id each) at
concurrency 32. The default generator is Debian's ``wrk`` with a Lua script (C and LuaJIT: a
fraction of the CPU of a Python client, which matters on 2 cores); ``--client aiohttp`` or
``raw`` use a Python client instead. Prints requests/s, p50/p99 latency, the ratio, and the
CPU per report of the server and of the generator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import math
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import links

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-0123456789abcdefghij"

# argv: port, processes (as many as the collector's workers, each with its own SO_REUSEPORT
# socket, so the ratio compares equal numbers of processes)
BARE_SERVER = r"""
import os, sys
from aiohttp import web

async def ingest(request):
    await request.read()
    return web.Response(status=202)

for _ in range(int(sys.argv[2]) - 1):
    if os.fork() == 0:
        break
app = web.Application()
app.router.add_post("/api/v1/reports", ingest)
web.run_app(
    app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None, reuse_port=True
)
"""

# The wrk script: each thread reads the pre-rendered reports (one "prefix TAB suffix" line per
# host) and puts a fresh UUID4-shaped report_id between them for every request, unique per
# run (nonce), thread and request. The request is assembled by hand: wrk.format() walks a
# header table per request, which costs more than the rest of the script.
WRK_LUA = r"""
local pres, posts, n = {}, {}, 0
local head, nonce, counter, nthreads = "", 0, 0, 1
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

local heads = {}

function init(args)
  local f = assert(io.open(args[1], "rb"))
  local rest = " HTTP/1.1\r\nHost: " .. wrk.host .. ":" .. wrk.port ..
    "\r\nAuthorization: Bearer " .. args[4] .. "\r\nContent-Type: " .. args[5] .. "\r\n" ..
    "Content-Length: "
  head = "POST " .. wrk.path .. rest
  for line in f:lines() do
    -- "prefix TAB suffix", or "path TAB prefix TAB suffix" (a path per host: pushgateway)
    local tab = line:find("\t", 1, true)
    local tab2 = line:find("\t", tab + 1, true)
    n = n + 1
    if tab2 then
      heads[n] = "POST " .. line:sub(1, tab - 1) .. rest
      pres[n] = line:sub(tab + 1, tab2 - 1):gsub("\\n", "\n")
      posts[n] = line:sub(tab2 + 1):gsub("\\n", "\n")
    else
      heads[n] = head
      pres[n] = line:sub(1, tab - 1)
      posts[n] = line:sub(tab + 1)
    end
  end
  f:close()
  nonce = tonumber(args[2], 16)
  nthreads = tonumber(args[3])
end

function request()
  counter = counter + 1
  local i = (counter * nthreads + id) % n + 1
  local body = pres[i] .. string.format("%08x-%04x-4000-8000-%012x", nonce, id, counter) .. posts[i]
  return heads[i] .. #body .. "\r\n\r\n" .. body
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, ' ..
    '"timeouts": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write,
    e.timeout, latency:percentile(50), latency:percentile(99)))
end
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


def _cpu(procs: list[Any]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except Exception:  # a worker that exited: its time is in the parent's children_*
            pass
    return total


def _tree(pid: int) -> list[Any]:
    import psutil

    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def write_wrk_files(tmp: Path, hosts: int) -> tuple[Path, Path]:
    script = tmp / "ingest.lua"
    script.write_text(WRK_LUA)
    data = tmp / "reports.tsv"
    # json.dumps escapes control characters, so a rendered report never holds a TAB or newline
    data.write_bytes(b"".join(pre + b"\t" + post + b"\n" for pre, post in build_bodies(hosts)))
    push = tmp / "pushes.tsv"
    push.write_bytes(
        b"".join(
            f"/metrics/job/acme_preflight/host_id/bench-{h:05d}\t".encode()
            + pre.replace(b"\n", b"\\n")
            + b"\t"
            + post.replace(b"\n", b"\\n")
            + b"\n"
            for h, (pre, post) in enumerate(build_pushes(hosts))
        )
    )
    return script, data


def build_pushes(hosts: int, seed: int = 7) -> list[tuple[bytes, bytes]]:
    """The same reports as Prometheus text for pushgateway: one series per check, the
    report_id (fresh per request) as a label of an info series."""
    rng = random.Random(seed)
    out = []
    for h in range(hosts):
        doc = report_template(rng, h)
        lines = ["# TYPE acme_preflight_check_status gauge"]
        for c in doc["checks"]:
            lines.append(
                f'acme_preflight_check_status{{check="{c["name"]}",status="{c["status"]}",'
                f'reason="{c["reason"]}"}} 1'
            )
        lines.append("# TYPE acme_preflight_check_duration_ms gauge")
        for c in doc["checks"]:
            lines.append(
                f'acme_preflight_check_duration_ms{{check="{c["name"]}"}} {c["duration_ms"]}'
            )
        lines.append("# TYPE acme_preflight_report_info gauge")
        pre = "\n".join(lines) + '\nacme_preflight_report_info{report_id="'
        post = f'",status="{doc["status"]}",version="{doc["agent"]["version"]}"}} 1\n'
        out.append((pre.encode(), post.encode()))
    return out


def _wrk(port: int, args: argparse.Namespace, tmp: Path, seconds: float) -> subprocess.Popen[bytes]:
    script = tmp / "ingest.lua"
    data = tmp / ("pushes.tsv" if args.target == "pushgateway" else "reports.tsv")
    ctype = "text/plain; version=0.0.4" if args.target == "pushgateway" else "application/json"
    threads = args.wrk_threads
    nonce = f"{random.getrandbits(31):08x}"
    cmd = ["wrk", "-t", str(threads), "-c", str(args.concurrency), "-d", f"{seconds:g}s"]
    cmd += ["--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}/api/v1/reports"]
    cmd += ["--", str(data), nonce, str(threads), TOKEN, ctype]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE)


def run_wrk(
    port: int, args: argparse.Namespace, server: subprocess.Popen[bytes], tmp: Path
) -> dict[str, Any]:
    if args.warmup > 0:
        warm = _wrk(port, args, tmp, args.warmup)
        warm.communicate(timeout=args.warmup + 60)
        if warm.returncode:
            raise RuntimeError(f"wrk warm-up failed ({warm.returncode})")
    procs = _tree(server.pid)
    gen = _wrk(port, args, tmp, args.seconds)
    import psutil

    genp = psutil.Process(gen.pid)
    # CPU is sampled inside the run, away from wrk's start (it reads the reports file)
    margin = min(0.5, args.seconds / 8)
    time.sleep(margin)
    c0, g0, t0 = _cpu(procs), _cpu([genp]), time.perf_counter()
    time.sleep(args.seconds - 2 * margin)
    c1, g1, t1 = _cpu(procs), _cpu([genp]), time.perf_counter()
    out, _ = gen.communicate(timeout=args.seconds + 60)
    if gen.returncode:
        raise RuntimeError(f"wrk failed ({gen.returncode})")
    w = json.loads(out.decode().strip().splitlines()[-1])
    seconds = w["duration_us"] / 1e6
    ok = w["requests"] - w["non2xx"]
    rate = ok / seconds
    window = t1 - t0
    sizes = [len(line) - 2 + 36 for line in (tmp / "reports.tsv").read_bytes().splitlines(True)]
    return {
        "requests": ok,
        "errors": w["non2xx"] + w["socket_errors"] + w["timeouts"],
        "rate": rate,
        "p50_ms": w["p50_us"] / 1000,
        "p99_ms": w["p99_us"] / 1000,
        "body_bytes": [min(sizes), max(sizes)],
        "server_cpu": (c1 - c0) / window,
        "server_us_per_report": (c1 - c0) / max(1.0, rate * window) * 1e6,
        "gen_cpu": (g1 - g0) / window,
    }


def run_loadgen(
    port: int, args: argparse.Namespace, server: subprocess.Popen[bytes], tmp: Path
) -> dict[str, Any]:
    if args.client == "wrk":
        return run_wrk(port, args, server, tmp)
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

    procs = _tree(server.pid)
    gen = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    genp = psutil.Process(gen.pid)
    time.sleep(args.warmup)
    c0, g0 = _cpu(procs), _cpu([genp])
    time.sleep(args.seconds)
    c1, g1 = _cpu(procs), _cpu([genp])
    out, _ = gen.communicate(timeout=60)
    if gen.returncode:
        raise RuntimeError(f"load generator failed ({gen.returncode})")
    result: dict[str, Any] = json.loads(out)
    used = c1 - c0
    result["server_cpu"] = used / args.seconds  # cores busy
    result["server_us_per_report"] = used / max(1, result["requests"]) * 1e6
    result["gen_cpu"] = (g1 - g0) / args.seconds
    return result


def bench_bare(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", BARE_SERVER, str(port), str(args.workers)], start_new_session=True
    )
    try:
        wait_port(port, proc)
        time.sleep(0.5)  # the other processes bind their sockets
        return run_loadgen(port, args, proc, tmp)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def bench_pushgateway(args: argparse.Namespace, tmp: Path, check: bool) -> dict[str, Any]:
    """Prometheus pushgateway (Debian's package): in memory, no durability. ``check``: its
    default consistency check of every push against everything pushed before."""
    exe = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if exe is None:
        raise RuntimeError("--pushgateway needs Debian's prometheus-pushgateway package")
    port = free_port()
    cmd = [exe, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    if not check:
        cmd.append("--push.disable-consistency-check")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        args.target = "pushgateway"
        try:
            return run_loadgen(port, args, proc, tmp)
        finally:
            args.target = "collector"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # still working through queued pushes
            proc.kill()
            proc.wait(10)


def _stored(args: argparse.Namespace, db: Path) -> int:
    sys.path.insert(0, str(ROOT))
    from collector import store

    if args.backend == "postgresql":
        backend = store.open_backend(args.pg_url, password_file=args.pg_password_file)
    else:
        backend = store.open_backend(str(db))
    conn = backend.reader()
    try:
        return store.report_count(conn)
    finally:
        conn.close()


def bench_collector(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    port = free_port()
    (tmp / "tokens").write_text(TOKEN + "\n")
    db = tmp / "bench.db"
    cfg = tmp / "collector.toml"
    workers = f"workers = {args.workers}\n" if args.workers != 1 else ""
    # no new-host cap in a benchmark that sends every host at once from one token
    text = f'synchronous = "{args.synchronous}"\nlog_level = "warning"\n{workers}'
    text += "new_hosts_per_hour = 0\n"
    if args.backend == "postgresql":
        args.pg_url = args.pg.url(args.pg.create_database())
        args.pg_password_file = args.pg.password_file
        text += f'[store]\nurl = "{args.pg_url}"\npassword_file = "{args.pg_password_file}"\n'
    else:
        text += f'[store]\nurl = "{db}"\n'
    cfg.write_text(text)
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
            "--tokens-file",
            str(tmp / "tokens"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "listening on ...": every worker is serving
        if b"listening on" not in line:
            raise RuntimeError(f"the collector did not start: {line!r}")
        result = run_loadgen(port, args, proc, tmp)
    finally:
        proc.terminate()
        proc.wait(30)
    result["stored"] = _stored(args, db)
    return result


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> str:
    """a's rate over b's; "inf" when b completed no request in the run."""
    return f"{a['rate'] / b['rate']:.2f}" if b["rate"] else "inf (the peer completed none)"


@contextlib.contextmanager
def _postgres(args: argparse.Namespace) -> Iterator[Any]:
    """A PostgreSQL server for the run (fsync on: the durable figure), or None."""
    if args.backend != "postgresql":
        yield None
        return
    from tests.lab.postgres import running

    with running(fsync=True) as pg:
        yield pg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--hosts", type=int, default=2000)
    p.add_argument("--gzip", action="store_true", help="gzip each body (aiohttp/raw clients)")
    p.add_argument("--synchronous", choices=("full", "normal"), default="full")
    p.add_argument(
        "--workers", type=int, default=1, help="collector worker processes (and bare processes)"
    )
    p.add_argument("--only", choices=("bare", "collector"))
    p.add_argument(
        "--backend",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the collector's store; postgresql: a local server started for the run "
        "(Debian's postgresql, fsync on, unix socket)",
    )
    p.add_argument(
        "--pushgateway",
        action="store_true",
        help="also measure Prometheus pushgateway (in memory) with and without its "
        "consistency check, the same reports as metrics, one group per host",
    )
    p.add_argument(
        "--client",
        choices=("wrk", "aiohttp", "raw"),
        help="load generator: wrk with a Lua script (the default when installed, unless "
        "--gzip), aiohttp.ClientSession, or raw asyncio streams",
    )
    p.add_argument("--rounds", type=int, default=1, help="bare/collector pairs to run")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (-t)")
    p.add_argument("--loadgen", metavar="URL", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.loadgen:
        fn = load if args.client == "aiohttp" else load_raw
        res = asyncio.run(
            fn(args.loadgen, args.seconds, args.warmup, args.concurrency, args.hosts, args.gzip)
        )
        print(json.dumps(res))
        return
    if links() != ["lo"]:
        sys.exit("run me inside `unshare --net` (only loopback may be used)")
    if args.client is None:
        # wrk cannot gzip a fresh body per request: gzip needs a Python client
        args.client = "wrk" if shutil.which("wrk") and not args.gzip else "aiohttp"
    if args.client == "wrk" and args.gzip:
        sys.exit("--gzip needs --client aiohttp or raw")
    if args.seconds <= 0 or args.warmup < 0:
        sys.exit("--seconds must be positive and --warmup not negative")
    if args.client == "wrk":
        # wrk's -d takes whole seconds ("0.5s" is refused, and a refused warm-up would
        # silently be no warm-up): round up, and say so
        whole = (math.ceil(args.seconds), math.ceil(args.warmup))
        if whole != (args.seconds, args.warmup):
            print(
                f"wrk runs whole seconds: --seconds {args.seconds:g} --warmup {args.warmup:g} "
                f"run as {whole[0]} s and {whole[1]} s"
            )
        args.seconds, args.warmup = float(whole[0]), float(whole[1])
    args.target = "collector"
    rounds: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="collector-bench-") as d, _postgres(args) as pg:
        args.pg = pg
        tmp = Path(d)
        if args.client == "wrk":
            write_wrk_files(tmp, args.hosts)
        # Rounds alternate the two servers, so that both see the same (shared) machine.
        for _ in range(args.rounds):
            results: dict[str, dict[str, Any]] = {}
            if args.only in (None, "bare"):
                results["bare"] = bench_bare(args, tmp)
            if args.only in (None, "collector"):
                for f in tmp.glob("bench.db*"):
                    f.unlink()
                results["collector"] = bench_collector(args, tmp)
            if args.pushgateway:
                results["pushgw"] = bench_pushgateway(args, tmp, check=True)
                results["pushgw-nc"] = bench_pushgateway(args, tmp, check=False)
            rounds.append(results)
    lo, hi = next(iter(rounds[0].values()))["body_bytes"]
    load_avg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"reports {lo}-{hi} bytes{' gzipped' if args.gzip else ''}, concurrency {args.concurrency}, "
        f"{args.seconds:g} s after {args.warmup:g} s warm-up, synchronous={args.synchronous}, "
        f"workers={args.workers}, {args.client} client, store {args.backend}, "
        f"{os.cpu_count()} CPUs, "
        f"load average {load_avg}"
    )
    ratios = []
    for i, results in enumerate(rounds, 1):
        if args.rounds > 1:
            print(f"round {i}")
        for name, r in results.items():
            extra = f", stored {r['stored']}" if "stored" in r else ""
            print(
                f"{name:>9}: {r['rate']:9.0f} reports/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms"
                f"  server {r['server_cpu']:.2f} cores, {r['server_us_per_report']:.0f} us CPU/report"
                f"  generator {r['gen_cpu']:.2f} cores  ({r['requests']} ok, {r['errors']} errors{extra})"
            )
        if "bare" in results and "collector" in results:
            ratios.append(results["collector"]["rate"] / results["bare"]["rate"])
            print(f"    ratio: {ratios[-1]:.2f} of bare")
        for peer in ("pushgw", "pushgw-nc"):
            if peer in results and "collector" in results:
                print(f"    collector / {peer}: {_ratio(results['collector'], results[peer])}")
    if len(rounds) > 1:
        for name in rounds[0]:
            rates = sorted(r[name]["rate"] for r in rounds)
            print(
                f"{name:>9}: median {statistics.median(rates):.0f} reports/s over {len(rounds)} rounds"
            )
        if ratios:
            print(f"    ratio: median {statistics.median(ratios):.2f} of bare")
        for peer in ("pushgw", "pushgw-nc"):
            if peer in rounds[0] and "collector" in rounds[0]:
                col = statistics.median(r["collector"]["rate"] for r in rounds)
                other = statistics.median(r[peer]["rate"] for r in rounds)
                print(f"    collector / {peer}: medians {_ratio({'rate': col}, {'rate': other})}")
    if not args.only:
        parsing = bench_parsing()
        print(
            f"  parsing: json {parsing['json_us']:.1f} us, hand-written validator "
            f"{parsing['validate_us']:.1f} us, jsonschema {parsing['jsonschema_us']:.0f} us per report"
        )


if __name__ == "__main__":
    main()
