"""The fleet page in a real headless Chromium (Debian's ``chromium``): rows, escaping, screenshots.

Screenshots go to ``$COLLECTOR_SCREENSHOT_DIR`` when set (to look at them), else the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests import cdp, fleetdb
from tests.cdp import CHROMIUM
from tests.cdp import HEADLESS_FLAGS as FLAGS
from tests.collectorutil import TOKEN, TOKENS_TEXT, check, report, server_process

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true",
    reason="Debian's chromium is not installed (.ci/apt-packages.txt installs it in CI)",
)


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
        # worst first: fail, warn, then pass by name ("<" sorts first)
        assert [h for _, h in rows] == ["web-02.prod", "db-07", "evil", "gone-quiet", "web-01.prod"]
        assert dict((h, c) for c, h in rows)["gone-quiet"] == "stale"
        problems = dom.split('id="problems"')[1].split("</section>")[0]
        # problem groups: stale first, then fails before warns; each fix once
        groups = re.findall(r'data-check="([^"]+)" data-reason="([^"]+)"', problems)
        assert groups == [("outbound_https", "tls_intercepted"), ("clock_skew", "clock_skew")]
        assert problems.index("no recent report") < problems.index("tls_intercepted")
        assert dom.count("Exempt acme.digicert.com and daas.digicert.com from TLS inspection") == 1
        assert dom.count("Enable NTP (timedatectl set-ntp true)") == 1
        # the hostname is text in the DOM, not an element
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
        assert "<script" not in dom
        assert '<meta http-equiv="refresh" content="30">' in dom

        filtered = chromium(tmp_path, "--dump-dom", f"{srv.url}/?status=fail")
        assert re.findall(r'data-host-id="([^"]+)"', filtered) == ["web-02.prod"]

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


WIDTHS = (1280, 390)


async def assert_fits(page: cdp.Page, url: str, width: int, png: Path) -> dict[str, object]:
    """Load ``url`` at ``width`` px: nothing reaches past the viewport; a screenshot of the
    first 2,400 px of the page goes to ``png``."""
    await page.open(url, width)
    layout = await page.layout()
    assert layout["viewport"] == width, layout
    assert layout["count"] == 0, f"wider than {width} px: {layout['wide']}"
    assert layout["scrollWidth"] <= width, layout
    await page.screenshot(png, full_height=min(int(layout["height"]), 2400))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return layout


@pytest.mark.parametrize("hosts", [4, 10_000])
async def test_layout_fits_laptop_and_phone(tmp_path: Path, hosts: int) -> None:
    """Problem groups, the chart and the grid at 1280 and 390 px, for 4 and 10,000 hosts."""
    shots = Path(os.environ.get("COLLECTOR_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    db = tmp_path / "fleet.db"
    await fleetdb.fill(db, hosts, seed=3 if hosts == 4 else 16, healthy=0.25 if hosts == 4 else 0.7)
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS_TEXT)
    with server_process("--tokens-file", tokens, "--db", db) as srv:
        # a long unbroken hostname must wrap, not widen the page
        assert post(srv.url, report("x" * 60, hostname="a" * 120 + ".example.com")) == 202
        async with cdp.browser(tmp_path) as page:
            for width in WIDTHS:
                png = shots / f"fleet-{hosts}-{width}.png"
                await assert_fits(page, f"{srv.url}/", width, png)
                found = await page.evaluate(
                    "[document.querySelectorAll('#problem-groups > li').length,"
                    " document.querySelectorAll('#chart').length,"
                    " document.querySelectorAll('#hosts tbody tr').length,"
                    " document.querySelector('#problems').getBoundingClientRect().top <"
                    " document.querySelector('#grid').getBoundingClientRect().top]"
                )
                groups, charts, rows, problems_first = found
                assert groups >= 1 and charts == 1 and problems_first
                assert rows == min(hosts + 1, 100)
                host = "host-000001"
                await assert_fits(
                    page, f"{srv.url}/hosts/{host}", width, shots / f"host-{hosts}-{width}.png"
                )


INJECT_JS = """(() => {
  // what an injection into the page would do: an inline script, and an image beacon
  const s = document.createElement('script');
  s.textContent = 'window.injected = 1';
  document.body.appendChild(s);
  const sw = document.querySelector('.sw, .b');
  return {
    ran: window.injected === 1,
    font: getComputedStyle(document.body).fontFamily,
    margin: getComputedStyle(document.body).margin,
    attrStyle: sw ? getComputedStyle(sw).backgroundColor : null,
  };
})()"""


async def test_csp_blocks_injected_scripts_and_keeps_the_pages_styled(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS_TEXT)
    with server_process("--tokens-file", tokens, "--db", tmp_path / "csp.db") as srv:
        for body in fleet_reports():
            assert post(srv.url, body) == 202
        async with cdp.browser(tmp_path) as page:
            for path in ("/", "/hosts/web-02.prod"):
                await page.open(f"{srv.url}{path}", 1280)
                found = await page.evaluate(INJECT_JS)
                assert found["ran"] is False, path  # the policy stopped the script
                # the <style> element and style attributes still apply
                assert "system-ui" in found["font"] and found["margin"] == "0px", found
                assert found["attrStyle"] not in (None, "rgba(0, 0, 0, 0)"), found
