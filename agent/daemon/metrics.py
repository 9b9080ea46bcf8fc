"""The daemon's counters and gauges, rendered as Prometheus text exposition (format 0.0.4).

Formatted by agent.promtext (shared with the collector). Every name starts with
``acme_preflight_``.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent import compat, promtext
from agent.model import Status

PREFIX = "acme_preflight_"

# name -> (type, help); the documentation in docs/daemon.md lists the same.
METRICS: dict[str, tuple[str, str]] = {
    "build_info": ("gauge", "Always 1; the labels carry the agent and Python versions."),
    "check_status": (
        "gauge",
        "Last status of each check: 0 pass, 1 warn, 2 fail, 3 error, 4 skip.",
    ),
    "check_up": ("gauge", "1 when the check could run in the last run (status is not error)."),
    "check_duration_seconds": ("gauge", "How long each check took in the last run."),
    "last_run_status": ("gauge", "Overall status of the last run (same codes as check_status)."),
    "last_run_timestamp_seconds": ("gauge", "Unix time the last run finished."),
    "runs_total": ("counter", "Check runs completed since the daemon started."),
    "spool_reports": ("gauge", "Reports waiting in the spool for delivery."),
    "spool_bytes": ("gauge", "Bytes of report JSON waiting in the spool."),
    "dead_letter_reports": ("gauge", "Reports in the dead-letter table (kept for inspection)."),
    "reports_delivered_total": ("counter", "Reports the collector accepted (2xx)."),
    "delivery_failures_total": (
        "counter",
        "Failed delivery attempts (connection errors, timeouts, 401/403, 408, 429, 5xx ...).",
    ),
    "reports_dead_lettered_total": (
        "counter",
        "Reports the collector rejected for good (400/413/422), moved to the dead-letter table.",
    ),
    "reports_dropped_total": (
        "counter",
        "Reports that will not reach the collector, by reason: spool_full (the oldest, to make"
        " room), dead_letter (rejected for good), spool_corrupt (in a damaged spool moved aside).",
    ),
    "dead_letters_evicted_total": (
        "counter",
        "Oldest dead letters deleted to keep the dead-letter table bounded (each was counted"
        " in reports_dropped_total when it was dead-lettered).",
    ),
    "delivery_held": (
        "gauge",
        "1 while the spool is held: the collector (or a proxy before it) rejects every report"
        " (400/409/413/422 in a row), so none is dead-lettered; retried with backoff.",
    ),
    "spool_corruptions_total": (
        "counter",
        "Damaged spool files moved aside (state_dir/spool.sqlite3.corrupt-TIME), each replaced"
        " by a fresh spool.",
    ),
    "config_reloads_total": ("counter", "SIGHUP reloads by result (ok or failed)."),
    "delivery_failing": (
        "gauge",
        "1 while the last delivery attempt failed (the collector is down, refusing, slow ...).",
    ),
    "delivery_consecutive_failures": ("gauge", "Failed attempts since the last delivered report."),
    "last_delivery_timestamp_seconds": ("gauge", "Unix time a report was last delivered."),
    "last_delivery_error_info": (
        "gauge",
        "1 while delivery fails; kind = timeout, connection, tls, http (with http_status).",
    ),
    "spool_failing": ("gauge", "1 while the last spool write failed (disk full, read-only ...)."),
    "spool_errors_total": ("counter", "Spool writes that failed (the report was kept in memory)."),
    "last_spool_error_info": (
        "gauge",
        "1 while the spool fails; kind = disk_full, read_only, other.",
    ),
}


@dataclass
class Metrics:
    version: str
    runs: int = 0
    delivered: int = 0
    delivery_failures: int = 0
    dead_lettered: int = 0
    dropped: int = 0  # the oldest, to make room in a full spool
    dropped_dead_letter: int = 0  # rejected for good
    dropped_corrupt: int = 0  # in a damaged spool moved aside
    dead_letters_evicted: int = 0
    reloads: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0})
    spool_reports: int = 0
    spool_bytes: int = 0
    dead_letters: int = 0
    last_report: dict[str, Any] | None = None
    last_run_ts: float | None = None
    # What is wrong right now, for /metrics and /status/daemon (cleared by the next success).
    delivery_error: str = ""
    delivery_error_kind: str = ""
    delivery_error_status: int | None = None
    delivery_error_ts: float | None = None
    consecutive_failures: int = 0
    last_delivery_ts: float | None = None
    spool_error: str = ""
    spool_error_kind: str = ""
    spool_error_ts: float | None = None
    spool_errors: int = 0
    held_reason: str = ""  # why the spool is held (every report rejected), or ""
    held_since: float | None = None
    spool_corruptions: int = 0
    spool_corrupt_moved_to: str = ""
    spool_corrupt_error: str = ""
    spool_corrupt_ts: float | None = None

    def delivery_ok(self) -> None:
        self.last_delivery_ts = time.time()
        self.consecutive_failures = 0
        self.delivery_error, self.delivery_error_kind = "", ""
        self.delivery_error_status = self.delivery_error_ts = None
        self.held_reason, self.held_since = "", None

    def delivery_hold(self, reason: str) -> None:
        if not self.held_reason:
            self.held_since = time.time()
        self.held_reason = reason

    def delivery_failed(self, error: str, http_status: int | None) -> None:
        self.consecutive_failures += 1
        self.delivery_error = error
        self.delivery_error_kind = delivery_error_kind(error, http_status)
        self.delivery_error_status = http_status
        self.delivery_error_ts = time.time()

    def spool_ok(self) -> None:
        self.spool_error, self.spool_error_kind, self.spool_error_ts = "", "", None

    def spool_failed(self, error: str, kind: str | None = None) -> None:
        self.spool_errors += 1
        self.spool_error = error
        self.spool_error_kind = kind or spool_error_kind(error)
        self.spool_error_ts = time.time()

    def spool_corrupted(self, moved_to: str, error: str, lost: int) -> None:
        self.spool_corruptions += 1
        self.spool_corrupt_moved_to, self.spool_corrupt_error = moved_to, error
        self.spool_corrupt_ts = time.time()
        self.dropped_corrupt += lost

    def dropped_by(self) -> dict[str, int]:
        """Reports that will not reach the collector, by reason (the metric's label)."""
        return {
            "spool_full": self.dropped,
            "dead_letter": self.dropped_dead_letter,
            "spool_corrupt": self.dropped_corrupt,
        }

    def daemon_status(self) -> dict[str, Any]:
        """The daemon's own state for ``/status/daemon``: delivery and spool health."""
        return {
            "delivery": {
                "failing": bool(self.delivery_error),
                "error": self.delivery_error or None,
                "error_kind": self.delivery_error_kind or None,
                "http_status": self.delivery_error_status,
                "error_at": _iso(self.delivery_error_ts),
                "consecutive_failures": self.consecutive_failures,
                "last_delivered_at": _iso(self.last_delivery_ts),
                "delivered_total": self.delivered,
                "failures_total": self.delivery_failures,
                "held": bool(self.held_reason),
                "held_reason": self.held_reason or None,
                "held_since": _iso(self.held_since),
            },
            "spool": {
                "failing": bool(self.spool_error),
                "error": self.spool_error or None,
                "error_kind": self.spool_error_kind or None,
                "error_at": _iso(self.spool_error_ts),
                "errors_total": self.spool_errors,
                "reports": self.spool_reports,
                "bytes": self.spool_bytes,
                "dead_letters": self.dead_letters,
                "dropped_total": sum(self.dropped_by().values()),
                "dropped": self.dropped_by(),
                "dead_letters_evicted_total": self.dead_letters_evicted,
                "corruptions_total": self.spool_corruptions,
                "corrupt_moved_to": self.spool_corrupt_moved_to or None,
                "corrupt_error": self.spool_corrupt_error or None,
                "corrupt_at": _iso(self.spool_corrupt_ts),
            },
            "runs_total": self.runs,
            "last_run_at": _iso(self.last_run_ts),
        }

    def render(self) -> str:
        exp = promtext.Exposition(PREFIX)

        def family(name: str, samples: Iterable[promtext.Sample]) -> None:
            kind, text = METRICS[name]
            exp.family(name, kind, text, samples)

        family(
            "build_info",
            [({"version": self.version, "python": platform.python_version()}, 1)],
        )
        checks = list(self.last_report.get("checks", [])) if self.last_report else []
        family("check_status", [({"check": c["name"]}, _code(c["status"])) for c in checks])
        family(
            "check_up",
            [({"check": c["name"]}, 0 if c["status"] == "error" else 1) for c in checks],
        )
        family(
            "check_duration_seconds",
            [({"check": c["name"]}, float(c["duration_ms"]) / 1000) for c in checks],
        )
        if self.last_report is not None:
            family("last_run_status", [({}, _code(self.last_report["status"]))])
        if self.last_run_ts is not None:
            family("last_run_timestamp_seconds", [({}, self.last_run_ts)])
        family("runs_total", [({}, self.runs)])
        family("spool_reports", [({}, self.spool_reports)])
        family("spool_bytes", [({}, self.spool_bytes)])
        family("dead_letter_reports", [({}, self.dead_letters)])
        family("reports_delivered_total", [({}, self.delivered)])
        family("delivery_failures_total", [({}, self.delivery_failures)])
        family("reports_dead_lettered_total", [({}, self.dead_lettered)])
        family("reports_dropped_total", [({"reason": k}, v) for k, v in self.dropped_by().items()])
        family("dead_letters_evicted_total", [({}, self.dead_letters_evicted)])
        family("delivery_held", [({}, 1 if self.held_reason else 0)])
        family("spool_corruptions_total", [({}, self.spool_corruptions)])
        family("config_reloads_total", [({"result": k}, v) for k, v in self.reloads.items()])
        family("delivery_failing", [({}, 1 if self.delivery_error else 0)])
        family("delivery_consecutive_failures", [({}, self.consecutive_failures)])
        if self.last_delivery_ts is not None:
            family("last_delivery_timestamp_seconds", [({}, self.last_delivery_ts)])
        if self.delivery_error:
            labels = {"kind": self.delivery_error_kind}
            if self.delivery_error_status is not None:
                labels["http_status"] = str(self.delivery_error_status)
            family("last_delivery_error_info", [(labels, 1)])
        family("spool_failing", [({}, 1 if self.spool_error else 0)])
        family("spool_errors_total", [({}, self.spool_errors)])
        if self.spool_error:
            family("last_spool_error_info", [({"kind": self.spool_error_kind}, 1)])
        return exp.text()


def delivery_error_kind(error: str, http_status: int | None) -> str:
    """A short, stable class of a failed attempt (a label value: never the free text)."""
    if http_status is not None:
        return "http"
    low = error.lower()
    if "timed out" in low or "timeout" in low:
        return "timeout"
    if "certificate" in low or "ssl" in low or "tls" in low:
        return "tls"
    return "connection"


def spool_error_kind(error: str) -> str:
    low = error.lower()
    if "full" in low or "no space" in low:
        return "disk_full"
    if "readonly" in low or "read-only" in low or "read only" in low:
        return "read_only"
    return "other"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return (
        datetime.fromtimestamp(ts, compat.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _code(status: object) -> int:
    try:
        return Status(str(status)).code
    except ValueError:
        return Status.ERROR.code
