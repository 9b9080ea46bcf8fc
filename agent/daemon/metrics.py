"""The daemon's counters and gauges, rendered as Prometheus text exposition (format 0.0.4).

Written by hand rather than with prometheus_client: a dozen series do not justify
a runtime dependency. Every name starts with ``acme_preflight_``.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

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
    "reports_dropped_total": ("counter", "Oldest reports dropped because the spool was full."),
    "config_reloads_total": ("counter", "SIGHUP reloads by result (ok or failed)."),
}


@dataclass
class Metrics:
    version: str
    runs: int = 0
    delivered: int = 0
    delivery_failures: int = 0
    dead_lettered: int = 0
    dropped: int = 0
    reloads: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0})
    spool_reports: int = 0
    spool_bytes: int = 0
    dead_letters: int = 0
    last_report: Mapping[str, Any] | None = None
    last_run_ts: float | None = None

    def render(self) -> str:
        out: list[str] = []

        def family(name: str, samples: Iterable[tuple[Mapping[str, str], float]]) -> None:
            kind, text = METRICS[name]
            full = PREFIX + name
            out.append(f"# HELP {full} {text}")
            out.append(f"# TYPE {full} {kind}")
            for labels, value in samples:
                out.append(f"{full}{_labels(labels)} {_num(value)}")

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
        family("reports_dropped_total", [({}, self.dropped)])
        family("config_reloads_total", [({"result": k}, v) for k, v in self.reloads.items()])
        return "\n".join(out) + "\n"


def _code(status: object) -> int:
    try:
        return Status(str(status)).code
    except ValueError:
        return Status.ERROR.code


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))
