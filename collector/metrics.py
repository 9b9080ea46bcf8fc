"""Prometheus text exposition for the collector, without a client library at run time.

Everything here is updated on the event loop thread, so plain ints and floats suffice.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence

PREFIX = "acme_preflight_collector_"

INGEST_OUTCOMES = (
    "accepted",
    "duplicate",
    "unauthorized",
    "forbidden",
    "too_large",
    "bad_encoding",
    "invalid_json",
    "invalid_report",
    "unavailable",
)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Mapping[str, str]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items()) + "}"


def _num(v: float) -> str:
    if v == float("inf"):
        return "+Inf"
    return repr(float(v)) if isinstance(v, float) else str(v)


class Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def lines(self, name: str, labels: Mapping[str, str]) -> Iterable[str]:
        cumulative = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += n
            le = "+Inf" if bound == float("inf") else _num(float(bound))
            yield f"{name}_bucket{_labels({**labels, 'le': le})} {cumulative}"
        yield f"{name}_sum{_labels(labels)} {_num(self.sum)}"
        yield f"{name}_count{_labels(labels)} {cumulative}"


class Metrics:
    def __init__(self) -> None:
        self.ingest = dict.fromkeys(INGEST_OUTCOMES, 0)
        self.latency: dict[str, Histogram] = {}
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.commit_seconds = Histogram(LATENCY_BUCKETS)
        self.pruned = 0

    def count(self, outcome: str) -> None:
        self.ingest[outcome] += 1

    def observe_request(self, handler: str, seconds: float) -> None:
        h = self.latency.get(handler)
        if h is None:
            h = self.latency[handler] = Histogram(LATENCY_BUCKETS)
        h.observe(seconds)

    def render(self, hosts_by_status: Mapping[str, int], stale: int) -> str:
        p = PREFIX
        out = [
            f"# HELP {p}reports_received_total Report submissions by outcome.",
            f"# TYPE {p}reports_received_total counter",
        ]
        out += [f'{p}reports_received_total{{outcome="{k}"}} {v}' for k, v in self.ingest.items()]
        out += [
            f"# HELP {p}hosts Hosts by the status of their latest report.",
            f"# TYPE {p}hosts gauge",
        ]
        for status in ("pass", "skip", "warn", "error", "fail"):
            out.append(f'{p}hosts{{status="{status}"}} {hosts_by_status.get(status, 0)}')
        out += [
            f"# HELP {p}hosts_stale Hosts with no report for stale_intervals of their interval.",
            f"# TYPE {p}hosts_stale gauge",
            f"{p}hosts_stale {stale}",
            f"# HELP {p}request_duration_seconds HTTP request handling time by handler.",
            f"# TYPE {p}request_duration_seconds histogram",
        ]
        for handler, h in sorted(self.latency.items()):
            out += h.lines(f"{p}request_duration_seconds", {"handler": handler})
        out += [
            f"# HELP {p}commit_batch_reports Reports committed per database transaction.",
            f"# TYPE {p}commit_batch_reports histogram",
            *self.batch_size.lines(f"{p}commit_batch_reports", {}),
            f"# HELP {p}commit_duration_seconds Time to insert and commit one group of reports.",
            f"# TYPE {p}commit_duration_seconds histogram",
            *self.commit_seconds.lines(f"{p}commit_duration_seconds", {}),
            f"# HELP {p}reports_pruned_total Reports deleted by retention.",
            f"# TYPE {p}reports_pruned_total counter",
            f"{p}reports_pruned_total {self.pruned}",
        ]
        return "\n".join(out) + "\n"
