"""The collector's account checks: run at start and every ``[certcentral] interval``.

Off the ingest path: one task in one worker (worker 0, like retention) runs the agent's
account checks (agent/account) with the fleet's web server names, and stores the report
as the single row of ``account_report``; every worker reads it from there for
``GET /api/v1/account``, ``/metrics`` and the fleet page. The API key is read once at
start; it is scrubbed from the report before it is stored (the runner already keeps it
out of every result).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agent.account.pacing import Pacer
from agent.account.report import run_account
from agent.config import Config
from agent.model import Status
from agent.redact import redact_text
from agent.report import identity
from collector import fleet, store
from collector.config import Settings

log = logging.getLogger("acme_preflight.collector.account")

METRIC = "acme_preflight_account_check_status"
MAX_NAMES = 10_000


def host_names(view: fleet.HostView) -> list[str]:
    """The web server names a host's ``fqdn_resolution`` result lists."""
    for c in view.checks:
        if c.get("name") != "fqdn_resolution":
            continue
        details = c.get("details")
        names = details.get("names") if isinstance(details, dict) else None
        if not isinstance(names, list):
            return []
        out = []
        for n in names:
            name = n.get("name") if isinstance(n, dict) else None
            if isinstance(name, str) and 0 < len(name) <= 253:
                out.append(name.strip().rstrip(".").lower())
        return out
    return []


def fleet_names(views: Iterable[fleet.HostView]) -> list[str]:
    """Every host's names, each once, bounded."""
    return list(dict.fromkeys(n for v in views for n in host_names(v)))[:MAX_NAMES]


@dataclass(frozen=True)
class Stored:
    """The stored account report and each host's names as its run matched them."""

    received_at: float
    report: dict[str, Any]
    host_names: dict[str, list[str]]


def parse(row: store.AccountRow | None) -> Stored | None:
    if row is None:
        return None
    try:
        doc = json.loads(row.body)
        names = json.loads(row.host_names)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(names, dict):
        return None
    return Stored(row.received_at, doc, names)


def metrics_lines(stored: Stored | None) -> str:
    """``acme_preflight_account_check_status{check=...}``: 0 pass, 1 warn, 2 fail, 3 error,
    4 skip (the agent's status codes)."""
    if stored is None:
        return ""
    report = stored.report
    out = [
        f"# HELP {METRIC} Status of each CertCentral account check (0 pass, 1 warn, 2 fail, "
        "3 error, 4 skip).",
        f"# TYPE {METRIC} gauge",
    ]
    for c in report.get("checks", []):
        try:
            code = Status(c.get("status")).code
        except ValueError:
            continue
        name = str(c.get("name", "")).replace("\\", "\\\\").replace('"', '\\"')
        out.append(f'{METRIC}{{check="{name}"}} {code}')
    return "\n".join(out) + "\n"


class AccountMonitor:
    """Runs the account checks on a schedule and stores each report."""

    def __init__(
        self,
        settings: Settings,
        api_key: str,
        writer: store.Writer,
        reader: store.Reader,
        clock: Callable[[], float],
    ) -> None:
        assert settings.certcentral is not None
        self.settings = settings
        self.config = Config(certcentral=settings.certcentral, proxy=settings.proxy)
        self._key = api_key
        self._writer = writer
        self._reader = reader
        self._clock = clock
        self.pacer = Pacer()  # lives across runs: the rate limits are per key, not per run
        self.runs = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run_once(self) -> dict[str, Any]:
        """One run with the fleet's current names; the report is stored before returning."""
        s = self.settings
        now = self._clock()
        views = await self._reader.run(
            lambda conn: [
                fleet.host_view(r, now, s.stale_intervals, s.default_interval_s)
                for r in store.hosts(conn)
            ]
        )
        who = identity(self.config)
        report = await run_account(
            self.config, self._key, who, fleet_names(views), pacer=self.pacer
        )
        row = store.AccountRow(
            self._clock(),
            str(report["status"]),
            json.dumps(report).encode(),
            json.dumps({v.host_id: host_names(v) for v in views}).encode(),
        )
        await self._writer.call(lambda conn: store.put_account(conn, row))
        self.runs += 1
        return report

    async def _loop(self) -> None:
        assert self.settings.certcentral is not None
        interval = self.settings.certcentral.interval
        while True:
            try:
                report = await self.run_once()
                log.info("account checks done: %s", report["status"])
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the next run tries again; the last report stays
                why = redact_text(f"{type(e).__name__}: {e}", (self._key,))
                log.error("account checks failed: %s", why)
            await asyncio.sleep(interval)
