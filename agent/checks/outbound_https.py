"""``outbound_https``: each DigiCert hostname over HTTPS, phase by phase.

For every ``[targets] hostnames`` entry: DNS (A and AAAA), TCP to every address,
TLS with SNI and full verification, and for the host of ``[targets] acme_directory``
an HTTP GET that must answer the ACME directory (JSON with ``newNonce``). A failure
names the phase and the cause; one IP family failing while the other works is a warn.
Through ``[proxy] url`` (or ``HTTPS_PROXY``), the proxy phase replaces DNS and TCP.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from agent.context import CheckContext
from agent.model import Outcome, Status
from agent.net.diagnosis import family_name, is_digicert_issuer, reason_of, remediation
from agent.net.dns import nameservers_for
from agent.net.probe import HttpsProbe, probe_https
from agent.net.proxy import select_proxy
from agent.net.tls import verifying_context


@dataclass(frozen=True)
class Verdict:
    status: Status
    reason: str
    summary: str
    remediation: str = ""


def directory_target(url: str) -> tuple[str, int, str]:
    """Host, port and path (with query) of the ACME directory URL."""
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (parts.hostname or "").lower(), parts.port or 443, path


def targets(ctx: CheckContext) -> list[tuple[str, int, str | None]]:
    """(host, port, path to GET or None) for each hostname, plus the directory host
    when it is not one of them."""
    t = ctx.config.targets
    dir_host, dir_port, dir_path = directory_target(t.acme_directory)
    out: list[tuple[str, int, str | None]] = [
        (h, t.port, dir_path if (h, t.port) == (dir_host, dir_port) else None) for h in t.hostnames
    ]
    if not any(path for _, _, path in out):
        out.append((dir_host, dir_port, dir_path))
    return out


def judge_directory(probe: HttpsProbe) -> Verdict | None:
    """None when the GET answered the ACME directory; else why not."""
    http = probe.http
    if http is None or http.status is None:
        return None
    url = http.url
    if not 200 <= http.status < 300:
        return Verdict(
            Status.FAIL,
            "http_status",
            f"{url} answered HTTP {http.status} {http.reason}".rstrip(),
            remediation("http_status", probe),
        )
    try:
        doc = json.loads(http.body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("newNonce"), str):
        ctype = http.headers.get("content-type", "no content type")
        what = "JSON without newNonce" if isinstance(doc, dict | list) else f"{ctype}, not JSON"
        return Verdict(
            Status.FAIL,
            "http_not_acme",
            f"{url} answered {http.status} but not with the ACME directory ({what})",
            remediation("http_not_acme", probe),
        )
    return None


def judge(probe: HttpsProbe) -> Verdict:
    host = probe.host
    if not probe.ok:
        reason = reason_of(probe)
        summary = f"{host}: {probe.message}"
        cert = probe.tls.cert if probe.tls else None
        if reason == "tls_untrusted" and cert is not None:
            summary += f"; issuer {cert.issuer_cn or cert.issuer}, SHA-256 {cert.sha256}"
            if not is_digicert_issuer(cert):
                summary += " (not a DigiCert issuer: TLS inspection suspected)"
        elif reason.startswith("tls_") and cert is not None:
            summary += f"; presented: {cert.subject}, issuer {cert.issuer}"
        return Verdict(Status.FAIL, reason, summary, remediation(reason, probe))
    bad_dir = judge_directory(probe)
    if bad_dir is not None:
        return bad_dir
    broken = probe.broken_family()
    if broken is not None:
        name = family_name(broken)
        other = family_name("ipv4" if broken == "ipv6" else "ipv6")
        failed = "; ".join(c.message for c in probe.connects if c.family == broken and not c.ok)
        if broken == "ipv6":
            fix = (
                f"IPv6 connections to {host} port {probe.port} fail while IPv4 works, and "
                "clients that try IPv6 first (as most do) stall or fail: fix outbound IPv6 "
                "(route and firewall), or make this host prefer IPv4 (precedence "
                "::ffff:0:0/96 100 in /etc/gai.conf) or disable IPv6 on it."
            )
        else:
            fix = (
                f"IPv4 connections to {host} port {probe.port} fail while IPv6 works: fix "
                "outbound IPv4 (route and firewall, e.g. the allow rule for the IPv4 "
                "addresses named); clients without IPv6 cannot connect."
            )
        return Verdict(
            Status.WARN,
            f"{broken}_broken",
            f"{host}: {name} fails ({failed}) while {other} works",
            fix,
        )
    what = "ACME directory OK" if probe.http is not None else "TLS verified"
    return Verdict(Status.PASS, "ok", f"{host} ({what})")


def combine(verdicts: list[Verdict], proxies: list[str]) -> tuple[Status, str, str, str]:
    """Overall status, reason, summary and remediation from per-target verdicts."""
    worst = max(verdicts, key=lambda v: v.status.severity)
    if worst.status is Status.PASS:
        via = "; ".join(dict.fromkeys(proxies))
        names = ", ".join(v.summary for v in verdicts)
        return Status.PASS, "ok", f"HTTPS works: {names}; {via}", ""
    bad = [v for v in verdicts if v.status is not Status.PASS]
    summary = "; ".join(_grouped(bad))
    fixes = " ".join(dict.fromkeys(v.remediation for v in bad if v.remediation))
    return worst.status, worst.reason, summary, fixes


def _grouped(bad: list[Verdict]) -> list[str]:
    """One summary per distinct failure: targets failing the same way (one inspection box
    in front of both names, say) share a line instead of repeating a fingerprint."""
    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for v in bad:
        host, _, rest = v.summary.partition(": ")
        template = rest.replace(host, "\0")
        groups.setdefault((v.reason, template), []).append((host, v.summary))
    out = []
    for members in groups.values():
        first = members[0][1]
        others = [host for host, _ in members[1:]]
        out.append(f"{first} (the same for {', '.join(others)})" if others else first)
    return out


async def run(ctx: CheckContext) -> Outcome:
    cfg = ctx.config
    nameservers = nameservers_for(cfg.dns.nameservers, ctx.paths.resolv_conf)
    tls_context = verifying_context()
    plan = targets(ctx)
    choices = [select_proxy(cfg.proxy.url, host, port) for host, port, _ in plan]
    seconds = ctx.budget
    probes = await asyncio.gather(
        *(
            probe_https(
                host,
                port,
                nameservers=nameservers,
                proxy=choice,
                budget=seconds,
                path=path,
                context=tls_context,
            )
            for (host, port, path), choice in zip(plan, choices, strict=True)
        )
    )
    verdicts = [judge(p) for p in probes]
    status, reason, summary, fixes = combine(verdicts, [c.describe() for c in choices])
    details: dict[str, Any] = {
        "budget_s": round(seconds, 3),
        "targets": [
            {"status": v.status.value, "reason": v.reason, **p.to_dict()}
            for p, v in zip(probes, verdicts, strict=True)
        ],
    }
    return Outcome(status, summary, reason, fixes, details)
