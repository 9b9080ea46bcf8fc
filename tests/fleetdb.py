"""A collector database holding a large fleet, built through the store's own writer (the path a
POST takes after validation), for browser tests and bench/fleet_scale.py."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.checks import CHECK_NAMES
from collector import store, summary
from tests.collectorutil import check, report

# (check, status, reason, remediation) problems a fleet typically shows, with their weights
PROBLEMS: tuple[tuple[str, str, str, str, int], ...] = (
    (
        "digicert_ip",
        "fail",
        "ip_unreachable",
        "Allow outbound TCP 443 to 216.168.244.42 on the firewall.",
        6,
    ),
    (
        "outbound_https",
        "fail",
        "tls_intercepted",
        "Exempt acme.digicert.com and daas.digicert.com from TLS inspection.",
        3,
    ),
    (
        "fqdn_resolution",
        "fail",
        "name_unresolvable",
        "Add the web server's names to DNS or /etc/hosts.",
        2,
    ),
    ("clock_skew", "warn", "clock_skew", "Enable NTP (timedatectl set-ntp true).", 5),
    ("sensor_port", "fail", "sensor_wrong_port", "Use port 48999 for sensor 3.8.47 and newer.", 1),
    (
        "privileges",
        "warn",
        "reduced_capabilities",
        "Run the agent with full capabilities (see the unit file).",
        2,
    ),
)
CHECKS = CHECK_NAMES  # the one registry (agent/checks), not a copy


def fleet_reports(n: int, seed: int = 16, healthy: float = 0.7) -> Iterator[dict[str, Any]]:
    """``n`` schema-valid reports, one per host: most pass, the rest have a few problems."""
    rnd = random.Random(seed)
    weights = [p[4] for p in PROBLEMS]
    for i in range(n):
        bad: dict[str, tuple[str, str, str]] = {}
        if rnd.random() > healthy:
            for p in rnd.choices(PROBLEMS, weights, k=rnd.choice((1, 1, 2))):
                bad[p[0]] = (p[1], p[2], p[3])
        checks = []
        for name in CHECKS:
            if name in bad:
                status, reason, fix = bad[name]
                checks.append(
                    check(
                        name,
                        status,
                        reason=reason,
                        remediation=fix,
                        summary=f"{name}: {reason.replace('_', ' ')}",
                    )
                )
            else:
                checks.append(check(name))
        dc = ("fra", "iad", "sin", "lon")[i % 4]
        yield report(
            f"host-{i:06d}", hostname=f"web-{i:06d}.{dc}.example.com", checks=checks, interval_s=300
        )


async def _fill(db: Path, docs: Iterator[dict[str, Any]], batch: int) -> int:
    backend = store.open_backend(str(db), synchronous="normal")
    store.prepare(backend)
    writer = store.Writer(backend, asyncio.get_running_loop(), max_batch=batch)
    writer.start()
    n = 0
    try:
        while True:
            chunk = []
            for d in docs:
                chunk.append(
                    store.Record(
                        d["report_id"],
                        d["agent"]["host_id"],
                        d["status"],
                        d.get("interval_s"),
                        json.dumps(d, separators=(",", ":")).encode(),
                        summary.HostSummary.from_report(d),
                    )
                )
                if len(chunk) >= batch:
                    break
            if not chunk:
                return n
            await asyncio.gather(*(writer.submit(r) for r in chunk))
            n += len(chunk)
    finally:
        await writer.stop()


def build(db: Path, hosts: int, seed: int = 16, healthy: float = 0.7, batch: int = 4096) -> int:
    """Create ``db`` with one report per host for ``hosts`` hosts; returns how many."""
    return asyncio.run(fill(db, hosts, seed, healthy, batch))


async def fill(
    db: Path, hosts: int, seed: int = 16, healthy: float = 0.7, batch: int = 4096
) -> int:
    """:func:`build` inside a running event loop."""
    return await _fill(db, fleet_reports(hosts, seed, healthy), batch)
