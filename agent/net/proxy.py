"""Which proxy to use, and an HTTP CONNECT tunnel through it.

``[proxy] url`` wins (a systemd unit inherits no ``HTTPS_PROXY``); otherwise
``HTTPS_PROXY``/``https_proxy`` (then ``ALL_PROXY``) from the environment,
bypassed for hosts matching ``NO_PROXY``/``no_proxy`` with curl's rules. The
password of a proxy URL never appears in any message or result.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from agent import compat
from agent.config import env_proxy, redact_url
from agent.net.stream import Deadline, Stream, elapsed_ms
from agent.net.tcp import TcpResult, format_addr, tcp_connect
from agent.redact import redact_text

MAX_HEAD = 16 * 1024  # a CONNECT answer head larger than this is not a proxy talking
NO_PROXY_VARS = ("NO_PROXY", "no_proxy")


@dataclass(frozen=True)
class ProxyChoice:
    """The proxy for one target and where that choice came from."""

    url: str | None  # may hold credentials: never show it, use ``display``
    source: str  # "config", "env:HTTPS_PROXY" (the variable), or "none"
    no_proxy_match: str | None = None  # the NO_PROXY entry that bypassed an env proxy
    problem: str | None = None  # why the proxy cannot be used (e.g. an https:// proxy)

    @property
    def display(self) -> str | None:
        return redact_url(self.url) if self.url else None

    @property
    def password(self) -> str | None:
        if not self.url:
            return None
        try:
            pw = urlsplit(self.url).password
        except ValueError:
            return None
        return unquote(pw) if pw else None

    @property
    def secrets(self) -> tuple[str, ...]:
        """The password, raw and URL-decoded: strings to scrub from peer text."""
        if not self.url:
            return ()
        try:
            raw = urlsplit(self.url).password
        except ValueError:
            return ()
        return tuple({s for s in (raw, unquote(raw) if raw else None) if s})

    @property
    def endpoint(self) -> tuple[str, int]:
        """Host and port of the proxy (port 80 when the URL has none, like curl)."""
        assert self.url is not None
        parts = urlsplit(self.url)
        return parts.hostname or "", parts.port or 80

    def describe(self) -> str:
        """``proxy http://user:***@p:3128 (from HTTPS_PROXY)`` or ``no proxy``."""
        if self.url is None:
            if self.no_proxy_match:
                return f"no proxy ({self.source.removeprefix('env:')} matched by NO_PROXY entry {self.no_proxy_match!r})"
            return "no proxy"
        origin = "[proxy] url" if self.source == "config" else self.source.removeprefix("env:")
        return f"proxy {self.display} (from {origin})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.display,
            "source": self.source,
            "no_proxy_match": self.no_proxy_match,
            "problem": self.problem,
        }


def no_proxy_match(host: str, port: int, value: str) -> str | None:
    """The ``NO_PROXY`` entry that exempts ``host:port``, or None.

    curl's rules: ``*`` matches everything; ``example.com`` and ``.example.com``
    match the domain and its subdomains; an IP or CIDR matches addresses; an entry
    may carry ``:port``.
    """
    host = host.strip("[]").rstrip(".").lower()
    try:
        host_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        host_ip = None
    for raw in value.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return raw.strip()
        pattern, entry_port = entry, None
        if pattern.startswith("["):  # [v6]:port
            end = pattern.find("]")
            rest = pattern[end + 1 :]
            pattern = pattern[1:end]
            if rest.startswith(":") and rest[1:].isascii() and rest[1:].isdigit():
                entry_port = int(rest[1:])
        elif pattern.count(":") == 1:
            name, _, p = pattern.partition(":")
            if p.isascii() and p.isdigit():  # not "²": int() refuses it
                pattern, entry_port = name, int(p)
        if entry_port is not None and entry_port != port:
            continue
        if host_ip is not None:
            try:
                if host_ip in ipaddress.ip_network(pattern, strict=False):
                    return raw.strip()
            except ValueError:
                pass
            continue
        pattern = pattern.removeprefix("*").removeprefix(".").rstrip(".")
        if pattern and (host == pattern or host.endswith("." + pattern)):
            return raw.strip()
    return None


def select_proxy(
    config_url: str | None,
    host: str,
    port: int = 443,
    environ: Mapping[str, str] | None = None,
) -> ProxyChoice:
    """The proxy to reach ``host:port``: config, then environment (minus NO_PROXY), else none."""
    if config_url:
        return ProxyChoice(config_url, "config")
    env = os.environ if environ is None else environ
    url, var = env_proxy(env)
    if not url:
        return ProxyChoice(None, "none")
    source = f"env:{var}"
    for nvar in NO_PROXY_VARS:
        entry = no_proxy_match(host, port, env.get(nvar, ""))
        if entry is not None:
            return ProxyChoice(None, source, no_proxy_match=entry)
    if "://" not in url:
        url = "http://" + url  # curl's reading of "proxy:3128"
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return ProxyChoice(url, source, problem=f"{var} is not a valid URL: {redact_url(url)}")
    if parts.scheme != "http":
        return ProxyChoice(
            url,
            source,
            problem=f"{var} is {redact_url(url)}: only http:// CONNECT proxies are supported",
        )
    if not parts.hostname:
        return ProxyChoice(url, source, problem=f"{var} has no proxy host: {redact_url(url)}")
    return ProxyChoice(url, source)


@dataclass(frozen=True)
class TunnelResult:
    """Outcome of TCP to the proxy plus the CONNECT exchange.

    ``error`` words: ``dns`` (proxy name does not resolve), ``refused``,
    ``unreachable``, ``timeout`` (TCP or CONNECT answer), ``auth_required`` (407),
    ``connect_failed`` (any other answer, or not HTTP), ``unsupported``.
    """

    target: str
    proxy: str
    error: str | None
    message: str
    status: int | None = None
    status_line: str | None = None
    connect_ms: float | None = None
    tunnel_ms: float | None = None
    proxy_address: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "proxy": self.proxy,
            "target": self.target,
            "outcome": self.error or "tunnel",
            "message": self.message,
            "status": self.status,
            "status_line": self.status_line,
            "proxy_address": self.proxy_address,
            "proxy_connect_ms": self.connect_ms,
            "connect_ms": self.tunnel_ms,
        }


def _printable(raw: bytes, secrets: tuple[str, ...], limit: int = 160) -> str:
    """Peer text made safe to show: printable ASCII, bounded, secrets scrubbed."""
    text = "".join(c if 32 <= ord(c) < 127 else "?" for c in raw.decode("latin-1"))
    return redact_text(text.strip(), secrets)[:limit]


async def _proxy_addresses(host: str, port: int, budget: float) -> list[str]:
    """The proxy's addresses: a literal as is, a name via the system resolver (hosts file too)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    async with compat.timeout(budget):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _connect_request(choice: ProxyChoice, target: str) -> bytes:
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}", "User-Agent: acme-preflight"]
    assert choice.url is not None
    parts = urlsplit(choice.url)
    if parts.username is not None:
        cred = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        lines.append("Proxy-Authorization: Basic " + base64.b64encode(cred.encode()).decode())
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def open_tunnel(
    choice: ProxyChoice, host: str, port: int, budget: float
) -> tuple[TunnelResult, Stream | None]:
    """Connect to the proxy and ask it for a tunnel to ``host:port`` within ``budget`` seconds.

    On success the returned stream is the tunnel (start TLS on it; the caller closes it).
    """
    target = format_addr(host, port) if ":" in host else f"{host}:{port}"
    shown = choice.display or "no proxy"
    if choice.url is None or choice.problem:
        problem = choice.problem or "no proxy selected"
        return TunnelResult(target, shown, "unsupported", problem), None
    deadline = Deadline(budget)
    phost, pport = choice.endpoint
    started = time.perf_counter()
    try:
        addrs = await _proxy_addresses(phost, pport, deadline.remaining())
    except (OSError, asyncio.TimeoutError) as exc:  # noqa: UP041 - not TimeoutError's alias on 3.10
        why = "timed out" if isinstance(exc, compat.TIMEOUT_ERRORS) else (exc.strerror or str(exc))
        msg = f"the proxy host {phost!r} does not resolve ({why})"
        return TunnelResult(target, shown, "dns", msg, connect_ms=elapsed_ms(started)), None
    tcp: TcpResult | None = None
    stream: Stream | None = None
    for ip in addrs:
        tcp, stream = await tcp_connect(ip, pport, deadline.remaining())
        if stream is not None:
            break
    assert tcp is not None
    if stream is None:
        word = tcp.error if tcp.error in ("refused", "unreachable", "timeout") else "refused"
        what = {
            "refused": "refused the connection",
            "unreachable": "is unreachable",
            "timeout": "did not accept the connection in time",
        }[word]
        msg = f"the proxy {shown} at {format_addr(tcp.ip, tcp.port)} {what}"
        if tcp.error == "error":
            msg += f" ({tcp.message})"
        return TunnelResult(
            target,
            shown,
            word,
            msg,
            connect_ms=tcp.elapsed_ms,
            proxy_address=format_addr(tcp.ip, tcp.port),
        ), None
    addr = format_addr(tcp.ip, tcp.port)
    sent = time.perf_counter()
    try:
        async with compat.timeout(deadline.remaining()):
            stream.writer.write(_connect_request(choice, target))
            await stream.writer.drain()
            head = await stream.reader.readuntil(b"\r\n\r\n")
    except compat.TIMEOUT_ERRORS:
        await stream.close()
        msg = (
            f"the proxy {shown} accepted the connection but did not answer CONNECT {target} in time"
        )
        return TunnelResult(
            target, shown, "timeout", msg, None, None, tcp.elapsed_ms, elapsed_ms(sent), addr
        ), None
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        await stream.close()
        why = (
            "closed the connection"
            if isinstance(exc, asyncio.IncompleteReadError | ConnectionResetError)
            else "sent an oversized answer"
            if isinstance(exc, asyncio.LimitOverrunError)
            else f"failed: {exc.strerror or exc}"
            if isinstance(exc, OSError)
            else "failed"
        )
        msg = f"the proxy {shown} {why} instead of answering CONNECT {target}"
        return TunnelResult(
            target, shown, "connect_failed", msg, None, None, tcp.elapsed_ms, elapsed_ms(sent), addr
        ), None
    except BaseException:
        stream.abort()
        raise
    tunnel_ms = elapsed_ms(sent)
    lines = head.split(b"\r\n")
    status_line = _printable(lines[0], choice.secrets)
    words = lines[0].split(None, 2)
    status = int(words[1]) if len(words) >= 2 and words[1].isdigit() else None
    if not words or not words[0].startswith(b"HTTP/") or status is None:
        await stream.close()
        msg = f"the proxy {shown} answered CONNECT {target} with something that is not HTTP: {status_line!r}"
        return TunnelResult(
            target,
            shown,
            "connect_failed",
            msg,
            None,
            status_line,
            tcp.elapsed_ms,
            tunnel_ms,
            addr,
        ), None
    if 200 <= status < 300:
        msg = f"the proxy {shown} opened a tunnel to {target}"
        result = TunnelResult(
            target, shown, None, msg, status, status_line, tcp.elapsed_ms, tunnel_ms, addr
        )
        return result, stream
    await stream.close()
    if status == 407:
        challenge = next(
            (
                _printable(line.split(b":", 1)[1], choice.secrets, 80)
                for line in lines[1:]
                if line.lower().startswith(b"proxy-authenticate:")
            ),
            None,
        )
        assert choice.url is not None
        user = urlsplit(choice.url).username
        sent_creds = (
            f"rejected the credentials of user {unquote(user)!r}"
            if user
            else ("requires authentication and the proxy URL has no credentials")
        )
        msg = f"the proxy {shown} {sent_creds} (407"
        msg += f", asks for {challenge})" if challenge else ")"
        word = "auth_required"
    else:
        msg = f"the proxy {shown} refused CONNECT {target}: {status_line}"
        word = "connect_failed"
    return TunnelResult(
        target, shown, word, msg, status, status_line, tcp.elapsed_ms, tunnel_ms, addr
    ), None
