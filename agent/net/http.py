"""Minimal HTTP/1.1 GET and HEAD over an open (TLS) stream, bounded in time and size.

Enough for the ACME directory, its nonce and a ``Date`` header: ``Connection: close``
or keep-alive; Content-Length, chunked, or read-to-EOF bodies, cut at ``max_body``
bytes. Whatever the peer sends is data, never a crash.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any

from agent import __version__, compat
from agent.net.stream import Stream, elapsed_ms

MAX_BODY = 256 * 1024
MAX_HEADERS = 100
_MAX_LINE = 8 * 1024


class _Malformed(Exception):
    """The peer's answer is not HTTP/1.x we can read."""


@dataclass(frozen=True)
class HttpResult:
    """``error`` words: ``timeout`` (no full answer in time), ``protocol`` (not HTTP,
    closed early), or None when a status was read (any status: judging it is the caller's)."""

    url: str
    error: str | None
    message: str
    elapsed_ms: float
    status: int | None = None
    reason: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names, last wins
    body: bytes = b""
    truncated: bool = False
    # Wall-clock time (time.time()) when the request went out and the answer's head came
    # back: the Date header was stamped in between (clock_skew uses the midpoint).
    sent_at: float | None = None
    answered_at: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "outcome": self.error or "answered",
            "message": self.message,
            "http_ms": self.elapsed_ms,
            "status": self.status,
            "content_type": self.headers.get("content-type"),
            "date": self.headers.get("date"),
            "body_bytes": len(self.body),
            "body_truncated": self.truncated,
        }


_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def _text(raw: bytes, limit: int = 120) -> str:
    # one regex pass rather than a Python loop per character: every header line goes here
    return _UNPRINTABLE.sub("?", raw.decode("latin-1")).strip()[:limit]


async def _line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise _Malformed("a header line is too long") from None
    except asyncio.IncompleteReadError as exc:
        raise _Malformed("the connection closed in the middle of the answer") from exc
    if len(line) > _MAX_LINE:
        raise _Malformed("a header line is too long")
    return line.rstrip(b"\r\n")


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
    first = await _line(reader)
    parts = first.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise _Malformed(f"not an HTTP answer: {_text(first)!r}")
    status = int(parts[1])
    reason = _text(parts[2]) if len(parts) > 2 else ""
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = await _line(reader)
        if not line:
            return status, reason, headers
        name, sep, value = line.partition(b":")
        if sep:
            headers[_text(name, 64).lower()] = _text(value, 512)
    raise _Malformed(f"more than {MAX_HEADERS} headers")


async def _read_body(
    reader: asyncio.StreamReader, headers: dict[str, str], limit: int
) -> tuple[bytes, bool]:
    """The body up to ``limit`` bytes and whether it was cut."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out = bytearray()
        while True:
            size_line = await _line(reader)
            try:
                size = int(size_line.split(b";", 1)[0].strip() or b"x", 16)
            except ValueError:
                raise _Malformed("a bad chunk size in a chunked body") from None
            if size == 0:
                return bytes(out), False
            take = min(size, limit - len(out))
            try:
                out += await reader.readexactly(take)
                if take < size:
                    return bytes(out), True
                await reader.readexactly(2)
            except asyncio.IncompleteReadError as exc:
                raise _Malformed("the connection closed inside a chunk") from exc
    length = headers.get("content-length")
    if length is not None:
        if not length.strip().isdigit():
            raise _Malformed(f"a bad Content-Length {length!r}")
        want = int(length)
        try:
            data = await reader.readexactly(min(want, limit))
        except asyncio.IncompleteReadError as exc:
            raise _Malformed("the connection closed before the whole body arrived") from exc
        return data, want > limit
    data = await reader.read(limit + 1)  # Connection: close, body runs to EOF
    buf = bytearray(data)
    while data and len(buf) <= limit:
        data = await reader.read(limit + 1 - len(buf))
        buf += data
    return bytes(buf[:limit]), len(buf) > limit


# Public names for the daemon's collector client (agent/daemon/transport.py), which reads
# the collector's answers with this same bounded parser, and for its status endpoint
# (agent/daemon/status_server.py), which reads requests line by line with it.
Malformed = _Malformed
read_line = _line
read_head = _read_head
read_body = _read_body


async def http_get(
    stream: Stream,
    host: str,
    path: str,
    budget: float,
    *,
    port: int = 443,
    max_body: int = MAX_BODY,
    accept: str = "application/json",
    keep_alive: bool = False,
) -> HttpResult:
    """GET ``path`` from ``host`` over ``stream`` within ``budget`` seconds; the caller closes it.

    ``keep_alive`` leaves the connection open for another request (see :func:`reusable`).
    """
    return await http_request(
        stream,
        "GET",
        host,
        path,
        budget,
        port=port,
        max_body=max_body,
        accept=accept,
        keep_alive=keep_alive,
    )


async def http_head(
    stream: Stream, host: str, path: str, budget: float, *, port: int = 443
) -> HttpResult:
    """HEAD ``path``: the status and headers only (as ACME clients fetch a nonce)."""
    return await http_request(stream, "HEAD", host, path, budget, port=port, max_body=0)


def reusable(result: HttpResult) -> bool:
    """Whether the connection may carry another request after this (keep-alive) answer."""
    if not result.ok or result.truncated:
        return False
    if "close" in result.headers.get("connection", "").lower():
        return False
    # a body that ran to EOF (no length, not chunked) closed the connection
    return (
        "content-length" in result.headers
        or "chunked" in result.headers.get("transfer-encoding", "").lower()
        or result.status in (204, 304)
    )


async def http_request(
    stream: Stream,
    method: str,
    host: str,
    path: str,
    budget: float,
    *,
    port: int = 443,
    max_body: int = MAX_BODY,
    accept: str = "application/json",
    keep_alive: bool = False,
) -> HttpResult:
    """One request over ``stream`` within ``budget`` seconds; never raises for the peer."""
    authority = host if port == 443 else f"{host}:{port}"
    url = f"https://{authority}{path}"
    connection = "keep-alive" if keep_alive else "close"
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: {authority}\r\n"
        f"User-Agent: acme-preflight/{__version__}\r\nAccept: {accept}\r\n"
        f"Accept-Encoding: identity\r\nConnection: {connection}\r\n\r\n"
    ).encode()
    started = time.perf_counter()
    sent_at = time.time()
    try:
        async with compat.timeout(max(budget, 0.0)):
            stream.writer.write(request)
            await stream.writer.drain()
            status, reason, headers = await _read_head(stream.reader)
            answered_at = time.time()
            if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
                body, truncated = b"", False  # no body, whatever the headers say
            else:
                body, truncated = await _read_body(stream.reader, headers, max_body)
    except compat.TIMEOUT_ERRORS:
        ms = elapsed_ms(started)
        return HttpResult(
            url, "timeout", f"no complete HTTP answer from {url} within {ms:.0f} ms", ms
        )
    except _Malformed as exc:
        return HttpResult(url, "protocol", f"{url}: {exc}", elapsed_ms(started))
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
        return HttpResult(
            url, "protocol", f"{url}: the connection failed ({why})", elapsed_ms(started)
        )
    ms = elapsed_ms(started)
    text = f"{url} answered {status} {reason}".rstrip()
    return HttpResult(
        url, None, text, ms, status, reason, headers, body, truncated, sent_at, answered_at
    )
