"""The collector's account checks against the CertCentral lab: every reason code through
the real collector (its scheduler, database and API), the issuance verdicts, /metrics,
the page's Account panel, and config errors."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from agent.config import parse_section
from agent.schema import ACCOUNT_SCHEMA_FILE, report_schema
from collector import config as collector_config
from tests.accountutil import CASES, ERROR_CASES, by_name, certcentral_table, key_for, write_key
from tests.collectorutil import auth, check, collector_env, report, serve, settings
from tests.lab.certcentral import KEYS, CertCentralLab

SCHEMA = report_schema(ACCOUNT_SCHEMA_FILE)


def host_report(
    host_id: str, names: tuple[str, ...], statuses: dict[str, str] | None = None
) -> dict[str, Any]:
    doc = report(host_id, statuses)
    for i, c in enumerate(doc["checks"]):
        if c["name"] == "fqdn_resolution":
            doc["checks"][i] = check(
                "fqdn_resolution",
                c["status"],
                details={"names": [{"name": n, "sources": ["config"]} for n in names]},
            )
    return doc


def account_settings(tmp: Path, lab: CertCentralLab, key: str, **extra: Any) -> Any:
    table = certcentral_table(lab, write_key(tmp, key), **extra)
    return settings(tmp, certcentral=parse_section("certcentral", table))


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as resp:
        return resp.status, await resp.json()


async def first_report(session: aiohttp.ClientSession, url: str, timeout: float = 20) -> Any:
    """GET /api/v1/account until the run at start has stored its report."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        status, body = await get_json(session, f"{url}/api/v1/account")
        if status == 200:
            return body
        assert status == 404 and "first run" in body["error"]
        await asyncio.sleep(0.05)
    raise AssertionError("no account report")


@pytest.mark.parametrize("case", sorted(CASES))
async def test_every_reason_through_the_collector(
    case: str, certcentral_lab: CertCentralLab, tmp_path: Path
) -> None:
    fqdns, extra, expected = CASES[case]
    key = key_for(case)
    s = account_settings(tmp_path, certcentral_lab, key, **extra)
    async with serve(s, account_key=key) as srv, aiohttp.ClientSession() as session:
        await first_report(session, srv.url)  # the run at start
        async with session.post(
            f"{srv.url}/api/v1/reports", json=host_report("web-01", fqdns), headers=auth()
        ) as resp:
            assert resp.status == 202
        assert srv.collector.account is not None
        await srv.collector.account.run_once()  # now with the host's names
        status, body = await get_json(session, f"{srv.url}/api/v1/account")
    assert status == 200
    jsonschema.validate(body["report"], SCHEMA)
    assert body["report"]["fqdns"] == list(fqdns)
    got = by_name(body["report"])
    for name, want in expected.items():
        assert got[name] == want, (name, body["report"])
    assert key not in str(body)


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
async def test_failures_of_the_api_path_through_the_collector(
    case: str, certcentral_lab: CertCentralLab, tmp_path: Path
) -> None:
    setup, expected = ERROR_CASES[case]
    key = KEYS["ready"]
    s = account_settings(tmp_path, certcentral_lab, key, **setup(certcentral_lab))
    async with serve(s, account_key=key) as srv, aiohttp.ClientSession() as session:
        body = await first_report(session, srv.url)  # the run at start: stored, not lost
        assert srv.collector.account is not None
        await srv.collector.account.run_once()  # and again: the collector keeps going
        status, again = await get_json(session, f"{srv.url}/api/v1/account")
        async with session.get(f"{srv.url}/metrics") as resp:
            metrics = await resp.text()
    assert status == 200
    for doc in (body["report"], again["report"]):
        jsonschema.validate(doc, SCHEMA)
        got = by_name(doc)
        for name, want in expected.items():
            assert got[name] == want, (name, doc)
    assert 'acme_preflight_account_check_status{check="api_key"}' in metrics


async def test_issuance_verdicts_join_hosts_and_account(
    certcentral_lab: CertCentralLab, tmp_path: Path
) -> None:
    key = KEYS["dcv_expired"]  # example.net's DCV has expired; example.com is fine
    s = account_settings(tmp_path, certcentral_lab, key)
    hosts = {
        "web-ok": host_report("web-ok", ("www.example.com",)),
        "web-uncovered": host_report("web-uncovered", ("www.example.org",)),
        "web-expired": host_report("web-expired", ("shop.example.net",)),
        "web-broken": host_report("web-broken", ("www.example.com",), {"outbound_https": "fail"}),
    }
    async with serve(s, account_key=key) as srv, aiohttp.ClientSession() as session:
        await first_report(session, srv.url)
        for doc in hosts.values():
            async with session.post(f"{srv.url}/api/v1/reports", json=doc, headers=auth()) as r:
                assert r.status == 202
        assert srv.collector.account is not None
        await srv.collector.account.run_once()
        _, body = await get_json(session, f"{srv.url}/api/v1/account")
        verdicts = {v["host_id"]: v for v in body["issuance"]}
        async with session.get(f"{srv.url}/") as resp:
            html = await resp.text()
        async with session.get(f"{srv.url}/metrics") as resp:
            metrics = await resp.text()
    # the account itself fails (an expired domain), but only the host using it is blocked
    assert by_name(body["report"])["domains"] == ("fail", "fqdn_dcv_expired")
    assert verdicts["web-ok"]["status"] == "pass", verdicts["web-ok"]
    assert verdicts["web-uncovered"]["status"] == "warn"
    assert "www.example.org: not prevalidated" in verdicts["web-uncovered"]["reasons"][0]
    assert verdicts["web-expired"]["status"] == "fail"
    assert "DCV of example.net expired" in verdicts["web-expired"]["reasons"][0]
    assert verdicts["web-broken"]["status"] == "fail"
    assert verdicts["web-broken"]["reasons"] == ["host checks: fail"]
    assert 'id="account"' in html and 'data-check="domains"' in html
    assert html.count('data-issuance="fail"') == 2 and 'data-issuance="pass"' in html
    assert 'acme_preflight_account_check_status{check="api_key"} 0' in metrics
    assert 'acme_preflight_account_check_status{check="domains"} 2' in metrics


async def test_blocking_account_checks_block_every_host(
    certcentral_lab: CertCentralLab, tmp_path: Path
) -> None:
    key = KEYS["zero_balance"]
    s = account_settings(tmp_path, certcentral_lab, key)
    async with serve(s, account_key=key) as srv, aiohttp.ClientSession() as session:
        await first_report(session, srv.url)
        async with session.post(
            f"{srv.url}/api/v1/reports",
            json=host_report("web-01", ("www.example.com",)),
            headers=auth(),
        ) as r:
            assert r.status == 202
        _, body = await get_json(session, f"{srv.url}/api/v1/account")
    (v,) = body["issuance"]
    # the host's name was not in the account run yet: it says so rather than guess
    assert v["status"] == "fail" and "account balance: no_funds" in v["reasons"]
    assert "host not yet checked against the account" in v["reasons"]


async def test_runs_every_interval(certcentral_lab: CertCentralLab, tmp_path: Path) -> None:
    key = KEYS["ready"]
    s = account_settings(tmp_path, certcentral_lab, key, interval="0.2s")
    async with serve(s, account_key=key) as srv:
        assert srv.collector.account is not None
        for _ in range(200):
            if srv.collector.account.runs >= 3:
                break
            await asyncio.sleep(0.05)
        assert srv.collector.account.runs >= 3
    me = [r for r in certcentral_lab.requests if r.path.endswith("/user/me")]
    assert len(me) >= 3


async def test_not_configured(tmp_path: Path) -> None:
    async with serve(settings(tmp_path)) as srv, aiohttp.ClientSession() as session:
        status, body = await get_json(session, f"{srv.url}/api/v1/account")
        async with session.get(f"{srv.url}/") as resp:
            html = await resp.text()
        async with session.get(f"{srv.url}/metrics") as resp:
            metrics = await resp.text()
    assert status == 404 and "not configured" in body["error"]
    assert 'id="account"' not in html and "issuance" not in html
    assert "acme_preflight_account_check_status" not in metrics


def test_collector_config_shares_the_parser(tmp_path: Path) -> None:
    s = collector_config.from_mapping(
        {
            "certcentral": {"api_key_file": "/k", "interval": "15m", "min_balance": 5},
            "proxy": {"url": "http://proxy.example:3128"},
        }
    )
    assert s.certcentral is not None and s.certcentral.interval == 900
    assert s.proxy.url == "http://proxy.example:3128"
    with pytest.raises(Exception, match=r"\[certcentral\] interval"):
        collector_config.from_mapping({"certcentral": {"interval": "often"}})


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            '[certcentral]\napi_key_file = "/nonexistent/key"\n',
            "[certcentral] api_key_file: /nonexistent/key: no such file",
        ),
        ("[certcentral]\ntimeout = -3\n", "[certcentral] timeout"),
        ('[certcentral]\nbase_url = "ftp://x"\n', "[certcentral] base_url"),
        ("[certcentral]\ninterval = '1m'\n", "[certcentral] api_key_file: is required"),
    ],
)
def test_collector_exits_78_on_bad_certcentral_config(
    body: str, needle: str, tmp_path: Path
) -> None:
    cfg = tmp_path / "c.toml"
    tokens = tmp_path / "tokens"
    tokens.write_text("fleet-token-0123456789abcdef\n")
    cfg.write_text(f'tokens_file = "{tokens}"\ndb = "{tmp_path / "db"}"\n' + body)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "collector",
            "serve",
            "--config",
            str(cfg),
            "--listen",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=collector_env(),
    )
    assert proc.returncode == 78, proc.stderr
    assert needle in proc.stderr


async def test_the_account_row_on_both_backends(store_target: Any) -> None:
    """One row, replaced at each run, read back byte for byte (SQLite and PostgreSQL)."""
    from collector import store

    backend = store.open_backend(store_target.url, password_file=store_target.password_file)
    store.prepare(backend)
    w = store.Writer(backend, asyncio.get_running_loop())
    w.start()
    try:
        assert await w.call(store.account) is None
        first = store.AccountRow(1000.5, "warn", b'{"status":"warn"}', b'{"web-01":["a.example"]}')
        second = store.AccountRow(2000.25, "pass", b'{"status":"pass"}', b"{}")
        await w.call(lambda conn: store.put_account(conn, first))
        assert await w.call(store.account) == first
        await w.call(lambda conn: store.put_account(conn, second))
        assert await w.call(store.account) == second
        assert (
            await w.call(
                lambda conn: conn.execute("SELECT COUNT(*) FROM account_report").fetchone()[0]
            )
            == 1
        )
    finally:
        await w.stop()
        backend.close()
