"""The benchmarks still run: each agent benchmark in its ``--quick`` form (a few seconds).

Benchmarks are not tests: no figure is asserted here, only that each script starts, talks
to its peers on loopback and prints its verdict line (bench/run_all.py runs the full forms).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.netns import assert_netns_isolated

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize("script", ["startup", "check_cycle", "spool_drain", "daemon_footprint"])
def test_benchmark_quick_mode_runs(script: str, tmp_path: Path) -> None:
    assert_netns_isolated()
    out = tmp_path / "results.jsonl"
    proc = subprocess.run(
        [sys.executable, str(BENCH / f"{script}.py"), "--quick", "--json-out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "target" in proc.stdout, proc.stdout
    assert f'"bench": "{script}"' in out.read_text()


def test_run_all_knows_every_script() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--only", "nonexistent"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "unknown benchmark" in proc.stderr
    listed = proc.stderr.split("known: ", 1)[1].strip().rstrip(")").split(", ")
    on_disk = {p.stem for p in BENCH.glob("*.py")} - {"common", "procs", "run_all"}
    assert set(listed) == on_disk  # a new bench script gets a line in run_all.py
