"""Network primitives shared by the checks: DNS, TCP, proxy tunnels, TLS and HTTPS GET.

Each primitive takes an explicit timeout, classifies its failures into stable error
words the checks map to reason codes, times itself, and closes what it opened on every
path (success, failure, timeout, cancellation). Nothing here raises for a network
condition: failures come back as data.
"""

from __future__ import annotations

from agent.net.dns import DnsAnswer, DnsResult, nameservers_for, resolve_host
from agent.net.http import HttpResult, http_get
from agent.net.proxy import ProxyChoice, TunnelResult, open_tunnel, select_proxy
from agent.net.stream import Deadline, Stream
from agent.net.tcp import TcpResult, tcp_connect
from agent.net.tls import CertInfo, TlsResult, tls_handshake

__all__ = [
    "CertInfo",
    "Deadline",
    "DnsAnswer",
    "DnsResult",
    "HttpResult",
    "ProxyChoice",
    "Stream",
    "TcpResult",
    "TlsResult",
    "TunnelResult",
    "http_get",
    "nameservers_for",
    "open_tunnel",
    "resolve_host",
    "select_proxy",
    "tcp_connect",
    "tls_handshake",
]
