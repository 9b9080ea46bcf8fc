"""The status endpoint: /healthz goes 503 when runs stop finishing, /status before the
first run; and what a client can send it (garbage, oversized, slow, too many at once)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent import compat
from agent.config import AgentConfig, Config
from agent.daemon import status_server
from agent.daemon.service import Daemon
from agent.daemon.status_cli import status_url
from tests.daemonproc import DaemonProc, base_config, free_port, wait_http, write_config

REPORT = {"schema": "acme-preflight.report/1", "status": "pass", "checks": []}


class Clock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def daemon(tmp_path: Path, clock: Clock | None = None) -> Daemon:
    cfg = Config(agent=AgentConfig(interval=2.0, timeout=1.0, state_dir=tmp_path))
    return Daemon(cfg, None, None, explicit_config=False, clock=clock or Clock())


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Daemon, status_server.StatusServer]]:
    d = daemon(tmp_path)
    server = await status_server.start("127.0.0.1:0", d)
    try:
        yield d, server
    finally:
        await server.close()


async def exchange(port: int, data: bytes, *, close_write: bool = False) -> bytes:
    """Send raw bytes, return everything the server sends until it closes (b"" for none)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        if close_write:
            writer.write_eof()
        async with compat.timeout(5):
            return await reader.read(-1)
    except ConnectionResetError:
        return b""  # closed without an answer
    finally:
        writer.close()


def status_of(raw: bytes) -> int | None:
    if not raw:
        return None
    first = raw.split(b"\r\n", 1)[0].split(b" ")
    assert first[0] == b"HTTP/1.1", raw[:80]
    return int(first[1])


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(lines[0].split(" ")[1]), headers, body


def get(path: str, method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


async def test_healthz_tracks_the_age_of_the_last_run(tmp_path: Path) -> None:
    clock = Clock()
    d = daemon(tmp_path, clock)
    server = await status_server.start("127.0.0.1:0", d)
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/healthz") as r:
                assert r.status == 200 and "starting" in await r.text()
            async with http.get(base + "/status") as r:
                assert r.status == 503 and "no check run" in (await r.json())["error"]
            d.run_finished(REPORT)
            clock.now += 4.9  # within 2 intervals + timeout (5 s)
            async with http.get(base + "/healthz") as r:
                assert r.status == 200
            clock.now += 0.6
            async with http.get(base + "/healthz") as r:
                assert r.status == 503 and "unhealthy" in await r.text()
            async with http.get(base + "/status") as r:
                assert r.status == 200 and await r.json() == REPORT
            late = Clock()
            server_late = await status_server.start("127.0.0.1:0", daemon(tmp_path, late))
            late.now += 60  # no run finished in the first minute
            try:
                async with http.get(f"http://127.0.0.1:{server_late.port}/healthz") as r:
                    assert r.status == 503
            finally:
                await server_late.close()
            async with http.get(base + "/nope") as r:
                assert r.status == 404
    finally:
        await server.close()


async def test_pages_content_types_and_head(
    served: tuple[Daemon, status_server.StatusServer],
) -> None:
    d, server = served
    for _ in range(3):
        d.run_finished(REPORT)
    status, headers, body = parse(await exchange(server.port, get("/status")))
    assert status == 200 and headers["content-type"] == "application/json; charset=utf-8"
    assert json.loads(body) == REPORT and int(headers["content-length"]) == len(body)
    assert headers["connection"] == "close" and headers["date"].endswith("GMT")
    status, headers, body = parse(await exchange(server.port, get("/metrics")))
    assert status == 200 and headers["content-type"] == status_server.PROMETHEUS_TEXT
    assert "acme_preflight_runs_total 3" in body.decode()
    status, headers, body = parse(await exchange(server.port, get("/status/daemon")))
    assert status == 200 and "delivery" in json.loads(body)
    # HEAD: the GET's headers, no body
    status, head_headers, body = parse(await exchange(server.port, get("/status", "HEAD")))
    _, _, get_body = parse(await exchange(server.port, get("/status")))
    assert status == 200 and body == b""
    assert int(head_headers["content-length"]) == len(get_body)
    # a query string is not part of the path; an absolute-form target is served too
    assert status_of(await exchange(server.port, get("/healthz?verbose=1"))) == 200
    assert status_of(await exchange(server.port, get("http://x:1/healthz"))) == 200
    # HTTP/1.0 needs no Host
    assert status_of(await exchange(server.port, b"GET /healthz HTTP/1.0\r\n\r\n")) == 200
    # a standard-library client, as `acme-preflight status` uses
    data = await asyncio.to_thread(
        __import__("agent.daemon.status_cli", fromlist=["fetch"]).fetch,
        f"http://127.0.0.1:{server.port}/status",
    )
    assert data == REPORT


async def test_methods_and_paths(served: tuple[Daemon, status_server.StatusServer]) -> None:
    _, server = served
    status, headers, _ = parse(await exchange(server.port, get("/metrics", "POST")))
    assert status == 405 and headers["allow"] == "GET, HEAD"
    assert status_of(await exchange(server.port, get("/metrics", "DELETE"))) == 405
    assert status_of(await exchange(server.port, get("/nope", "POST"))) == 404
    assert status_of(await exchange(server.port, get("/status/"))) == 404
    assert status_of(await exchange(server.port, get("/"))) == 404


@pytest.mark.parametrize(
    ("raw", "expect"),
    [
        (b"\x00\xff\xfe garbage\r\n\r\n", 400),
        (b"GET\r\n\r\n", 400),
        (b"GET /healthz\r\n\r\n", 400),
        (b"get /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET  /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.x\r\nHost: x\r\n\r\n", 400),
        (b"GET healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET /healthz HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nA: b\r\n  folded\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 200),
        (b"\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200),  # leading empty lines
        (b"GET /healthz HTTP/1.1\nHost: x\n\n", 200),  # bare LF
    ],
)
async def test_garbage_gets_an_error_answer(
    served: tuple[Daemon, status_server.StatusServer], raw: bytes, expect: int
) -> None:
    _, server = served
    assert status_of(await exchange(server.port, raw)) == expect
    assert status_of(await exchange(server.port, get("/healthz"))) == 200


async def test_random_bytes_never_break_the_server(
    served: tuple[Daemon, status_server.StatusServer],
) -> None:
    _, server = served
    rng = random.Random(9)
    valid = get("/metrics")
    for i in range(150):
        if i % 2:
            raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        else:  # a valid request with a few bytes changed, cut or repeated
            b = bytearray(valid * rng.randrange(1, 3))
            for _ in range(rng.randrange(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            raw = bytes(b[: rng.randrange(1, len(b) + 1)])
        got = status_of(await exchange(server.port, raw, close_write=True))
        assert got in (None, 200, 400, 404, 405, 413, 414, 431, 505), (raw, got)
    assert status_of(await exchange(server.port, get("/healthz"))) == 200


async def test_oversized_requests(served: tuple[Daemon, status_server.StatusServer]) -> None:
    _, server = served
    long_target = b"/" + b"a" * 20_000
    assert status_of(await exchange(server.port, get(long_target.decode()))) == 414
    big_header = "X-Big: " + "b" * 10_000 + "\r\n"
    assert status_of(await exchange(server.port, get("/healthz", extra=big_header))) == 431
    many = "".join(f"X-{i}: v\r\n" for i in range(200))
    assert status_of(await exchange(server.port, get("/healthz", extra=many))) == 431
    wide = "".join(f"X-{i}: {'w' * 2000}\r\n" for i in range(12))  # 24 KB of 2 KB lines
    assert status_of(await exchange(server.port, get("/healthz", extra=wide))) == 431
    huge_body = "Content-Length: 1000000000\r\n"
    assert status_of(await exchange(server.port, get("/healthz", extra=huge_body))) == 413
    # a megabyte of garbage without a newline: refused, not buffered
    assert status_of(await exchange(server.port, b"G" * 1_000_000)) == 414
    assert status_of(await exchange(server.port, get("/healthz"))) == 200


async def test_slow_clients_time_out_without_blocking_others(
    served: tuple[Daemon, status_server.StatusServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, server = served
    monkeypatch.setattr(status_server, "REQUEST_TIMEOUT", 0.5)
    # one that stalls after a partial request, and one that drips a byte at a time
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHo")
    drip_reader, drip_writer = await asyncio.open_connection("127.0.0.1", server.port)
    started = time.monotonic()

    async def drip() -> None:
        for byte in get("/healthz") * 100:
            if drip_writer.is_closing():
                return
            drip_writer.write(bytes([byte]))
            await asyncio.sleep(0.02)

    dripping = asyncio.create_task(drip())
    try:
        # meanwhile, other clients are served at once
        t0 = time.monotonic()
        assert status_of(await exchange(server.port, get("/healthz"))) == 200
        assert time.monotonic() - t0 < 0.4
        async with compat.timeout(3):
            assert status_of(await reader.read(-1)) == 408
            assert status_of(await drip_reader.read(-1)) == 408
        # the whole request is timed, not each read: the drip is cut at the same bound
        assert time.monotonic() - started < 2.0
    finally:
        dripping.cancel()
        writer.close()
        drip_writer.close()


async def test_a_full_server_evicts_its_oldest_connection_for_a_new_one(
    served: tuple[Daemon, status_server.StatusServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, server = served
    monkeypatch.setattr(status_server, "MAX_CLIENTS", 3)
    monkeypatch.setattr(status_server, "REQUEST_TIMEOUT", 10.0)
    idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
    await asyncio.sleep(0.1)
    try:
        # the fourth is served at once; the oldest idle one made room for it
        t0 = time.monotonic()
        assert status_of(await exchange(server.port, get("/healthz"))) == 200
        assert time.monotonic() - t0 < 1.0
        async with compat.timeout(3):
            assert await idle[0][0].read(-1) == b""  # closed without an answer
        assert server.evicted == 1
        # the two younger idle ones still hold their slots (they time out later)
        assert not idle[1][0].at_eof() and not idle[2][0].at_eof()
    finally:
        for _, w in idle:
            w.close()


SLOWLORIS = 200
HEALTHZ_POLLS = 75


async def test_healthz_keeps_answering_under_200_slowloris_connections(tmp_path: Path) -> None:
    """The attack as it was run, on the real daemon process: 200 connections each
    dripping a request a byte every half second (reconnecting when closed) while a
    monitor polls /healthz. With the shipped limits every poll is answered, promptly."""
    port = free_port()
    cfg = write_config(tmp_path / "config.toml", base_config(tmp_path, None, status_port=port))
    stop = asyncio.Event()
    connects = 0

    async def slowloris() -> None:
        nonlocal connects
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            connects += 1
            try:
                for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 4000:
                    if stop.is_set() or reader.at_eof() or writer.is_closing():
                        break
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.5)
            except OSError:
                pass
            finally:
                writer.close()
            await asyncio.sleep(0.01)

    with DaemonProc(cfg, tmp_path / "daemon.log") as d:
        await asyncio.to_thread(wait_http, port, "/healthz")
        attackers = [asyncio.create_task(slowloris()) for _ in range(SLOWLORIS)]
        try:
            while connects < SLOWLORIS:  # every attacker holds (or held) a connection
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            answered, slowest = 0, 0.0
            for _ in range(HEALTHZ_POLLS):
                t0 = time.monotonic()
                if status_of(await exchange(port, get("/healthz"))) == 200:
                    answered += 1
                slowest = max(slowest, time.monotonic() - t0)
                await asyncio.sleep(0.02)
            assert connects >= SLOWLORIS
            assert answered == HEALTHZ_POLLS, (answered, connects)
            assert slowest < 2.0, slowest
            print(
                f"\nslowloris: {answered}/{HEALTHZ_POLLS} answered, slowest"
                f" {slowest * 1000:.0f} ms, {connects} attacker connections"
            )
        finally:
            stop.set()
            for t in attackers:
                t.cancel()
            await asyncio.gather(*attackers, return_exceptions=True)
        assert d.stop() == 0


async def test_client_gone_mid_request_and_a_failing_page(tmp_path: Path) -> None:
    class Broken:
        def last_report(self) -> dict[str, Any] | None:
            raise RuntimeError("boom")

        def health(self) -> tuple[bool, str]:
            return True, "ok"

        def metrics_text(self) -> str:
            return ""

        def daemon_status(self) -> dict[str, Any]:
            return {}

    server = await status_server.start("127.0.0.1:0", Broken())
    try:
        for _ in range(5):
            _, w = await asyncio.open_connection("127.0.0.1", server.port)
            w.write(b"GET /healthz HTTP/1.1\r\nHost")
            await w.drain()
            w.transport.abort()  # a reset in the middle of the request
        assert status_of(await exchange(server.port, get("/status"))) == 500
        assert status_of(await exchange(server.port, get("/healthz"))) == 200
    finally:
        await server.close()


async def test_close_stops_listening_and_drops_clients(tmp_path: Path) -> None:
    server = await status_server.start("127.0.0.1:0", daemon(tmp_path))
    port = server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\n")
    await asyncio.sleep(0.05)
    async with compat.timeout(3):
        await server.close()
        assert await reader.read(-1) == b""
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_unbindable_address_raises_oserror(tmp_path: Path) -> None:
    first = await status_server.start("127.0.0.1:0", daemon(tmp_path))
    try:
        with pytest.raises(OSError):
            await status_server.start(f"127.0.0.1:{first.port}", daemon(tmp_path))
    finally:
        await first.close()


def test_status_url_maps_wildcards_to_loopback() -> None:
    assert status_url("127.0.0.1:9775") == "http://127.0.0.1:9775/status"
    assert status_url("0.0.0.0:9775") == "http://127.0.0.1:9775/status"
    assert status_url("[::]:9775") == "http://[::1]:9775/status"
    assert status_url("[::1]:1") == "http://[::1]:1/status"
    assert status_url("") is None
