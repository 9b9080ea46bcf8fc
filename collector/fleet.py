"""The fleet view: a host's latest report turned into what the API and the page show."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.checks import CHECK_NAMES
from collector.store import HostRow

STATUS_ORDER = ("fail", "error", "warn", "skip", "pass")  # worst first
_SEVERITY = {s: i for i, s in enumerate(reversed(STATUS_ORDER))}  # pass 0 .. fail 4
NOT_PASSING = frozenset(("warn", "fail", "error"))
FILTERS = ("all", "fail", "error", "warn", "skip", "pass", "stale", "problems")
SORTS = ("status", "host", "last_seen")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class HostView:
    host_id: str
    hostname: str
    fqdn: str
    version: str
    status: str
    last_seen: float
    age_s: float
    interval_s: float | None
    stale: bool
    report_id: str
    finished_at: str
    checks: tuple[dict[str, Any], ...]

    @property
    def failing(self) -> tuple[dict[str, Any], ...]:
        return tuple(c for c in self.checks if c.get("status") in NOT_PASSING)

    def to_json(self) -> dict[str, Any]:
        brief = [
            {k: c.get(k) for k in ("name", "status", "summary", "reason", "remediation")}
            for c in self.checks
        ]
        return {
            "host_id": self.host_id,
            "hostname": self.hostname,
            "fqdn": self.fqdn,
            "agent_version": self.version,
            "status": self.status,
            "stale": self.stale,
            "last_seen": iso(self.last_seen),
            "age_s": round(self.age_s, 3),
            "interval_s": self.interval_s,
            "report_id": self.report_id,
            "finished_at": self.finished_at,
            "failing_checks": [c for c in brief if c["status"] in NOT_PASSING],
            "checks": brief,
        }


def host_view(
    row: HostRow, now: float, stale_intervals: float, default_interval: float
) -> HostView:
    try:
        doc: dict[str, Any] = json.loads(row.body)
    except (ValueError, RecursionError):
        # valid when stored, but nested deeper than this thread's stack allows now
        doc = {"checks": []}
    agent = doc.get("agent", {})
    interval = row.interval_s if row.interval_s is not None else default_interval
    age = max(0.0, now - row.last_seen)
    return HostView(
        host_id=row.host_id,
        hostname=str(agent.get("hostname", "")),
        fqdn=str(agent.get("fqdn", "")),
        version=str(agent.get("version", "")),
        status=row.status,
        last_seen=row.last_seen,
        age_s=age,
        interval_s=row.interval_s,
        stale=age > stale_intervals * interval,
        report_id=str(doc.get("report_id", "")),
        finished_at=str(doc.get("finished_at", "")),
        checks=tuple(c for c in doc.get("checks", []) if isinstance(c, dict)),
    )


def matches(view: HostView, status_filter: str) -> bool:
    if status_filter == "all":
        return True
    if status_filter == "stale":
        return view.stale
    if status_filter == "problems":
        return view.stale or view.status in NOT_PASSING
    return view.status == status_filter


def sort_views(views: list[HostView], key: str) -> list[HostView]:
    if key == "host":
        return sorted(views, key=lambda v: (v.hostname.lower() or v.host_id, v.host_id))
    if key == "last_seen":
        return sorted(views, key=lambda v: v.last_seen)  # longest silent first
    # worst first; stale before fresh within a status; then by name
    return sorted(
        views,
        key=lambda v: (-_SEVERITY.get(v.status, 0), not v.stale, v.hostname.lower(), v.host_id),
    )


def check_columns(views: list[HostView]) -> list[str]:
    """The agent's checks in their usual order, then any others by name."""
    seen = {str(c.get("name")) for v in views for c in v.checks}
    known = [n for n in CHECK_NAMES if n in seen]
    return known + sorted(seen - set(CHECK_NAMES))


def counts(views: list[HostView]) -> dict[str, int]:
    out = dict.fromkeys(STATUS_ORDER, 0)
    out["stale"] = 0
    for v in views:
        out[v.status] = out.get(v.status, 0) + 1
        out["stale"] += v.stale
    return out
