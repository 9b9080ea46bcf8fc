"""The collector's metrics, formatted by agent.promtext (shared with the daemon).

Every figure lives in a row of float64 slots. One process keeps its row in private memory;
with ``workers > 1`` the rows of all workers share one anonymous memory map (created before
the fork), each worker writes only its own row, and ``/metrics`` from any worker sums all
rows, so a scrape sees the whole collector whichever worker answers it. A slot is only ever
written by the event loop thread of its worker (8-byte aligned stores: a reader never sees a
torn value).
"""

from __future__ import annotations

import bisect
import mmap
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from agent import promtext

if TYPE_CHECKING:
    Row = memoryview[float]  # float64 slots
else:
    Row = memoryview

PREFIX = "acme_preflight_collector_"

INGEST_OUTCOMES = (
    "accepted",
    "duplicate",
    "unauthorized",
    "forbidden",
    "too_large",
    "too_slow",
    "bad_encoding",
    "invalid_json",
    "invalid_report",
    "unavailable",
    "conflict",
    "host_limit",
)
HANDLERS = (
    "ingest",
    "hosts",
    "problems",
    "host_reports",
    "account",
    "page",
    "host_page",
    "metrics",
    "healthz",
)
MAX_PROBLEM_SERIES = 100
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class Histogram:
    """Bucket counts then the sum, in ``len(buckets) + 2`` slots of a row."""

    def __init__(self, buckets: Sequence[float], row: Row, rows: Sequence[Row]):
        self.bounds = tuple(buckets)
        self._n = len(self.bounds) + 1
        self._v = row
        self._rows = rows

    @staticmethod
    def size(buckets: Sequence[float]) -> int:
        return len(buckets) + 2

    def observe(self, value: float) -> None:
        v = self._v
        v[bisect.bisect_left(self.bounds, value)] += 1
        v[self._n] += value

    @property
    def counts(self) -> list[int]:
        """Per-bucket counts summed over every worker."""
        return [int(sum(r[i] for r in self._rows)) for i in range(self._n)]

    @property
    def sum(self) -> float:
        return sum(r[self._n] for r in self._rows)

    def series(
        self, labels: promtext.Labels
    ) -> tuple[promtext.Labels, tuple[float, ...], list[int], float]:
        """This histogram as one series of :meth:`agent.promtext.Exposition.histogram`."""
        return labels, self.bounds, self.counts, self.sum


class _Counters(Mapping[str, int]):
    """Named counters in consecutive slots; reading one sums every worker's row."""

    def __init__(self, names: Sequence[str], rows: Sequence[Row]) -> None:
        self._index = {name: i for i, name in enumerate(names)}
        self._rows = rows

    def __getitem__(self, name: str) -> int:
        i = self._index[name]
        return int(sum(r[i] for r in self._rows))

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


_INGEST = 0
_PRUNED = _INGEST + len(INGEST_OUTCOMES)
_RETIRED = _PRUNED + 1
_BATCH = _RETIRED + 1
_COMMIT = _BATCH + Histogram.size(BATCH_BUCKETS)
_LATENCY = _COMMIT + Histogram.size(LATENCY_BUCKETS)
ROW_SLOTS = _LATENCY + len(HANDLERS) * Histogram.size(LATENCY_BUCKETS)


def shared_rows(workers: int) -> list[Row]:
    """``workers`` zeroed rows in one anonymous shared map: create before forking."""
    size = ROW_SLOTS * 8
    buf = mmap.mmap(-1, size * workers)  # MAP_SHARED | MAP_ANONYMOUS: children share it
    view = memoryview(buf).cast("d")
    return [view[i * ROW_SLOTS : (i + 1) * ROW_SLOTS] for i in range(workers)]


class Metrics:
    """One worker's metrics; ``rows`` are every worker's (default: one private row)."""

    def __init__(self, rows: Sequence[Row] | None = None, index: int = 0) -> None:
        if rows is None:
            rows = [memoryview(bytearray(ROW_SLOTS * 8)).cast("d")]
        self._rows = list(rows)
        row = self._v = self._rows[index]

        def part(start: int, size: int) -> tuple[Row, list[Row]]:
            return row[start : start + size], [r[start : start + size] for r in self._rows]

        self.ingest = _Counters(INGEST_OUTCOMES, self._rows)
        self._outcome = {name: _INGEST + i for i, name in enumerate(INGEST_OUTCOMES)}
        size = Histogram.size(BATCH_BUCKETS)
        self.batch_size = Histogram(BATCH_BUCKETS, *part(_BATCH, size))
        size = Histogram.size(LATENCY_BUCKETS)
        self.commit_seconds = Histogram(LATENCY_BUCKETS, *part(_COMMIT, size))
        self.latency = {
            name: Histogram(LATENCY_BUCKETS, *part(_LATENCY + i * size, size))
            for i, name in enumerate(HANDLERS)
        }

    def count(self, outcome: str) -> None:
        self._v[self._outcome[outcome]] += 1

    @property
    def pruned(self) -> int:
        return int(sum(r[_PRUNED] for r in self._rows))

    def add_pruned(self, n: int) -> None:
        self._v[_PRUNED] += n

    @property
    def retired(self) -> int:
        return int(sum(r[_RETIRED] for r in self._rows))

    def add_retired(self, n: int) -> None:
        self._v[_RETIRED] += n

    def observe_request(self, handler: str, seconds: float) -> None:
        self.latency[handler].observe(seconds)

    def render(
        self,
        hosts_by_status: Mapping[str, int],
        stale: int,
        problems: Sequence[tuple[str, str, str, int]] = (),
    ) -> str:
        """``problems``: (check, reason, status, hosts) groups, biggest first; only the first
        MAX_PROBLEM_SERIES get their own series (bounded cardinality, never per host)."""
        exp = promtext.Exposition(PREFIX)
        exp.family(
            "reports_received_total",
            "counter",
            "Report submissions by outcome.",
            [({"outcome": k}, v) for k, v in self.ingest.items()],
        )
        exp.family(
            "hosts",
            "gauge",
            "Hosts by the status of their latest report.",
            [
                ({"status": s}, hosts_by_status.get(s, 0))
                for s in ("pass", "skip", "warn", "error", "fail")
            ],
        )
        exp.family(
            "hosts_stale",
            "gauge",
            "Hosts with no report for stale_intervals of their interval.",
            [({}, stale)],
        )
        shown = problems[:MAX_PROBLEM_SERIES]
        exp.family(
            "hosts_problem",
            "gauge",
            "Hosts whose latest report has this check in this status for this reason.",
            [({"check": c, "reason": r, "status": s}, n) for c, r, s, n in shown],
        )
        exp.family(
            "problem_groups",
            "gauge",
            "Distinct (check, reason, status) problems in the fleet (hosts_problem shows "
            f"the {MAX_PROBLEM_SERIES} biggest).",
            [({}, len(problems))],
        )
        exp.histogram(
            "request_duration_seconds",
            "HTTP request handling time by handler.",
            # only handlers that have served a request
            [h.series({"handler": n}) for n, h in sorted(self.latency.items()) if sum(h.counts)],
        )
        exp.histogram(
            "commit_batch_reports",
            "Reports committed per database transaction.",
            [self.batch_size.series({})],
        )
        exp.histogram(
            "commit_duration_seconds",
            "Time to insert and commit one group of reports.",
            [self.commit_seconds.series({})],
        )
        exp.family(
            "reports_pruned_total",
            "counter",
            "Reports deleted by retention.",
            [({}, self.pruned)],
        )
        exp.family(
            "hosts_retired_total",
            "counter",
            "Hosts removed by [retention] host_days.",
            [({}, self.retired)],
        )
        return exp.text()
