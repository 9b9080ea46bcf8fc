"""TCP connect to an IP address (never a name: no resolver is involved), classified."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any

from agent import compat
from agent.net.stream import Stream, elapsed_ms

# StreamReader buffer limit: bounds what one readline/readuntil may hold in memory.
STREAM_LIMIT = 64 * 1024

# Error words (stable; checks map them to reason codes such as ``tcp_timeout``):
#   timeout      no answer at all within the time: a firewall silently dropping (DROP rule)
#   refused      RST: nothing listening, or a REJECT rule
#   unreachable  no route / host unreachable (ENETUNREACH, EHOSTUNREACH, ICMP unreachable)
#   error        anything else (the message says what)
_UNREACHABLE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT}


def family_of(ip: str) -> str:
    """``"ipv4"`` or ``"ipv6"`` for an address literal."""
    return "ipv6" if ipaddress.ip_address(ip).version == 6 else "ipv4"


def format_addr(ip: str, port: int) -> str:
    """``1.2.3.4:443`` or ``[::1]:443``."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@dataclass(frozen=True)
class TcpResult:
    ip: str
    port: int
    error: str | None
    message: str
    elapsed_ms: float

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def family(self) -> str:
        return family_of(self.ip)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ip": self.ip,
            "port": self.port,
            "family": self.family,
            "outcome": self.error or "connected",
            "message": self.message,
            "connect_ms": self.elapsed_ms,
        }


def classify_oserror(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return "refused"
    if exc.errno in _UNREACHABLE:
        return "unreachable"
    if exc.errno == errno.ETIMEDOUT:
        return "timeout"
    return "error"


def describe_oserror(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


async def tcp_connect(ip: str, port: int, budget: float) -> tuple[TcpResult, Stream | None]:
    """Connect to ``ip:port`` within ``budget`` seconds.

    Returns the classified result and, when connected, the open :class:`Stream`
    (the caller closes it). On every failure the socket is already closed.
    """
    where = format_addr(ip, port)
    started = time.perf_counter()
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    except ValueError:
        return TcpResult(ip, port, "error", f"{ip!r} is not an IP address", 0.0), None
    # IPPROTO_TCP so asyncio turns Nagle off (it skips sockets with proto 0), and set here
    # too: the request after the TLS Finished, or HEAD newNonce after the directory, must
    # not wait for the server's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        async with compat.timeout(max(budget, 0.0)):
            await loop.sock_connect(sock, (ip, port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=STREAM_LIMIT)
    except compat.TIMEOUT_ERRORS:
        sock.close()
        ms = elapsed_ms(started)
        return TcpResult(
            ip, port, "timeout", f"no answer from {where} within {ms:.0f} ms", ms
        ), None
    except OSError as exc:
        sock.close()
        kind = classify_oserror(exc)
        text = {
            "refused": f"connection to {where} refused",
            "unreachable": f"{where} is unreachable ({describe_oserror(exc)})",
            "timeout": f"connection to {where} timed out ({describe_oserror(exc)})",
        }.get(kind, f"connection to {where} failed: {describe_oserror(exc)}")
        return TcpResult(ip, port, kind, text, elapsed_ms(started)), None
    except BaseException:
        sock.close()
        raise
    ms = elapsed_ms(started)
    return TcpResult(ip, port, None, f"connected to {where}", ms), Stream(reader, writer)
