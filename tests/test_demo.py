"""`make demo` still works: scripts/demo.py runs the lab, the collector and four daemons.

The demo re-executes itself in its own network and mount namespace (nested inside the test
run's), so its fixed ports (443, 53, 8475) never meet the other tests' servers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.lab.netns import assert_netns_isolated

DEMO = Path(__file__).resolve().parent.parent / "scripts" / "demo.py"

# host_id -> the check that fails (overall status fail) and its reason
BROKEN = {
    "web-02": ("fqdn_resolution", "name_unresolvable"),
    "mail-01": ("outbound_https", "tls_untrusted"),
    "legacy-01": ("sensor_port", "sensor_wrong_port"),
}


def test_demo_fleet_reaches_the_collector(tmp_path: Path) -> None:
    assert_netns_isolated()
    hosts_json = tmp_path / "hosts.json"
    png = tmp_path / "fleet.png"
    # With Chromium (CI installs it) the screenshot is part of the run; --quick skips it.
    shot = ["--screenshot", str(png)] if shutil.which("chromium") else ["--quick"]
    proc = subprocess.run(
        [sys.executable, str(DEMO), "--hosts-json", str(hosts_json), *shot],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    hosts = {h["host_id"]: h for h in json.loads(hosts_json.read_text())["hosts"]}
    assert set(hosts) == {"web-01", *BROKEN}
    # each daemon ran with its own hostname and the demo /etc/hosts
    assert {h: v["fqdn"] for h, v in hosts.items()} == {h: f"{h}.demo.example" for h in hosts}
    assert not any(h["stale"] for h in hosts.values())

    # web-01 is ready; privileges depends on the machine (a container may drop capabilities)
    web01 = {c["name"]: c["status"] for c in hosts["web-01"]["checks"]}
    assert hosts["web-01"]["status"] in ("pass", "warn")
    assert {n: s for n, s in web01.items() if n != "privileges"} == dict.fromkeys(
        ("outbound_https", "digicert_ip", "fqdn_resolution", "caa", "sensor_port", "clock_skew"),
        "pass",
    )
    for host_id, (check, reason) in BROKEN.items():
        failing = {c["name"]: c for c in hosts[host_id]["failing_checks"]}
        assert hosts[host_id]["status"] == "fail", (host_id, failing)
        assert failing[check]["status"] == "fail" and failing[check]["reason"] == reason, failing
        assert set(failing) <= {check, "privileges"}, (host_id, failing)

    out = proc.stdout
    assert "check   # on mail-01" in out and "TLS inspection suspected" in out
    assert "status   # on legacy-01" in out and "Wrong sensor port" in out
    assert "(from the running daemon at http://127.0.0.1:9784/status)" in out
    assert "stopped everything" in out
    # no asyncio internals in the demo's output (issue 17: a stray eof_received line)
    assert "eof_received" not in out + proc.stderr
    if shot[0] == "--screenshot":
        assert f"Fleet page screenshot: {png}" in out
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
