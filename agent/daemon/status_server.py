"""The local endpoint on ``[status] listen``: ``/healthz``, ``/status``, ``/status/daemon``,
``/metrics``.

A small HTTP/1.x server on asyncio streams rather than aiohttp.web: four GET pages need
no framework, and a daemon that never imports aiohttp is several MiB smaller for its
whole life (docs/performance.md). Each connection carries one request and is closed
after the answer (``Connection: close``). Reading a request is bounded in size
(``HEAD_MAX``, lines of at most ``LINE_MAX``, ``BODY_MAX``), in time
(``REQUEST_TIMEOUT``) and in number (``MAX_CLIENTS`` connections at once; when full,
the connection open longest is closed to make room, so slow clients cannot keep
``/healthz`` from answering), with the same line reader as the agent's HTTP client
(``agent.net.http``). Whatever a client
sends gets an answer (400, 404, 405, 408, 413, 414, 431, 505) or a closed connection,
never a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import urlsplit

from agent import __version__, compat, log
from agent.config import split_host_port
from agent.net.http import MAX_HEADERS, Malformed, read_line

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
JSON = "application/json; charset=utf-8"
TEXT = "text/plain; charset=utf-8"

LINE_MAX = 8 * 1024  # one request or header line
HEAD_MAX = 16 * 1024  # request line and headers together
BODY_MAX = 1024  # a GET has no body; a small one is read and ignored
# The whole request, from the connection being accepted. A local monitor sends its few
# bytes at once; a client still sending after this is slow on purpose or broken.
REQUEST_TIMEOUT = 2.0
WRITE_TIMEOUT = 5.0  # a client that does not read its answer is dropped
CLOSE_GRACE = 1.0  # for the client to read the answer and close its side
LINGER_MAX = 256 * 1024  # unread request bytes discarded before closing
# Connections served at once (a slow one holds about LINE_MAX of buffer: ~4 MiB when
# full); when full, a new one evicts the oldest still reading its request.
MAX_CLIENTS = 256

_METHOD = re.compile(rb"[A-Z]{1,20}")
_VERSION = re.compile(rb"HTTP/(\d)\.(\d)")
_FIELD_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

_log = log.get("acme_preflight.daemon")


class StatusSource(Protocol):
    def last_report(self) -> dict[str, Any] | None: ...

    def health(self) -> tuple[bool, str]: ...

    def metrics_text(self) -> str: ...

    def daemon_status(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names, last wins


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes
    extra: tuple[tuple[str, str], ...] = ()


class _Refused(Exception):
    """The request cannot be served; ``answer`` says why (None: just close)."""

    def __init__(self, answer: Answer | None) -> None:
        super().__init__(answer.status if answer else "closed")
        self.answer = answer


def _error(status: int, why: str = "") -> Answer:
    status = int(status)
    phrase = HTTPStatus(status).phrase
    return Answer(status, TEXT, f"{status} {phrase}{': ' + why if why else ''}\n".encode())


def _json(status: int, data: Any, indent: int | None = 2) -> Answer:
    text = json.dumps(data, indent=indent) + ("\n" if indent else "")
    return Answer(status, JSON, text.encode())


def pages(source: StatusSource) -> dict[str, Callable[[], Answer]]:
    """Path -> the page's answer, computed per request."""

    def healthz() -> Answer:
        ok, why = source.health()
        return Answer(200 if ok else 503, TEXT, (why + "\n").encode())

    def status() -> Answer:
        report = source.last_report()
        if report is None:
            return _json(503, {"error": "no check run has finished yet"}, indent=None)
        return _json(200, report)

    def daemon() -> Answer:
        # The daemon's own health (delivery, spool); /status stays the report itself.
        return _json(200, source.daemon_status())

    def metrics() -> Answer:
        return Answer(200, PROMETHEUS_TEXT, source.metrics_text().encode())

    return {"/healthz": healthz, "/status": status, "/status/daemon": daemon, "/metrics": metrics}


async def _line(reader: asyncio.StreamReader, too_long: int) -> bytes:
    """One line; a client that closed gets no answer, an over-long line ``too_long``."""
    try:
        return await read_line(reader)
    except Malformed:
        raise _Refused(None if reader.at_eof() else _error(too_long)) from None


async def read_request(reader: asyncio.StreamReader) -> Request:
    """Read one request head (and discard a small body); raises _Refused."""
    first = b""
    for _ in range(4):  # RFC 9112 2.2: empty lines before the request line are ignored
        first = await _line(reader, HTTPStatus.REQUEST_URI_TOO_LONG)
        if first:
            break
    parts = first.split(b" ")
    if len(parts) != 3 or not _METHOD.fullmatch(parts[0]) or not parts[1]:
        raise _Refused(_error(400, "not an HTTP request"))
    version = _VERSION.fullmatch(parts[2])
    if version is None:
        raise _Refused(_error(400, "not an HTTP request"))
    if version.group(1) != b"1":
        raise _Refused(_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED))
    target = parts[1].decode("latin-1")
    path = target.split("?", 1)[0]
    if not path.startswith("/"):
        url = urlsplit(target)  # absolute-form, as a proxy would send it
        if url.scheme not in ("http", "https") or not url.netloc:
            raise _Refused(_error(400, "bad request target"))
        path = url.path or "/"
    headers: dict[str, str] = {}
    size = len(first)
    for _ in range(MAX_HEADERS + 1):
        line = await _line(reader, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
        if not line:
            break
        size += len(line) + 2
        if size > HEAD_MAX:
            raise _Refused(_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE))
        name, sep, value = line.partition(b":")
        if not sep or not _FIELD_NAME.fullmatch(name):
            # no colon, space before it, or a folded line (RFC 9112 5.1, 5.2: reject)
            raise _Refused(_error(400, "malformed header line"))
        headers[name.decode("ascii").lower()] = value.strip(b" \t").decode("latin-1")
    else:
        raise _Refused(_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE))
    if version.group(2) != b"0" and "host" not in headers:
        raise _Refused(_error(400, "HTTP/1.1 request without Host"))
    await _skip_body(reader, headers)
    return Request(parts[0].decode("ascii"), path, headers)


async def _skip_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> None:
    if "transfer-encoding" in headers:
        raise _Refused(_error(400, "request bodies are not accepted"))
    length = headers.get("content-length")
    if length is None:
        return
    if not (length.isascii() and length.isdigit()):
        raise _Refused(_error(400, "bad Content-Length"))
    if int(length) > BODY_MAX:
        raise _Refused(_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE))
    try:
        await reader.readexactly(int(length))
    except asyncio.IncompleteReadError:
        raise _Refused(None) from None


def render(answer: Answer, head_only: bool) -> bytes:
    """The answer on the wire: status line, headers, and the body unless HEAD."""
    lines = [
        f"HTTP/1.1 {answer.status} {HTTPStatus(answer.status).phrase}",
        f"Date: {formatdate(usegmt=True)}",
        f"Server: acme-preflight/{__version__}",
        f"Content-Type: {answer.content_type}",
        f"Content-Length: {len(answer.body)}",
        "Cache-Control: no-store",
        "Connection: close",
        *(f"{k}: {v}" for k, v in answer.extra),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + answer.body


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then discard what the client still sends (a refused over-long request)
    for a moment: closing with unread input would reset the connection, and a reset can
    destroy the answer before the client has read it."""
    with contextlib.suppress(OSError, *compat.TIMEOUT_ERRORS):
        if writer.can_write_eof():
            writer.write_eof()
        async with compat.timeout(CLOSE_GRACE):
            left = LINGER_MAX
            while left > 0:
                data = await reader.read(min(left, 64 * 1024))
                if not data:
                    break
                left -= len(data)


class StatusServer:
    """The listening socket and the connections in progress."""

    def __init__(self, source: StatusSource) -> None:
        self._pages = pages(source)
        self._server: asyncio.Server | None = None
        # connection task -> still reading its request; oldest first
        self._clients: dict[asyncio.Task[Any], bool] = {}
        self.evicted = 0  # connections closed to make room for a newer one

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._serve, host, port, reuse_address=True, limit=LINE_MAX
        )

    def answer(self, request: Request) -> Answer:
        page = self._pages.get(request.path)
        if page is None:
            return _error(404)
        if request.method not in ("GET", "HEAD"):
            return replace(_error(405), extra=(("Allow", "GET, HEAD"),))
        try:
            return page()
        except Exception as e:  # a bug in a page must not take the endpoint down
            _log.error("status endpoint page failed", path=request.path, error=repr(e))
            return _error(500)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None:
            writer.transport.abort()
            return
        while len(self._clients) >= MAX_CLIENTS:
            # Full: the oldest connection still reading its request goes. A client that
            # sends its request at once is read within milliseconds, so it is never that
            # one; a slow one holding a slot loses it to the next arrival instead of
            # blocking it.
            reading = (t for t, r in self._clients.items() if r)
            oldest = next(reading, None) or next(iter(self._clients))
            del self._clients[oldest]
            oldest.cancel()
            self.evicted += 1
        self._clients[task] = True
        try:
            head_only = False
            try:
                async with compat.timeout(REQUEST_TIMEOUT):
                    request = await read_request(reader)
                if task in self._clients:  # read: it is answered and leaves within CLOSE_GRACE
                    self._clients[task] = False
                head_only = request.method == "HEAD"
                answer: Answer | None = self.answer(request)
            except compat.TIMEOUT_ERRORS:
                answer = _error(408)
            except _Refused as e:
                answer = e.answer
            if answer is not None:
                writer.write(render(answer, head_only))
                async with compat.timeout(WRITE_TIMEOUT):
                    await writer.drain()
                await _linger(reader, writer)
                writer.close()
                async with compat.timeout(CLOSE_GRACE):
                    await writer.wait_closed()
        except (OSError, asyncio.TimeoutError):  # noqa: UP041 - not TimeoutError's alias on 3.10
            pass  # the client went away or stopped reading: nothing to answer
        except asyncio.CancelledError:
            pass  # close(): this task is a leaf nobody awaits for a result
        except Exception as e:  # never let a client take the endpoint down
            _log.error("status endpoint connection failed", error=repr(e))
        finally:
            self._clients.pop(task, None)
            with contextlib.suppress(Exception):
                writer.transport.abort()

    async def close(self) -> None:
        """Stop listening and drop the connections in progress."""
        if self._server is not None:
            self._server.close()
        clients = list(self._clients)
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


async def start(listen: str, source: StatusSource) -> StatusServer:
    """Serve on ``HOST:PORT``; raises OSError when the address cannot be bound."""
    host, port = split_host_port(listen)
    server = StatusServer(source)
    await server.start(host.strip("[]"), port)
    return server
