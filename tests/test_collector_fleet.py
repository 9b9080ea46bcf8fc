"""The fleet views over the summary rows: problem groups, cursor paging, filters, the timeline,
the readiness chart, fleet gauges, and upgrading a database stored before the summary tables.
Through the real server on loopback with a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector import store, summary
from collector.readcache import ReadCache
from tests.collectorutil import Running, auth, check, report, serve, settings
from tests.lab.plugin import StoreTarget


@pytest.fixture
async def srv(tmp_path: Path, store_target: StoreTarget) -> AsyncIterator[Running]:
    """On each backend in turn: the summary SQL is portable and tested as such."""
    async with serve(settings(tmp_path, store_target)) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http: aiohttp.ClientSession, srv: Running, body: dict[str, Any]) -> None:
    async with http.post(f"{srv.url}/api/v1/reports", json=body, headers=auth()) as resp:
        assert resp.status == 202, await resp.text()


async def get_json(http: aiohttp.ClientSession, url: str, status: int = 200) -> Any:
    async with http.get(url) as resp:
        assert resp.status == status, await resp.text()
        return await resp.json()


async def get_text(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.text()


async def submit_many(srv: Running, docs: list[dict[str, Any]]) -> None:
    """Store reports through the writer (what POST does after validation), all in flight."""
    recs = [
        store.Record(
            d["report_id"],
            d["agent"]["host_id"],
            d["status"],
            d.get("interval_s"),
            json.dumps(d).encode(),
            summary.HostSummary.from_report(d),
        )
        for d in docs
    ]
    outcomes = await asyncio.gather(*(srv.collector.writer.submit(r) for r in recs))
    assert set(outcomes) <= {store.Outcome.STORED}


BLOCKED = check(
    "digicert_ip",
    "fail",
    summary="216.168.244.42:443 timed out",
    reason="ip_unreachable",
    remediation="Allow outbound TCP 443 to 216.168.244.42 on the firewall.",
)
SKEW = check("clock_skew", "warn", reason="clock_skew", remediation="Enable NTP.")


def fleet() -> list[dict[str, Any]]:
    """7 hosts blocked by the firewall, 2 of them also skewed, 3 more skewed, 2 healthy."""
    docs = []
    for i in range(7):
        extra = [SKEW] if i < 2 else []
        checks = [c for c in (check("privileges"), BLOCKED, *extra)]
        docs.append(report(f"fw-{i:02d}", hostname=f"fw-{i:02d}.example.com", checks=checks))
    for i in range(3):
        docs.append(report(f"skew-{i}", checks=[check("privileges"), SKEW]))
    docs.append(report("ok-1"))
    docs.append(report("ok-2"))
    return docs


async def test_problems_group_hosts_by_check_and_reason(
    srv: Running, http: aiohttp.ClientSession
) -> None:
    for d in fleet():
        await post(http, srv, d)
    data = await get_json(http, f"{srv.url}/api/v1/problems")
    groups = [(p["check"], p["reason"], p["status"], p["hosts"]) for p in data["problems"]]
    # fails before warns, then by hosts affected
    assert groups == [
        ("digicert_ip", "ip_unreachable", "fail", 7),
        ("clock_skew", "clock_skew", "warn", 5),
    ]
    fw = data["problems"][0]
    assert fw["remediation"] == "Allow outbound TCP 443 to 216.168.244.42 on the firewall."
    assert [h["host_id"] for h in fw["sample"]] == [f"fw-{i:02d}" for i in range(5)]
    assert fw["sample"][0]["name"] == "fw-00.example.com"
    assert data["stale"] == {"hosts": 0, "sample": []}

    page = await get_text(http, f"{srv.url}/")
    problems = page.split('id="problems"')[1].split("</section>")[0]
    # the remediation once for the 7 hosts, not once per host
    assert problems.count("Allow outbound TCP 443 to 216.168.244.42") == 1
    assert page.count("Allow outbound TCP 443 to 216.168.244.42") == 1
    assert "7 hosts" in problems and "and 2 more" in problems
    assert 'href="/?check=digicert_ip&amp;reason=ip_unreachable"' in problems

    # the "more" link lists exactly the group's hosts
    rows = re.findall(
        r'data-host-id="([^"]+)"',
        await get_text(http, f"{srv.url}/?check=digicert_ip&reason=ip_unreachable"),
    )
    assert rows == [f"fw-{i:02d}" for i in range(7)]

    # a fix: the group shrinks; the last host fixed, it is gone
    for i in range(7):
        await post(http, srv, report(f"fw-{i:02d}", hostname=f"fw-{i:02d}.example.com"))
        data = await get_json(http, f"{srv.url}/api/v1/problems")
        left = {(p["check"], p["reason"]): p["hosts"] for p in data["problems"]}
        assert left.get(("digicert_ip", "ip_unreachable"), 0) == 6 - i
    assert left == {("clock_skew", "clock_skew"): 3}
    for bad in ("0", "501", "x", "-1", "9" * 30):
        err = await get_json(http, f"{srv.url}/api/v1/problems?limit={bad}", status=400)
        assert err["field"] == "limit"


async def test_hosts_page_by_cursor_even_while_hosts_arrive(
    srv: Running, http: aiohttp.ClientSession
) -> None:
    docs = [
        report(f"h-{i:04d}", {"clock_skew": "warn"} if i % 3 == 0 else None) for i in range(250)
    ]
    await submit_many(srv, docs)
    seen: list[str] = []
    url = f"{srv.url}/api/v1/hosts?limit=100"
    pages = 0
    while True:
        data = await get_json(http, url)
        pages += 1
        assert data["matching"] == 250 + (pages > 1)  # one host arrives after the first page
        seen += [h["host_id"] for h in data["hosts"]]
        if pages == 1:
            # sorts after this page's last host: must show up on a later page
            await post(http, srv, report("zz-late"))
        if data["next_cursor"] is None:
            break
        url = f"{srv.url}/api/v1/hosts?limit=100&cursor={data['next_cursor']}"
    assert pages == 3
    warn = sorted(d["agent"]["host_id"] for d in docs if d["status"] == "warn")
    ok = sorted(d["agent"]["host_id"] for d in docs if d["status"] == "pass")
    assert seen == [*warn, *ok, "zz-late"]  # worst first, then by name: none lost, none twice

    # other sorts page the same way
    for sort in ("host", "last_seen"):
        got: list[str] = []
        url = f"{srv.url}/api/v1/hosts?limit=64&sort={sort}"
        while url:
            data = await get_json(http, url)
            got += [h["host_id"] for h in data["hosts"]]
            nxt = data["next_cursor"]
            url = f"{srv.url}/api/v1/hosts?limit=64&sort={sort}&cursor={nxt}" if nxt else ""
        assert sorted(got) == sorted([*warn, *ok, "zz-late"]) and len(set(got)) == 251

    # limits at their bounds, and cursors that are not ours
    assert len((await get_json(http, f"{srv.url}/api/v1/hosts?limit=1"))["hosts"]) == 1
    assert len((await get_json(http, f"{srv.url}/api/v1/hosts?limit=1000"))["hosts"]) == 251
    assert len((await get_json(http, f"{srv.url}/api/v1/hosts"))["hosts"]) == 100  # default
    for bad in ("limit=0", "limit=1001", "limit=1e3", "limit=-5", "limit=" + "9" * 40):
        assert (await get_json(http, f"{srv.url}/api/v1/hosts?{bad}", 400))["field"] == "limit"
    status_cursor = (await get_json(http, f"{srv.url}/api/v1/hosts?limit=1"))["next_cursor"]
    for cursor in ("%%%", "bm90IGpzb24", "WzEsMiwzXQ", "W10", "x" * 2000, quote('[1e999,"a","b"]')):
        err = await get_json(http, f"{srv.url}/api/v1/hosts?cursor={cursor}", 400)
        assert err["field"] == "cursor"
    # a cursor of one sort order is not one of another
    err = await get_json(http, f"{srv.url}/api/v1/hosts?sort=host&cursor={status_cursor}", 400)
    assert err["field"] == "cursor"


async def test_search_and_filters(srv: Running, http: aiohttp.ClientSession) -> None:
    for d in fleet():
        await post(http, srv, d)
    await post(http, srv, report("odd_%_id", hostname="Percent-Host"))

    async def ids(query: str) -> list[str]:
        data = await get_json(http, f"{srv.url}/api/v1/hosts?{query}")
        return [h["host_id"] for h in data["hosts"]]

    assert await ids("q=FW-03") == ["fw-03"]  # case-insensitive, on the hostname
    assert await ids("q=skew-") == ["skew-0", "skew-1", "skew-2"]  # on host_id
    assert await ids("q=%25") == ["odd_%_id"]  # LIKE wildcards are literal
    assert await ids("q=_") == ["odd_%_id"]
    assert await ids("q=.example.COM") == [f"fw-{i:02d}" for i in range(7)]  # in the hostname
    assert await ids("check=clock_skew") == ["fw-00", "fw-01", "skew-0", "skew-1", "skew-2"]
    assert await ids("reason=ip_unreachable&limit=3") == ["fw-00", "fw-01", "fw-02"]
    assert await ids("check=clock_skew&status=fail") == ["fw-00", "fw-01"]
    assert await ids("status=pass") == ["ok-1", "ok-2", "odd_%_id"]
    assert await ids("check=privileges") == []  # passing everywhere: not a problem
    for bad, field in (
        ("status=nope", "status"),
        ("sort=nope", "sort"),
        ("check=Bad-Name", "check"),
        ("reason=" + "a" * 65, "reason"),
        ("q=" + "x" * 201, "q"),
        ("q=%00", "q"),
    ):
        assert (await get_json(http, f"{srv.url}/api/v1/hosts?{bad}", 400))["field"] == field


async def test_host_timeline_shows_when_a_problem_started_and_ended(
    srv: Running, http: aiohttp.ClientSession
) -> None:
    await post(http, srv, report("web-9"))
    srv.clock.advance(600)
    await post(http, srv, report("web-9", checks=[check("privileges"), BLOCKED]))
    srv.clock.advance(60)
    await post(http, srv, report("web-9", checks=[check("privileges"), BLOCKED]))  # no change
    srv.clock.advance(1800)
    await post(http, srv, report("web-9"))
    page = await get_text(http, f"{srv.url}/hosts/web-9")
    timeline = page.split('id="timeline"')[1].split("</table>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", timeline.split("<tbody>")[1])
    assert len(rows) == 5  # overall x3 (pass, fail, pass) + digicert_ip started, ended
    assert "overall" in rows[0] and "ongoing" in rows[0]
    assert "digicert_ip" in rows[1] and "pass" in rows[1] and "ongoing" in rows[1]
    started = [r for r in rows if "ip_unreachable" in r]
    assert len(started) == 1 and "31 min, until" in started[0]  # 60 s + 1800 s
    events = await srv.collector.reader.run(lambda c: summary.timeline(c, "web-9"))
    assert [(e.check, e.status) for e in events] == [
        ("", "pass"),
        ("digicert_ip", "pass"),
        ("", "fail"),
        ("digicert_ip", "fail"),
        ("", "pass"),
    ]


async def test_readiness_chart_and_its_text(srv: Running, http: aiohttp.ClientSession) -> None:
    for d in fleet():
        await post(http, srv, d)
    assert await srv.collector.sample() == {"ready": 2, "warn": 3, "fail": 7, "stale": 0}
    srv.clock.advance(3 * 3600)  # everyone silent for 3 h: stale
    await post(http, srv, report("ok-1"))
    assert await srv.collector.sample() == {"ready": 1, "warn": 0, "fail": 0, "stale": 11}
    page = await get_text(http, f"{srv.url}/")
    chart = page.split('id="readiness"')[1].split("</section>")[0]
    assert 'role="img"' in chart and "<title" in chart and "<desc" in chart
    assert "Now: 1 ready, 0 warn, 0 fail, 11 stale." in chart
    bars = re.findall(
        r'<rect x="(\d+)" y="[\d.]+" width="[\d.]+" height="([\d.]+)" fill="([^"]+)"', chart
    )
    hours = sorted({int(x) for x, _, fill in bars if fill != "#fff"})
    assert len(hours) == 2 and hours[1] - hours[0] == 3 * 4  # 3 hours apart, 4 units an hour
    # the text alternative: the latest sample of each day as a table
    assert "<td>1</td><td>0</td><td>0</td><td>11</td>" in chart
    history = await srv.collector.reader.run(lambda c: summary.history(c, srv.clock.now))
    assert [s for _, s in history] == [
        {"ready": 2, "warn": 3, "fail": 7, "stale": 0},
        {"ready": 1, "warn": 0, "fail": 0, "stale": 11},
    ]
    # a week later the old samples are outside the chart; pruning drops them
    srv.clock.advance(8 * 86400)
    assert await srv.collector.reader.run(lambda c: summary.history(c, srv.clock.now)) == []


async def test_fleet_gauges_by_check_and_reason_are_bounded(
    srv: Running, http: aiohttp.ClientSession
) -> None:
    docs = [
        report(f"h{i}", checks=[check("outbound_https", "fail", reason=f"reason_{i:03d}")])
        for i in range(105)
    ]
    docs += [
        report(f"x{i}", checks=[check("outbound_https", "fail", reason="reason_000")])
        for i in range(3)
    ]
    await submit_many(srv, docs)
    text = await get_text(http, f"{srv.url}/metrics")
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    series = fams["acme_preflight_collector_hosts_problem"].samples
    assert len(series) == 100  # bounded: never one series per host or per reason
    top = series[0]
    assert top.labels == {"check": "outbound_https", "reason": "reason_000", "status": "fail"}
    assert top.value == 4
    assert fams["acme_preflight_collector_problem_groups"].samples[0].value == 105
    hosts = {s.labels["status"]: s.value for s in fams["acme_preflight_collector_hosts"].samples}
    assert hosts["fail"] == 108


async def test_page_is_paged_and_small(srv: Running, http: aiohttp.ClientSession) -> None:
    docs = [report(f"h-{i:05d}", checks=[check("privileges"), BLOCKED]) for i in range(1500)]
    await submit_many(srv, docs)
    async with http.get(f"{srv.url}/") as resp:
        body = await resp.read()
    assert len(re.findall(rb"data-host-id=", body)) == 100
    assert len(body) < 200_000
    assert body.count(b"Allow outbound TCP 443") == 1
    nxt = re.search(rb'id="next" href="([^"]+)"', body)
    assert nxt is not None
    page2 = await get_text(http, f"{srv.url}{nxt.group(1).decode().replace('&amp;', '&')}")
    assert re.findall(r'data-host-id="([^"]+)"', page2)[0] == "h-00100"


async def test_upgrade_fills_summaries_from_stored_reports(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript(str(store.MIGRATIONS[0]))
    doc = report("legacy", checks=[check("privileges"), BLOCKED])
    conn.execute(
        "INSERT INTO reports(report_id, host_id, received_at, status, body) VALUES (?,?,?,?,?)",
        (doc["report_id"], "legacy", 1000.0, "fail", json.dumps(doc).encode()),
    )
    conn.execute("INSERT INTO hosts VALUES ('legacy', 1, 1000.0, 'fail', 60)")
    conn.execute("PRAGMA user_version=1")
    conn.close()
    backend = store.open_backend(str(db))
    store.prepare(backend)
    conn = backend.connect()
    st = summary.Staleness(1010.0, 3, 300)
    lines, _, _ = summary.list_hosts(conn, summary.HostQuery(), st)
    assert [(h.host_id, h.status, h.last_seen) for h in lines] == [("legacy", "fail", 1000.0)]
    groups, _ = summary.problems(conn, 10)
    assert [(g.check, g.reason, g.hosts) for g in groups] == [("digicert_ip", "ip_unreachable", 1)]
    conn.close()


async def test_read_cache_shares_one_answer_until_a_commit() -> None:
    cache = ReadCache(max_age=60, min_interval=0)
    calls = 0
    gate = asyncio.Event()
    gen = 0

    async def produce() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return calls

    waiting = [asyncio.create_task(cache.get("k", lambda: gen, produce)) for _ in range(8)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiting) == [1] * 8  # eight readers, one render
    assert await cache.get("k", lambda: gen, produce) == 1  # nothing committed: reused
    gen = 1
    assert await cache.get("k", lambda: gen, produce) == 2  # a commit since: made again

    async def broken() -> int:
        raise RuntimeError("db gone")

    with pytest.raises(RuntimeError):
        await cache.get("e", lambda: gen, broken)
    assert await cache.get("e", lambda: gen, produce) == 3  # a failure is never cached


async def test_read_cache_renders_at_most_once_per_interval_under_commits() -> None:
    """Steady ingest bumps the generation all the time: reloads wait for the next render
    (never served one begun before they arrived) instead of each rendering again."""
    cache = ReadCache(max_age=60, min_interval=0.2)
    gen = 0
    renders: list[float] = []

    async def produce() -> float:
        renders.append(time.monotonic())
        await asyncio.sleep(0.01)
        return renders[-1]

    def current() -> int:
        return gen

    async def reader() -> None:
        nonlocal gen
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            gen += 1  # a commit before every request
            arrived = time.monotonic()
            started = await cache.get("page", current, produce)
            assert started >= arrived  # the answer saw the commit made before the request

    await asyncio.gather(*(reader() for _ in range(8)))
    # at most one per 0.2 s (and the first), not one per request: hundreds without the bound
    assert 2 <= len(renders) <= 7
