"""The DigiCert sensor stand-in: an HTTP CONNECT proxy that tunnels only to *.digicert.com.

Targets are looked up in ``upstreams`` {hostname: (ip, port)} -- the proxy never uses
DNS, so an unmapped host gets 502. Optional Basic auth (407 when missing or wrong).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus

from agent import compat
from tests.lab.base import StreamServer

MAX_HEAD = 16 * 1024


@dataclass(frozen=True)
class ProxyRequest:
    method: str
    target: str  # as sent: "acme.digicert.com:443"
    status: int  # what the proxy answered
    proxy_authorization: str | None  # the raw header, if any


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def split_target(target: str) -> tuple[str, int] | None:
    """``host:port`` or ``[v6]:port`` -> (host, port); None when malformed."""
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        return None
    return host.strip("[]").lower().rstrip("."), int(port)


class ConnectProxy(StreamServer):
    """CONNECT proxy on (host, port); default 48999, the port of sensor 3.8.47 and newer.

    Mutable while running: ``upstreams``, ``auth`` ((user, password) or None),
    ``connect_status`` (answer every permitted CONNECT with this status instead of
    tunnelling, e.g. 502), ``allowed_ports``. Every request is recorded in ``requests``;
    ``bytes_up``/``bytes_down`` count what tunnels relayed.
    """

    def __init__(
        self,
        host: str = "127.0.0.4",
        port: int = 48999,
        *,
        upstreams: Mapping[str, tuple[str, int]] | None = None,
        auth: tuple[str, str] | None = None,
        allowed_suffix: str = ".digicert.com",
        allowed_ports: tuple[int, ...] = (443,),
        connect_timeout: float = 2.0,
    ) -> None:
        super().__init__(host, port)
        self.upstreams = {k.lower(): v for k, v in (upstreams or {}).items()}
        self.auth = auth
        self.allowed_suffix = allowed_suffix
        self.allowed_ports = allowed_ports
        self.connect_timeout = connect_timeout
        self.connect_status: int | None = None
        self.requests: list[ProxyRequest] = []
        self.bytes_up = 0
        self.bytes_down = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _authorized(self, header: str | None) -> bool:
        if self.auth is None:
            return True
        scheme, _, value = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        return given == f"{self.auth[0]}:{self.auth[1]}"

    def _decide(self, method: str, target: str, authorization: str | None) -> int:
        """The status for a CONNECT request (200 means: tunnel)."""
        if method != "CONNECT":
            return 405
        if not self._authorized(authorization):
            return 407
        parsed = split_target(target)
        if parsed is None:
            return 400
        host, port = parsed
        if not host.endswith(self.allowed_suffix) or port not in self.allowed_ports:
            return 403
        if self.connect_status is not None:
            return self.connect_status
        return 200 if host in self.upstreams else 502

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            await self._reply(writer, 431)
            return
        if len(head) > MAX_HEAD:
            await self._reply(writer, 431)
            return
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await self._reply(writer, 400)
            return
        method, target, _ = parts
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        authorization = headers.get("proxy-authorization")
        status = self._decide(method, target, authorization)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        if status == 200:
            parsed = split_target(target)
            assert parsed is not None
            ip, port = self.upstreams[parsed[0]]
            try:
                upstream = await asyncio.wait_for(
                    asyncio.open_connection(ip, port), self.connect_timeout
                )
            except compat.TIMEOUT_ERRORS:
                status = 504
            except OSError:
                status = 502
        self.requests.append(ProxyRequest(method, target, status, authorization))
        if upstream is None:
            await self._reply(writer, status)
            return
        up_reader, up_writer = upstream
        try:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await self._relay(reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()

    async def _reply(self, writer: asyncio.StreamWriter, status: int) -> None:
        body = f"{status} {_reason(status)}\n".encode()
        extra = ""
        if status == 407:
            extra = 'Proxy-Authenticate: Basic realm="DigiCert sensor"\r\n'
        elif status == 405:
            extra = "Allow: CONNECT\r\n"
        writer.write(
            f"HTTP/1.1 {status} {_reason(status)}\r\n{extra}Content-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()

    async def _relay(
        self,
        c_reader: asyncio.StreamReader,
        c_writer: asyncio.StreamWriter,
        u_reader: asyncio.StreamReader,
        u_writer: asyncio.StreamWriter,
    ) -> None:
        """Copy both ways; a clean EOF half-closes the other side, an error ends both."""

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> bool:
            try:
                while data := await src.read(65536):
                    if up:
                        self.bytes_up += len(data)
                    else:
                        self.bytes_down += len(data)
                    dst.write(data)
                    await dst.drain()
                if dst.can_write_eof():
                    dst.write_eof()
                return True
            except OSError:
                return False

        tasks = {
            asyncio.create_task(pipe(c_reader, u_writer, True)),
            asyncio.create_task(pipe(u_reader, c_writer, False)),
        }
        try:
            while tasks:
                done, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                if not all(t.result() for t in done):
                    break
        finally:
            for t in tasks:
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)
