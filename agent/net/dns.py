"""A and AAAA lookups with dnspython's async resolver, classified and timed.

dnspython never reads /etc/hosts: this is what DNS answers, which is what a
firewall allow-list or a remote resolver sees. The nameservers come from
``[dns] nameservers`` ("IP", "IP:PORT", "[IPv6]:PORT") or else from resolv.conf.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.rrset

from agent import compat
from agent.config import split_nameserver
from agent.net.stream import elapsed_ms
from agent.net.tcp import format_addr

# Error words, most telling first; a checks maps them to ``dns_<word>`` reason codes.
#   nxdomain     the name does not exist
#   timeout      no nameserver answered in time
#   servfail     a nameserver answered with an error rcode (SERVFAIL, REFUSED, ...)
#   unreachable  no nameserver could be reached (e.g. ICMP port unreachable)
#   no_resolver  no nameserver is configured at all
#   error        anything else (malformed answers, YXDOMAIN, ...)
#   no_answer    the name exists but has no record of this type
ERROR_PRIORITY = ("nxdomain", "timeout", "servfail", "unreachable", "no_resolver", "error")


@dataclass(frozen=True)
class Nameservers:
    servers: tuple[tuple[str, int], ...]
    source: str  # "[dns] nameservers" or the resolv.conf path

    def describe(self) -> list[str]:
        return [format_addr(ip, port) if port != 53 else ip for ip, port in self.servers]


def parse_resolv_conf(path: Path) -> tuple[tuple[str, int], ...]:
    """The ``nameserver`` lines of a resolv.conf; an unreadable file gives none."""
    servers: list[tuple[str, int]] = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ()
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                servers.append(split_nameserver(words[1].split("%", 1)[0]))
            except ValueError:
                continue  # glibc ignores a bad line too
    return tuple(servers)


def nameservers_for(configured: Sequence[str], resolv_conf: Path) -> Nameservers:
    """The configured nameservers, else those of ``resolv_conf``."""
    if configured:
        return Nameservers(tuple(split_nameserver(s) for s in configured), "[dns] nameservers")
    return Nameservers(parse_resolv_conf(resolv_conf), str(resolv_conf))


@dataclass(frozen=True)
class DnsAnswer:
    """One query (one record type)."""

    rdtype: str
    addresses: tuple[str, ...]
    error: str | None
    message: str
    elapsed_ms: float
    nameserver: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.rdtype,
            "addresses": list(self.addresses),
            "outcome": self.error or "answer",
            "message": self.message,
            "ms": self.elapsed_ms,
            "nameserver": self.nameserver,
        }


@dataclass(frozen=True)
class DnsResult:
    """A and AAAA of one name, queried concurrently."""

    name: str
    answers: tuple[DnsAnswer, ...]
    nameservers: Nameservers
    elapsed_ms: float

    @property
    def ipv4(self) -> tuple[str, ...]:
        return tuple(a for ans in self.answers if ans.rdtype == "A" for a in ans.addresses)

    @property
    def ipv6(self) -> tuple[str, ...]:
        return tuple(a for ans in self.answers if ans.rdtype == "AAAA" for a in ans.addresses)

    @property
    def addresses(self) -> tuple[str, ...]:
        return self.ipv4 + self.ipv6

    @property
    def error(self) -> str | None:
        """None when any address was found, else the most telling failure."""
        if self.addresses:
            return None
        errors = {a.error for a in self.answers}
        for word in ERROR_PRIORITY:
            if word in errors:
                return word
        return "no_answer"

    @property
    def message(self) -> str:
        if not self.error:
            return f"{self.name} resolves to {', '.join(self.addresses)}"
        failing = [a for a in self.answers if a.error == self.error] or list(self.answers)
        return failing[0].message

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": self.error or "resolved",
            "ipv4": list(self.ipv4),
            "ipv6": list(self.ipv6),
            "queries": [a.to_dict() for a in self.answers],
            "nameservers": self.nameservers.describe(),
            "nameservers_from": self.nameservers.source,
            "dns_ms": self.elapsed_ms,
        }


def resolver(servers: Nameservers, budget: float) -> dns.asyncresolver.Resolver:
    res = dns.asyncresolver.Resolver(configure=False)
    res.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in servers.servers]
    # One try per nameserver fits in the budget, so a silent first server cannot
    # keep the second from being asked.
    res.timeout = max(budget / max(len(servers.servers), 1), 0.05)
    res.lifetime = budget
    res.cache = None
    return res


# dnspython names a server "Do53:10.0.0.53@53" in its errors: say "10.0.0.53:53" instead.
_DNSPYTHON_SERVER_RE = re.compile(r"\b(?:Do53|DoH|DoT|DoQ):([0-9A-Fa-f:.]+)@([0-9]+)")


def error_text(value: object) -> str:
    """An error (or server) from dnspython as text for a person: no internal names."""
    return _DNSPYTHON_SERVER_RE.sub(lambda m: format_addr(m[1], int(m[2])), str(value))


def _no_nameservers(name: str, rdtype: str, exc: dns.resolver.NoNameservers) -> tuple[str, str]:
    errors = exc.kwargs.get("errors") or []
    rcodes = [f"{error_text(e[0])} answered {e[3]}" for e in errors if isinstance(e[3], str)]
    if rcodes:
        return "servfail", f"{rdtype} query for {name} failed: {'; '.join(rcodes)}"
    causes = sorted({f"{error_text(e[0])}: {error_text(e[3])}" for e in errors})
    return (
        "unreachable",
        f"no nameserver reachable for {name}: {'; '.join(causes) or error_text(exc)}",
    )


@dataclass(frozen=True)
class Lookup:
    """One query of any record type: the answer's RRset, or the error word and why."""

    rrset: dns.rrset.RRset | None
    error: str | None  # None: answered (rrset None means no record of this type)
    message: str
    elapsed_ms: float
    nameserver: str | None = None


@functools.lru_cache(maxsize=256)
def _absolute_name(name: str) -> dns.name.Name:
    """``name`` parsed once: the daemon asks for the same few names every cycle.

    dnspython names are immutable, so sharing one is safe; a bad name raises each time
    (lru_cache keeps no exceptions).
    """
    return dns.name.from_text(name)  # absolute: no search domains


async def lookup(res: dns.asyncresolver.Resolver, name: str, rdtype: str, budget: float) -> Lookup:
    """One query within ``budget``, never raising for a DNS or network condition.

    NXDOMAIN is the error word ``nxdomain``; a name that exists without a record of
    this type is an answer with no RRset.
    """
    started = time.perf_counter()
    qname = _absolute_name(name)
    try:
        # The outer bound is a backstop: dnspython honours the lifetime itself.
        async with compat.timeout(max(budget, 0.01) + 0.05):
            answer = await res.resolve(
                qname, rdtype, lifetime=max(budget, 0.01), search=False, raise_on_no_answer=False
            )
    except (dns.exception.Timeout, TimeoutError, asyncio.TimeoutError):  # noqa: UP041 - 3.10
        ms = elapsed_ms(started)
        return Lookup(None, "timeout", f"no DNS answer for {name} {rdtype} within {ms:.0f} ms", ms)
    except dns.resolver.NXDOMAIN:
        return Lookup(None, "nxdomain", f"{name} does not exist (NXDOMAIN)", elapsed_ms(started))
    except dns.resolver.NoNameservers as exc:
        word, text = _no_nameservers(name, rdtype, exc)
        return Lookup(None, word, text, elapsed_ms(started))
    except dns.exception.DNSException as exc:
        text = f"{rdtype} query for {name} failed: {error_text(exc)}"
        return Lookup(None, "error", text, elapsed_ms(started))
    ns = format_addr(answer.nameserver, answer.port or 53) if answer.nameserver else None
    return Lookup(answer.rrset, None, "", elapsed_ms(started), ns)


async def query(
    res: dns.asyncresolver.Resolver, name: str, rdtype: str, budget: float
) -> DnsAnswer:
    """One address query, never raising for a DNS or network condition."""
    got = await lookup(res, name, rdtype, budget)
    ms = got.elapsed_ms
    if got.error is not None:
        return DnsAnswer(rdtype, (), got.error, got.message, ms)
    if got.rrset is None:
        return DnsAnswer(
            rdtype, (), "no_answer", f"{name} has no {rdtype} record", ms, got.nameserver
        )
    addrs = tuple(sorted({str(r.address) for r in got.rrset}))
    return DnsAnswer(
        rdtype, addrs, None, f"{name} {rdtype}: {', '.join(addrs)}", ms, got.nameserver
    )


async def resolve_host(
    name: str,
    servers: Nameservers,
    budget: float,
    rdtypes: Sequence[str] = ("A", "AAAA"),
) -> DnsResult:
    """Query each record type of ``name`` concurrently within ``budget`` seconds."""
    started = time.perf_counter()
    if not servers.servers:
        msg = (
            f"no nameserver configured ([dns] nameservers is empty and {servers.source} lists none)"
        )
        answers = tuple(DnsAnswer(t, (), "no_resolver", msg, 0.0) for t in rdtypes)
        return DnsResult(name, answers, servers, 0.0)
    res = resolver(servers, budget)
    found = await asyncio.gather(*(query(res, name, t, budget) for t in rdtypes))
    return DnsResult(name, tuple(found), servers, elapsed_ms(started))
