"""One HTTPS target end to end: DNS, TCP to every address, TLS, and optionally a GET.

The phases are timed separately (like blackbox_exporter's ``probe_http_duration_seconds``
by phase). Directly, every address the name resolves to is tried at once, so the
report has a per-address (IPv4 and IPv6) outcome; the first one that connects carries
on to TLS while slower ones finish. Through a proxy, the proxy resolves the name and
the phases are the TCP connect to the proxy, the CONNECT exchange, TLS and HTTP.
Everything shares one deadline and every connection is closed on every path.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from agent.net.dns import DnsResult, Nameservers, resolve_host
from agent.net.http import HttpResult, http_get, http_head, reusable
from agent.net.proxy import ProxyChoice, TunnelResult, open_tunnel
from agent.net.stream import Deadline, Stream
from agent.net.tcp import TcpResult, family_of, tcp_connect
from agent.net.tls import Opener, TlsResult, tls_handshake, tls_probe, verifying_context


@dataclass
class HttpsProbe:
    """What happened to one target; ``phase``/``error`` name the first failure."""

    host: str
    port: int
    path: str | None
    proxy: ProxyChoice
    dns: DnsResult | None = None
    connects: list[TcpResult] = field(default_factory=list)
    tunnel: TunnelResult | None = None
    tls: TlsResult | None = None
    http: HttpResult | None = None
    # The ACME round-trip after the directory GET: HEAD newNonce (see probe_https's acme).
    acme: bool = False
    directory: dict[str, Any] | None = None  # the directory JSON, when it was an object
    nonce: HttpResult | None = None
    nonce_note: str = ""  # why no HEAD was sent, when it was not
    phase: str | None = None  # "proxy", "dns", "connect", "tls", "http"
    error: str | None = None  # the primitive's error word
    message: str = ""
    address: str | None = None  # the address TLS and HTTP went to

    @property
    def ok(self) -> bool:
        return self.phase is None

    def families(self) -> dict[str, list[TcpResult]]:
        out: dict[str, list[TcpResult]] = {}
        for c in self.connects:
            out.setdefault(c.family, []).append(c)
        return out

    def broken_family(self) -> str | None:
        """``"ipv6"`` when every IPv6 address failed while an IPv4 one worked (or vice versa)."""
        fams = self.families()
        if len(fams) < 2:
            return None
        working = {f for f, rs in fams.items() if any(r.ok for r in rs)}
        if len(working) == 1:
            return next(f for f in fams if f not in working)
        return None

    def phases_ms(self) -> dict[str, float]:
        phases: dict[str, float] = {}
        if self.dns is not None:
            phases["dns"] = self.dns.elapsed_ms
        if self.tunnel is not None:
            if self.tunnel.connect_ms is not None:
                phases["connect"] = self.tunnel.connect_ms
            if self.tunnel.tunnel_ms is not None:
                phases["proxy"] = self.tunnel.tunnel_ms
        elif self.connects:
            used = [c for c in self.connects if self.address == _where(c)]
            phases["connect"] = (used or self.connects)[0].elapsed_ms
        if self.tls is not None:
            phases["tls"] = self.tls.elapsed_ms
        if self.http is not None:
            phases["http"] = self.http.elapsed_ms
        if self.nonce is not None:
            phases["nonce"] = self.nonce.elapsed_ms
        return phases

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "outcome": f"{self.phase}_{self.error}" if self.phase else "ok",
            "message": self.message,
            "phases_ms": self.phases_ms(),
            "proxy": self.proxy.to_dict(),
            "dns": self.dns.to_dict() if self.dns else None,
            "addresses": [c.to_dict() for c in self.connects],
            "address_used": self.address,
            "tunnel": self.tunnel.to_dict() if self.tunnel else None,
            "tls": self.tls.to_dict() if self.tls else None,
            "http": self.http.to_dict() if self.http else None,
            **({"nonce": self._nonce_dict()} if self.acme else {}),
        }

    def _nonce_dict(self) -> dict[str, Any] | None:
        if self.nonce is None:
            return {"outcome": "not_sent", "message": self.nonce_note} if self.nonce_note else None
        return {
            **self.nonce.to_dict(),
            "replay_nonce": "replay-nonce" in self.nonce.headers,
        }


def _where(tcp: TcpResult) -> str:
    return f"[{tcp.ip}]:{tcp.port}" if ":" in tcp.ip else f"{tcp.ip}:{tcp.port}"


def _order(addresses: tuple[str, ...]) -> list[str]:
    """IPv4 first, then IPv6: a stable choice of which working address carries TLS."""
    return sorted(addresses, key=lambda a: family_of(a) == "ipv6")


async def _first_connection(
    addresses: list[str], port: int, deadline: Deadline
) -> tuple[Stream | None, TcpResult | None, list[asyncio.Task[tuple[TcpResult, Stream | None]]]]:
    """Connect to every address at once; return as soon as one connects (the rest go on)."""
    tasks = [asyncio.ensure_future(tcp_connect(ip, port, deadline.remaining())) for ip in addresses]
    pending: set[asyncio.Future[tuple[TcpResult, Stream | None]]] = set(tasks)
    try:
        while pending:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            # the preferred address wins among those done so far
            for task in tasks:
                if task.done():
                    result, stream = task.result()
                    if stream is not None:
                        return stream, result, tasks
    except BaseException:
        await _finish(tasks)
        raise
    return None, None, tasks


async def _finish(
    tasks: list[asyncio.Task[tuple[TcpResult, Stream | None]]], keep: Stream | None = None
) -> list[TcpResult]:
    """Wait for the remaining connects (each bounded by the deadline); drop their streams."""
    try:
        results = await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        for t in tasks:
            if t.done() and not t.cancelled() and t.exception() is None:
                _, s = t.result()
                if s is not None and s is not keep:
                    s.abort()
        raise
    for _, stream in results:
        if stream is not None and stream is not keep:
            stream.abort()  # only its outcome was wanted
    return [r for r, _ in results]


async def probe_https(
    host: str,
    port: int,
    *,
    nameservers: Nameservers,
    proxy: ProxyChoice,
    budget: float,
    path: str | None = None,
    context: ssl.SSLContext | None = None,
    acme: bool = False,
) -> HttpsProbe:
    """Probe ``https://host:port`` (and GET ``path`` when given) within ``budget`` seconds.

    With ``acme``, ``path`` is an ACME directory: after it answers, its ``newNonce`` is
    requested with HEAD as ACME clients do, on the same connection when the server keeps
    it open, else on a new one opened the same way (directly, or through the proxy).
    """
    deadline = Deadline(budget)
    probe = HttpsProbe(host, port, path, proxy, acme=acme)
    others: asyncio.Future[list[TcpResult]] | None = None
    if proxy.url is not None or proxy.problem:
        stream = await _via_proxy(probe, deadline)

        async def open_again(remaining: float) -> Stream | None:
            return (await open_tunnel(proxy, host, port, remaining))[1]

    else:
        stream, used, others = await _direct(probe, nameservers, deadline)

        async def open_again(remaining: float) -> Stream | None:
            assert used is not None
            return (await tcp_connect(used.ip, used.port, remaining))[1]

    try:
        if stream is not None:
            await _tls_and_http(probe, stream, open_again, context, deadline)
    finally:
        if stream is not None:
            if deadline.expired:
                stream.abort()  # no time left for a polite close
            else:
                await stream.close()
        if others is not None:
            try:
                probe.connects = await others
            except BaseException:
                others.cancel()
                raise
    return probe


async def _tls_and_http(
    probe: HttpsProbe,
    stream: Stream,
    open_again: Opener,
    context: ssl.SSLContext | None,
    deadline: Deadline,
) -> None:
    ctx = context or verifying_context()
    probe.tls = await tls_probe(stream, open_again, probe.host, deadline.remaining(), ctx)
    if not probe.tls.ok:
        probe.phase, probe.error, probe.message = "tls", probe.tls.error, probe.tls.message
        return
    probe.message = probe.tls.message
    if probe.path is not None:
        probe.http = await http_get(
            stream,
            probe.host,
            probe.path,
            deadline.remaining(),
            port=probe.port,
            keep_alive=probe.acme,
        )
        probe.message = probe.http.message
        if not probe.http.ok:
            probe.phase, probe.error = "http", probe.http.error
        elif probe.acme:
            await _nonce(probe, stream, open_again, ctx, deadline)


def _directory(http: HttpResult) -> dict[str, Any] | None:
    if http.status is None or not 200 <= http.status < 300:
        return None
    try:
        doc = json.loads(http.body)
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def nonce_path(url: object, host: str, port: int) -> tuple[str | None, str]:
    """The path to HEAD for a directory's ``newNonce``, or None and why not."""
    if not isinstance(url, str):
        return None, "the directory has no newNonce URL"
    parts = urlsplit(url)
    try:
        where = ((parts.hostname or "").lower(), parts.port or 443)
    except ValueError:
        return None, f"newNonce is not a usable URL ({url[:200]!r})"
    if parts.scheme != "https" or where != (host.lower(), port):
        return None, f"newNonce is on another origin ({url[:200]}): not requested"
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), ""


async def _nonce(
    probe: HttpsProbe, stream: Stream, open_again: Opener, ctx: ssl.SSLContext, deadline: Deadline
) -> None:
    assert probe.http is not None
    probe.directory = _directory(probe.http)
    if probe.directory is None:
        return  # not the directory: judged as such
    path, probe.nonce_note = nonce_path(probe.directory.get("newNonce"), probe.host, probe.port)
    if path is None:
        return
    if reusable(probe.http):
        probe.nonce = await http_head(
            stream, probe.host, path, deadline.remaining(), port=probe.port
        )
        return
    # The server closed the connection after the directory: a new one, the same way.
    again = await open_again(deadline.remaining())
    if again is None:
        probe.nonce_note = "the server closed the connection and a new one failed"
        return
    async with again:
        tls = await tls_handshake(again, probe.host, deadline.remaining(), ctx)
        if not tls.ok:
            probe.nonce_note = f"a new connection for the nonce failed: {tls.message}"
            return
        probe.nonce = await http_head(
            again, probe.host, path, deadline.remaining(), port=probe.port
        )


async def _direct(
    probe: HttpsProbe, nameservers: Nameservers, deadline: Deadline
) -> tuple[Stream | None, TcpResult | None, asyncio.Future[list[TcpResult]] | None]:
    """DNS, then TCP to every address; the stream of the preferred working one."""
    probe.dns = await resolve_host(probe.host, nameservers, deadline.remaining())
    if probe.dns.error:
        probe.phase, probe.error, probe.message = "dns", probe.dns.error, probe.dns.message
        return None, None, None
    stream, used, tasks = await _first_connection(_order(probe.dns.addresses), probe.port, deadline)
    if stream is None or used is None:
        probe.connects = await _finish(tasks)
        probe.phase, probe.error = "connect", probe.connects[0].error
        probe.message = "; ".join(c.message for c in probe.connects)
        return None, None, None
    probe.address = _where(used)
    # The other addresses finish in the background while TLS runs on this one.
    return stream, used, asyncio.ensure_future(_finish(tasks, keep=stream))


async def _via_proxy(probe: HttpsProbe, deadline: Deadline) -> Stream | None:
    probe.tunnel, stream = await open_tunnel(
        probe.proxy, probe.host, probe.port, deadline.remaining()
    )
    if stream is None:
        probe.phase, probe.error, probe.message = "proxy", probe.tunnel.error, probe.tunnel.message
        return None
    probe.address = probe.tunnel.proxy_address
    return stream
