"""Shared by the benchmarks: the network-namespace guard, statistics, RSS, the machine.

Every benchmark only ever talks to 127.0.0.0/8. To make that a property of the process
rather than of the caller, :func:`ensure_isolated` re-executes the script inside
``unshare --net`` (only ``lo``, brought up) unless it already runs in such a namespace;
with ``mount=True`` also in a private mount namespace, so a benchmark can bind-mount
fixture files over ``/etc/resolv.conf`` and ``/etc/hosts`` without touching the host.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the agent, the collector and tests.lab

from tests.lab.netns import network_links as links  # noqa: E402  (needs ROOT on sys.path)

_MARK = "ACME_PREFLIGHT_BENCH_NS"


def ensure_isolated(mount: bool = False) -> None:
    """Re-exec this script in a private network (and mount) namespace if needed."""
    want = "net+mount" if mount else "net"
    if links() == ["lo"] and (not mount or os.environ.get(_MARK) == want):
        return
    if os.environ.get(_MARK) == want:
        sys.exit(f"still not isolated after unshare (links: {links()})")
    args = ["unshare", "--net"]
    if mount:
        args += ["--mount", "--propagation", "private"]
    script = 'ip link set lo up && exec "$@"'
    env = {**os.environ, _MARK: want}
    argv = [*args, "--", "sh", "-c", script, "sh", sys.executable, *sys.argv]
    sys.stdout.flush()
    os.execvpe("unshare", argv, env)


def bind_etc(files: dict[str, Path]) -> None:
    """Bind-mount fixture files over /etc/<name> (private mount namespace only)."""
    if os.environ.get(_MARK) != "net+mount":
        raise RuntimeError("bind_etc needs ensure_isolated(mount=True)")
    for name, path in files.items():
        subprocess.run(["mount", "--bind", str(path), f"/etc/{name}"], check=True)


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank) of values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "min": min(values),
        "p50": pct(values, 50),
        "p95": pct(values, 95),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def rss_mb(pid: int | None = None) -> float:
    """Resident set size in MiB (VmRSS of /proc/PID/status)."""
    path = f"/proc/{pid or 'self'}/status"
    with open(path, encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS in {path}")


def machine() -> dict[str, Any]:
    mem = 0
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "mem_mib": mem,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load1": round(os.getloadavg()[0], 2),
    }


def header(title: str) -> None:
    m = machine()
    print(
        f"== {title} ({m['date']}; {m['cpus']} CPUs {m['cpu_model']}, {m['mem_mib']} MiB, "
        f"Python {m['python']}, kernel {m['kernel']}, load {m['load1']})",
        flush=True,
    )


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def emit_json(path: str | None, name: str, data: dict[str, Any]) -> None:
    """Append one result line for bench/run_all.py (``--json-out``)."""
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"bench": name, "machine": machine(), **data}) + "\n")


def wait_until(pred: Any, timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
