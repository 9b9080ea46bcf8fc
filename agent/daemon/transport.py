"""HTTP/1.1 POSTs to the collector over a small pool of keep-alive connections.

The daemon sends one kind of request to one URL, so this is all it needs: a bounded
pool of connections (TLS from the sender's context, never a proxy), one request at a
time on each, and the answer's status, headers and the first bytes of its body. It
costs a fraction of the CPU of a general client (bench/spool_drain.py), which is what
lets a backlog drain at thousands of reports a second. The answer is read with the
same bounded parser as the checks' HTTP (``agent.net.http``): whatever the peer sends
is data, never a crash, and nothing it sends can make a read unbounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from agent.net.http import Malformed, read_body, read_head

# A successful answer's body is read (to reuse the connection) up to this; past it the
# connection is dropped instead.
MAX_OK_BODY = 64 * 1024
NO_BODY_STATUSES = frozenset({204, 304})
MAX_TRAILER_LINES = 32


class ProtocolError(Exception):
    """The collector's answer is not HTTP/1.x we can read."""


class _Stale(Exception):
    """No answer at all on a connection: on a reused one, the peer closed it while idle."""


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names
    body: bytes  # a 2xx: at most MAX_OK_BODY bytes; otherwise at most ``snippet``


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.used = False  # has carried a request: the peer may have closed it since

    @property
    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.transport.abort()


class Poster:
    """POST to one ``http(s)://`` URL over at most ``limit`` keep-alive connections."""

    def __init__(self, url: str, ssl_context: ssl.SSLContext | None, limit: int) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._tls = parts.scheme == "https"
        self._ssl = ssl_context
        if self._tls and self._ssl is None:
            self._ssl = ssl.create_default_context()
        self.host = parts.hostname
        self.port = parts.port or (443 if self._tls else 80)
        default = 443 if self._tls else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._authority = host if self.port == default else f"{host}:{self.port}"
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        self._target = target
        self._idle: list[_Conn] = []
        self._slots = asyncio.Semaphore(limit)
        self._open: set[_Conn] = set()

    async def post(self, body: bytes, headers: dict[str, str], snippet: int) -> Answer:
        """One request; the caller bounds it in time. Raises OSError (ssl.SSLError
        included) or ProtocolError."""
        head = f"POST {self._target} HTTP/1.1\r\nHost: {self._authority}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = (head + f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1") + body
        async with self._slots:
            conn = self._take_idle()
            if conn is not None:
                try:
                    return await self._exchange(conn, request, snippet)
                except _Stale:
                    # The collector may close an idle keep-alive connection at any time;
                    # a request that got no answer on one is sent again on a fresh one
                    # (a repeated report_id is acknowledged once by the collector).
                    pass
            conn = await self._connect()
            try:
                return await self._exchange(conn, request, snippet)
            except _Stale as e:
                raise ProtocolError(f"the connection closed without an answer ({e})") from None

    def _take_idle(self) -> _Conn | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable:
                return conn
            self._drop(conn, abort=True)
        return None

    async def _connect(self) -> _Conn:
        reader, writer = await asyncio.open_connection(
            self.host,
            self.port,
            ssl=self._ssl if self._tls else None,
            server_hostname=self.host if self._tls else None,
        )
        conn = _Conn(reader, writer)
        self._open.add(conn)
        return conn

    async def _exchange(self, conn: _Conn, request: bytes, snippet: int) -> Answer:
        keep = False
        try:
            try:
                conn.writer.write(request)
                await conn.writer.drain()
                status, reason, headers = await read_head(conn.reader)
                while 100 <= status < 200:  # interim answers precede the real one
                    status, reason, headers = await read_head(conn.reader)
            except (OSError, Malformed) as e:
                if isinstance(e, OSError) or conn.reader.at_eof():
                    raise _Stale(str(e) or type(e).__name__) from e
                raise ProtocolError(str(e)) from None
            ok = 200 <= status < 300
            body, cut = b"", False
            if status not in NO_BODY_STATUSES:
                try:
                    body, cut = await read_body(
                        conn.reader, headers, MAX_OK_BODY if ok else snippet
                    )
                except Malformed as e:
                    raise ProtocolError(str(e)) from None
            chunked = "chunked" in headers.get("transfer-encoding", "").lower()
            if chunked and not cut and status not in NO_BODY_STATUSES:
                # the body parser stops at the last chunk; the trailer section (usually
                # just CRLF) must go too before the connection carries another answer
                cut = not await _skip_trailer(conn.reader)
            framed = status in NO_BODY_STATUSES or "content-length" in headers or chunked
            keep = framed and not cut and headers.get("connection", "").lower() != "close"
            # a 2xx body is the collector's acknowledgement: whole (up to MAX_OK_BODY)
            return Answer(status, reason, headers, body if ok else body[:snippet])
        finally:
            if keep:
                self._idle.append(conn)
            else:
                self._drop(conn, abort=True)

    def _drop(self, conn: _Conn, abort: bool) -> None:
        self._open.discard(conn)
        if abort:
            conn.abort()
        else:
            conn.writer.close()

    async def close(self) -> None:
        """Close every connection: idle ones gracefully, any in use at once."""
        idle, self._idle = self._idle, []
        for conn in idle:
            self._drop(conn, abort=False)
        for conn in list(self._open):
            self._drop(conn, abort=True)


async def _skip_trailer(reader: asyncio.StreamReader) -> bool:
    """Read a chunked body's trailer up to its empty line; False if it is not that."""
    for _ in range(MAX_TRAILER_LINES):
        try:
            line = await reader.readuntil(b"\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return False
        if line in (b"\r\n", b"\n"):
            return True
    return False
