"""Per-host summary rows written at ingest, and the fleet queries the page and API run on them.

Ingest already parsed and validated each report, so it also keeps, in the same transaction:

- ``host_summary``: one row per host (names, overall status, last_seen, and the brief of every
  check as a small JSON array) - the grid reads a page of these, never a full report;
- ``host_checks``: one row per *problem* (a check in warn/fail/error) with its reason and
  since when - problem groups, filters and metrics are indexed queries over it;
- ``host_events``: a row whenever a host's overall status or a check's (status, reason)
  changes - the host page's timeline;
- ``fleet_hourly``: hosts per state (ready, warn, fail, stale) sampled by
  :func:`snapshot`, the last sample of each hour kept for the readiness chart.

The SQL is portable (SQLite and PostgreSQL: ``ON CONFLICT ... DO UPDATE``, row-value
comparisons); statements use ``?`` placeholders, which the store's connection translates.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

STATUS_RANK = {"fail": 0, "error": 1, "warn": 2, "skip": 3, "pass": 4}  # worst first
PROBLEM = ("fail", "error", "warn")
STATES = ("ready", "warn", "fail", "stale")  # the chart's series, mutually exclusive
SORTS = ("status", "host", "last_seen")
SAMPLE_HOSTS = 5  # hosts named in each problem group
HISTORY_HOURS = 7 * 24
_IN_CHUNK = 500

SCHEMA = """
CREATE TABLE host_summary (
    host_id     TEXT PRIMARY KEY,
    hostname    TEXT NOT NULL,
    fqdn        TEXT NOT NULL,
    version     TEXT NOT NULL,
    sort_name   TEXT NOT NULL,
    status      TEXT NOT NULL,
    rank        INTEGER NOT NULL,
    last_seen   REAL NOT NULL,
    interval_s  REAL,
    report_id   TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    checks      TEXT NOT NULL
);
CREATE INDEX host_summary_by_rank ON host_summary(rank, sort_name, host_id);
CREATE INDEX host_summary_by_name ON host_summary(sort_name, host_id);
CREATE INDEX host_summary_by_seen ON host_summary(last_seen, host_id);
CREATE TABLE host_checks (
    host_id    TEXT NOT NULL,
    check_name TEXT NOT NULL,
    status     TEXT NOT NULL,
    reason     TEXT NOT NULL,
    since      REAL NOT NULL,
    PRIMARY KEY (host_id, check_name)
);
CREATE INDEX host_checks_by_problem ON host_checks(check_name, reason, status, host_id);
CREATE TABLE host_events (
    host_id    TEXT NOT NULL,
    check_name TEXT NOT NULL,
    at         REAL NOT NULL,
    status     TEXT NOT NULL,
    reason     TEXT NOT NULL,
    PRIMARY KEY (host_id, check_name, at)
);
CREATE INDEX host_events_by_time ON host_events(at);
CREATE TABLE fleet_hourly (
    hour  INTEGER NOT NULL,
    state TEXT NOT NULL,
    hosts INTEGER NOT NULL,
    PRIMARY KEY (hour, state)
);
"""

# Narrow covering indexes: counting hosts by state (every page view) and searching read these
# instead of the wide rows (each holds its checks' brief).
SCHEMA_STATE_INDEXES = """
CREATE INDEX host_summary_state ON host_summary(status, last_seen, interval_s);
CREATE INDEX host_summary_search ON host_summary(sort_name, host_id, fqdn);
"""

_UPSERT_SUMMARY = (
    "INSERT INTO host_summary(host_id, hostname, fqdn, version, sort_name, status, rank, "
    "last_seen, interval_s, report_id, finished_at, checks) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(host_id) DO UPDATE SET hostname = excluded.hostname, fqdn = excluded.fqdn, "
    "version = excluded.version, sort_name = excluded.sort_name, status = excluded.status, "
    "rank = excluded.rank, last_seen = excluded.last_seen, interval_s = excluded.interval_s, "
    "report_id = excluded.report_id, finished_at = excluded.finished_at, checks = excluded.checks"
)
_UPSERT_CHECK = (
    "INSERT INTO host_checks(host_id, check_name, status, reason, since) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT(host_id, check_name) DO UPDATE SET status = excluded.status, "
    "reason = excluded.reason, since = excluded.since"
)
_DELETE_CHECK = "DELETE FROM host_checks WHERE host_id = ? AND check_name = ?"
_INSERT_EVENT = (
    "INSERT INTO host_events(host_id, check_name, at, status, reason) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT(host_id, check_name, at) DO UPDATE SET status = excluded.status, "
    "reason = excluded.reason"
)
# a stale host: no report for stale_intervals of its interval (or the default one)
_STALE = "s.last_seen < ? - ? * COALESCE(s.interval_s, ?)"


class Cursor(Protocol):
    def fetchall(self) -> list[Any]: ...
    def fetchone(self) -> Any: ...


class Conn(Protocol):
    """The DB-API subset used here (sqlite3.Connection, or the store's PostgreSQL wrapper)."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any: ...
    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> Any: ...


class QueryError(ValueError):
    """A query parameter that cannot be used (a bad cursor); ``field`` names it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


@dataclass(frozen=True, slots=True)
class CheckBrief:
    name: str
    status: str
    reason: str
    summary: str
    remediation: str

    def to_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "status": self.status,
            "summary": self.summary,
            "reason": self.reason,
            "remediation": self.remediation,
        }


@dataclass(frozen=True, slots=True)
class HostSummary:
    """What ingest keeps of a validated report for the fleet views."""

    hostname: str
    fqdn: str
    version: str
    finished_at: str
    checks: tuple[CheckBrief, ...]

    @classmethod
    def from_report(cls, doc: Mapping[str, Any]) -> HostSummary:
        """From a report that passed collector.validate (so every field has its type)."""
        agent = doc["agent"]
        return cls(
            hostname=agent["hostname"],
            fqdn=agent["fqdn"],
            version=agent["version"],
            finished_at=doc["finished_at"],
            checks=tuple(
                CheckBrief(c["name"], c["status"], c["reason"], c["summary"], c["remediation"])
                for c in doc["checks"]
            ),
        )

    def checks_json(self) -> str:
        return json.dumps(
            [[c.name, c.status, c.reason, c.summary, c.remediation] for c in self.checks],
            ensure_ascii=False,
            separators=(",", ":"),
        )


@dataclass(frozen=True, slots=True)
class Fresh:
    """A host's newest report of a committed group, as the writer hands it over."""

    host_id: str
    report_id: str
    status: str
    interval_s: float | None
    summary: HostSummary


def write(conn: Conn, fresh: Sequence[Fresh], now: float) -> None:
    """Update the summary tables for the newest report of each host (inside the writer's
    transaction): the host row, its problems (since when), and an event per change."""
    if not fresh:
        return
    ids = [f.host_id for f in fresh]
    old_status: dict[str, str] = {}
    old_checks: dict[str, dict[str, tuple[str, str, float]]] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        for hid, status in conn.execute(
            f"SELECT host_id, status FROM host_summary WHERE host_id IN ({marks})",  # noqa: S608
            chunk,
        ).fetchall():
            old_status[hid] = status
        for hid, name, status, reason, since in conn.execute(
            "SELECT host_id, check_name, status, reason, since FROM host_checks "  # noqa: S608
            f"WHERE host_id IN ({marks})",
            chunk,
        ).fetchall():
            old_checks.setdefault(hid, {})[name] = (status, reason, since)
    summaries: list[tuple[Any, ...]] = []
    upserts: list[tuple[Any, ...]] = []
    deletes: list[tuple[str, str]] = []
    events: list[tuple[Any, ...]] = []
    for f in fresh:
        s = f.summary
        name = s.hostname or f.host_id
        summaries.append(
            (
                f.host_id,
                s.hostname,
                s.fqdn,
                s.version,
                name.lower(),
                f.status,
                STATUS_RANK.get(f.status, 0),
                now,
                f.interval_s,
                f.report_id,
                s.finished_at,
                s.checks_json(),
            )
        )
        if old_status.get(f.host_id) != f.status:
            events.append((f.host_id, "", now, f.status, ""))
        before = old_checks.get(f.host_id, {})
        seen: set[str] = set()
        for c in s.checks:
            if c.name in seen:  # a repeated check name: the first one counts
                continue
            seen.add(c.name)
            prev = before.get(c.name)
            if c.status in PROBLEM:
                if prev is None or prev[:2] != (c.status, c.reason):
                    upserts.append((f.host_id, c.name, c.status, c.reason, now))
                    events.append((f.host_id, c.name, now, c.status, c.reason))
            elif prev is not None:  # the problem ended
                deletes.append((f.host_id, c.name))
                events.append((f.host_id, c.name, now, c.status, c.reason))
        for gone in before.keys() - seen:  # no longer reported at all
            deletes.append((f.host_id, gone))
            events.append((f.host_id, gone, now, "skip", "not_reported"))
    conn.executemany(_UPSERT_SUMMARY, summaries)
    if deletes:
        conn.executemany(_DELETE_CHECK, deletes)
    if upserts:
        conn.executemany(_UPSERT_CHECK, upserts)
    if events:
        conn.executemany(_INSERT_EVENT, events)


def prune_events(conn: Conn, cutoff: float, keep_hours: int = HISTORY_HOURS + 24) -> None:
    """Drop timeline events older than ``cutoff`` and chart samples older than the chart."""
    conn.execute("DELETE FROM host_events WHERE at < ?", (cutoff,))
    conn.execute("DELETE FROM fleet_hourly WHERE hour < ?", (int(cutoff // 3600) - keep_hours,))


# ---------------------------------------------------------------- reads


@dataclass(frozen=True, slots=True)
class HostLine:
    """One row of the grid: what /api/v1/hosts and the page show of a host."""

    host_id: str
    hostname: str
    fqdn: str
    version: str
    status: str
    last_seen: float
    interval_s: float | None
    report_id: str
    finished_at: str
    checks: tuple[CheckBrief, ...]
    stale: bool

    @property
    def name(self) -> str:
        return self.hostname or self.host_id

    @property
    def failing(self) -> tuple[CheckBrief, ...]:
        return tuple(c for c in self.checks if c.status in PROBLEM)


@dataclass(frozen=True, slots=True)
class Staleness:
    """The stale rule's inputs: a host is stale after ``intervals`` of its interval."""

    now: float
    intervals: float
    default_interval: float

    def params(self) -> tuple[float, float, float]:
        return (self.now, self.intervals, self.default_interval)

    def is_stale(self, last_seen: float, interval_s: float | None) -> bool:
        interval = interval_s if interval_s is not None else self.default_interval
        return last_seen < self.now - self.intervals * interval


@dataclass(frozen=True, slots=True)
class HostQuery:
    """Filters and paging of the grid; every field already validated by the caller."""

    status: str = "all"  # all, problems, stale, or a status
    check: str = ""
    reason: str = ""
    search: str = ""
    sort: str = "status"
    limit: int = 100
    cursor: str = ""


_SELECT_LINE = (
    "SELECT s.host_id, s.hostname, s.fqdn, s.version, s.status, s.last_seen, s.interval_s, "
    "s.report_id, s.finished_at, s.checks, s.rank, s.sort_name FROM host_summary s"
)
_KEYS = {
    "status": ("s.rank", "s.sort_name", "s.host_id"),
    "host": ("s.sort_name", "s.host_id"),
    "last_seen": ("s.last_seen", "s.host_id"),
}


def _line(row: Sequence[Any], st: Staleness) -> HostLine:
    try:
        raw = json.loads(row[9])
        checks = tuple(CheckBrief(*c) for c in raw)
    except (ValueError, TypeError):  # written by this module: only a damaged file gets here
        checks = ()
    return HostLine(
        host_id=row[0],
        hostname=row[1],
        fqdn=row[2],
        version=row[3],
        status=row[4],
        last_seen=float(row[5]),
        interval_s=None if row[6] is None else float(row[6]),
        report_id=row[7],
        finished_at=row[8],
        checks=checks,
        stale=st.is_stale(float(row[5]), None if row[6] is None else float(row[6])),
    )


def encode_cursor(values: Sequence[Any]) -> str:
    raw = json.dumps(list(values), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> list[Any]:
    """The key of the last row of the previous page; QueryError if it is not one of ours."""
    bad = QueryError("cursor", "expected a next_cursor value from a previous page")
    if len(cursor) > 1024:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (ValueError, TypeError):
        raise bad from None
    types: tuple[type, ...] = {
        "status": (int, str, str),
        "host": (str, str),
        "last_seen": (float, str),
    }[sort]
    if type(values) is not list or len(values) != len(types):
        raise bad
    out: list[Any] = []
    for v, t in zip(values, types, strict=True):
        if t is float and type(v) is int and abs(v) < 2**53:
            v = float(v)
        if type(v) is not t:
            raise bad
        if isinstance(v, float) and not -1e300 < v < 1e300:  # also NaN
            raise bad
        if isinstance(v, int) and not 0 <= v <= 4:
            raise bad
        if isinstance(v, str) and len(v) > 512:
            raise bad
        out.append(v)
    return out


def _where(q: HostQuery, st: Staleness) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if q.status == "stale":
        where.append(_STALE)
        params += st.params()
    elif q.status == "problems":
        where.append(f"(s.rank <= ? OR {_STALE})")
        params += [STATUS_RANK["warn"], *st.params()]
    elif q.status != "all":
        where.append("s.status = ?")
        params.append(q.status)
    if q.check or q.reason:
        # the problem hosts from the problem index first, then their rows
        sub = "SELECT c.host_id FROM host_checks c WHERE"
        if q.check:
            sub += " c.check_name = ?"
            params.append(q.check)
        if q.reason:
            sub += (" AND" if q.check else "") + " c.reason = ?"
            params.append(q.reason)
        where.append(f"s.host_id IN ({sub})")
    if q.search:
        term = "%" + q.search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        term += "%"
        # name and host_id only: both are in the sort indexes, so the walk in page order tests
        # them there and reads only the matching rows
        where.append("(s.sort_name LIKE ? ESCAPE '\\' OR LOWER(s.host_id) LIKE ? ESCAPE '\\')")
        params += [term, term]
    return where, params


def list_hosts(conn: Conn, q: HostQuery, st: Staleness) -> tuple[list[HostLine], str | None, int]:
    """One page of the grid, the cursor of the next page (None on the last), and how many
    hosts match the filters in all."""
    where, params = _where(q, st)
    total_sql = "SELECT COUNT(*) FROM host_summary s"
    if where:
        total_sql += " WHERE " + " AND ".join(where)
    total = int(conn.execute(total_sql, params).fetchone()[0])
    keys = _KEYS[q.sort]
    if q.cursor:
        after = decode_cursor(q.cursor, q.sort)
        where = [*where, f"({', '.join(keys)}) > ({', '.join('?' * len(keys))})"]
        params = [*params, *after]
    sql = _SELECT_LINE
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {', '.join(keys)} LIMIT ?"
    rows = conn.execute(sql, [*params, q.limit + 1]).fetchall()
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    lines = [_line(r, st) for r in rows]
    nxt: str | None = None
    if more:
        last = rows[-1]
        key = {
            "status": (last[10], last[11], last[0]),
            "host": (last[11], last[0]),
            "last_seen": (float(last[5]), last[0]),
        }[q.sort]
        nxt = encode_cursor(key)
    return lines, nxt, total


def host_line(conn: Conn, host_id: str, st: Staleness) -> HostLine | None:
    row = conn.execute(_SELECT_LINE + " WHERE s.host_id = ?", (host_id,)).fetchone()
    return _line(row, st) if row else None


@dataclass(frozen=True, slots=True)
class Tally:
    """The fleet's hosts counted once: by status, stale, per chart state, shortest interval."""

    by_status: dict[str, int]
    stale: int
    states: dict[str, int]
    min_interval: float | None


def tally(conn: Conn, st: Staleness) -> Tally:
    """One pass over the narrow state index."""
    by_status = dict.fromkeys(STATUS_RANK, 0)
    states = dict.fromkeys(STATES, 0)
    stale = 0
    intervals: list[float] = []
    for status, is_stale, n, low in conn.execute(
        f"SELECT s.status, CASE WHEN {_STALE} THEN 1 ELSE 0 END AS stale, "  # noqa: S608
        "COUNT(*), MIN(s.interval_s) FROM host_summary s GROUP BY s.status, stale",
        st.params(),
    ).fetchall():
        status, n = str(status), int(n)
        by_status[status] = by_status.get(status, 0) + n
        if low is not None:
            intervals.append(float(low))
        if is_stale:
            stale += n
            states["stale"] += n
        elif status in ("pass", "skip"):
            states["ready"] += n
        elif status == "warn":
            states["warn"] += n
        else:
            states["fail"] += n
    return Tally(by_status, stale, states, min(intervals, default=None))


def counts(conn: Conn, st: Staleness) -> tuple[dict[str, int], int]:
    """Hosts by the status of their latest report, and how many of them are stale."""
    t = tally(conn, st)
    return t.by_status, t.stale


def check_names(conn: Conn) -> list[str]:
    """Every check name with a problem somewhere (for the filter's choices)."""
    return [
        str(r[0])
        for r in conn.execute(
            "SELECT DISTINCT check_name FROM host_checks ORDER BY check_name"
        ).fetchall()
    ]


@dataclass(frozen=True, slots=True)
class Problem:
    """Hosts that share one (check, reason, status): the fix is the same for all of them."""

    check: str
    reason: str
    status: str
    hosts: int
    since: float
    summary: str
    remediation: str
    sample: tuple[tuple[str, str], ...]  # (host_id, display name), first few by host_id

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "reason": self.reason,
            "status": self.status,
            "hosts": self.hosts,
            "since": self.since,
            "summary": self.summary,
            "remediation": self.remediation,
            "sample": [{"host_id": h, "name": n} for h, n in self.sample],
        }


def problem_counts(conn: Conn) -> list[tuple[str, str, str, int, float]]:
    """(check, reason, status, hosts, first since), worst status first, then most hosts."""
    rows = conn.execute(
        "SELECT check_name, reason, status, COUNT(*), MIN(since) FROM host_checks "
        "GROUP BY check_name, reason, status"
    ).fetchall()
    out = [(str(c), str(r), str(s), int(n), float(t)) for c, r, s, n, t in rows]
    out.sort(key=lambda g: (STATUS_RANK.get(g[2], 0), -g[3], g[0], g[1]))
    return out


def problems(conn: Conn, limit: int) -> tuple[list[Problem], int]:
    """The ``limit`` biggest problem groups with a sample of their hosts, and how many
    groups there are in all."""
    groups = problem_counts(conn)
    out: list[Problem] = []
    for check, reason, status, n, since in groups[:limit]:
        rows = conn.execute(
            "SELECT s.host_id, s.hostname, s.checks FROM host_checks c "
            "JOIN host_summary s ON s.host_id = c.host_id "
            "WHERE c.check_name = ? AND c.reason = ? AND c.status = ? "
            "ORDER BY c.host_id LIMIT ?",
            (check, reason, status, SAMPLE_HOSTS),
        ).fetchall()
        summary = remediation = ""
        for _, _, checks in rows[:1]:
            try:
                for c in json.loads(checks):
                    if c[0] == check:
                        summary, remediation = str(c[3]), str(c[4])
                        break
            except (ValueError, TypeError, IndexError):
                pass
        sample = tuple((str(h), str(name or h)) for h, name, _ in rows)
        out.append(Problem(check, reason, status, n, since, summary, remediation, sample))
    return out, len(groups)


def stale_sample(conn: Conn, st: Staleness) -> list[tuple[str, str]]:
    rows = conn.execute(
        f"SELECT s.host_id, s.hostname FROM host_summary s WHERE {_STALE} "  # noqa: S608
        "ORDER BY s.last_seen, s.host_id LIMIT ?",
        (*st.params(), SAMPLE_HOSTS),
    ).fetchall()
    return [(str(h), str(n or h)) for h, n in rows]


@dataclass(frozen=True, slots=True)
class Event:
    check: str  # "" for the host's overall status
    at: float
    status: str
    reason: str


def timeline(conn: Conn, host_id: str, limit: int = 200) -> list[Event]:
    """The host's changes, newest first."""
    rows = conn.execute(
        "SELECT check_name, at, status, reason FROM host_events WHERE host_id = ? "
        "ORDER BY at DESC, check_name LIMIT ?",
        (host_id, limit),
    ).fetchall()
    return [Event(str(c), float(a), str(s), str(r)) for c, a, s, r in rows]


def current_states(conn: Conn, st: Staleness) -> dict[str, int]:
    """Hosts per chart state now: stale first, then ready (pass/skip), warn, fail (or error)."""
    return tally(conn, st).states


def record_sample(conn: Conn, hour: int, states: Mapping[str, int]) -> None:
    """Keep ``states`` as the figures of ``hour`` (the last sample of an hour wins)."""
    conn.executemany(
        "INSERT INTO fleet_hourly(hour, state, hosts) VALUES (?, ?, ?) "
        "ON CONFLICT(hour, state) DO UPDATE SET hosts = excluded.hosts",
        [(hour, s, int(states.get(s, 0))) for s in STATES],
    )


def history(conn: Conn, now: float, hours: int = HISTORY_HOURS) -> list[tuple[int, dict[str, int]]]:
    """(hour, states) for each sampled hour of the last ``hours``, oldest first."""
    first = int(now // 3600) - hours + 1
    by_hour: dict[int, dict[str, int]] = {}
    for hour, state, n in conn.execute(
        "SELECT hour, state, hosts FROM fleet_hourly WHERE hour >= ? ORDER BY hour", (first,)
    ).fetchall():
        by_hour.setdefault(int(hour), dict.fromkeys(STATES, 0))[str(state)] = int(n)
    return sorted(by_hour.items())


def backfill(conn: Conn, rows: Iterable[tuple[str, str, float, float | None, bytes]]) -> int:
    """Summary rows for hosts stored before this table existed, from their latest report:
    ``rows`` are (host_id, status, last_seen, interval_s, body). Returns how many."""
    n = 0
    batch: list[Fresh] = []
    for host_id, status, last_seen, interval_s, body in rows:
        try:
            doc = json.loads(body)
            summary = HostSummary.from_report(doc)
            rid = str(doc["report_id"])
        except (ValueError, KeyError, TypeError, RecursionError):
            continue
        batch.append(Fresh(host_id, rid, status, interval_s, summary))
        write(conn, batch, last_seen)
        batch.clear()
        n += 1
    return n
