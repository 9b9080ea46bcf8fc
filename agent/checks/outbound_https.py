"""``outbound_https``: each DigiCert hostname over HTTPS, phase by phase.

For every ``[targets] hostnames`` entry: DNS (A and AAAA), TCP to every address,
TLS with SNI and full verification, and for the host of ``[targets] acme_directory``
an HTTP GET that must answer the ACME directory (JSON with ``newNonce``, ``newAccount``
and ``newOrder``), then a HEAD of ``newNonce`` that must answer 200 or 204 with a
``Replay-Nonce``, as every ACME client's first request does. A failure names the phase
and the cause; one IP family failing while the other works is a warn.
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
from agent.net.diagnosis import (
    REMEDIATIONS,
    family_name,
    is_digicert_issuer,
    reason_of,
    remediation,
)
from agent.net.dns import nameservers_for
from agent.net.probe import HttpsProbe, probe_https
from agent.net.proxy import select_proxy
from agent.net.tls import verifying_context

OK = "ok"
HTTP_STATUS = "http_status"
HTTP_NOT_ACME = "http_not_acme"
ACME_NO_NONCE = "acme_no_nonce"
IPV4_BROKEN = "ipv4_broken"
IPV6_BROKEN = "ipv6_broken"

# Every reason this check gives, with its remediation: the network ones (a template per
# reason, filled per target) from agent/net/diagnosis.py, and the family warnings.
REASONS: dict[str, str] = {
    OK: "",
    IPV6_BROKEN: (
        "Fix outbound IPv6 (route and firewall), or make this host prefer IPv4 (precedence "
        "::ffff:0:0/96 100 in /etc/gai.conf) or disable IPv6 on it."
    ),
    IPV4_BROKEN: "Fix outbound IPv4 (route and firewall) to the addresses named.",
    **{k: v for k, v in REMEDIATIONS.items() if ":" not in k},
}


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


# What an ACME client needs from the directory before its first request (RFC 8555 7.1.1).
DIRECTORY_KEYS = ("newNonce", "newAccount", "newOrder")
NONCE_STATUSES = (200, 204)


def judge_directory(probe: HttpsProbe) -> Verdict | None:
    """None when the GET answered the ACME directory and HEAD newNonce a nonce; else why not."""
    http = probe.http
    if http is None or http.status is None:
        return None
    url = http.url
    if not 200 <= http.status < 300:
        return Verdict(
            Status.FAIL,
            HTTP_STATUS,
            f"{url} answered HTTP {http.status} {http.reason}".rstrip(),
            remediation(HTTP_STATUS, probe),
        )
    try:
        doc = json.loads(http.body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    missing = [
        k for k in DIRECTORY_KEYS if not isinstance(doc, dict) or not isinstance(doc.get(k), str)
    ]
    if missing:
        ctype = http.headers.get("content-type", "no content type")
        what = (
            f"JSON without {', '.join(missing)}"
            if isinstance(doc, dict | list)
            else f"{ctype}, not JSON"
        )
        return Verdict(
            Status.FAIL,
            HTTP_NOT_ACME,
            f"{url} answered {http.status} but not with the ACME directory ({what})",
            remediation(HTTP_NOT_ACME, probe),
        )
    return judge_nonce(probe)


def judge_nonce(probe: HttpsProbe) -> Verdict | None:
    """The HEAD newNonce after the directory: 200/204 with Replay-Nonce, or acme_no_nonce."""
    if not probe.acme:
        return None
    nonce = probe.nonce
    if nonce is None:
        if not probe.nonce_note or "another origin" in probe.nonce_note:
            return None  # on another origin: a client would connect there, not checked here
        what = probe.nonce_note
    elif nonce.error is not None:
        what = nonce.message
    elif nonce.status not in NONCE_STATUSES:
        what = f"HEAD {nonce.url} answered HTTP {nonce.status} {nonce.reason}".rstrip()
    elif not nonce.headers.get("replay-nonce"):
        what = f"HEAD {nonce.url} answered {nonce.status} without a Replay-Nonce header"
    else:
        return None
    return Verdict(
        Status.FAIL,
        ACME_NO_NONCE,
        f"{probe.host}: the ACME directory answers but no nonce: {what}",
        remediation(ACME_NO_NONCE, probe),
    )


def eab_required(probe: HttpsProbe) -> bool | None:
    """``meta.externalAccountRequired`` of the directory (None when not stated)."""
    meta = (probe.directory or {}).get("meta")
    value = meta.get("externalAccountRequired") if isinstance(meta, dict) else None
    return value if isinstance(value, bool) else None


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
            IPV6_BROKEN if broken == "ipv6" else IPV4_BROKEN,
            f"{host}: {name} fails ({failed}) while {other} works",
            fix,
        )
    if probe.nonce is not None:
        what = "ACME directory and nonce OK"
    elif probe.http is not None:
        what = "ACME directory OK"
    else:
        what = "TLS verified"
    return Verdict(Status.PASS, OK, f"{host} ({what})")


def combine(
    verdicts: list[Verdict], proxies: list[str], eab: bool | None = None
) -> tuple[Status, str, str, str]:
    """Overall status, reason, summary and remediation from per-target verdicts."""
    worst = max(verdicts, key=lambda v: v.status.severity)
    if worst.status is Status.PASS:
        via = "; ".join(dict.fromkeys(proxies))
        names = ", ".join(v.summary for v in verdicts)
        note = (
            "; the ACME server requires external account binding (EAB): give the ACME "
            "agent the key ID and HMAC key from CertCentral"
            if eab
            else ""
        )
        return Status.PASS, OK, f"HTTPS works: {names}; {via}{note}", ""
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
                acme=path is not None,
            )
            for (host, port, path), choice in zip(plan, choices, strict=True)
        )
    )
    verdicts = [judge(p) for p in probes]
    eab = next((e for e in map(eab_required, probes) if e is not None), None)
    status, reason, summary, fixes = combine(verdicts, [c.describe() for c in choices], eab)
    details: dict[str, Any] = {
        "budget_s": round(seconds, 3),
        "external_account_required": eab,
        "targets": [
            {"status": v.status.value, "reason": v.reason, **p.to_dict()}
            for p, v in zip(probes, verdicts, strict=True)
        ],
    }
    return Outcome(status, summary, reason, fixes, details)
