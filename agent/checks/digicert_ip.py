"""``digicert_ip``: TCP to ``[targets] ip``:``port`` directly, and whether DNS agrees.

DigiCert's page asks for an outbound connection to 216.168.244.42 for
acme.digicert.com and daas.digicert.com, so firewall allow-lists are often keyed on
that IP. This check connects to the IP itself (no DNS involved), then compares what
DNS answers for each hostname: an allow-list on the IP does not cover an address the
agent will actually connect to.

Gather (:func:`gather`) → judge (:func:`judge`, pure, tested on facts alone) → the
outcome explains itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from typing import Any

from agent.context import CheckContext
from agent.model import Outcome, Status
from agent.net.diagnosis import REMEDIATIONS, tcp_remediation
from agent.net.dns import DnsResult, nameservers_for, resolve_host
from agent.net.proxy import select_proxy
from agent.net.tcp import TcpResult, format_addr, tcp_connect

OK = "ok"
DNS_OTHER_ADDRESS = "dns_other_address"
DNS_UNRESOLVED = "dns_unresolved"
TCP_REASONS = ("tcp_timeout", "tcp_refused", "tcp_unreachable", "tcp_error")

# Every reason this check gives, with its remediation (see agent.checks.reason_table);
# the TCP ones are filled with the IP and port (agent/net/diagnosis.py).
REASONS: dict[str, str] = {
    OK: "",
    DNS_OTHER_ADDRESS: (
        "A firewall allow-list keyed on {ip} will not match what the agent connects to; also "
        "allow TCP {port} to {others}, or check why this resolver returns different addresses."
    ),
    DNS_UNRESOLVED: (
        "Fix name resolution of the DigiCert hostnames (see outbound_https for the cause)."
    ),
    **{r: REMEDIATIONS[r] for r in TCP_REASONS},
}


@dataclass(frozen=True)
class Facts:
    """What the check observed: the direct connection, DNS per hostname, the proxies."""

    ip: str
    port: int
    tcp: TcpResult
    dns: tuple[DnsResult, ...]
    proxies: tuple[str, ...]  # how each hostname is reached ("no proxy", "proxy ...")

    def to_dict(self) -> dict[str, Any]:
        return {
            "ip": self.ip,
            "port": self.port,
            "tcp": self.tcp.to_dict(),
            "dns": [d.to_dict() for d in self.dns],
            "proxy": sorted(set(self.proxies)),
        }


async def gather(ctx: CheckContext) -> Facts:
    cfg = ctx.config
    ip, port = cfg.targets.ip, cfg.targets.port
    rdtype = "AAAA" if ipaddress.ip_address(ip).version == 6 else "A"
    seconds = ctx.budget
    nameservers = nameservers_for(cfg.dns.nameservers, ctx.paths.resolv_conf)

    async def connect() -> TcpResult:
        tcp, stream = await tcp_connect(ip, port, seconds)
        if stream is not None:
            await stream.close()
        return tcp

    tcp, dns = await asyncio.gather(
        connect(),
        asyncio.gather(
            *(resolve_host(h, nameservers, seconds, (rdtype,)) for h in cfg.targets.hostnames)
        ),
    )
    proxies = tuple(select_proxy(cfg.proxy.url, h, port).describe() for h in cfg.targets.hostnames)
    return Facts(ip, port, tcp, tuple(dns), proxies)


def judge(facts: Facts) -> Outcome:
    """Pass / warn / fail from the facts alone (pure)."""
    ip, port, tcp = facts.ip, facts.port, facts.tcp
    where = format_addr(ip, port)
    details = facts.to_dict()
    proxied = sorted({p for p in facts.proxies if p.startswith("proxy ")})
    if not tcp.ok:
        reason = f"tcp_{tcp.error}"
        fix = tcp_remediation(tcp.error or "error", ip, port)
        summary = f"DigiCert's IP {where} is not reachable directly: {tcp.message}"
        if proxied:
            # The agent goes through a proxy, so only the proxy needs this path.
            return Outcome(
                Status.WARN,
                summary + f" (the agent uses {proxied[0]}, so the proxy needs this path)",
                reason,
                f"Only needed if the ACME agent bypasses the proxy. Otherwise: {fix}",
                details,
            )
        return Outcome(Status.FAIL, summary, reason, fix, details)
    # Any address besides the IP counts: the agent may connect to that one.
    others = {d.name: [a for a in d.addresses if a != ip] for d in facts.dns}
    others = {name: addrs for name, addrs in others.items() if addrs}
    unresolved = [d for d in facts.dns if d.error]
    if others:
        seen = "; ".join(f"{name} -> {', '.join(addrs)}" for name, addrs in others.items())
        every = ", ".join(sorted({a for v in others.values() for a in v}))
        return Outcome(
            Status.WARN,
            f"{where} is reachable, but DNS answers other addresses: {seen}",
            DNS_OTHER_ADDRESS,
            REASONS[DNS_OTHER_ADDRESS].format(ip=ip, port=port, others=every),
            details,
        )
    if unresolved:
        failed = "; ".join(d.message for d in unresolved)
        return Outcome(
            Status.WARN,
            f"{where} is reachable, but DNS could not be compared: {failed}",
            DNS_UNRESOLVED,
            REASONS[DNS_UNRESOLVED],
            details,
        )
    names = ", ".join(d.name for d in facts.dns)
    return Outcome(
        Status.PASS,
        f"{where} is reachable directly ({tcp.elapsed_ms:.0f} ms) and {names} resolve to it",
        OK,
        "",
        details,
    )


async def run(ctx: CheckContext) -> Outcome:
    return judge(await gather(ctx))
