"""One-shot start: ``acme-preflight check --only privileges`` against ``python -c 'import aiohttp'``.

Both with the same interpreter (the venv's), alternating, each run a fresh process; the
figure is the median (and best) wall time of N runs. The check runs with an empty
config file inside ``unshare --net`` (nothing can leave loopback). Also prints which heavy
modules the one-shot path loads (it must not load APScheduler, aiohttp or aiohttp.web).

    python bench/startup.py [--runs 30] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, emit_json, ensure_isolated, header, verdict

TARGET_RATIO = 1.3
HEAVY = ("aiohttp", "aiohttp.web", "apscheduler", "dns.asyncresolver", "psutil", "structlog")
PROBE = (
    "import runpy, sys; sys.argv = ['acme-preflight'] + sys.argv[1:]\n"
    "try:\n    runpy.run_module('agent', run_name='__main__')\n"
    "except SystemExit:\n    pass\n"
    "print(' '.join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)\n"
)


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = time.perf_counter() - t0
    if proc.returncode not in (0, 1, 2):  # the check's own verdict may be warn/fail here
        raise RuntimeError(f"{argv} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--quick", action="store_true", help="3 runs each: does it still run?")
    p.add_argument("--json-out", metavar="FILE", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.runs = 3
    ensure_isolated()
    header(f"one-shot start, {args.runs} runs each, median")
    exe = Path(sys.executable)
    entry = exe.parent / "acme-preflight"
    with tempfile.TemporaryDirectory(prefix="bench-start-") as d:
        cfg = Path(d) / "empty.toml"
        cfg.write_text("")
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env["NO_COLOR"] = "1"
        check = [str(entry), "--config", str(cfg), "check", "--only", "privileges"]
        base = [str(exe), "-c", "import aiohttp"]
        bare = [str(exe), "-c", "pass"]
        for argv in (check, base):  # warm the page cache
            timed(argv, env)
        rows: dict[str, list[float]] = {"check": [], "aiohttp": [], "python": []}
        for _ in range(args.runs):
            rows["check"].append(timed(check, env))
            rows["aiohttp"].append(timed(base, env))
            rows["python"].append(timed(bare, env))
        probe = subprocess.run(
            [str(exe), "-c", PROBE.format(heavy=HEAVY), *check[1:]],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        loaded = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else ""
    med = {k: statistics.median(v) * 1000 for k, v in rows.items()}
    best = {k: min(v) * 1000 for k, v in rows.items()}
    ratio = med["check"] / med["aiohttp"]
    res: dict[str, Any] = {
        "runs": args.runs,
        "median_ms": med,
        "best_ms": best,
        "ratio": ratio,
        "best_ratio": best["check"] / best["aiohttp"],
        "heavy_modules_loaded": loaded.split(),
    }
    print(
        f"  python -c pass (interpreter alone): median {med['python']:6.1f} ms  best {best['python']:6.1f} ms"
    )
    print(
        f"  python -c 'import aiohttp' (base):  median {med['aiohttp']:6.1f} ms  best {best['aiohttp']:6.1f} ms"
    )
    print(
        f"  acme-preflight check --only privileges: median {med['check']:6.1f} ms  best {best['check']:6.1f} ms"
    )
    print(f"  heavy modules the one-shot check loaded: {loaded or 'none'}")
    print(
        f"  ratio check/import aiohttp: {ratio:.2f} (best-of {res['best_ratio']:.2f}); "
        f"target <= {TARGET_RATIO:g}: {verdict(ratio <= TARGET_RATIO)}"
    )
    emit_json(args.json_out, "startup", res)


if __name__ == "__main__":
    main()
