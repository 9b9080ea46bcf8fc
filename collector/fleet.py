"""The fleet view: what the page and the API show, built from the summary rows in one go.

:func:`fleet_view` runs on a reader thread (queries and all), so the event loop only
serves the answer. :func:`host_view` is the host page's full view of one latest report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent import compat
from agent.checks import CHECK_NAMES
from collector import summary
from collector.store import HostRow
from collector.summary import HostLine, HostQuery, Problem, QueryError, Staleness

STATUS_ORDER = ("fail", "error", "warn", "skip", "pass")  # worst first
NOT_PASSING = frozenset(("warn", "fail", "error"))
FILTERS = ("all", "problems", "fail", "error", "warn", "skip", "pass", "stale")
SORTS = summary.SORTS
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
PAGE_PROBLEMS = 12  # problem groups on the page (the API pages the rest)
MAX_PROBLEMS = 500
MAX_SEARCH = 200


def iso(ts: float) -> str:
    return (
        datetime.fromtimestamp(ts, compat.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def _ident(value: str, field: str) -> str:
    """A check name or reason code as reports carry them (``^[a-z][a-z0-9_]{0,63}$``)."""
    if value and (
        len(value) > 64
        or not ("a" <= value[0] <= "z")
        or any(not (ch.isascii() and (ch.islower() or ch.isdigit() or ch == "_")) for ch in value)
    ):
        raise QueryError(field, "expected a name like outbound_https (a-z, 0-9, _)")
    return value


def parse_query(query: Mapping[str, str]) -> HostQuery:
    """The grid's filters and paging from a query string; QueryError names a bad field."""
    status = query.get("status", "all") or "all"
    if status not in FILTERS:
        raise QueryError("status", f"expected one of {', '.join(FILTERS)}")
    sort = query.get("sort", "status") or "status"
    if sort not in SORTS:
        raise QueryError("sort", f"expected one of {', '.join(SORTS)}")
    raw = query.get("limit", str(DEFAULT_LIMIT))
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6 and 1 <= int(raw) <= MAX_LIMIT):
        raise QueryError("limit", f"expected an integer 1..{MAX_LIMIT}")
    search = query.get("q", "").strip()
    if len(search) > MAX_SEARCH:
        raise QueryError("q", f"longer than {MAX_SEARCH} characters")
    if any(ord(ch) < 32 or 0xD800 <= ord(ch) <= 0xDFFF for ch in search):
        raise QueryError("q", "control characters are not searchable")
    cursor = query.get("cursor", "")
    q = HostQuery(
        status=status,
        check=_ident(query.get("check", "").strip(), "check"),
        reason=_ident(query.get("reason", "").strip(), "reason"),
        search=search,
        sort=sort,
        limit=int(raw),
        cursor=cursor,
    )
    if cursor:
        summary.decode_cursor(cursor, sort)  # raises QueryError
    return q


def check_columns(lines: list[HostLine]) -> list[str]:
    """The registry's checks in their order, then any other check a shown host reports."""
    seen = {c.name for line in lines for c in line.checks}
    return list(CHECK_NAMES) + sorted(seen - set(CHECK_NAMES))


@dataclass(frozen=True)
class FleetView:
    """Everything the fleet page shows, read in one reader-thread call."""

    now: float
    query: HostQuery
    counts: dict[str, int]  # hosts by status
    stale: int
    problems: list[Problem]
    problem_groups: int
    stale_sample: list[tuple[str, str]]
    states: dict[str, int]  # now, by chart state
    history: list[tuple[int, dict[str, int]]]
    lines: list[HostLine]
    next_cursor: str | None
    matching: int
    min_interval: float | None

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def fleet_view(
    conn: summary.Conn, q: HostQuery, st: Staleness, problems: int = PAGE_PROBLEMS
) -> FleetView:
    t = summary.tally(conn, st)
    groups, n_groups = summary.problems(conn, problems)
    lines, nxt, matching = summary.list_hosts(conn, q, st)
    return FleetView(
        now=st.now,
        query=q,
        counts=t.by_status,
        stale=t.stale,
        problems=groups,
        problem_groups=n_groups,
        stale_sample=summary.stale_sample(conn, st) if t.stale else [],
        states=t.states,
        history=summary.history(conn, st.now),
        lines=lines,
        next_cursor=nxt,
        matching=matching,
        min_interval=t.min_interval,
    )


def line_json(line: HostLine, now: float) -> dict[str, Any]:
    brief = [c.to_json() for c in line.checks]
    return {
        "host_id": line.host_id,
        "hostname": line.hostname,
        "fqdn": line.fqdn,
        "agent_version": line.version,
        "status": line.status,
        "stale": line.stale,
        "last_seen": iso(line.last_seen),
        "age_s": round(max(0.0, now - line.last_seen), 3),
        "interval_s": line.interval_s,
        "report_id": line.report_id,
        "finished_at": line.finished_at,
        "failing_checks": [c for c in brief if c["status"] in NOT_PASSING],
        "checks": brief,
    }


def problem_json(p: Problem) -> dict[str, Any]:
    out = p.to_json()
    out["since"] = iso(p.since)
    return out


# ---------------------------------------------------------------- one host, in full


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
