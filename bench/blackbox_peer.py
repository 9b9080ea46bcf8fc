"""Per-probe CPU of the warm agent against prometheus blackbox_exporter, on one lab target.

Both probe ``https://acme.digicert.com/v2/acme/directory/`` served by the DigiCert lab (a
child process: HTTPS on 127.0.0.2:443, DNS on 127.0.0.53:53), the same way: DNS A and
AAAA, TCP, TLS with SNI verified against the lab CA, GET of the directory. The peer is
blackbox_exporter's ``http_2xx`` module, listening on 127.0.0.1 only and driven through
its ``/probe`` endpoint as Prometheus scrapes it; the agent is ``probe_https`` in a warm
process of its own (the daemon's shared verifying context, nothing rebuilt per probe). CPU
is user+system time of each process over the measured probes (the lab's and this
script's CPU are not counted), so the ratio is agent / blackbox from one run. Goal: at most 1.5 times.

The agent is also measured with the ACME nonce round-trip (HEAD newNonce, which blackbox
does not do), and blackbox's ``processing`` phase (request sent → first response byte)
shows whether the lab answers a Go client as fast as a real server would.

Then the daemon-level figure (``--daemon-seconds``, 0 skips it): the real daemon
(``python -m agent --config CFG run``, ``[agent] interval = "1s"``, all six checks against
the lab, reports to the real collector on loopback, the shipped unit's ``MALLOC_*``
environment) and, over the same seconds, blackbox_exporter's ``http_2xx`` scraped once a
second. Printed: CPU ms per second of wall time and RSS of each, and the CPU ratio. The
daemon does much more per cycle than one probe (six checks, a report, its spool and
sender), so this ratio is the issue's context figure, not the 1.5x goal.

Needs Debian's ``prometheus-blackbox-exporter`` (``apt-get install
prometheus-blackbox-exporter``); without it the script says so and measures nothing.
The script re-executes itself inside ``unshare --net --mount``: nothing leaves loopback.

    python bench/blackbox_peer.py [--probes 300] [--daemon-seconds 30] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from common import (
    ROOT,
    bind_etc,
    emit_json,
    ensure_isolated,
    header,
    pct,
    rss_mb,
    verdict,
    wait_until,
)
from daemon_footprint import free_port, metrics, unit_malloc_env
from procs import TOKEN, CollectorProcess, LabProcess, etc_fixture

BINARY = "prometheus-blackbox-exporter"
LISTEN = ("127.0.0.1", 9115)
TARGET = "https://acme.digicert.com/v2/acme/directory/"
GOAL_RATIO = 1.5
ROUND = 50  # probes per side per round
TICKS = os.sysconf("SC_CLK_TCK")

# The agent side: its own process, warm, probing sequentially. Each line on stdin is a
# number of probes to run; it answers with one JSON line (CPU and wall of those probes).
_AGENT = r"""
import asyncio, json, os, sys, time
sys.path.insert(0, sys.argv[1])
from agent.net.dns import Nameservers
from agent.net.probe import probe_https
from agent.net.proxy import select_proxy
from agent.net.tls import verifying_context

acme = sys.argv[2] == "acme"
servers = Nameservers(((sys.argv[3], 53),), "bench")

async def main():
    proxy = select_proxy(None, "acme.digicert.com", 443)
    async def one(phases):
        p = await probe_https("acme.digicert.com", 443, nameservers=servers, proxy=proxy,
                              budget=5.0, path="/v2/acme/directory/",
                              context=verifying_context(), acme=acme)
        for k, v in p.phases_ms().items():
            phases[k] = phases.get(k, 0.0) + v
        good = p.ok and p.http is not None and p.http.status == 200
        return good and (not acme or (p.nonce is not None and p.nonce.status == 200))
    for line in sys.stdin:
        n, phases, fails = int(line), {}, 0
        t0, wall0 = os.times(), time.perf_counter()
        for _ in range(n):
            fails += not await one(phases)
        t1, wall = os.times(), time.perf_counter() - wall0
        user, system = t1.user - t0.user, t1.system - t0.system
        cpu = user + system
        rss = int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
        print(json.dumps({"cpu_s": cpu, "sys_s": system, "wall_s": wall, "n": n, "fails": fails,
                          "phases_ms": phases, "rss_mib": rss}), flush=True)

asyncio.run(main())
"""


class Agent:
    """The warm agent process; :meth:`run` probes ``n`` times and returns its figures."""

    def __init__(self, acme: bool, nameserver: str, ca: Path) -> None:
        env = {**os.environ, "SSL_CERT_FILE": str(ca)}
        argv = [sys.executable, "-c", _AGENT, str(ROOT), "acme" if acme else "get", nameserver]
        self.proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def run(self, n: int) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the agent process exited with {self.proc.wait()}")
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(30)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """user + system, and system alone, of a process (and its threads) in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS, int(fields[12]) / TICKS


def _probe_once(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as resp:  # loopback only
        text = resp.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("probe_success "):
            values["success"] = float(line.split()[1])
        elif line.startswith('probe_http_duration_seconds{phase="processing"}'):
            values["processing_ms"] = float(line.split()[1]) * 1000
        elif line.startswith("probe_duration_seconds "):
            values["duration_ms"] = float(line.split()[1]) * 1000
    return values


class Blackbox:
    """blackbox_exporter on 127.0.0.1:9115 with an ``http_2xx`` module trusting the lab CA."""

    def __init__(self, ca: Path, workdir: Path) -> None:
        config = workdir / "blackbox.yml"
        config.write_text(
            "modules:\n"
            "  http_2xx:\n"
            "    prober: http\n"
            "    timeout: 5s\n"
            "    http:\n"
            "      preferred_ip_protocol: ip4\n"
            "      tls_config:\n"
            f"        ca_file: {ca}\n"
        )
        binary = shutil.which(BINARY)
        assert binary is not None
        listen = f"{LISTEN[0]}:{LISTEN[1]}"
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--web.listen-address={listen}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://{listen}/probe?module=http_2xx&target={TARGET}"

        def up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(LISTEN) == 0

        wait_until(up, 10, "blackbox_exporter listening")

    def run(self, n: int) -> dict[str, Any]:
        cpu0, sys0 = cpu_seconds(self.proc.pid)
        runs = [_probe_once(self.url) for _ in range(n)]
        cpu1, sys1 = cpu_seconds(self.proc.pid)
        return {
            "cpu_s": cpu1 - cpu0,
            "sys_s": sys1 - sys0,
            "n": n,
            "fails": sum(r.get("success") != 1.0 for r in runs),
            "processing_ms": [r.get("processing_ms", 0.0) for r in runs],
            "duration_ms": [r.get("duration_ms", 0.0) for r in runs],
        }

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def measure(args: argparse.Namespace, lab: LabProcess, workdir: Path) -> dict[str, Any]:
    """Warm each up, then alternate rounds so the machine's load hits all three alike."""
    ns = lab.info["nameserver"].split(":")[0]
    bb = Blackbox(lab.ca_bundle, workdir)
    get, acme = Agent(False, ns, lab.ca_bundle), Agent(True, ns, lab.ca_bundle)
    try:
        for side in (bb, get, acme):
            side.run(args.warmup)
        rounds = max(1, args.probes // ROUND)
        totals: dict[str, list[dict[str, Any]]] = {"blackbox": [], "get": [], "acme": []}
        for _ in range(rounds):
            for name, side in (("blackbox", bb), ("get", get), ("acme", acme)):
                totals[name].append(side.run(args.probes // rounds))
        bb_rss = rss_mb(bb.proc.pid)
    finally:
        bb.close()
        get.close()
        acme.close()
    out: dict[str, Any] = {}
    for name, parts in totals.items():
        n = sum(p["n"] for p in parts)
        fig: dict[str, Any] = {
            "n": n,
            "cpu_ms": sum(p["cpu_s"] for p in parts) * 1000 / n,
            "sys_ms": sum(p["sys_s"] for p in parts) * 1000 / n,
            "fails": sum(p["fails"] for p in parts),
        }
        if name == "blackbox":
            fig["processing_ms"] = pct([x for p in parts for x in p["processing_ms"]], 50)
            fig["duration_ms"] = pct([x for p in parts for x in p["duration_ms"]], 50)
            fig["rss_mib"] = bb_rss
        else:
            fig["wall_ms"] = sum(p["wall_s"] for p in parts) * 1000 / n
            fig["rss_mib"] = parts[-1]["rss_mib"]
            phases: dict[str, float] = {}
            for p in parts:
                for k, v in p["phases_ms"].items():
                    phases[k] = phases.get(k, 0.0) + v / n
            fig["phases_ms"] = {k: round(v, 2) for k, v in phases.items()}
        out[name] = fig
    # One ratio per round (the two sides ran back to back): their median is less at the
    # mercy of a load spike that hit one side of one round than the ratio of the totals.
    per_round = [
        g["cpu_s"] / b["cpu_s"]
        for g, b in zip(totals["get"], totals["blackbox"], strict=True)
        if b["cpu_s"]
    ]
    out["round_ratios"] = per_round
    return out


def daemon_side_by_side(
    seconds: float, lab: LabProcess, workdir: Path
) -> dict[str, dict[str, float]]:
    """The daemon at a 1 s interval and blackbox scraped once a second, over one window."""
    from tests.lab.config import to_toml

    port = free_port()
    token = workdir / "token"
    token.write_text(TOKEN + "\n")
    with CollectorProcess(workdir / "collector") as col:
        data = lab.agent_config(
            workdir / "state",
            agent={"interval": "1s", "timeout": "0.9s", "log_level": "info"},
            collector={"url": col.url, "token_file": str(token)},
            status={"listen": f"127.0.0.1:{port}"},
        )
        cfg = workdir / "daemon.toml"
        cfg.write_text(to_toml(data))
        env = {**os.environ, **unit_malloc_env(), "SSL_CERT_FILE": str(lab.ca_bundle)}
        log = (workdir / "daemon.log").open("wb")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "agent", "--config", str(cfg), "run"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        bb = Blackbox(lab.ca_bundle, workdir)
        try:

            def runs() -> float:
                try:
                    return metrics(port).get("acme_preflight_runs_total", 0.0)
                except OSError:
                    if daemon.poll() is not None:
                        raise RuntimeError(f"daemon exited {daemon.returncode}") from None
                    return 0.0

            # warm: a few cycles and scrapes before the window opens
            wait_until(lambda: runs() >= 3, 60, "the daemon's third run")
            bb.run(3)
            runs0, d0, b0 = runs(), cpu_seconds(daemon.pid)[0], cpu_seconds(bb.proc.pid)[0]
            scrapes = fails = 0
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                fails += _probe_once(bb.url).get("success") != 1.0
                scrapes += 1
                # scrape on whole seconds of the window, as Prometheus would at 1 s
                time.sleep(max(0.0, scrapes - (time.monotonic() - started)))
            wall = time.monotonic() - started
            d1, b1 = cpu_seconds(daemon.pid)[0], cpu_seconds(bb.proc.pid)[0]
            cycles = runs() - runs0
            out = {
                "daemon": {
                    "cpu_ms_per_s": (d1 - d0) * 1000 / wall,
                    "rss_mib": rss_mb(daemon.pid),
                    "cycles": cycles,
                    "wall_s": wall,
                },
                "blackbox": {
                    "cpu_ms_per_s": (b1 - b0) * 1000 / wall,
                    "rss_mib": rss_mb(bb.proc.pid),
                    "scrapes": scrapes,
                    "fails": fails,
                },
            }
        finally:
            bb.close()
            daemon.terminate()
            daemon.wait(30)
            log.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--probes", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--daemon-seconds", type=float, default=30.0, help="0: skip the daemon figure")
    p.add_argument("--quick", action="store_true", help="one round: does it still run?")
    p.add_argument("--json-out", metavar="FILE", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.probes, args.warmup, args.daemon_seconds = ROUND, 5, min(args.daemon_seconds, 3.0)
    if shutil.which(BINARY) is None:
        print(
            f"NOT MEASURED: {BINARY} is not installed "
            "(apt-get install prometheus-blackbox-exporter)",
            flush=True,
        )
        return
    ensure_isolated(mount=True)
    header("probe CPU: the agent against blackbox_exporter http_2xx")
    with tempfile.TemporaryDirectory(prefix="bench-blackbox-") as tmp:
        workdir = Path(tmp)
        with LabProcess(workdir / "lab") as lab:
            bind_etc(etc_fixture(workdir, lab.info["nameserver"]))
            started = time.monotonic()
            res = measure(args, lab, workdir)
            took = time.monotonic() - started
            side = (
                daemon_side_by_side(args.daemon_seconds, lab, workdir)
                if args.daemon_seconds
                else None
            )
    bb, get, acme = res["blackbox"], res["get"], res["acme"]
    ratio = get["cpu_ms"] / bb["cpu_ms"] if bb["cpu_ms"] else float("inf")
    print(
        f"{get['n']} probes each, in alternating rounds of {ROUND}, after {args.warmup} "
        f"warm-up ({took:.0f} s)"
    )
    print(
        f"  blackbox_exporter http_2xx  {bb['cpu_ms']:6.2f} ms CPU/probe ({bb['sys_ms']:.2f} sys)  "
        f"(probe {bb['duration_ms']:.1f} ms, processing {bb['processing_ms']:.1f} ms p50, "
        f"RSS {bb['rss_mib']:.1f} MiB, {bb['fails']} failed)"
    )
    print(
        f"  agent probe_https (GET)     {get['cpu_ms']:6.2f} ms CPU/probe ({get['sys_ms']:.2f} sys)  "
        f"(wall {get['wall_ms']:.1f} ms, RSS {get['rss_mib']:.1f} MiB, {get['fails']} failed)"
    )
    print(f"    phases, mean ms: {get['phases_ms']}")
    print(
        f"  agent + HEAD newNonce       {acme['cpu_ms']:6.2f} ms CPU/probe ({acme['sys_ms']:.2f} sys)  "
        f"(wall {acme['wall_ms']:.1f} ms, {acme['fails']} failed)"
    )
    rounds = res["round_ratios"]
    median = pct(rounds, 50) if rounds else float("inf")
    print(
        f"  ratio agent/blackbox: {ratio:.2f}x over all probes, median of {len(rounds)} rounds "
        f"{median:.2f}x (min {min(rounds, default=0):.2f}, max {max(rounds, default=0):.2f}); "
        f"goal <= {GOAL_RATIO}x: {verdict(ratio <= GOAL_RATIO)}"
    )
    result: dict[str, Any] = {
        "blackbox": bb,
        "agent_get": get,
        "agent_acme": acme,
        "ratio": ratio,
        "round_ratios": rounds,
        "median_round_ratio": median,
    }
    if side is not None:
        d, b = side["daemon"], side["blackbox"]
        d_ratio = d["cpu_ms_per_s"] / b["cpu_ms_per_s"] if b["cpu_ms_per_s"] else float("inf")
        print(f"daemon level, one window of {d['wall_s']:.0f} s (interval 1 s, scrape every 1 s):")
        print(
            f"  agent daemon (6 checks + report)   {d['cpu_ms_per_s']:6.2f} ms CPU/s  "
            f"RSS {d['rss_mib']:.1f} MiB  ({d['cycles']:.0f} cycles)"
        )
        print(
            f"  blackbox_exporter http_2xx scrape  {b['cpu_ms_per_s']:6.2f} ms CPU/s  "
            f"RSS {b['rss_mib']:.1f} MiB  ({b['scrapes']} scrapes, {b['fails']} failed)"
        )
        print(
            f"  ratio daemon/blackbox: {d_ratio:.2f}x CPU, {d['rss_mib'] / b['rss_mib']:.2f}x RSS"
        )
        result["daemon_level"] = {**side, "cpu_ratio": d_ratio}
        if b["fails"] or not d["cycles"]:
            sys.exit("the daemon ran no cycle or a scrape failed: the figures are not comparable")
    if bb["fails"] or get["fails"] or acme["fails"]:
        sys.exit("some probes failed: the figures are not comparable")
    emit_json(args.json_out, "blackbox_peer", result)


if __name__ == "__main__":
    main()
