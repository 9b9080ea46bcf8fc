"""A full check cycle against the DigiCert lab: wall time and the runner's overhead.

All six checks run against the lab stand-ins served from a child process (HTTPS on
127.0.0.2:443, DNS on 127.0.0.53:53, the sensor proxy on 127.0.0.4:48999, and
``www.lab.test`` for fqdn_resolution), with /etc/resolv.conf and /etc/hosts bind-mounted
to point at the lab in a private mount namespace. The script re-executes itself inside
``unshare --net --mount``: nothing leaves loopback.

Per cycle, three nested wall times are taken in the agent's own process:

- ``checks``: ``run_checks`` (what ``check`` does), against the slowest check's own
  ``duration_ms`` in the same cycle: the difference is the runner's overhead;
- ``report``: plus identity, ``build_report``, redaction and the JSON body (the daemon's
  per-run work before it touches the disk);
- ``daemon``: the daemon's real ``_run_once`` (the above, plus the spool commit and the
  atomic ``last.json``, both fsynced).

    python bench/check_cycle.py [--cycles 200] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import bind_etc, emit_json, ensure_isolated, header, summary, verdict
from procs import LabProcess, etc_fixture

TARGET_OVERHEAD_MS = 15.0


async def measure(cfg_path: Path, cycles: int, warmup: int) -> dict[str, Any]:
    from agent import log
    from agent.config import load
    from agent.context import CheckContext
    from agent.daemon.service import Daemon
    from agent.redact import redact_obj
    from agent.report import build_report, identity, utc_now
    from agent.runner import run_checks

    log.configure("warning")  # the daemon's "check run finished" lines are not the point here
    config = load(cfg_path)
    rows: dict[str, list[float]] = {"checks": [], "slowest": [], "report": [], "daemon": []}
    per_check: dict[str, list[float]] = {}
    statuses: dict[str, set[str]] = {}
    for i in range(warmup + cycles):
        t0 = time.perf_counter()
        ctx = CheckContext(config)
        started = utc_now()
        results = await run_checks(ctx)
        t1 = time.perf_counter()
        agent = await asyncio.to_thread(identity, config, ctx.paths.machine_id)
        report = build_report(config, agent, results, started)
        data = redact_obj(report.to_dict(), config.secrets())
        json.dumps(data, separators=(",", ":")).encode()
        t2 = time.perf_counter()
        if i < warmup:
            continue
        rows["checks"].append((t1 - t0) * 1000)
        rows["slowest"].append(max(r.duration_ms for r in results))
        rows["report"].append((t2 - t0) * 1000)
        for r in results:
            per_check.setdefault(r.name, []).append(r.duration_ms)
            statuses.setdefault(r.name, set()).add(r.status.value)

    # The daemon's own per-run job: checks, report, spool commit, last.json.
    # (the delivery opens the spool at the first enqueue; its drain task is not started)
    daemon = Daemon(config, None, cfg_path, explicit_config=True)
    for i in range(warmup + cycles):
        t0 = time.perf_counter()
        await daemon._run_once()
        if i >= warmup:
            rows["daemon"].append((time.perf_counter() - t0) * 1000)
    await daemon.delivery.close()
    overhead = [c - s for c, s in zip(rows["checks"], rows["slowest"], strict=True)]
    report_overhead = [c - s for c, s in zip(rows["report"], rows["slowest"], strict=True)]
    return {
        "cycles": cycles,
        "checks_ms": summary(rows["checks"]),
        "report_ms": summary(rows["report"]),
        "daemon_ms": summary(rows["daemon"]),
        "slowest_ms": summary(rows["slowest"]),
        "overhead_ms": summary(overhead),
        "report_overhead_ms": summary(report_overhead),
        "per_check_ms": {k: summary(v) for k, v in per_check.items()},
        "statuses": {k: sorted(v) for k, v in statuses.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cycles", type=int, default=200)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="10 cycles: does it still run?")
    p.add_argument("--profile", metavar="FILE", help="write a cProfile of the checks cycles")
    p.add_argument("--json-out", metavar="FILE", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.cycles, args.warmup = 10, 1
    ensure_isolated(mount=True)
    header(f"check cycle: all six checks against the lab, {args.cycles} cycles")

    from tests.lab.config import to_toml

    with tempfile.TemporaryDirectory(prefix="bench-cycle-") as d:
        tmp = Path(d)
        with LabProcess(tmp / "lab") as lab:
            bind_etc(etc_fixture(tmp, lab.info["nameserver"]))
            import os

            os.environ["SSL_CERT_FILE"] = str(lab.ca_bundle)
            cfg = tmp / "agent.toml"
            data = lab.agent_config(tmp / "state")
            data["collector"] = {"url": "http://127.0.0.1:9/"}  # spooled, never sent
            cfg.write_text(to_toml(data))
            gc.collect()
            if args.profile:
                import cProfile

                prof = cProfile.Profile()
                prof.enable()
                res = asyncio.run(measure(cfg, args.cycles, args.warmup))
                prof.disable()
                prof.dump_stats(args.profile)
            else:
                res = asyncio.run(measure(cfg, args.cycles, args.warmup))
    report(res)
    emit_json(args.json_out, "check_cycle", res)


def report(res: dict[str, Any]) -> None:
    def line(label: str, s: dict[str, float]) -> str:
        return (
            f"  {label:<34} p50 {s['p50']:7.2f} ms  p95 {s['p95']:7.2f} ms  "
            f"min {s['min']:7.2f}  max {s['max']:7.2f}"
        )

    print("per check (its own duration_ms):")
    for name, s in res["per_check_ms"].items():
        print(line(f"{name} [{'/'.join(res['statuses'][name])}]", s))
    print("per cycle:")
    print(line("slowest check", res["slowest_ms"]))
    print(line("run_checks wall", res["checks_ms"]))
    print(line("+ identity, report, JSON", res["report_ms"]))
    print(line("daemon _run_once (+ spool, last.json)", res["daemon_ms"]))
    ov, rov = res["overhead_ms"], res["report_overhead_ms"]
    print(line("overhead: run_checks - slowest", ov))
    print(line("overhead: + report - slowest", rov))
    ratio = res["checks_ms"]["p50"] / res["slowest_ms"]["p50"]
    print(
        f"ratio run_checks/slowest check (p50): {ratio:.3f}; "
        f"target overhead <= {TARGET_OVERHEAD_MS:g} ms (p95 {ov['p95']:.2f} ms; "
        f"with the report p95 {rov['p95']:.2f} ms): {verdict(rov['p95'] <= TARGET_OVERHEAD_MS)}"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
