"""Draining a backlog: keep-alive connections, a bounded window, order, batched deletes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from agent.config import CollectorConfig, from_mapping
from agent.daemon.sender import DELIVERY_WINDOW, Sender, Verdict
from agent.daemon.service import CONCURRENT_BACKLOG, Daemon
from agent.daemon.spool import SPOOL_FILE, Spool


class Collector:
    """An aiohttp collector that records arrival order, peak concurrency and connections."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.order: list[str] = []
        self.inflight = 0
        self.peak = 0
        self.fail_ids: dict[str, int] = {}  # report_id -> status to answer once
        self.connections: set[object] = set()

    async def handle(self, request: web.Request) -> web.Response:
        self.connections.add(request.transport)
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        try:
            report = json.loads(await request.read())
            if self.delay:
                await asyncio.sleep(self.delay)
            status = self.fail_ids.pop(report["report_id"], 202)
            if status == 202:
                self.order.append(report["report_id"])
            return web.Response(status=status, text="ok")
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


def daemon_with_spool(tmp: Path, url: str, n: int) -> tuple[Daemon, Spool, list[str]]:
    config = from_mapping(
        {
            "agent": {"state_dir": str(tmp), "checks": ["privileges"]},
            "collector": {"url": url},
            "status": {"listen": ""},
        }
    )
    spool = Spool(tmp / SPOOL_FILE, 100_000, 1 << 30)
    ids = [str(uuid.uuid4()) for _ in range(n)]
    for rid in ids:
        spool.add(rid, json.dumps({"report_id": rid, "pad": "x" * 200}).encode())
    daemon = Daemon(config, None, None, explicit_config=False)
    daemon._spool = spool
    return daemon, spool, ids


async def test_a_backlog_goes_out_in_a_bounded_window_newest_last(tmp_path: Path) -> None:
    col = Collector(delay=0.005)
    async with serve(col) as url:
        daemon, spool, ids = daemon_with_spool(tmp_path, url, 300)
        await daemon._drain()
        assert daemon._current is not None
        await daemon._current.close()
    assert sorted(col.order) == sorted(ids) and len(col.order) == len(ids)  # all, once each
    assert 1 < col.peak <= DELIVERY_WINDOW  # concurrent, never more than the window
    assert col.order[0] == ids[0]  # the oldest alone first
    assert col.order[-1] == ids[-1]  # the newest last, after every older one
    assert len(col.connections) <= DELIVERY_WINDOW  # kept alive, not one per report
    assert spool.depth().reports == 0 and daemon.metrics.delivered == 300
    spool.close()


async def test_a_short_queue_goes_strictly_in_order_one_at_a_time(tmp_path: Path) -> None:
    col = Collector(delay=0.002)
    async with serve(col) as url:
        daemon, spool, ids = daemon_with_spool(tmp_path, url, CONCURRENT_BACKLOG - 1)
        await daemon._drain()
        assert daemon._current is not None
        await daemon._current.close()
    assert col.order == ids and col.peak == 1 and len(col.connections) == 1
    spool.close()


async def test_a_failure_in_the_window_keeps_that_report_and_loses_nothing(
    tmp_path: Path,
) -> None:
    col = Collector()
    async with serve(col) as url:
        daemon, spool, ids = daemon_with_spool(tmp_path, url, 200)
        col.fail_ids[ids[50]] = 503
        task = asyncio.create_task(daemon._drain())
        deadline = time.monotonic() + 10
        while daemon.metrics.delivery_failures == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert daemon.metrics.delivery_failures == 1
        left = [s.report_id for s in spool.oldest_batch(1000, 1 << 30)]
        assert ids[50] in left  # kept for the retry, not lost
        daemon._kick.set()  # end the backoff now
        await asyncio.wait_for(task, 10)
        assert daemon._current is not None
        await daemon._current.close()
    assert sorted(col.order) == sorted(ids) and len(col.order) == len(ids)
    assert spool.depth().reports == 0
    spool.close()


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
        writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sender = Sender(CollectorConfig(url=f"http://127.0.0.1:{port}", timeout=2.0), None)
    try:
        results = []
        for _ in range(3):
            results.append(await sender.send(b'{"report_id": "x"}', time.time()))
            await asyncio.sleep(0.05)  # the server's close arrives while the connection idles
    finally:
        await sender.close()
        server.close()
        await server.wait_closed()
    assert [r.verdict for r in results] == [Verdict.DELIVERED] * 3
    assert len(seen) == 3  # each report once


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 202 Accepted\r\nConnection: close\r\n\r\nbody to EOF",
    ],
)
async def test_answer_framings_are_read_to_their_end(answer: bytes) -> None:
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
        results = [await sender.send(b'{"report_id": "x"}', time.time()) for _ in range(2)]
    finally:
        await sender.close()
        server.close()
        await server.wait_closed()
    assert [r.verdict for r in results] == [Verdict.DELIVERED] * 2


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
