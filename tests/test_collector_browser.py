"""The fleet page in a real headless Chromium (Debian's ``chromium``): rows, escaping, screenshots.

Screenshots go to ``$COLLECTOR_SCREENSHOT_DIR`` when set (to look at them), else the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.collectorutil import TOKEN, TOKENS_TEXT, check, report, server_process

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true",
    reason="Debian's chromium is not installed (.ci/apt-packages.txt installs it in CI)",
)

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]


def chromium(tmp_path: Path, *args: str) -> str:
    assert CHROMIUM, "chromium is missing: apt-get install chromium"
    profile = tmp_path / "chromium-profile"
    proc = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "HOME": str(tmp_path)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def post(url: str, body: dict[str, object]) -> int:
    req = urllib.request.Request(
        f"{url}/api/v1/reports",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(resp.status)


def fleet_reports() -> list[dict[str, object]]:
    https_fail = check(
        "outbound_https",
        "fail",
        summary="acme.digicert.com:443: TLS verification failed: certificate issued by "
        "Contoso TLS Inspection CA (SHA-256 3f:a1:...); interception suspected",
        reason="tls_intercepted",
        remediation="Exempt acme.digicert.com and daas.digicert.com from TLS inspection on "
        "the proxy or firewall, or add its CA to the agent's trust store.",
    )
    skew = check(
        "clock_skew",
        "warn",
        summary="Clock is 94 s ahead of acme.digicert.com",
        reason="clock_skew",
        remediation="Enable NTP (timedatectl set-ntp true) and check chronyd or "
        "systemd-timesyncd is running.",
    )
    base = [check(n) for n in ("privileges", "digicert_ip", "fqdn_resolution")]
    skip = check("sensor_port", "skip", summary="No DigiCert sensor configured", reason="none")
    return [
        report("web-01.prod", hostname="web-01.prod.example.com"),
        report(
            "web-02.prod",
            hostname="web-02.prod.example.com",
            checks=[*base[:1], https_fail, *base[1:], skip, skew],
        ),
        report(
            "db-07",
            hostname="db-07.prod.example.com",
            checks=[*base, skip, skew],
        ),
        report("evil", hostname="<script>alert(1)</script>"),
        report("gone-quiet", hostname="old-box.example.com", interval_s=0.5),
    ]


def test_fleet_page_in_chromium(tmp_path: Path) -> None:
    shots = Path(os.environ.get("COLLECTOR_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS_TEXT)
    cfg = tmp_path / "c.toml"
    cfg.write_text("page_refresh_s = 30\n")
    with server_process(
        "--config", cfg, "--tokens-file", tokens, "--db", tmp_path / "browser.db"
    ) as srv:
        for r in fleet_reports():
            assert post(srv.url, r) == 202
        time.sleep(1.6)  # gone-quiet (interval 0.5 s) is now stale

        dom = chromium(tmp_path, "--dump-dom", f"{srv.url}/")
        rows = re.findall(r'<tr class="([^"]*)" data-host-id="([^"]+)"', dom)
        # worst first: fail, warn, then pass (stale first, then by hostname: "<" sorts first)
        assert [h for _, h in rows] == ["web-02.prod", "db-07", "gone-quiet", "evil", "web-01.prod"]
        assert dict((h, c) for c, h in rows)["gone-quiet"] == "stale"
        assert "Exempt acme.digicert.com and daas.digicert.com from TLS inspection" in dom
        # the hostname is text in the DOM, not an element
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
        assert "<script" not in dom
        assert '<meta http-equiv="refresh" content="30">' in dom

        filtered = chromium(tmp_path, "--dump-dom", f"{srv.url}/?status=fail")
        assert re.findall(r'data-host-id="([^"]+)"', filtered) == ["web-02.prod"]

        for name, size in (("laptop", "1366,900"), ("phone", "390,844")):
            png = shots / f"fleet-{name}.png"
            chromium(tmp_path, f"--window-size={size}", f"--screenshot={png}", f"{srv.url}/")
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert png.stat().st_size > 10_000

        host_png = shots / "host-web-02.png"
        host_dom = chromium(tmp_path, "--dump-dom", f"{srv.url}/hosts/web-02.prod")
        assert 'id="history"' in host_dom and "tls_intercepted" in host_dom
        chromium(
            tmp_path,
            "--window-size=1366,900",
            f"--screenshot={host_png}",
            f"{srv.url}/hosts/web-02.prod",
        )
        assert host_png.stat().st_size > 10_000
        chromium(
            tmp_path,
            "--window-size=390,844",
            f"--screenshot={shots / 'host-web-02-phone.png'}",
            f"{srv.url}/hosts/web-02.prod",
        )
