"""Draining a backlog through ``Delivery``'s surface: keep-alive connections, a bounded
window, order, batched deletes; what counts as delivered; a collector rejecting everything."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web

from agent.config import CollectorConfig
from agent.daemon.delivery import CONCURRENT_BACKLOG, REJECT_STREAK, Delivery, with_dropped
from agent.daemon.metrics import Metrics
from agent.daemon.sender import DELIVERY_WINDOW, Sender, Verdict
from agent.daemon.spool import SPOOL_FILE, Spool
from tests.daemonproc import fill_spool as fill


def ack(rid: str) -> bytes:
    return json.dumps({"status": "accepted", "report_id": rid, "duplicate": False}).encode()


class Collector:
    """An aiohttp collector that records arrival order, peak concurrency and connections,
    and acknowledges as the real one does."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.order: list[str] = []
        self.posts = 0
        self.inflight = 0
        self.peak = 0
        self.fail_ids: dict[str, int] = {}  # report_id -> status to answer once
        self.always: int | None = None  # answer every POST with this status
        self.connections: set[object] = set()

    async def handle(self, request: web.Request) -> web.Response:
        self.connections.add(request.transport)
        self.inflight += 1
        self.posts += 1
        self.peak = max(self.peak, self.inflight)
        try:
            report = json.loads(await request.read())
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.always is not None:
                return web.Response(status=self.always, text="refused by policy")
            rid = report["report_id"]
            status = self.fail_ids.pop(rid, 202)
            if status != 202:
                return web.Response(status=status, text="not now")
            self.order.append(rid)
            return web.Response(status=202, body=ack(rid), content_type="application/json")
        finally:
            self.inflight -= 1


@contextlib.asynccontextmanager
async def serve(col: Collector) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/api/v1/reports", col.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def fill_spool(tmp: Path, n: int) -> list[str]:
    return fill(tmp, n)


def spooled(tmp: Path) -> tuple[int, int]:
    """(reports, dead letters) in the spool file, read as another process would."""
    spool = Spool(tmp / SPOOL_FILE, 100_000, 1 << 30)
    try:
        depth = spool.depth()
        return depth.reports, depth.dead_letters
    finally:
        spool.close()


@contextlib.asynccontextmanager
async def running(tmp: Path, url: str) -> AsyncIterator[tuple[Delivery, Sender]]:
    sender = Sender(CollectorConfig(url=url, timeout=2.0), None)
    delivery = Delivery(tmp, 100_000, 1 << 30, Metrics("test"), sender)
    task = asyncio.create_task(delivery.run())
    try:
        yield delivery, sender
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await delivery.close()


async def until(pred: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_a_backlog_goes_out_in_a_bounded_window_newest_last(tmp_path: Path) -> None:
    ids = fill_spool(tmp_path, 300)
    col = Collector(delay=0.005)
    async with serve(col) as url, running(tmp_path, url) as (delivery, _):
        await until(lambda: delivery.metrics.delivered == 300)
    assert sorted(col.order) == sorted(ids) and len(col.order) == len(ids)  # all, once each
    assert 1 < col.peak <= DELIVERY_WINDOW  # concurrent, never more than the window
    assert col.order[0] == ids[0]  # the oldest alone first
    assert col.order[-1] == ids[-1]  # the newest last, after every older one
    assert len(col.connections) <= DELIVERY_WINDOW  # kept alive, not one per report
    assert spooled(tmp_path) == (0, 0)


async def test_a_short_queue_goes_strictly_in_order_one_at_a_time(tmp_path: Path) -> None:
    ids = fill_spool(tmp_path, CONCURRENT_BACKLOG - 1)
    col = Collector(delay=0.002)
    async with serve(col) as url, running(tmp_path, url) as (delivery, _):
        await until(lambda: delivery.metrics.delivered == len(ids))
    assert col.order == ids and col.peak == 1 and len(col.connections) == 1


async def test_a_failure_in_the_window_keeps_that_report_and_loses_nothing(
    tmp_path: Path,
) -> None:
    ids = fill_spool(tmp_path, 200)
    col = Collector()
    col.fail_ids[ids[50]] = 503
    async with serve(col) as url, running(tmp_path, url) as (delivery, sender):
        await until(lambda: delivery.metrics.delivery_failures == 1)
        assert delivery.metrics.delivery_failures == 1
        assert ids[50] not in col.order  # kept for the retry, not lost
        delivery.use(sender, 100_000, 1 << 30)  # as a reload does: the backoff ends now
        await until(lambda: delivery.metrics.spool_reports == 0)
    assert sorted(col.order) == sorted(ids) and len(col.order) == len(ids)
    assert spooled(tmp_path) == (0, 0)


async def test_enqueued_reports_are_delivered_and_carry_the_dropped_count(
    tmp_path: Path,
) -> None:
    col = Collector()
    got: list[dict[str, object]] = []
    handle = col.handle

    async def recording(request: web.Request) -> web.Response:
        got.append(json.loads(await request.read()))
        return await handle(request)

    col.handle = recording  # type: ignore[method-assign]
    sender_url = ""
    async with serve(col) as url:
        sender_url = url
        sender = Sender(CollectorConfig(url=sender_url, timeout=2.0), None)
        delivery = Delivery(tmp_path, 2, 1 << 30, Metrics("test"), sender)
        ids = [str(uuid.uuid4()) for _ in range(5)]
        for rid in ids:  # before run(): nothing is sent, the bound of 2 drops 3
            await delivery.enqueue(rid, json.dumps({"report_id": rid}).encode())
        assert delivery.metrics.dropped == 3
        task = asyncio.create_task(delivery.run())
        try:
            await until(lambda: delivery.metrics.delivered == 2)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await delivery.close()
    assert [r["report_id"] for r in got] == ids[3:]
    assert got[0]["dropped_reports"] == 3 and "dropped_reports" not in got[1]


def test_the_dropped_count_is_spliced_in_without_parsing() -> None:
    body = b'{"report_id":"a","checks":[{"name":"x"}]}'
    assert with_dropped(body, 0) is body
    assert json.loads(with_dropped(body, 7)) == {**json.loads(body), "dropped_reports": 7}
    assert json.loads(with_dropped(b"{}", 2)) == {"dropped_reports": 2}
    with pytest.raises(ValueError):
        with_dropped(b"[1, 2]", 1)


WAVE = 3001


async def test_a_collector_rejecting_everything_holds_the_spool(tmp_path: Path) -> None:
    """Issue 14 item 7: a WAF answering 400 to every report. Before, each report was
    dead-lettered at full speed and only the newest 1,000 kept; now the spool is held
    after REJECT_STREAK rejections, and every report is delivered once the 400s stop."""
    ids = fill_spool(tmp_path, WAVE)
    col = Collector()
    col.always = 400
    async with serve(col) as url, running(tmp_path, url) as (delivery, sender):
        await until(lambda: bool(delivery.metrics.held_reason))
        await asyncio.sleep(1.5)  # a backoff or two of the wave
        metrics = delivery.metrics
        assert metrics.dead_lettered == 0 and metrics.dead_letters == 0
        assert metrics.spool_reports == WAVE
        assert col.posts < 20 * REJECT_STREAK, col.posts  # held: not 3,001 attempts
        status = metrics.daemon_status()["delivery"]
        assert status["held"] is True and "held" in status["held_reason"]
        assert "acme_preflight_delivery_held 1" in metrics.render()
        col.always = None  # the WAF rule is lifted
        delivery.use(sender, 100_000, 1 << 30)
        await until(lambda: metrics.delivered == WAVE, timeout=60)
        assert "acme_preflight_delivery_held 0" in metrics.render()
    assert sorted(col.order) == sorted(ids)
    assert spooled(tmp_path) == (0, 0)


async def test_one_bad_report_is_dead_lettered_while_the_others_flow(tmp_path: Path) -> None:
    ids = fill_spool(tmp_path, 10)
    col = Collector()
    bad = ids[3]
    handle = col.handle

    async def refuse_one(request: web.Request) -> web.Response:
        body = await request.read()
        if json.loads(body)["report_id"] == bad:
            col.posts += 1
            return web.Response(status=422, text="invalid report: checks[0].status")
        return await handle(request)

    col.handle = refuse_one  # type: ignore[method-assign]
    async with serve(col) as url, running(tmp_path, url) as (delivery, _):
        await until(lambda: delivery.metrics.delivered == 9 and delivery.metrics.dead_letters == 1)
        metrics = delivery.metrics
    assert col.order == [i for i in ids if i != bad]
    assert metrics.dead_lettered == 1 and metrics.dropped_dead_letter == 1
    assert 'acme_preflight_reports_dropped_total{reason="dead_letter"} 1' in metrics.render()
    assert not metrics.held_reason
    assert spooled(tmp_path) == (0, 1)


async def test_a_2xx_that_is_not_the_acknowledgement_is_not_delivered(tmp_path: Path) -> None:
    """Issue 14 item 8: a captive proxy answering 200 with its login page."""
    ids = fill_spool(tmp_path, 50)
    portal = '<html><body><form action="/login">Sign in to continue</form></body></html>'
    state = {"portal": True, "posts": 0}
    col = Collector()

    async def captive(request: web.Request) -> web.Response:
        state["posts"] += 1
        if state["portal"]:
            await request.read()
            return web.Response(status=200, text=portal, content_type="text/html")
        return await col.handle(request)

    app = web.Application()
    app.router.add_post("/api/v1/reports", captive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with running(tmp_path, url) as (delivery, sender):
            await until(lambda: delivery.metrics.delivery_failures >= 1)
            metrics = delivery.metrics
            assert metrics.delivered == 0 and metrics.spool_reports == 50
            assert "not the collector's acknowledgement" in metrics.delivery_error
            assert "Sign in" in metrics.delivery_error
            state["portal"] = False
            delivery.use(sender, 100_000, 1 << 30)
            await until(lambda: metrics.delivered == 50)
    finally:
        await runner.cleanup()
    assert sorted(col.order) == sorted(ids)


async def test_a_keep_alive_connection_the_collector_closed_is_replaced(
    tmp_path: Path,
) -> None:
    """A collector that closes idle connections silently: the next POST still gets through."""
    seen: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if b"Content-Length" in line
        )
        seen.append(len(await reader.readexactly(length)))
        # keep-alive by default in HTTP/1.1, then hang up anyway (an idle timeout)
        writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: %d\r\n\r\n%s" % (len(ACK), ACK))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sender = Sender(CollectorConfig(url=f"http://127.0.0.1:{port}", timeout=2.0), None)
    try:
        results = []
        for _ in range(3):
            results.append(await sender.send(b'{"report_id": "x"}', time.time(), "x"))
            await asyncio.sleep(0.05)  # the server's close arrives while the connection idles
    finally:
        await sender.close()
        server.close()
        await server.wait_closed()
    assert [r.verdict for r in results] == [Verdict.DELIVERED] * 3
    assert len(seen) == 3  # each report once


ACK = ack("x")


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        (b"HTTP/1.1 204 No Content\r\n\r\n", Verdict.UNEXPECTED),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: %d"
            b"\r\n\r\n%s" % (len(ACK), ACK),
            Verdict.DELIVERED,
        ),
        (
            b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
            % (len(ACK), ACK),
            Verdict.DELIVERED,
        ),
        (b"HTTP/1.1 202 Accepted\r\nConnection: close\r\n\r\n%s" % ACK, Verdict.DELIVERED),
        (b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok", Verdict.UNEXPECTED),
    ],
)
async def test_answer_framings_are_read_to_their_end(answer: bytes, verdict: Verdict) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if b"Content-Length" in line
            )
            await reader.readexactly(length)
            writer.write(answer)
            await writer.drain()
            if b"Connection: close" in answer:
                writer.close()
                return

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sender = Sender(CollectorConfig(url=f"http://127.0.0.1:{port}", timeout=2.0), None)
    try:
        results = [await sender.send(b'{"report_id": "x"}', time.time(), "x") for _ in range(2)]
    finally:
        await sender.close()
        server.close()
        await server.wait_closed()
    assert [r.verdict for r in results] == [verdict] * 2


def test_spool_batches_are_bounded_by_count_and_bytes(tmp_path: Path) -> None:
    spool = Spool(tmp_path / SPOOL_FILE, 1000, 1 << 30)
    for i in range(10):
        spool.add(f"id-{i}", b"x" * 100)
    assert [s.report_id for s in spool.oldest_batch(4, 1 << 20)] == [f"id-{i}" for i in range(4)]
    assert len(spool.oldest_batch(10, 250)) == 2  # 100 + 100 fit, the third would not
    assert len(spool.oldest_batch(10, 50)) == 1  # always at least one
    batch = spool.oldest_batch(3, 1 << 20)
    spool.delivered_many([s.seq for s in batch], 0)
    assert spool.depth().reports == 7
    assert spool.oldest_batch(1, 1 << 20)[0].report_id == "id-3"
    spool.close()


async def test_a_spool_damaged_in_use_is_replaced_and_the_loss_counted(tmp_path: Path) -> None:
    """Issue 14 item 9, errors during use: a page of the reports table goes bad under a
    running delivery. The file is moved aside, a fresh spool takes the next reports, and
    the first delivery tells the collector how many were lost."""
    fill(tmp_path, 300, pad=2000)  # ~170 pages
    col = Collector()
    col.always = 503  # nothing is delivered yet: the damaged reports stay unread
    got: list[dict[str, object]] = []
    handle = col.handle

    async def recording(request: web.Request) -> web.Response:
        response = await handle(request)
        if response.status == 202:
            got.append(json.loads(await request.read()))
        return response

    col.handle = recording  # type: ignore[method-assign]
    async with serve(col) as url, running(tmp_path, url) as (delivery, sender):
        await until(lambda: delivery.metrics.delivery_failures >= 1)
        spool = tmp_path / SPOOL_FILE
        with spool.open("r+b") as f:  # a page in the middle of the reports table
            f.seek(100 * 4096)
            f.write(bytes(range(256)) * 16)
        # another writer makes the delivery's connection drop its page cache, as any
        # eviction would: its next read of that page meets the damage
        with contextlib.closing(sqlite3.connect(spool, isolation_level=None)) as other:
            other.execute("INSERT INTO meta (key, value) VALUES ('touched', 1)")
        col.always = None
        delivery.use(sender, 100_000, 1 << 30)
        await until(lambda: delivery.metrics.spool_corruptions == 1)
        rid = str(uuid.uuid4())
        await delivery.enqueue(rid, json.dumps({"report_id": rid}).encode())
        await until(lambda: rid in col.order)
        metrics = delivery.metrics
    assert metrics.dropped_corrupt == 300
    assert got[-1]["report_id"] == rid and got[-1]["dropped_reports"] == 300
    assert metrics.daemon_status()["spool"]["corrupt_moved_to"].startswith(str(spool))
    assert len(list(tmp_path.glob("spool.sqlite3.corrupt-*"))) >= 1
