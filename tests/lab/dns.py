"""An authoritative DNS server on UDP and TCP (dnspython's message API) with per-name modes.

The zone maps names to IPv4/IPv6 addresses (A and AAAA are answered from it) and, with
``set_caa()``, to CAA records (RFC 8659 presentation form, ``0 issue "digicert.com"``);
names outside the zone get NXDOMAIN. ``set()`` changes a name's addresses or mode at runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from agent import compat
from tests.lab.base import StreamServer, bind_socket


class DnsMode(compat.StrEnum):
    ANSWER = "answer"  # A/AAAA from the zone (NODATA for a family it has no address of)
    NXDOMAIN = "nxdomain"
    SERVFAIL = "servfail"
    REFUSED = "refused"
    SILENCE = "silence"  # never answers (a resolver timeout)
    TRUNCATED = "truncated"  # UDP: empty answer with TC set (clients retry on TCP)
    GARBAGE = "garbage"  # random bytes instead of a DNS message


@dataclass(frozen=True)
class DnsQuery:
    transport: str  # "udp" or "tcp"
    name: str  # lowercase, no trailing dot
    rdtype: str  # "A", "AAAA", ...


def _key(name: str) -> str:
    return name.lower().rstrip(".")


class DnsServer(StreamServer):
    """Authoritative for ``zone`` on UDP and TCP ``(host, port)``; records ``queries``.

    ``override`` (a :class:`DnsMode`) applies to every name at once, e.g. a dead resolver.
    """

    def __init__(
        self,
        zone: Mapping[str, Iterable[str]] | None = None,
        host: str = "127.0.0.53",
        port: int = 53,
        *,
        ttl: int = 60,
    ) -> None:
        super().__init__(host, port)
        self.ttl = ttl
        self.zone: dict[str, list[str]] = {}
        self.caa: dict[str, list[str]] = {}
        self.cnames: dict[str, str] = {}
        self.modes: dict[str, DnsMode] = {}
        self.override: DnsMode | None = None
        self.queries: list[DnsQuery] = []
        self._udp: asyncio.DatagramTransport | None = None
        for name, addresses in (zone or {}).items():
            self.set(name, addresses)

    def set(
        self, name: str, addresses: Iterable[str] | None = None, mode: DnsMode | str | None = None
    ) -> None:
        """Give ``name`` these addresses and/or this mode (the mode sticks until changed)."""
        key = _key(name)
        if addresses is not None:
            self.zone[key] = [str(ipaddress.ip_address(a)) for a in addresses]
        if mode is not None:
            self.modes[key] = DnsMode(mode)

    def set_caa(self, name: str, records: Iterable[str]) -> None:
        """Serve these CAA records for ``name`` (an empty list: the name exists, no CAA)."""
        texts = list(records)
        for text in texts:  # refuse a malformed record here, not as a lab crash mid-test
            dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.CAA, text)
        self.caa[_key(name)] = texts

    def set_cname(self, name: str, target: str) -> None:
        """Make ``name`` an alias: answers carry the CNAME chain, then the target's records
        (as a recursive resolver returns them)."""
        self.cnames[_key(name)] = _key(target)

    def remove(self, name: str) -> None:
        """Drop ``name`` from the zone and forget its mode (it becomes NXDOMAIN)."""
        self.zone.pop(_key(name), None)
        self.caa.pop(_key(name), None)
        self.cnames.pop(_key(name), None)
        self.modes.pop(_key(name), None)

    def mode_for(self, name: str) -> DnsMode:
        key = _key(name)
        if self.override is not None:
            return self.override
        known = key in self.zone or key in self.caa or key in self.cnames
        return self.modes.get(key, DnsMode.ANSWER if known else DnsMode.NXDOMAIN)

    def queried(self, name: str) -> list[DnsQuery]:
        return [q for q in self.queries if q.name == _key(name)]

    def respond(self, wire: bytes, transport: str) -> bytes | None:
        """The reply to one query on ``transport``; None means stay silent."""
        try:
            return self._respond(wire, transport)
        except dns.exception.DNSException:
            return None  # not DNS (or unanswerable): a real server drops it too

    def _respond(self, wire: bytes, transport: str) -> bytes | None:
        query = dns.message.from_wire(wire)
        if len(query.question) != 1:
            resp = dns.message.make_response(query)
            resp.set_rcode(dns.rcode.FORMERR)
            return resp.to_wire()
        q = query.question[0]
        name = _key(q.name.to_text())
        self.queries.append(DnsQuery(transport, name, dns.rdatatype.to_text(q.rdtype)))
        mode = self.mode_for(name)
        if mode is DnsMode.SILENCE:
            return None
        if mode is DnsMode.GARBAGE:
            return os.urandom(48)
        resp = dns.message.make_response(query)
        resp.flags |= dns.flags.AA
        if mode is DnsMode.TRUNCATED and transport == "udp":
            resp.flags |= dns.flags.TC
            return resp.to_wire()
        rcode = {
            DnsMode.NXDOMAIN: dns.rcode.NXDOMAIN,
            DnsMode.SERVFAIL: dns.rcode.SERVFAIL,
            DnsMode.REFUSED: dns.rcode.REFUSED,
        }.get(mode)
        if rcode is not None:
            resp.set_rcode(rcode)
            return resp.to_wire()
        version = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 6}.get(q.rdtype)
        owner = q.name
        for _ in range(8):  # an alias chain, bounded like a resolver's
            target = self.cnames.get(name)
            if target is None or q.rdtype == dns.rdatatype.CNAME:
                break
            resp.answer.append(
                dns.rrset.from_text_list(
                    owner, self.ttl, dns.rdataclass.IN, dns.rdatatype.CNAME, [target + "."]
                )
            )
            name, owner = target, dns.name.from_text(target)
        records = [a for a in self.zone.get(name, []) if ipaddress.ip_address(a).version == version]
        if q.rdtype == dns.rdatatype.CAA:
            records = self.caa.get(name, [])
        if records:
            resp.answer.append(
                dns.rrset.from_text_list(owner, self.ttl, dns.rdataclass.IN, q.rdtype, records)
            )
        limit = 65535 if transport == "tcp" else max(512, query.payload if query.edns >= 0 else 0)
        try:
            return resp.to_wire(max_size=limit)
        except dns.exception.TooBig:
            resp.answer.clear()
            resp.flags |= dns.flags.TC
            return resp.to_wire()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            (size,) = struct.unpack("!H", await reader.readexactly(2))
            reply = self.respond(await reader.readexactly(size), "tcp")
            if reply is not None:
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()

    async def _start(self) -> None:
        # UDP and TCP share the port; with port=0 retry until both get the same one.
        for _ in range(20):
            udp = bind_socket(self.host, self.port, socket.SOCK_DGRAM)
            requested, self.port = self.port, udp.getsockname()[1]
            try:
                await super()._start()
            except OSError as e:
                udp.close()
                self.port = requested
                if requested == 0 and e.errno == errno.EADDRINUSE:
                    continue
                raise
            break
        else:
            raise OSError(errno.EADDRINUSE, "no port free for both UDP and TCP")
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), sock=udp)
        self._udp = transport

    async def _stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        await super()._stop()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        reply = self.server.respond(data, "udp")
        if reply is not None and self.transport is not None:
            with contextlib.suppress(OSError):
                self.transport.sendto(reply, addr)
