"""The collector's HTTP API against the real server on loopback with a real SQLite file."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import re
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.store import Record
from collector.tokens import parse
from tests.collectorutil import (
    READ_TOKEN,
    TOKEN,
    WEB01_TOKEN,
    Running,
    auth,
    report,
    serve,
    settings,
)
from tests.lab.plugin import StoreTarget


@pytest.fixture
async def srv(tmp_path: Path, store_target: StoreTarget) -> AsyncIterator[Running]:
    """The collector on each backend in turn: these are the store's contract tests."""
    async with serve(settings(tmp_path, store_target)) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession,
    srv: Running,
    data: Any,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    h = {"Content-Type": "application/json", **(auth(token) if token else {}), **(headers or {})}
    async with http.post(f"{srv.url}/api/v1/reports", data=body, headers=h) as resp:
        return resp.status, await resp.json(content_type=None)


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_ingest_then_repeat_is_acknowledged_and_stored_once(
    srv: Running, http: aiohttp.ClientSession
) -> None:
    r = report("web-02", {"clock_skew": "warn"})
    status, body = await post(http, srv, r)
    assert (status, body["duplicate"], body["report_id"]) == (202, False, r["report_id"])
    # committed before the 202: a separate connection sees it at once
    assert await srv.count() == 1
    status, body = await post(http, srv, r)
    assert (status, body["duplicate"], body["status"]) == (200, True, "duplicate")
    assert await srv.count() == 1
    hosts = (await get_json(http, f"{srv.url}/api/v1/hosts"))["hosts"]
    assert [h["host_id"] for h in hosts] == ["web-02"]
    assert hosts[0]["status"] == "warn"
    assert [c["name"] for c in hosts[0]["failing_checks"]] == ["clock_skew"]
    assert hosts[0]["failing_checks"][0]["remediation"] == "Fix clock_skew on this host."


async def test_concurrent_repeats_of_one_report_store_one_row(
    srv: Running, http: aiohttp.ClientSession
) -> None:
    r = report("web-03")
    results = await asyncio.gather(*(post(http, srv, r) for _ in range(20)))
    statuses = sorted(s for s, _ in results)
    assert statuses == [200] * 19 + [202]
    assert await srv.count() == 1


async def test_many_concurrent_reports_are_grouped_and_all_stored(
    srv: Running, http: aiohttp.ClientSession
) -> None:
    reports = [report(f"host-{i % 7}") for i in range(200)]
    results = await asyncio.gather(*(post(http, srv, r) for r in reports))
    assert {s for s, _ in results} == {202}
    assert await srv.count() == 200
    batches = srv.collector.metrics.batch_size
    assert sum(batches.counts) < 200  # some commits carried several reports


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789abcdef"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
    ],
)
async def test_missing_or_wrong_token_is_401(
    srv: Running, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    status, body = await post(http, srv, report(), token=None, headers=headers)
    assert status == 401
    assert "token" in body["error"]
    assert await srv.count() == 0


async def test_host_bound_token(srv: Running, http: aiohttp.ClientSession) -> None:
    status, body = await post(http, srv, report("web-02"), token=WEB01_TOKEN)
    assert status == 403
    assert body["field"] == "agent.host_id"
    status, _ = await post(http, srv, report("web-01"), token=WEB01_TOKEN)
    assert status == 202
    assert await srv.count() == 1


async def test_a_host_cannot_pre_claim_another_hosts_report_id(
    tmp_path: Path, http: aiohttp.ClientSession, store_target: StoreTarget
) -> None:
    """Issue 14 item 2, performed: web-01's bound token posts a report carrying web-02's
    report_id (seen on web-02's /status) before web-02 sends it. web-02's report must still be
    stored, listed as its latest, and acknowledged as stored."""
    web02 = "web02-token-0123456789abcdef"
    tokens = parse(f"{WEB01_TOKEN} web-01\n{web02} web-02\n", "tokens")
    async with serve(settings(tmp_path, store_target), tokens) as srv:
        victim = report("web-02", {"caa": "fail"})
        squat = report("web-01", report_id=victim["report_id"])
        status, ack = await post(http, srv, squat, token=WEB01_TOKEN)
        assert (status, ack["stored"], ack["host_id"]) == (202, True, "web-01")
        status, ack = await post(http, srv, victim, token=web02)
        assert status == 202, ack
        assert ack == {
            "status": "accepted",
            "report_id": victim["report_id"],
            "host_id": "web-02",
            "duplicate": False,
            "stored": True,
        }
        # the agent's retry of the same report: acknowledged, stored once
        status, ack = await post(http, srv, victim, token=web02)
        assert (status, ack["duplicate"], ack["stored"]) == (200, True, True)
        assert await srv.count("web-02") == 1
        hist = await get_json(http, f"{srv.url}/api/v1/hosts/web-02/reports")
        assert [r["report"]["report_id"] for r in hist["reports"]] == [victim["report_id"]]
        assert hist["reports"][0]["report"]["status"] == "fail"  # web-02's own, not the squat
        # a different report under an id this host already used is refused, not "delivered"
        other = report("web-02", report_id=victim["report_id"])
        status, ack = await post(http, srv, other, token=web02)
        assert (status, ack["status"], ack["stored"]) == (409, "conflict", False)
        assert await srv.count() == 2
        assert srv.collector.metrics.ingest["conflict"] == 1


async def test_new_host_cap_per_fleet_token(
    tmp_path: Path, http: aiohttp.ClientSession, store_target: StoreTarget
) -> None:
    """Issue 14 item 5, performed: one fleet-wide token invents host_ids; past the cap they get
    429 and are not stored, while known hosts and host-bound tokens go on."""
    async with serve(settings(tmp_path, store_target, new_hosts_per_hour=5)) as srv:
        answers = [await post(http, srv, report(f"fake-{i:03d}")) for i in range(8)]
        assert [a[0] for a in answers] == [202] * 5 + [429] * 3
        ack = answers[-1][1]
        assert (ack["status"], ack["stored"], ack["limit"]) == ("host_limit", False, 5)
        async with http.post(
            f"{srv.url}/api/v1/reports", json=report("fake-999"), headers=auth()
        ) as resp:
            assert resp.status == 429 and resp.headers["Retry-After"] == "300"
        assert (await post(http, srv, report("fake-000")))[0] == 202  # known: not capped
        assert (await post(http, srv, report("web-01"), token=WEB01_TOKEN))[0] == 202
        listed = await get_json(http, f"{srv.url}/api/v1/hosts")
        assert len(listed["hosts"]) == 6
        srv.clock.advance(3601)
        assert (await post(http, srv, report("fake-100")))[0] == 202
        assert srv.collector.metrics.ingest["host_limit"] == 4


async def test_hosts_not_seen_for_host_days_leave_the_fleet_and_are_counted(
    tmp_path: Path, http: aiohttp.ClientSession, store_target: StoreTarget
) -> None:
    async with serve(settings(tmp_path, store_target, host_retention_days=7)) as srv:
        await post(http, srv, report("gone", {"privileges": "fail"}))
        srv.clock.advance(8 * 86400)
        await post(http, srv, report("here"))
        assert await srv.collector.prune() == 0
        listed = await get_json(http, f"{srv.url}/api/v1/hosts")
        assert [h["host_id"] for h in listed["hosts"]] == ["here"]
        problems = await get_json(http, f"{srv.url}/api/v1/problems")
        assert "gone" not in json.dumps(problems)
        async with http.get(f"{srv.url}/") as resp:
            assert 'data-host-id="gone"' not in await resp.text()
        async with http.get(f"{srv.url}/metrics") as resp:
            families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
        retired = families["acme_preflight_collector_hosts_retired"].samples[0].value
        assert retired == 1
        assert (await srv.query("SELECT value FROM counters WHERE name = 'hosts_retired'")) == [
            (1,)
        ]
        # reporting again makes it a host again
        assert (await post(http, srv, report("gone")))[0] == 202
        listed = await get_json(http, f"{srv.url}/api/v1/hosts")
        assert sorted(h["host_id"] for h in listed["hosts"]) == ["gone", "here"]


@pytest.mark.parametrize(
    "body",
    [b"{", b"not json", b"", b'{"a": NaN}', b"\xff\xfe{}", b'{"x": Infinity}'],
)
async def test_bad_json_is_400(srv: Running, http: aiohttp.ClientSession, body: bytes) -> None:
    status, data = await post(http, srv, body)
    assert status == 400
    assert "JSON" in data["error"]


@pytest.mark.parametrize(
    ("field", "mutate"),
    [
        ("report_id", lambda r: r.pop("report_id")),
        ("agent.host_id", lambda r: r["agent"].pop("host_id")),
        ("checks[2].remediation", lambda r: r["checks"][2].pop("remediation")),
        ("checks[0].status", lambda r: r["checks"][0].update(status="fine")),
        ("report_id", lambda r: r.update(report_id="not-a-uuid")),
        ("started_at", lambda r: r.update(started_at="yesterday")),
        ("interval_s", lambda r: r.update(interval_s=0)),
        ("extra", lambda r: r.update(extra=1)),
        ("schema", lambda r: r.update(schema="acme-preflight.report/2")),
    ],
)
async def test_schema_violation_is_400_naming_the_field(
    srv: Running, http: aiohttp.ClientSession, field: str, mutate: Any
) -> None:
    r = report()
    mutate(r)
    status, body = await post(http, srv, r)
    assert status == 400
    assert body["field"] == field
    assert field in body["error"]
    assert await srv.count() == 0


async def test_oversized_body_is_413_by_content_length(
    srv: Running, http: aiohttp.ClientSession
) -> None:
    r = report()
    r["checks"][0]["details"] = {"blob": "x" * (1024 * 1024)}
    status, body = await post(http, srv, r)
    assert status == 413
    assert body["limit"] == 1024 * 1024


async def test_oversized_chunked_body_is_413_without_reading_it_all(
    srv: Running, http: aiohttp.ClientSession
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(64):  # 64 MiB offered, no Content-Length
            sent += 1
            yield b" " * (1024 * 1024)

    try:
        async with http.post(f"{srv.url}/api/v1/reports", data=chunks(), headers=auth()) as resp:
            assert resp.status == 413
    except aiohttp.ClientError:
        pass  # the server may close the connection before the client finishes sending
    assert sent < 64
    # the server is still fine
    status, _ = await post(http, srv, report())
    assert status == 202


async def test_gzip_accepted(srv: Running, http: aiohttp.ClientSession) -> None:
    r = report("web-04")
    status, _ = await post(
        http, srv, gzip.compress(json.dumps(r).encode()), headers={"Content-Encoding": "gzip"}
    )
    assert status == 202
    hosts = (await get_json(http, f"{srv.url}/api/v1/hosts"))["hosts"]
    assert hosts[0]["report_id"] == r["report_id"]


async def test_gzip_bomb_is_413(srv: Running, http: aiohttp.ClientSession) -> None:
    # 1 KB of gzip that inflates to 64 MiB of spaces
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(c.compress(b" " * (1024 * 1024)) for _ in range(64)) + c.flush()
    assert len(bomb) < 100_000
    status, body = await post(http, srv, bomb, headers={"Content-Encoding": "gzip"})
    assert status == 413
    assert "larger than 1048576 bytes" in body["error"]
    assert await srv.count() == 0


@pytest.mark.parametrize(
    ("encoding", "body", "code"),
    [("gzip", b"not gzip at all", 400), ("br", b"{}", 415), ("gzip", b"\x1f\x8b", 400)],
)
async def test_bad_encoding(
    srv: Running, http: aiohttp.ClientSession, encoding: str, body: bytes, code: int
) -> None:
    status, _ = await post(http, srv, body, headers={"Content-Encoding": encoding})
    assert status == code


async def test_history_is_newest_first_and_paginated(
    srv: Running, http: aiohttp.ClientSession
) -> None:
    ids = []
    for _ in range(7):
        r = report("web-05")
        ids.append(r["report_id"])
        assert (await post(http, srv, r))[0] == 202
    await post(http, srv, report("other"))
    seen: list[str] = []
    url = f"{srv.url}/api/v1/hosts/web-05/reports?limit=3"
    pages = 0
    while True:
        page = await get_json(http, url)
        pages += 1
        seen += [item["report"]["report_id"] for item in page["reports"]]
        if page["next_before"] is None:
            break
        url = f"{srv.url}/api/v1/hosts/web-05/reports?limit=3&before={page['next_before']}"
    assert pages == 3
    assert seen == ids[::-1]
    async with http.get(f"{srv.url}/api/v1/hosts/nobody/reports") as resp:
        assert resp.status == 404
    for bad in ("limit=0", "limit=x", "limit=501", "before=-1", "before=abc"):
        async with http.get(f"{srv.url}/api/v1/hosts/web-05/reports?{bad}") as resp:
            assert resp.status == 400
            assert (await resp.json())["field"] == bad.split("=")[0]


async def test_host_id_with_slash_and_unicode_round_trips(
    srv: Running, http: aiohttp.ClientSession
) -> None:
    hid = "rack 1/web é"
    assert (await post(http, srv, report(hid)))[0] == 202
    page = await get_json(http, f"{srv.url}/api/v1/hosts/{quote(hid, safe='')}/reports")
    assert page["host_id"] == hid
    async with http.get(f"{srv.url}/hosts/{quote(hid, safe='')}") as resp:
        assert resp.status == 200
        assert "rack 1/web é" in await resp.text()


async def test_stale_after_three_intervals(srv: Running, http: aiohttp.ClientSession) -> None:
    await post(http, srv, report("quiet", interval_s=60))
    await post(http, srv, report("no-interval", interval_s=None))  # default_interval_s 300
    srv.clock.advance(170)
    await post(http, srv, report("chatty", interval_s=60))
    hosts = {h["host_id"]: h for h in (await get_json(http, f"{srv.url}/api/v1/hosts"))["hosts"]}
    assert not hosts["quiet"]["stale"]  # 170 s < 180 s
    srv.clock.advance(20)
    hosts = {h["host_id"]: h for h in (await get_json(http, f"{srv.url}/api/v1/hosts"))["hosts"]}
    assert hosts["quiet"]["stale"]
    assert not hosts["chatty"]["stale"]
    assert not hosts["no-interval"]["stale"]
    stale = await get_json(http, f"{srv.url}/api/v1/hosts?status=stale")
    assert [h["host_id"] for h in stale["hosts"]] == ["quiet"]
    assert stale["counts"]["stale"] == 1
    srv.clock.advance(900)
    data = await get_json(http, f"{srv.url}/api/v1/hosts")
    assert all(h["stale"] for h in data["hosts"])


async def test_retention_keeps_the_latest_per_host(
    tmp_path: Path, http: aiohttp.ClientSession, store_target: StoreTarget
) -> None:
    async with serve(settings(tmp_path, store_target, retention_days=30)) as srv:
        srv.clock.advance(-40 * 86400)
        old_only = report("gone-quiet")
        await post(http, srv, old_only)
        for _ in range(3):
            await post(http, srv, report("busy"))
        srv.clock.advance(39 * 86400)  # 1 day ago
        recent = report("busy")
        await post(http, srv, recent)
        srv.clock.advance(86400)
        assert await srv.count() == 5
        pruned = await srv.collector.prune()
        assert pruned == 3
        left = {r[0] for r in await srv.query("SELECT report_id FROM reports")}
        assert left == {old_only["report_id"], recent["report_id"]}
        assert await srv.collector.prune() == 0
        assert srv.collector.metrics.pruned == 3


async def test_retention_runs_in_the_background_beside_ingest(
    tmp_path: Path, http: aiohttp.ClientSession, store_target: StoreTarget
) -> None:
    async with serve(settings(tmp_path, store_target, retention_days=1, prune_interval_s=1)) as srv:
        srv.clock.advance(-3 * 86400)
        for _ in range(1200):  # several prune chunks
            old = report("old")
            body = json.dumps(old).encode()
            await srv.collector.writer.submit(Record(old["report_id"], "old", "pass", 60.0, body))
        srv.clock.advance(3 * 86400)
        # ingest keeps being answered while the background prune runs
        for _ in range(30):
            status, _ = await post(http, srv, report("new"))
            assert status == 202
            await asyncio.sleep(0.05)
            if await srv.count() <= 31:
                break
        for _ in range(60):
            if await srv.count() <= 31:
                break
            await asyncio.sleep(0.1)
        by_host = dict(await srv.query("SELECT host_id, COUNT(*) FROM reports GROUP BY host_id"))
        assert by_host["old"] == 1  # its latest stays
        assert by_host["new"] >= 1


async def test_metrics_parse_and_count(srv: Running, http: aiohttp.ClientSession) -> None:
    r = report("m1", {"privileges": "fail"})
    await post(http, srv, r)
    await post(http, srv, r)
    await post(http, srv, report("m2"), token="wrong-token-0123456789abcdef")
    await post(http, srv, b"{")
    await post(http, srv, report("m3", interval_s=10))
    srv.clock.advance(31)
    async with http.get(f"{srv.url}/metrics") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    p = "acme_preflight_collector_"

    def value(family: str, sample: str, **labels: str) -> float:
        for s in families[family].samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
        raise AssertionError(f"no {sample} {labels}")

    received = f"{p}reports_received"
    assert value(received, f"{received}_total", outcome="accepted") == 2
    assert value(received, f"{received}_total", outcome="duplicate") == 1
    assert value(received, f"{received}_total", outcome="unauthorized") == 1
    assert value(received, f"{received}_total", outcome="invalid_json") == 1
    assert value(f"{p}hosts", f"{p}hosts", status="fail") == 1
    assert value(f"{p}hosts", f"{p}hosts", status="pass") == 1
    assert value(f"{p}hosts_stale", f"{p}hosts_stale") == 1
    lat = f"{p}request_duration_seconds"
    assert families[lat].type == "histogram"
    assert value(lat, f"{lat}_count", handler="ingest") == 5
    assert value(lat, f"{lat}_bucket", handler="ingest", le="+Inf") == 5


async def test_healthz(srv: Running, http: aiohttp.ClientSession) -> None:
    assert await get_json(http, f"{srv.url}/healthz") == {"status": "ok"}


async def test_healthz_follows_whether_the_store_can_commit(
    srv: Running, http: aiohttp.ClientSession
) -> None:
    await srv.set_read_only(True)
    assert (await post(http, srv, report("refused")))[0] == 503
    async with http.get(f"{srv.url}/healthz") as resp:
        assert resp.status == 503  # was 200 while every report got 503
        assert "the store cannot commit" in (await resp.json())["error"]
    await srv.set_read_only(False)
    # nothing posts: the health check's own test commit (once a second) sees the recovery
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while True:
        async with http.get(f"{srv.url}/healthz") as resp:
            if resp.status == 200:
                break
        assert loop.time() < deadline, "healthz stayed 503 after the store could commit"
        await asyncio.sleep(0.2)
    assert (await post(http, srv, report("accepted")))[0] == 202


async def test_read_auth(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    s = settings(tmp_path, read_auth=True, read_tokens_file=tmp_path / "read")
    async with serve(s, read_tokens=parse(f"{READ_TOKEN}\n", "read")) as srv:
        assert (await post(http, srv, report("ra")))[0] == 202
        for path in ("/", "/api/v1/hosts", "/api/v1/hosts/ra/reports", "/hosts/ra", "/metrics"):
            async with http.get(f"{srv.url}{path}") as resp:
                assert resp.status == 401, path
                assert "WWW-Authenticate" in resp.headers
            # an ingest token is not a read token
            async with http.get(f"{srv.url}{path}", headers=auth(TOKEN)) as resp:
                assert resp.status == 401, path
            async with http.get(f"{srv.url}{path}", headers=auth(READ_TOKEN)) as resp:
                assert resp.status == 200, path
        # a browser sends the token as the Basic password
        basic = base64.b64encode(f"anyone:{READ_TOKEN}".encode()).decode()
        async with http.get(f"{srv.url}/", headers={"Authorization": f"Basic {basic}"}) as resp:
            assert resp.status == 200
        async with http.get(f"{srv.url}/healthz") as resp:
            assert resp.status == 200  # liveness stays open


async def test_page_escapes_report_text(srv: Running, http: aiohttp.ClientSession) -> None:
    evil = "<script>alert(1)</script>"
    r = report(
        "evil\"'><b>",
        {"digicert_ip": "fail"},
        hostname=evil,
    )
    r["checks"][2]["summary"] = "<img src=x onerror=alert(2)>"
    r["checks"][2]["remediation"] = "run `rm -rf /` & </td></tr>"
    r["checks"][2]["details"] = {"x": "</pre><script>alert(3)</script>"}
    assert (await post(http, srv, r))[0] == 202
    for path in ("/", "/hosts/evil%22%27%3E%3Cb%3E"):
        async with http.get(f"{srv.url}{path}") as resp:
            assert resp.status == 200
            html = await resp.text()
        assert "<script>" not in html
        assert "<img" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "&lt;img src=x onerror=alert(2)&gt;" in html
        assert "rm -rf /` &amp; &lt;/td&gt;&lt;/tr&gt;" in html
        assert "<b>" not in html


async def test_page_filters_and_sorts(srv: Running, http: aiohttp.ClientSession) -> None:
    await post(http, srv, report("a-pass"))
    await post(http, srv, report("b-fail", {"outbound_https": "fail"}))
    await post(http, srv, report("c-warn", {"clock_skew": "warn"}))

    async def rows(query: str) -> list[str]:
        async with http.get(f"{srv.url}/?{query}") as resp:
            html = await resp.text()
        return re.findall(r'<tr class="[^"]*" data-host-id="([^"]+)"', html)

    assert await rows("") == ["b-fail", "c-warn", "a-pass"]  # worst first
    assert await rows("sort=host") == ["a-pass", "b-fail", "c-warn"]
    assert await rows("status=fail") == ["b-fail"]
    assert await rows("status=problems") == ["b-fail", "c-warn"]
    for bad in ("status=bogus", "sort=bogus", "limit=0", "cursor=%25%25", "check=A%3Cb%3E"):
        async with http.get(f"{srv.url}/?{bad}") as resp:
            assert resp.status == 400, bad
            assert bad.split("=")[0] in await resp.text()
    async with http.get(f"{srv.url}/") as resp:
        html = await resp.text()
    assert '<meta http-equiv="refresh" content="60">' in html
    assert "Fix outbound_https on this host." in html
    assert "<script" not in html and "http://" not in html.split("<body>")[1]


async def test_database_failure_is_503_and_nothing_is_lost_later(
    srv: Running, http: aiohttp.ClientSession
) -> None:
    r = report("db-trouble")
    await srv.set_read_only(True)
    async with http.post(
        f"{srv.url}/api/v1/reports", data=json.dumps(r).encode(), headers=auth()
    ) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "5"
    await srv.set_read_only(False)
    # the agent retries the same report: now it is stored, once
    assert (await post(http, srv, r))[0] == 202
    assert await srv.count() == 1
    assert srv.collector.metrics.ingest["unavailable"] == 1


async def test_deeply_nested_details_never_break_a_page(
    srv: Running, http: aiohttp.ClientSession
) -> None:
    accepted = 0
    for depth in range(900, 1400, 20):
        r = report(f"deep-{depth}")
        nested = "[" * depth + "]" * depth
        body = json.dumps(r).replace('"details": {"n": 1}', f'"details": {{"d": {nested}}}', 1)
        status, data = await post(http, srv, body.encode())
        assert status in (202, 400), data  # never a 500
        if status == 400:
            assert "JSON" in data["error"]
            continue
        accepted += 1
        for path in (f"/hosts/deep-{depth}", f"/api/v1/hosts/deep-{depth}/reports"):
            async with http.get(srv.url + path) as resp:
                assert resp.status == 200, path
    assert accepted  # the shallower ones are fine
    for path in ("/", "/api/v1/hosts"):
        async with http.get(srv.url + path) as resp:
            assert resp.status == 200
    status, data = await post(http, srv, b"[" * 100_000)
    assert status == 400


def _strict(text: str) -> Any:
    def reject(name: str) -> Any:
        raise ValueError(f"{name} in the answer")

    return json.loads(text, parse_constant=reject)


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("interval_s", "1e999"),
        ("dropped_reports", "1" + "0" * 400),
        ("checks[0].details.n", "-1e999"),
        ("checks[-1].duration_ms", "9" * 400 + ".0"),  # the last check, however many
    ],
)
async def test_out_of_range_numbers_are_400_and_never_reach_the_listing(
    srv: Running, http: aiohttp.ClientSession, field: str, raw: str
) -> None:
    r = report(host_id="big-numbers")
    r["dropped_reports"] = 0
    body = json.dumps(r)
    key = field.rsplit(".", 1)[-1]
    old = f'"{key}": 0' if key == "dropped_reports" else None
    if field == "interval_s":
        body = body.replace('"interval_s": 60', f'"interval_s": {raw}')
    elif old:
        body = body.replace(old, f'"{key}": {raw}')
    elif key == "n":
        body = body.replace('"details": {"n": 1}', f'"details": {{"n": {raw}}}', 1)
    else:
        head, sep, tail = body.rpartition('"duration_ms": 1.5')
        body = f'{head}"duration_ms": {raw}{tail}'
        assert sep
    status, answer = await post(http, srv, body.encode())
    assert status == 400, answer
    assert answer["field"] == field.replace("[-1]", f"[{len(r['checks']) - 1}]")
    assert await srv.count() == 0
    async with http.get(f"{srv.url}/api/v1/hosts") as resp:
        assert resp.status == 200
        assert _strict(await resp.text())["hosts"] == []


@pytest.mark.parametrize(
    "query",
    [
        "before=9223372036854775808",
        "before=" + "9" * 400,
        "before=0",
        "before=%D9%A1",  # ARABIC-INDIC DIGIT ONE: int() takes it, the API does not
        "before=+5",
        "before=1_0",
        "before=%205",
        "limit=" + "9" * 5000,
        "limit=%EF%BC%95",  # FULLWIDTH DIGIT FIVE
        "limit=",
    ],
)
async def test_bad_paging_parameters_are_400_naming_them(
    srv: Running, http: aiohttp.ClientSession, query: str
) -> None:
    assert (await post(http, srv, report(host_id="pager")))[0] == 202
    for path in ("/api/v1/hosts/pager/reports", "/hosts/pager"):
        async with http.get(f"{srv.url}{path}?{query}") as resp:
            assert resp.status == 400, (path, await resp.text())
            answer = await resp.json()
            assert answer["field"] == query.split("=")[0]
            assert answer["field"] in answer["error"]


async def test_paging_at_the_cursor_bound(srv: Running, http: aiohttp.ClientSession) -> None:
    assert (await post(http, srv, report(host_id="pager")))[0] == 202
    page = await get_json(http, f"{srv.url}/api/v1/hosts/pager/reports?before={2**63 - 1}")
    assert len(page["reports"]) == 1
    page = await get_json(http, f"{srv.url}/api/v1/hosts/pager/reports?limit=500&before=1")
    assert page["reports"] == []
