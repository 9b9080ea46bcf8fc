"""The fleet page's Account panel and issuance column in a real headless Chromium, at
1280 and 390 px, with the collector running the account checks against the lab."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests import cdp
from tests.accountutil import certcentral_table, write_key
from tests.collectorutil import TOKENS_TEXT, check, report, server_process
from tests.lab.certcentral import KEYS, CertCentralLab
from tests.lab.config import to_toml
from tests.test_collector_browser import WIDTHS, assert_fits, post, pytestmark  # noqa: F401


def with_names(host_id: str, names: tuple[str, ...], **statuses: str) -> dict[str, Any]:
    doc = report(host_id, statuses, hostname=f"{host_id}.prod.example.com")
    for i, c in enumerate(doc["checks"]):
        if c["name"] == "fqdn_resolution":
            doc["checks"][i] = check(
                "fqdn_resolution", c["status"], details={"names": [{"name": n} for n in names]}
            )
    return doc


def account(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"{url}/api/v1/account", timeout=10) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data
    except urllib.error.HTTPError:
        return {}


async def test_account_panel_and_issuance_in_chromium(
    certcentral_lab: CertCentralLab, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("COLLECTOR_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    key = KEYS["dcv_expired"]
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS_TEXT)
    cc = certcentral_table(certcentral_lab, write_key(tmp_path, key), interval="1s")
    cfg = tmp_path / "collector.toml"
    cfg.write_text(
        f'tokens_file = "{tokens}"\ndb = "{tmp_path / "c.db"}"\n\n' + to_toml({"certcentral": cc})
    )
    with server_process("--config", cfg) as srv:
        for doc in (
            with_names("web-01", ("www.example.com", "api.shop.example.com")),
            with_names("web-02", ("www.example.org",)),
            with_names("web-03", ("shop.example.net",)),
            with_names("web-04", ("www.example.com",), outbound_https="fail"),
        ):
            assert post(srv.url, doc) == 202
        verdicts: dict[str, str] = {}
        for _ in range(300):  # a run after the reports arrived has matched their names
            data = account(srv.url)
            verdicts = {v["host_id"]: v["status"] for v in data.get("issuance", [])}
            if verdicts.get("web-01") == "pass":
                break
            time.sleep(0.05)
        assert verdicts == {"web-01": "pass", "web-02": "warn", "web-03": "fail", "web-04": "fail"}
        async with cdp.browser(tmp_path) as page:
            for width in WIDTHS:
                await assert_fits(page, f"{srv.url}/", width, shots / f"account-{width}.png")
                found = await page.evaluate(
                    "[document.querySelectorAll('#account #account-checks tbody tr').length,"
                    " document.querySelector('#account h2').textContent,"
                    " Array.from(document.querySelectorAll('#hosts tbody tr')).map("
                    "  r => [r.getAttribute('data-host-id'),"
                    "        (r.querySelector('[data-issuance]') || {}).textContent])]"
                )
                rows, title, issuance = found
                assert rows == 6 and "CertCentral account" in title and "fail" in title
                assert dict(map(tuple, issuance)) == {
                    "web-01": "ready",
                    "web-02": "at risk",
                    "web-03": "blocked",
                    "web-04": "blocked",
                }
