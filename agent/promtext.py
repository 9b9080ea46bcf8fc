"""Prometheus text exposition (format 0.0.4), shared by the daemon's and the collector's /metrics.

Hand-written rather than prometheus_client: importing and using that costs the daemon about
1.1 MiB RSS (which its 50 MB target could afford), but the collector keeps its figures in rows
of a shared memory map across forked workers, which prometheus_client's file-based
multiprocess mode does not fit; a few dozen lines of formatting serve both.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

Labels = Mapping[str, str]
Sample = tuple[Labels, float]


def escape(value: str) -> str:
    """A label value: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def labels(pairs: Labels) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{escape(str(v))}"' for k, v in pairs.items()) + "}"


def number(value: float) -> str:
    """Integers as integers, floats in full precision, and +Inf/-Inf/NaN as Prometheus spells them."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    v = float(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


class Exposition:
    """Families appended in order; :meth:`text` is the whole exposition."""

    def __init__(self, prefix: str = "") -> None:
        self._prefix = prefix
        self._lines: list[str] = []

    def family(self, name: str, kind: str, text: str, samples: Iterable[Sample]) -> None:
        """HELP, TYPE and one line per (labels, value) sample (none at all is allowed)."""
        full = self._prefix + name
        out = self._lines
        out.append(f"# HELP {full} {_help(text)}")
        out.append(f"# TYPE {full} {kind}")
        out.extend(f"{full}{labels(lb)} {number(v)}" for lb, v in samples)

    def histogram(
        self,
        name: str,
        text: str,
        series: Iterable[tuple[Labels, Sequence[float], Sequence[int], float]],
    ) -> None:
        """One histogram family; each series is (labels, upper bounds without +Inf, the count
        in each bucket including the last +Inf one, sum)."""
        full = self._prefix + name
        out = self._lines
        out.append(f"# HELP {full} {_help(text)}")
        out.append(f"# TYPE {full} histogram")
        for lb, bounds, counts, total in series:
            cumulative = 0
            for bound, n in zip((*bounds, math.inf), counts, strict=True):
                cumulative += n
                le = "+Inf" if math.isinf(bound) else number(float(bound))
                out.append(f"{full}_bucket{labels({**lb, 'le': le})} {cumulative}")
            out.append(f"{full}_sum{labels(lb)} {number(float(total))}")
            out.append(f"{full}_count{labels(lb)} {cumulative}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"
