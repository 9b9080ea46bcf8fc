"""``fqdn_resolution``: the local web server's names resolve, and to this host.

Names come from ``[fqdn] names`` and, with ``[fqdn] discover``, from the nginx and
Apache configuration. Each name is looked up three ways at once: the hosts file
(glibc semantics), DNS (dnspython, never the hosts file) and the system view
(getaddrinfo, what the ACME agent gets). The system view decides: a name must
resolve, and to an address of this host. Where the hosts file and DNS both answer
but differ, the hosts entry hides DNS from every program on the host.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.context import CheckContext
from agent.fqdn import hosts as hostsfile
from agent.fqdn.discover import discover
from agent.fqdn.locality import interface_addresses, is_local, normalize
from agent.fqdn.names import Discovery
from agent.fqdn.resolve import TIMEOUT, ViewAnswer, dns_nameservers, dns_view, system_view
from agent.model import Outcome, Status
from agent.net.dns import Nameservers

# Names looked up at once (each system lookup is a thread, each DNS lookup two sockets).
CONCURRENCY = 32
# Names listed in a summary before "and N more".
SUMMARY_NAMES = 5

UNRESOLVABLE = "name_unresolvable"
NON_LOCAL = "non_local_address"
HOSTS_HIDE_DNS = "hosts_hides_dns"
NO_NAMES = "no_names"
# The resolver itself failed (as outbound_https words it): fix it before any name.
DNS_UNREACHABLE = "dns_unreachable"
DNS_NO_RESOLVER = "dns_no_resolver"
_RESOLVER_FAULTS = {"unreachable": DNS_UNREACHABLE, "no_resolver": DNS_NO_RESOLVER}

REMEDIATION = {
    UNRESOLVABLE: (
        "Publish each listed name in DNS or add it to /etc/hosts on this host "
        "(e.g. '192.0.2.10 www.example.com' with this host's address); remove names the "
        "web server no longer serves from its configuration or from [fqdn] names."
    ),
    NON_LOCAL: (
        "The name points elsewhere (a load balancer or NAT address?): add a hosts entry "
        "mapping it to this host's own address in /etc/hosts so the ACME agent finds the "
        "local web server, or correct the DNS record."
    ),
    HOSTS_HIDE_DNS: (
        "The system resolver (getaddrinfo) reads /etc/hosts before DNS (nsswitch 'hosts: "
        "files dns'), so DNS is never asked for these names: update or remove the stale "
        "/etc/hosts entry, or make the DNS record agree with it."
    ),
    DNS_UNREACHABLE: (
        "The resolver cannot be reached, so no name can be looked up in DNS: fix the "
        "nameserver entries in /etc/resolv.conf (or [fqdn] nameservers) and check that UDP "
        "and TCP port 53 to them are allowed; names in /etc/hosts still resolve."
    ),
    DNS_NO_RESOLVER: (
        "No nameserver is configured, so no name can be looked up in DNS: add one to "
        "/etc/resolv.conf or set [fqdn] nameservers."
    ),
    NO_NAMES: (
        "List the names the ACME agent will request certificates for in [fqdn] names, or "
        "point [fqdn] nginx_conf / apache_roots at the web server configuration."
    ),
}


# Every reason this check gives, with its remediation (see agent.checks.reason_table).
REASONS: dict[str, str] = {"ok": "", **REMEDIATION}


@dataclass(frozen=True)
class NameReport:
    """Everything the check learned about one name."""

    name: str
    sources: tuple[str, ...]
    hosts: hostsfile.HostsAnswer
    hosts_path: str
    dns: ViewAnswer
    system: ViewAnswer
    local: frozenset[str] = field(default_factory=frozenset)

    @property
    def local_addresses(self) -> list[str]:
        return [a for a in self.system.addresses if is_local(a, self.local)]

    def issues(self) -> list[str]:
        """Reason codes this name contributes, worst first."""
        found: list[str] = []
        if not self.system.ok:
            found.append(UNRESOLVABLE)
        elif not self.local_addresses:
            found.append(NON_LOCAL)
        if self.hides_dns:
            found.append(HOSTS_HIDE_DNS)
        return found

    @property
    def hides_dns(self) -> bool:
        if not self.hosts.addresses or not self.dns.ok:
            return False
        return _canon(self.hosts.addresses) != _canon(self.dns.addresses)

    def notes(self) -> list[str]:
        notes: list[str] = []
        if not self.system.ok and self.hosts.addresses:
            notes.append(
                f"{self.hosts_path} has an entry but getaddrinfo does not use it: "
                "check the 'hosts:' line of /etc/nsswitch.conf"
            )
        elif not self.system.ok and self.dns.ok:
            notes.append(
                "DNS answers but getaddrinfo does not: check the 'hosts:' line of "
                "/etc/nsswitch.conf and /etc/resolv.conf"
            )
        if self.hides_dns:
            notes.append(
                f"the hosts entry ({', '.join(self.hosts.addresses)}) hides DNS "
                f"({', '.join(self.dns.addresses)})"
            )
        return notes

    def to_dict(self) -> dict[str, Any]:
        seen = dict.fromkeys(self.hosts.addresses + self.dns.addresses + self.system.addresses)
        hosts_view: dict[str, Any] = {
            "status": "ok" if self.hosts.addresses else "no_entry",
            "addresses": list(self.hosts.addresses),
            "lines": [f"{self.hosts_path}:{n}" for n in self.hosts.lines],
        }
        return {
            "name": self.name,
            "sources": list(self.sources),
            "issues": self.issues(),
            "hosts": hosts_view,
            "dns": self.dns.to_dict(),
            "system": self.system.to_dict(),
            "locality": {a: is_local(a, self.local) for a in seen},
            "local": bool(self.system.ok and self.local_addresses),
            "notes": self.notes(),
        }


def _canon(addresses: Sequence[str]) -> frozenset[str]:
    return frozenset(n for n in (normalize(a) for a in addresses) if n is not None)


def collect_names(configured: Sequence[str], discovery: Discovery) -> dict[str, list[str]]:
    """Every name to check with its sources, config names first, each name once."""
    names: dict[str, list[str]] = {}
    for name in configured:
        names.setdefault(name.rstrip(".").lower(), []).append("config")
    for found in discovery.found:
        sources = names.setdefault(found.name, [])
        if found.source not in sources:
            sources.append(found.source)
    return names


def _addrs(addresses: Sequence[str]) -> str:
    return ", ".join(addresses[:2]) + (", ..." if len(addresses) > 2 else "")


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SUMMARY_NAMES])
    more = len(names) - SUMMARY_NAMES
    return f"{shown} and {more} more" if more > 0 else shown


def evaluate(
    reports: Sequence[NameReport], discovery: Discovery, context: dict[str, Any]
) -> Outcome:
    """Turn the per-name reports into pass / warn / fail."""
    details: dict[str, Any] = {
        "names": [r.to_dict() for r in reports],
        "skipped": [s.to_dict() for s in discovery.skipped],
        "problems": [p.to_dict() for p in discovery.problems],
        "notes": list(discovery.notes),
        **context,
    }
    if not reports:
        unreadable = len(discovery.problems)
        extra = f" ({unreadable} configuration problem(s), see details)" if unreadable else ""
        skipped = (
            f"; {len(discovery.skipped)} non-FQDN name(s) skipped" if discovery.skipped else ""
        )
        details["warnings"] = [NO_NAMES]
        return Outcome(
            Status.WARN,
            f"No web server names configured or discovered{skipped}{extra}",
            NO_NAMES,
            REMEDIATION[NO_NAMES],
            details,
        )
    by_issue: dict[str, list[NameReport]] = {}
    for r in reports:
        for issue in r.issues():
            by_issue.setdefault(issue, []).append(r)
    details["warnings"] = [i for i in (NON_LOCAL, HOSTS_HIDE_DNS) if i in by_issue]
    failing = by_issue.get(UNRESOLVABLE, [])
    resolver_down = [r for r in failing if r.dns.status in _RESOLVER_FAULTS]
    if resolver_down:
        return _resolver_fault(resolver_down, failing, reports, details)
    if failing:
        timed_out = [r.name for r in failing if r.system.status == TIMEOUT]
        note = f" ({len(timed_out)} timed out)" if timed_out else ""
        return Outcome(
            Status.FAIL,
            f"{len(failing)} of {len(reports)} name(s) do not resolve{note}: "
            f"{_listed([r.name for r in failing])}",
            UNRESOLVABLE,
            REMEDIATION[UNRESOLVABLE],
            details,
        )
    parts: list[str] = []
    if NON_LOCAL in by_issue:
        remote = by_issue[NON_LOCAL]
        shown = [f"{r.name} ({_addrs(r.system.addresses)})" for r in remote]
        verb = "resolves" if len(remote) == 1 else "resolve"
        parts.append(f"{_listed(shown)} {verb} only to addresses not on this host")
    if HOSTS_HIDE_DNS in by_issue:
        hidden = [
            f"{r.name} (hosts {_addrs(r.hosts.addresses)}, DNS {_addrs(r.dns.addresses)})"
            for r in by_issue[HOSTS_HIDE_DNS]
        ]
        parts.append(f"the hosts entry hides DNS for {_listed(hidden)}")
    if parts:
        reasons = details["warnings"]
        summary = "; ".join(parts)
        if summary.startswith("the "):  # a sentence, not a name: capitalise it
            summary = "T" + summary[1:]
        return Outcome(
            Status.WARN,
            summary,
            reasons[0],
            " ".join(REMEDIATION[r] for r in reasons),
            details,
        )
    return Outcome(
        Status.PASS,
        f"All {len(reports)} name(s) resolve to this host: {_listed([r.name for r in reports])}",
        "ok",
        "",
        details,
    )


def _resolver_fault(
    down: Sequence[NameReport],
    failing: Sequence[NameReport],
    reports: Sequence[NameReport],
    details: dict[str, Any],
) -> Outcome:
    """A name fails because the resolver cannot be asked: say that, not "no such name"."""
    reason = _RESOLVER_FAULTS[down[0].dns.status]
    dns = details.get("dns", {})
    servers = ", ".join(dns.get("nameservers", [])) or "none"
    where = f"{servers}, from {dns['from']}" if dns.get("from") else servers
    problem = "cannot be reached" if reason == DNS_UNREACHABLE else "is not configured"
    return Outcome(
        Status.FAIL,
        f"The resolver ({where}) {problem}: {len(failing)} of {len(reports)} name(s) do not "
        f"resolve: {_listed([r.name for r in failing])}",
        reason,
        REMEDIATION[reason],
        details,
    )


async def _look_up(
    name: str,
    sources: list[str],
    hosts: hostsfile.HostsFile,
    servers: Nameservers,
    local: frozenset[str],
    deadline: float,
    limit: asyncio.Semaphore,
) -> NameReport:
    loop = asyncio.get_running_loop()
    async with limit:
        budget = deadline - loop.time()
        if budget <= 0:
            late = ViewAnswer(TIMEOUT, detail="not looked up: the check's time budget ran out")
            dns_answer, system_answer = late, late
        else:
            dns_answer, system_answer = await asyncio.gather(
                dns_view(name, servers, budget), system_view(name, budget)
            )
    return NameReport(
        name, tuple(sources), hosts.lookup(name), hosts.path, dns_answer, system_answer, local
    )


async def run(ctx: CheckContext) -> Outcome:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.budget
    cfg = ctx.config.fqdn
    if cfg.discover:
        discovery = await asyncio.to_thread(discover, cfg.nginx_conf, cfg.apache_roots)
    else:
        discovery = Discovery(notes=["discovery is off ([fqdn] discover = false)"])
    names = collect_names(cfg.names, discovery)
    hosts = hostsfile.load(ctx.paths.hosts, ctx.paths.host_conf)
    servers = dns_nameservers(cfg.nameservers, ctx.paths.resolv_conf)
    local = interface_addresses()
    limit = asyncio.Semaphore(CONCURRENCY)
    reports = await asyncio.gather(
        *(
            _look_up(name, sources, hosts, servers, local, deadline, limit)
            for name, sources in names.items()
        )
    )
    context = {
        "discovery": {
            "enabled": cfg.discover,
            "nginx_conf": str(cfg.nginx_conf),
            "apache_roots": [str(p) for p in cfg.apache_roots],
            "files_read": len(discovery.files),
        },
        "hosts_file": {"path": hosts.path, "multi": hosts.multi, "problem": hosts.problem},
        "dns": {"nameservers": servers.describe(), "from": servers.source},
        "local_addresses": sorted(local),
    }
    return evaluate(reports, discovery, context)
