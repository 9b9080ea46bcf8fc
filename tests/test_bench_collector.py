"""bench/collector_ingest.py still runs: wrk with its Lua script against the bare handler and
the collector (two workers), in its smallest form. No figure is asserted (benchmarks are not
tests), only that every request was answered 2xx, each report_id was unique (all stored) and
the lines the docs quote are printed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.netns import assert_netns_isolated

BENCH = Path(__file__).resolve().parent.parent / "bench" / "collector_ingest.py"


def test_collector_ingest_quick_with_wrk_and_two_workers() -> None:
    assert_netns_isolated()
    assert shutil.which("wrk"), "wrk is missing: .ci/apt-packages.txt installs it"
    proc = subprocess.run(
        [
            # fractional durations: wrk takes whole seconds, the bench rounds them up
            *(sys.executable, str(BENCH), "--seconds", "1.5", "--warmup", "0.3", "--hosts", "50"),
            *("--workers", "2", "--rounds", "1"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "workers=2, wrk client" in out, out
    rows = {
        m["name"]: m
        for m in re.finditer(
            r"(?P<name>bare|collector): +(?P<rate>\d+) reports/s .*\((?P<ok>\d+) ok, "
            r"(?P<errors>\d+) errors(?:, stored (?P<stored>\d+))?\)",
            out,
        )
    }
    assert set(rows) == {"bare", "collector"}, out
    for row in rows.values():
        assert int(row["ok"]) > 0 and row["errors"] == "0", out
    assert "wrk runs whole seconds: --seconds 1.5 --warmup 0.3 run as 2 s and 1 s" in out, out
    # the warm-up really ran (its reports are stored too); no report_id repeated (a repeat
    # is not stored)
    assert int(rows["collector"]["stored"]) > int(rows["collector"]["ok"]), out
    assert re.search(r"ratio: \d\.\d\d of bare", out), out


@pytest.mark.slow
def test_collector_ingest_on_postgresql_and_beside_pushgateway() -> None:
    """The PostgreSQL backend and the pushgateway peer (slow: starts a server; needs Debian's
    prometheus-pushgateway, which only the benchmark uses)."""
    assert_netns_isolated()
    proc = subprocess.run(
        [
            *(sys.executable, str(BENCH), "--seconds", "1", "--warmup", "0.3", "--hosts", "50"),
            *("--backend", "postgresql", "--pushgateway"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "store postgresql" in out, out
    stored = re.search(r"collector: .*\((\d+) ok, 0 errors, stored (\d+)\)", out)
    assert stored and int(stored[2]) >= int(stored[1]) > 0, out
    assert re.search(r"pushgw: +\d+ reports/s .*\(\d+ ok, 0 errors\)", out), out
    assert re.search(r"collector / pushgw-nc: \d+\.\d\d", out), out
