"""Every benchmark, one after the other: ``make bench`` (figures go in docs/performance.md).

    make bench                      # the full suite (about 20 minutes on 2 cores)
    make bench BENCH_ARGS=--quick   # every script in its smallest form (does it still run?)
    .venv/bin/python bench/run_all.py --only spool_drain,startup

Each script prints its own figures and its ratio against a baseline measured in the same
run; this prints them as they come and a one-line summary per benchmark at the end.
``--json-out FILE`` also collects the machine-readable results of the agent benchmarks.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, ensure_isolated, header

HERE = Path(__file__).resolve().parent

# (name, full arguments, --quick arguments)
BENCHES: list[tuple[str, list[str], list[str]]] = [
    ("startup", [], ["--quick"]),
    ("check_cycle", [], ["--quick"]),
    ("spool_drain", [], ["--quick"]),
    ("daemon_footprint", [], ["--quick"]),
    ("collector_ingest", ["--rounds", "3"], ["--seconds", "1", "--warmup", "1", "--hosts", "50"]),
    ("pg_drivers", [], ["--groups", "20", "--rounds", "1"]),
    ("fqdn_discovery", [], ["--vhosts", "20", "--runs", "1"]),
    ("fleet_scale", [], ["--hosts", "500", "--seconds", "1", "--warmup", "0.5"]),
    ("blackbox_peer", [], ["--quick"]),  # needs prometheus-blackbox-exporter (Debian)
    (
        "account_scan",
        [],
        ["--domains", "1000", "--names", "100", "--paced-pages", "20", "--runs", "1"],
    ),
]
OWN = {
    "startup",
    "check_cycle",
    "spool_drain",
    "daemon_footprint",
    "blackbox_peer",
}  # take --json-out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="every benchmark in its smallest form")
    p.add_argument("--only", metavar="A,B", help="a comma-separated subset")
    p.add_argument("--json-out", metavar="FILE", help="append the agent benchmarks' results")
    args = p.parse_args()
    ensure_isolated()
    names = [b[0] for b in BENCHES]
    chosen = args.only.split(",") if args.only else names
    unknown = set(chosen) - set(names)
    if unknown:
        sys.exit(f"unknown benchmark(s): {', '.join(sorted(unknown))} (known: {', '.join(names)})")
    header("acme-preflight benchmarks" + (" (quick)" if args.quick else ""))
    summary: list[str] = []
    failed = []
    for name, full, quick in BENCHES:
        if name not in chosen:
            continue
        argv = [sys.executable, str(HERE / f"{name}.py"), *(quick if args.quick else full)]
        if args.json_out and name in OWN:
            argv += ["--json-out", args.json_out]
        print(f"\n$ {' '.join(Path(a).name if a.startswith('/') else a for a in argv)}", flush=True)
        t0 = time.monotonic()
        proc = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        sys.stdout.write(proc.stdout)
        took = time.monotonic() - t0
        last = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
        verdicts = [line for line in last if "target" in line.lower() or "ratio" in line.lower()]
        line = verdicts[-1] if verdicts else (last[-1] if last else "")
        if proc.returncode:
            failed.append(name)
            line = f"FAILED (exit {proc.returncode}) {line}"
        summary.append(f"{name:<17} {took:6.0f} s  {line}")
    print("\n== summary")
    print("\n".join(summary))
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
