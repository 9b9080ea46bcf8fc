"""``digicert_ip``: TCP to ``[targets] ip``:``port`` directly, and whether DNS agrees.

DigiCert's page asks for an outbound connection to 216.168.244.42 for
acme.digicert.com and daas.digicert.com, so firewall allow-lists are often keyed on
that IP. This check connects to the IP itself (no DNS involved), then compares what
DNS answers for each hostname: an allow-list on the IP does not cover an address the
agent will actually connect to.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from agent.context import CheckContext
from agent.model import Outcome, Status
from agent.net.diagnosis import tcp_remediation
from agent.net.dns import DnsResult, nameservers_for, resolve_host
from agent.net.proxy import select_proxy
from agent.net.tcp import format_addr, tcp_connect


async def run(ctx: CheckContext) -> Outcome:
    cfg = ctx.config
    ip, port = cfg.targets.ip, cfg.targets.port
    rdtype = "AAAA" if ipaddress.ip_address(ip).version == 6 else "A"
    seconds = ctx.budget
    nameservers = nameservers_for(cfg.dns.nameservers, ctx.paths.resolv_conf)

    async def connect() -> Any:
        tcp, stream = await tcp_connect(ip, port, seconds)
        if stream is not None:
            await stream.close()
        return tcp

    tcp, *answers = await asyncio.gather(
        connect(),
        *(resolve_host(h, nameservers, seconds, (rdtype,)) for h in cfg.targets.hostnames),
    )
    dns: list[DnsResult] = answers
    where = format_addr(ip, port)
    proxies = {select_proxy(cfg.proxy.url, h, port).describe() for h in cfg.targets.hostnames}
    proxied = [p for p in proxies if p.startswith("proxy ")]
    details: dict[str, Any] = {
        "ip": ip,
        "port": port,
        "tcp": tcp.to_dict(),
        "dns": [d.to_dict() for d in dns],
        "proxy": sorted(proxies),
    }
    if not tcp.ok:
        reason = f"tcp_{tcp.error}"
        fix = tcp_remediation(tcp.error, ip, port)
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
    others = {d.name: [a for a in d.addresses if a != ip] for d in dns}
    others = {name: addrs for name, addrs in others.items() if addrs}
    unresolved = [d for d in dns if d.error]
    if others:
        seen = "; ".join(f"{name} -> {', '.join(addrs)}" for name, addrs in others.items())
        return Outcome(
            Status.WARN,
            f"{where} is reachable, but DNS answers other addresses: {seen}",
            "dns_other_address",
            f"A firewall allow-list keyed on {ip} will not match what the agent connects to; "
            f"also allow TCP {port} to {', '.join(sorted({a for v in others.values() for a in v}))}, "
            "or check why this resolver returns different addresses.",
            details,
        )
    if unresolved:
        failed = "; ".join(d.message for d in unresolved)
        return Outcome(
            Status.WARN,
            f"{where} is reachable, but DNS could not be compared: {failed}",
            "dns_unresolved",
            "Fix name resolution of the DigiCert hostnames (see outbound_https for the cause).",
            details,
        )
    names = ", ".join(d.name for d in dns)
    return Outcome(
        Status.PASS,
        f"{where} is reachable directly ({tcp.elapsed_ms:.0f} ms) and {names} resolve to it",
        "ok",
        "",
        details,
    )
