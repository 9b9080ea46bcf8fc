"""Whether an address belongs to this host: an interface address or loopback."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

import psutil

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def normalize(address: str) -> str | None:
    """``address`` spelled the way getaddrinfo spells it, or None if it is not one."""
    text = address.split("%", 1)[0]
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_ntop(family, socket.inet_pton(family, text))
        except (OSError, ValueError):
            continue
    return None


def interface_addresses() -> frozenset[str]:
    """Every IPv4/IPv6 address on this host's interfaces (scope ids dropped)."""
    found: set[str] = set()
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                norm = normalize(a.address)
                if norm is not None:
                    found.add(norm)
    return frozenset(found)


def is_local(address: str, local: Iterable[str]) -> bool:
    """True for loopback (127.0.0.0/8, ::1, mapped forms) or one of ``local``."""
    norm = normalize(address)
    if norm is None:
        return False
    ip: IPAddress = ipaddress.ip_address(norm)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
        norm = str(ip)
    return ip.is_loopback or norm in local
