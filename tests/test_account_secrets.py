"""The CertCentral API key appears nowhere the tests can read: CLI output (table, JSON,
errors), ``config show``, the collector's logs, API answers, pages, metrics and database
files. The lab plays a careless server that quotes the key in its error messages."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.accountutil import certcentral_table, write_agent_config, write_key
from tests.collectorutil import TOKEN, TOKENS_TEXT, check, report, server_process
from tests.lab.certcentral import KEYS, UNKNOWN_KEY, CertCentralLab
from tests.lab.config import to_toml


def fetch(url: str, data: bytes | None = None) -> bytes:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return bytes(resp.read())
    except urllib.error.HTTPError as e:
        return bytes(e.read())


def test_the_key_appears_nowhere(certcentral_lab: CertCentralLab, tmp_path: Path) -> None:
    lab = certcentral_lab
    lab.echo_key = True
    key = KEYS["finance_denied"]
    lab.accounts[key].agents = None  # the Automation API refuses too, quoting the key
    produced: dict[str, bytes] = {}

    # the CLI: JSON and table, a key the server refuses, and config show
    for name, k in (("denied", key), ("unknown", UNKNOWN_KEY)):
        work = tmp_path / name
        work.mkdir()
        cfg = write_agent_config(work, lab, k)
        runs = (["account", "--json"], ["account"], ["config", "show"])
        for args in runs if name == "denied" else runs[:1]:
            proc = subprocess.run(
                [sys.executable, "-m", "agent", "--config", str(cfg), *args],
                capture_output=True,
                timeout=60,
            )
            produced[f"cli {name} {args}"] = proc.stdout + proc.stderr
    denied = json.loads(produced["cli denied ['account', '--json']"])
    balance = next(c for c in denied["checks"] if c["name"] == "balance")
    assert balance["reason"] == "api_permission_denied"
    assert "X-DC-DEVKEY: ***" in balance["summary"]  # the server did quote it: scrubbed
    unknown = json.loads(produced["cli unknown ['account', '--json']"])
    assert "X-DC-DEVKEY: ***" in unknown["checks"][0]["summary"]

    # the collector, logging at debug
    work = tmp_path / "collector"
    work.mkdir()
    tokens = work / "tokens"
    tokens.write_text(TOKENS_TEXT)
    db = work / "collector.db"
    cc = certcentral_table(lab, write_key(work, key))
    cfg = work / "collector.toml"
    cfg.write_text(
        f'log_level = "debug"\ntokens_file = "{tokens}"\ndb = "{db}"\n\n'
        + to_toml({"certcentral": cc})
    )
    with server_process("--config", cfg) as srv:
        doc = report("web-01")
        doc["checks"][3] = check(
            "fqdn_resolution", details={"names": [{"name": "www.example.com"}]}
        )
        fetch(f"{srv.url}/api/v1/reports", json.dumps(doc).encode())
        for _ in range(200):
            body = fetch(f"{srv.url}/api/v1/account")
            if b'"report"' in body:
                break
            time.sleep(0.05)
        produced["api account"] = body
        assert b"X-DC-DEVKEY: ***" in body
        for path in ("/", "/metrics", "/api/v1/hosts", "/hosts/web-01", "/api/v1/problems"):
            produced[path] = fetch(f"{srv.url}{path}")
        srv.stop()
        produced["collector logs"] = (srv.proc.stdout.read() if srv.proc.stdout else "").encode()
        produced["collector logs"] += (srv.proc.stderr.read() if srv.proc.stderr else "").encode()
    for f in work.iterdir():
        if f.name.startswith("collector.db"):
            produced[f.name] = f.read_bytes()
    assert b"account_report" in produced["collector.db"]  # the report is in the database

    used = {r.key for r in lab.requests}
    assert key in used and UNKNOWN_KEY in used  # both keys really were sent
    for where, blob in produced.items():
        for k in (key, UNKNOWN_KEY):
            assert k.encode() not in blob, f"the key leaked into {where}"
