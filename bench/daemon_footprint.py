"""Daemon footprint: RSS of the real ``acme-preflight run`` after start and after N cycles.

Everything is real and out of process: the DigiCert lab (all six checks, sensor included;
/etc/resolv.conf and /etc/hosts bind-mounted to the lab in a private mount namespace),
the real collector (``python -m collector serve``, token required), and the daemon
(``python -m agent --config CFG run``) with its status endpoint, spool and sender. RSS
is read from /proc/PID/status; cycles from the daemon's own ``/metrics``
(``acme_preflight_runs_total``); the collector's database is counted at the end.

Two phases, same daemon code:

1. **steady**: the daemon exactly as shipped (with the ``Environment=MALLOC_*`` lines of
   systemd/acme-preflight.service), ``[agent] interval = "1s"``, for
   ``--steady-seconds`` (one cycle a second).
2. **back to back**: the same daemon, but after each run finishes the next one is
   moved to "now" with APScheduler's own ``modify_job`` (from a done-callback of the
   run's task, so the scheduler's bookkeeping is untouched), so ``--cycles`` runs (default
   10,000) take minutes instead of hours. This is the only change, made by a wrapper in
   this file (``python -c BACK_TO_BACK``); it is not a user-visible option.

Baseline in the same run: ``python -c 'import aiohttp, apscheduler, dns.resolver,
psutil, structlog'`` (the runtime dependencies imported, nothing else), and the
submodules the daemon itself imports (no aiohttp).

The daemon trusts the system CA bundle plus the lab's CA (``--ca-store system``, as on
a real host), or only the lab's CA (``--ca-store lab``, how the first figures were taken).

    python bench/daemon_footprint.py [--cycles 10000] [--steady-seconds 120] [--quick]
                                     [--ca-store system|lab]
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from common import (
    ROOT,
    bind_etc,
    emit_json,
    ensure_isolated,
    header,
    rss_mb,
    verdict,
    wait_until,
)
from procs import TOKEN, CollectorProcess, LabProcess, etc_fixture

UNIT = ROOT / "systemd" / "acme-preflight.service"
TARGET_STEADY_MB = 50.0
TARGET_GROWTH_MB = 1.0
BASELINE = "import aiohttp, apscheduler, dns.resolver, psutil, structlog"
# What the daemon itself imports of them (it serves its status pages without aiohttp).
BASELINE_USED = "import apscheduler.schedulers.asyncio, dns.asyncresolver, psutil, structlog"

BACK_TO_BACK = r"""
import asyncio, sys
from datetime import UTC, datetime
from agent.daemon import service

_run_job = service.Daemon._run_job

async def _back_to_back(self):
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def next_now(_):
        # after APScheduler's own done-callback has counted this run as finished
        if self._scheduler is not None and not self._stop.is_set():
            loop.call_soon(lambda: self._scheduler.modify_job(
                service.JOB_ID, next_run_time=datetime.now(UTC)))
    task.add_done_callback(next_now)
    await _run_job(self)

service.Daemon._run_job = _back_to_back
from agent.cli import main
sys.exit(main(sys.argv[1:]))
"""


def baseline_rss(code: str) -> float:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"{code}\nimport sys; sys.path.insert(0, {str(ROOT / 'bench')!r})"
            "\nfrom common import rss_mb; print(rss_mb())",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return float(out.stdout.strip())


def unit_malloc_env() -> dict[str, str]:
    """The glibc malloc settings (``Environment=MALLOC_*``) of the shipped unit, so the
    daemon runs here as systemd runs it."""
    env: dict[str, str] = {}
    for line in UNIT.read_text().splitlines():
        if line.startswith("Environment=MALLOC_"):
            name, _, value = line.removeprefix("Environment=").partition("=")
            env[name] = value
    return env


def ca_store(tmp: Path, lab_ca: Path, kind: str) -> Path:
    """The daemon's SSL_CERT_FILE: the lab CA, after the system bundle unless ``lab``.

    A real host verifies against its whole system store (here 144 CAs), and building a
    context from it costs memory and CPU that a one-CA bundle hides.
    """
    if kind == "lab":
        return lab_ca
    system = ssl.get_default_verify_paths().openssl_cafile
    try:
        bundle = Path(system).read_bytes()
    except OSError as e:
        sys.exit(f"--ca-store system: cannot read the system CA bundle {system}: {e}")
    out = tmp / "ca-system-plus-lab.pem"
    out.write_bytes(bundle.rstrip(b"\n") + b"\n" + lab_ca.read_bytes())
    return out


def metrics(port: int) -> dict[str, float]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            out[name] = float(value)
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_daemon(
    tmp: Path,
    lab: LabProcess,
    col: CollectorProcess,
    name: str,
    wrapper: bool,
    until_cycles: int | None,
    seconds: float | None,
    marks: list[int],
    ca_store: Path,
) -> dict[str, Any]:
    from tests.lab.config import to_toml

    port = free_port()
    state = tmp / f"state-{name}"
    token = tmp / "token"
    token.write_text(TOKEN + "\n")
    data = lab.agent_config(
        state,
        agent={"interval": "1s", "timeout": "0.9s", "log_level": "info"},
        collector={"url": col.url, "token_file": str(token)},
        status={"listen": f"127.0.0.1:{port}"},
    )
    cfg = tmp / f"{name}.toml"
    cfg.write_text(to_toml(data))
    argv = [sys.executable, "-c", BACK_TO_BACK] if wrapper else [sys.executable, "-m", "agent"]
    argv += ["--config", str(cfg), "run"]
    env = {**os.environ, **unit_malloc_env(), "SSL_CERT_FILE": str(ca_store)}
    log = (tmp / f"{name}.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd="/")
    samples: list[dict[str, float]] = []
    started = time.monotonic()
    try:

        def runs() -> float:
            try:
                return metrics(port).get("acme_preflight_runs_total", 0.0)
            except OSError as e:
                if proc.poll() is not None:
                    raise RuntimeError(f"daemon exited {proc.returncode}; see {log.name}") from e
                return 0.0

        wait_until(lambda: runs() >= 1, 60, "the first run")
        todo = sorted(set(marks))
        while True:
            m = metrics(port)
            n = int(m.get("acme_preflight_runs_total", 0))
            while todo and n >= todo[0]:
                todo.pop(0)
                samples.append(
                    {
                        "cycles": n,
                        "rss_mb": rss_mb(proc.pid),
                        "t_s": time.monotonic() - started,
                        "spool": m.get("acme_preflight_spool_reports", -1),
                        "delivered": m.get("acme_preflight_reports_delivered_total", 0),
                    }
                )
            if until_cycles is not None and n >= until_cycles:
                break
            if seconds is not None and time.monotonic() - started >= seconds:
                samples.append(
                    {
                        "cycles": n,
                        "rss_mb": rss_mb(proc.pid),
                        "t_s": time.monotonic() - started,
                        "spool": m.get("acme_preflight_spool_reports", -1),
                        "delivered": m.get("acme_preflight_reports_delivered_total", 0),
                    }
                )
                break
            time.sleep(0.2)
        # let the last report reach the collector before stopping
        wait_until(lambda: metrics(port).get("acme_preflight_spool_reports", 1) == 0, 30, "spool")
        final = metrics(port)
    finally:
        proc.terminate()
        rc = proc.wait(30)
        log.close()
    statuses: dict[str, int] = {}
    for line in (tmp / f"{name}.log").read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "check run finished":
            statuses[event.get("status", "?")] = statuses.get(event.get("status", "?"), 0) + 1
    return {
        "samples": samples,
        "exit": rc,
        "runs": int(final.get("acme_preflight_runs_total", 0)),
        "delivered": int(final.get("acme_preflight_reports_delivered_total", 0)),
        "failures": int(final.get("acme_preflight_delivery_failures_total", 0)),
        "dropped": int(final.get("acme_preflight_reports_dropped_total", 0)),
        "wall_s": time.monotonic() - started,
        "run_statuses": statuses,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cycles", type=int, default=10_000)
    p.add_argument("--steady-seconds", type=float, default=120.0)
    p.add_argument("--quick", action="store_true", help="1 s + 10 cycles: does it still run?")
    p.add_argument(
        "--ca-store",
        choices=("system", "lab"),
        default="system",
        help="trust store the daemon gets as SSL_CERT_FILE: the system CA bundle plus the "
        "lab's CA, as on a real host (default), or the lab's CA alone",
    )
    p.add_argument("--json-out", metavar="FILE", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.cycles, args.steady_seconds = 10, 1.0
    ensure_isolated(mount=True)
    header(
        f"daemon footprint: {args.steady_seconds:g} s at a 1 s interval, then "
        f"{args.cycles} cycles back to back"
    )
    base = baseline_rss(BASELINE)
    base_used = baseline_rss(BASELINE_USED)
    n = args.cycles
    marks = [1, 10, 100, 1000, *range(2000, n + 1, 1000), n]
    marks = sorted({m for m in marks if m <= n})
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as d:
        tmp = Path(d)
        with LabProcess(tmp / "lab") as lab:
            bind_etc(etc_fixture(tmp, lab.info["nameserver"]))
            store = ca_store(tmp, lab.ca_bundle, args.ca_store)
            with CollectorProcess(tmp / "collector") as col:
                steady = run_daemon(
                    tmp, lab, col, "steady", False, None, args.steady_seconds, [1, 10, 60], store
                )
                fast = run_daemon(tmp, lab, col, "fast", True, n, None, marks, store)
                stored = col.stored()
    res = {
        "ca_store": args.ca_store,
        "unit_env": unit_malloc_env(),
        "baseline_mb": base,
        "baseline_used_mb": base_used,
        "steady": steady,
        "back_to_back": fast,
        "collector_stored": stored,
    }
    report(res, n)
    emit_json(args.json_out, "daemon_footprint", res)


def report(res: dict[str, Any], n: int) -> None:
    base = res["baseline_mb"]
    print(f"  trust store: {res['ca_store']}; environment from the unit: {res['unit_env']}")
    print(f"  baseline: python -c '{BASELINE}': {base:.1f} MiB")
    print(f"  baseline, the submodules the daemon uses: {res['baseline_used_mb']:.1f} MiB")
    for key, label in (("steady", "1 s interval (as shipped)"), ("back_to_back", "back to back")):
        r = res[key]
        print(
            f"  {label}: {r['runs']} runs in {r['wall_s']:.0f} s, {r['delivered']} delivered, "
            f"{r['failures']} failed attempts, {r['dropped']} dropped; run status {r['run_statuses']}"
        )
        for s in r["samples"]:
            print(
                f"    after {s['cycles']:>6} cycles ({s['t_s']:6.0f} s): RSS {s['rss_mb']:6.1f} MiB "
                f"({s['rss_mb'] / base:.2f}x baseline)"
            )
    fast = res["back_to_back"]["samples"]
    first, last = fast[0], fast[-1]
    warm = next((s for s in fast if s["cycles"] >= 100), first)
    peak = max(s["rss_mb"] for s in fast + res["steady"]["samples"])
    growth_start = last["rss_mb"] - first["rss_mb"]
    growth_warm = last["rss_mb"] - warm["rss_mb"]
    print(
        f"  after {last['cycles']} cycles: growth {growth_start:+.2f} MiB since the first cycle, "
        f"{growth_warm:+.2f} MiB since cycle {warm['cycles']}; peak {peak:.1f} MiB"
    )
    made = sum(sum(res[k]["run_statuses"].values()) for k in ("steady", "back_to_back"))
    print(
        f"  collector stored {res['collector_stored']} of the {made} reports the daemons made "
        "(a run that finishes during the stop stays spooled for the next start)"
    )
    print(
        f"  target steady <= {TARGET_STEADY_MB:g} MiB: {verdict(peak <= TARGET_STEADY_MB)}; "
        f"growth <= {TARGET_GROWTH_MB:g} MiB (since cycle {warm['cycles']}): "
        f"{verdict(growth_warm <= TARGET_GROWTH_MB)}"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
