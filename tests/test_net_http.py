"""agent.net.http: the ACME directory over TLS, and whatever a broken peer sends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.net.http import HttpResult, http_get
from agent.net.stream import Stream
from agent.net.tcp import tcp_connect
from agent.net.tls import tls_handshake
from tests.lab.https import DIRECTORY_PATH, HttpsServer
from tests.lab.pki import LabPki

HOST = "127.0.0.2"


@pytest.fixture
async def server(
    lab_pki: LabPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[HttpsServer]:
    monkeypatch.setenv("SSL_CERT_FILE", str(lab_pki.write_bundle(tmp_path / "ca.pem")))
    async with HttpsServer(lab_pki.valid, HOST, 0) as srv:
        yield srv


async def tls_stream(server: HttpsServer) -> Stream:
    _, stream = await tcp_connect(HOST, server.port, 1.0)
    assert stream is not None
    assert (await tls_handshake(stream, "acme.digicert.com", 1.0)).ok
    return stream


async def test_get_acme_directory(server: HttpsServer) -> None:
    server.behaviour.clock_offset = 120
    async with await tls_stream(server) as stream:
        result = await http_get(stream, "acme.digicert.com", DIRECTORY_PATH, 1.0, port=server.port)
    assert result.ok and result.status == 200
    assert "newNonce" in json.loads(result.body)
    assert result.headers["content-type"].startswith("application/json")
    assert result.headers["date"].endswith("GMT")
    req = server.requests[-1]
    assert req.path == DIRECTORY_PATH and req.host == f"acme.digicert.com:{server.port}"
    assert result.to_dict()["http_ms"] >= 0


async def test_status_is_reported_not_judged(server: HttpsServer) -> None:
    server.behaviour.status = 503
    async with await tls_stream(server) as stream:
        result = await http_get(stream, "acme.digicert.com", DIRECTORY_PATH, 1.0)
    assert result.ok and result.status == 503 and result.reason == "Service Unavailable"


async def test_body_is_bounded(server: HttpsServer) -> None:
    server.behaviour.body = {"pad": "x" * 10_000}
    async with await tls_stream(server) as stream:
        result = await http_get(stream, "acme.digicert.com", DIRECTORY_PATH, 1.0, max_body=1000)
    assert len(result.body) == 1000 and result.truncated


async def test_slow_answer_is_a_timeout_within_budget(server: HttpsServer) -> None:
    server.behaviour.delay = 5
    async with await tls_stream(server) as stream:
        started = time.monotonic()
        result = await http_get(stream, "acme.digicert.com", DIRECTORY_PATH, 0.3)
        took = time.monotonic() - started
    assert result.error == "timeout" and 0.29 <= took < 0.45


async def get_plain(raw: bytes, max_body: int = 1024) -> HttpResult:
    """GET from a plain-TCP server that reads the request, then sends ``raw`` and closes
    (the lab's ReplyEndpoint answers before reading, which races a client's request)."""

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(raw)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(reply, "127.0.0.9", 0)
    async with server:
        _, stream = await tcp_connect("127.0.0.9", server.sockets[0].getsockname()[1], 1.0)
        assert stream is not None
        async with stream:
            return await http_get(stream, "x", "/", 1.0, max_body=max_body)


@pytest.mark.parametrize(
    ("raw", "status", "body", "truncated"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            200,
            b"abcde",
            False,
        ),
        (b"HTTP/1.0 200 OK\r\nDate: x\r\n\r\nto the end", 200, b"to the end", False),
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabc", 404, b"abc", False),
        (b"HTTP/1.1 200 OK\r\n\r\n" + b"y" * 5000, 200, b"y" * 1024, True),
    ],
)
async def test_body_framings(raw: bytes, status: int, body: bytes, truncated: bool) -> None:
    result = await get_plain(raw)
    assert result.ok and result.status == status
    assert result.body == body and result.truncated is truncated


@pytest.mark.parametrize(
    "raw",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 200 + b"\r\n",
        b"",
    ],
)
async def test_junk_is_a_protocol_error_not_a_crash(raw: bytes) -> None:
    result = await get_plain(raw)
    assert result.error == "protocol"
