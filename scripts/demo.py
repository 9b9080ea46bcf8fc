#!/usr/bin/env python3
"""The whole product on one machine: a fleet of four daemons reporting to the collector.

Everything runs inside a private network and mount namespace (``unshare --net --mount``,
only ``lo`` up; the script re-executes itself there), so nothing leaves the machine:

- the DigiCert stand-ins from tests/lab (HTTPS on 127.0.0.2:443 playing acme/daas.digicert.com
  and 216.168.244.42, DNS on 127.0.0.53, a sensor 3.8.47 on 127.0.0.4:48999) and a
  TLS-inspecting proxy on 127.0.0.3:3128 that answers with a "Contoso TLS Inspection CA"
  certificate;
- /etc/hosts, /etc/resolv.conf (-> 127.0.0.53) and /etc/nsswitch.conf bind-mounted from a
  temporary directory, visible only inside the namespace;
- the real collector (``acme-preflight-collector serve``) on 127.0.0.1:8475;
- four real daemons (``acme-preflight run``, every 5 s), each in its own UTS namespace with
  its own hostname, state_dir and status port: web-01 (ready), web-02 (a web server name
  that does not resolve), mail-01 (behind the inspecting proxy), legacy-01 (sensor
  configured with the wrong version).

It prints ``check`` for mail-01, ``status`` for legacy-01 and the collector's fleet, saves a
screenshot of the fleet page when Chromium is installed, and stops (``--serve``: runs until
Ctrl-C). Needs root (namespaces, bind mounts). See docs/demo.md.

    python scripts/demo.py [--serve] [--quick] [--screenshot PNG] [--hosts-json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))  # bench/common.py then puts ROOT on sys.path too

from common import bind_etc, ensure_isolated, wait_until  # noqa: E402
from procs import TOKEN, CollectorProcess  # noqa: E402

COLLECTOR_LISTEN = "127.0.0.1:8475"
INTERVAL = "5s"
PROXY = ("127.0.0.3", 3128)  # the TLS-inspecting corporate proxy mail-01 goes through
DOMAIN = "demo.example"
WEB_NAMES = {"www.demo.example": "127.0.0.1", "mail.demo.example": "127.0.0.1"}

# host_id -> (what it shows, config sections on top of the lab's)
HOSTS: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    "web-01": (
        "ready: its web server name resolves, the sensor is configured right",
        {
            "fqdn": {"names": ["www.demo.example"]},
            "sensor": {"host": "127.0.0.4", "version": "3.8.47"},
        },
    ),
    "web-02": (
        "one of its names, shop.demo.example, is in no DNS zone or hosts file",
        {"fqdn": {"names": ["www.demo.example", "shop.demo.example"]}},
    ),
    "mail-01": (
        "goes out through a proxy that does TLS inspection",
        {
            "fqdn": {"names": ["mail.demo.example"]},
            "proxy": {"url": f"http://{PROXY[0]}:{PROXY[1]}"},
        },
    ),
    "legacy-01": (
        "sensor configured as 3.8.46 (port 8080), but it runs 3.8.47 (port 48999)",
        {
            "fqdn": {"names": ["www.demo.example"]},
            "sensor": {"host": "127.0.0.4", "version": "3.8.46"},
        },
    ),
}
CHECK_HOST = "mail-01"  # shown with `acme-preflight check`
STATUS_HOST = "legacy-01"  # shown with `acme-preflight status`


def etc_files(tmp: Path) -> dict[str, Path]:
    """The namespace's /etc: every demo hostname on its own 127.0.1.x, DNS at the lab."""
    etc = tmp / "etc"
    etc.mkdir()
    hosts = ["127.0.0.1 localhost", "::1 localhost"]
    hosts += [f"127.0.1.{i} {h}.{DOMAIN} {h}" for i, h in enumerate(HOSTS, 1)]
    text = {
        "hosts": "\n".join(hosts) + "\n",
        "resolv.conf": "nameserver 127.0.0.53\noptions timeout:1 attempts:1\n",
        "nsswitch.conf": "hosts: files dns\n",
    }
    for name, body in text.items():
        (etc / name).write_text(body)
    return {name: etc / name for name in text}


def start_lab(tmp: Path) -> Any:
    """DigicertLab with the sensor, the demo zone and the inspecting proxy."""
    from tests.lab.digicert import HOSTNAMES, DigicertLab
    from tests.lab.https import HttpsServer
    from tests.lab.pki import make_pki
    from tests.lab.proxy import ConnectProxy

    (tmp / "lab").mkdir()
    lab = DigicertLab(make_pki(), tmp / "lab")
    try:
        lab.start_sensor()
        for name, address in WEB_NAMES.items():
            lab.dns.set(name, [address])
        mitm = lab.start(HttpsServer(lab.pki.intercepted, PROXY[0], 0))
        lab.start(ConnectProxy(*PROXY, upstreams=dict.fromkeys(HOSTNAMES, mitm.address)))
    except BaseException:
        lab.close()
        raise
    return lab


def agent_config(tmp: Path, index: int, host_id: str) -> Path:
    """A daemon's config: the lab's, through the system resolver, plus its situation."""
    from tests.lab.config import lab_config_data, to_toml

    home = tmp / host_id
    home.mkdir()
    token = home / "collector.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    overrides: dict[str, dict[str, Any] | None] = {
        "dns": None,  # /etc/resolv.conf, i.e. the lab DNS
        "agent": {
            "host_id": host_id,
            "interval": INTERVAL,
            "timeout": "3s",
            "log_level": "info",
        },
        "fqdn": {"nameservers": None},
        "collector": {"url": f"http://{COLLECTOR_LISTEN}", "token_file": str(token)},
        "status": {"listen": f"127.0.0.1:{9780 + index}"},
    }
    for section, values in HOSTS[host_id][1].items():
        overrides[section] = {**(overrides.get(section) or {}), **values}
    data = lab_config_data(home / "state", overrides=overrides)
    path = home / "config.toml"
    path.write_text(to_toml(data))
    return path


def uts(host_id: str) -> list[str]:
    """A prefix that runs a command with its own hostname (a UTS namespace), same pid."""
    return ["unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"', host_id]


def run_cli(host_id: str, config: Path, *args: str) -> None:
    """Show one CLI command as a user would type it, and its output."""
    from tests.clirun import run_cli as run

    print(f"\n$ acme-preflight --config {config} {' '.join(args)}   # on {host_id}", flush=True)
    proc = run("--config", config, *args, prefix=uts(host_id))
    print(proc.stdout.rstrip())
    if proc.stderr.strip():
        print(proc.stderr.rstrip())
    print(f"(exit code {proc.returncode})")


def fleet() -> dict[str, Any]:
    from tests.daemonproc import http_get

    status, body = http_get(int(COLLECTOR_LISTEN.rsplit(":", 1)[1]), "/api/v1/hosts")
    if status != 200:
        raise RuntimeError(f"GET /api/v1/hosts answered {status}: {body[:200]}")
    data: dict[str, Any] = json.loads(body)
    return data


def print_fleet(data: dict[str, Any]) -> None:
    print(f"\n$ curl -s http://{COLLECTOR_LISTEN}/api/v1/hosts   # summarised")
    counts = ", ".join(f"{n} {s}" for s, n in data["counts"].items() if n)
    print(f"{len(data['hosts'])} hosts: {counts}")
    print(f"{'HOST_ID':<10} {'HOSTNAME':<24} {'STATUS':<6} FAILING CHECKS (reason)")
    for h in data["hosts"]:
        bad = ", ".join(f"{c['name']} ({c['reason']})" for c in h["failing_checks"]) or "-"
        print(f"{h['host_id']:<10} {h['fqdn'] or h['hostname']:<24} {h['status']:<6} {bad}")


def screenshot(tmp: Path, png: Path) -> Path | None:
    """The fleet page in headless Chromium (the browser test's flags), when installed."""
    if not Path("/usr/bin/chromium").exists():
        print("\n(no /usr/bin/chromium: no screenshot; apt-get install chromium for one)")
        return None
    from tests.test_collector_browser import chromium

    png.parent.mkdir(parents=True, exist_ok=True)
    try:
        chromium(
            tmp, "--window-size=1600,1400", f"--screenshot={png}", f"http://{COLLECTOR_LISTEN}/"
        )
    except (AssertionError, subprocess.TimeoutExpired) as e:
        print(f"\n(screenshot failed: {str(e)[-300:]})")
        return None
    print(f"\nFleet page screenshot: {png}")
    return png


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--serve", action="store_true", help="keep everything running until Ctrl-C")
    p.add_argument("--quick", action="store_true", help="no screenshot (the test's mode)")
    p.add_argument("--screenshot", type=Path, default=Path("demo-fleet.png"), metavar="PNG")
    p.add_argument("--hosts-json", type=Path, metavar="FILE", help="save GET /api/v1/hosts")
    args = p.parse_args()
    args.screenshot = args.screenshot.resolve()
    if os.geteuid() != 0:
        sys.exit(
            "the demo needs root: it creates network, mount and UTS namespaces (sudo make demo)"
        )
    ensure_isolated(mount=True)
    # Ctrl-C or a plain `kill`: stop everything in order (even if SIGINT came in ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        os.environ.pop(var, None)
        os.environ.pop(var.lower(), None)

    from tests.daemonproc import DaemonProc

    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="acme-preflight-demo-"))
    daemons: dict[str, DaemonProc] = {}
    lab = None
    collector = None
    failed = False
    try:
        bind_etc(etc_files(tmp))
        lab = start_lab(tmp)
        env = {"SSL_CERT_FILE": str(lab.ca_bundle)}
        print(f"DigiCert lab up (CA bundle {lab.ca_bundle}); work dir {tmp}")
        collector = CollectorProcess(tmp / "collector", listen=COLLECTOR_LISTEN)
        print(f"collector: {collector.line}")
        configs = {}
        for i, (host_id, (what, _)) in enumerate(HOSTS.items(), 1):
            configs[host_id] = agent_config(tmp, i, host_id)
            # Its own session: Ctrl-C reaches only the demo, which then stops it with SIGTERM.
            prefix = ["setsid", *uts(host_id)]
            daemons[host_id] = DaemonProc(
                configs[host_id], tmp / host_id / "daemon.log", env=env, prefix=prefix
            )
            print(f"daemon {host_id:<9} pid {daemons[host_id].proc.pid}: {what}")

        def all_reported() -> bool:
            for d in daemons.values():
                if d.proc.poll() is not None:
                    raise RuntimeError(f"daemon exited {d.proc.returncode}:\n{d.log_text()}")
            return {h["host_id"] for h in fleet()["hosts"]} == set(HOSTS)

        wait_until(all_reported, 30, "every daemon's first report at the collector", 0.2)
        print(f"every host reported after {time.monotonic() - started:.1f} s")

        os.environ.update(env)  # `check` trusts the lab CA like the daemons
        run_cli(CHECK_HOST, configs[CHECK_HOST], "check")
        run_cli(STATUS_HOST, configs[STATUS_HOST], "status")
        data = fleet()
        print_fleet(data)
        if args.hosts_json:
            args.hosts_json.write_text(json.dumps(data, indent=2))
        shot = None if args.quick else screenshot(tmp, args.screenshot)
        if args.serve:
            serve(tmp, shot)
    except KeyboardInterrupt:
        pass
    except Exception:
        failed = True  # keep the work dir (configs, logs) to look at
        raise
    finally:
        for host_id, d in daemons.items():
            code = d.stop()
            if code != 0:
                failed = True
                print(f"daemon {host_id} exited {code}; its log: {d.log_path}", file=sys.stderr)
        if collector is not None:
            collector.close()
        if lab is not None:
            lab.close()
        if failed:
            print(f"kept the work dir (configs, logs): {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"stopped everything after {time.monotonic() - started:.1f} s")
    return 1 if failed else 0


def serve(tmp: Path, shot: Path | None) -> None:
    pid = os.getpid()
    print(
        f"""
Running until Ctrl-C. The daemons report every {INTERVAL}; their configs and logs are in
{tmp}/<host_id>/. Everything listens only inside this demo's network namespace; from
another root shell on this machine:

  nsenter --net=/proc/{pid}/ns/net curl -s http://{COLLECTOR_LISTEN}/api/v1/hosts
  nsenter --net=/proc/{pid}/ns/net curl -s http://127.0.0.1:9781/metrics     # web-01
  nsenter --net=/proc/{pid}/ns/net \\
      {Path(sys.executable).parent}/acme-preflight --config {tmp}/web-02/config.toml status

{f"The fleet page as it was is in {shot}." if shot else ""}""",
        flush=True,
    )
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
