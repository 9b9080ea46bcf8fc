"""``caa``: the CAA records of the web server's names let DigiCert issue.

For each name (``[fqdn] names`` plus discovery, wildcards included) the relevant CAA
RRset is found as RFC 8659 section 3 says a CA does: the name, then each parent in
turn, up to the first non-empty CAA RRset (aliases are followed by the resolver). Then
it is judged as a CA would: no CAA means anyone may issue; otherwise an ``issue``
property (``issuewild`` first for a ``*.`` name) must name one of ``[caa] issuers``. A
lookup that fails (SERVFAIL, timeout) stops issuance too, since CAs must not issue then.

Gather (:func:`relevant_rrset`) → judge (:func:`judge`, pure) → explain (:func:`evaluate`).
The resolver is the fqdn_resolution DNS view's: a split-horizon resolver may answer
differently from the public DNS the CA sees.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.rdtypes.ANY.CAA

from agent.checks.fqdn_resolution import collect_names
from agent.context import CheckContext
from agent.fqdn.discover import discover
from agent.fqdn.names import Discovery
from agent.fqdn.resolve import dns_nameservers
from agent.model import Outcome, Status
from agent.net.dns import Lookup, Nameservers, lookup, resolver

FORBIDS = "caa_forbids_digicert"
CRITICAL_UNKNOWN = "caa_critical_unknown"
PARAMETERS = "caa_parameters"
LOOKUP_FAILED = "caa_lookup_failed"
NO_NAMES = "no_names"
DISABLED = "disabled"

# Property tags a CA understands (RFC 8659, RFC 8657's parameters ride on issue, RFC 9495,
# the CA/B Forum's contact tags); the critical flag on any other tag forbids issuance.
KNOWN_TAGS = frozenset(
    {"issue", "issuewild", "iodef", "issuemail", "issuevmc", "contactemail", "contactphone"}
)
CRITICAL_FLAG = 128
# DigiCert parameters that can exclude an ACME account or a challenge method.
LIMITING_PARAMETERS = ("accounturi", "validationmethods")
# Names looked up at once; names listed in a summary before "and N more".
CONCURRENCY = 32
SUMMARY_NAMES = 5

REMEDIATION = {
    FORBIDS: (
        "Add a CAA record authorizing DigiCert at the domain named (for example "
        "'example.com. CAA 0 issue \"digicert.com\"'), keeping the records of the CAs you "
        "still use: every DigiCert order for these names fails with caa_check_failed until then."
    ),
    CRITICAL_UNKNOWN: (
        "Remove the critical flag (128) from the CAA property named, or the property itself: "
        "a CA must refuse to issue when it meets a critical tag it does not know."
    ),
    PARAMETERS: (
        "DigiCert's CAA record carries parameters that limit issuance to one ACME account "
        "or validation method: make sure they name the account and the challenge the ACME "
        "agent uses, or drop them."
    ),
    LOOKUP_FAILED: (
        "The CAA lookup failed, and a CA refuses to issue when it cannot read CAA: fix the "
        "authoritative servers of the domain named (SERVFAIL or no answer for type CAA is "
        "often an old server or firewall mishandling type 257), or the local resolver."
    ),
    NO_NAMES: (
        "List the names the ACME agent will request certificates for in [fqdn] names, or "
        "point [fqdn] nginx_conf / apache_roots at the web server configuration."
    ),
    DISABLED: "",
}


# Every reason this check gives, with its remediation (see agent.checks.reason_table).
REASONS: dict[str, str] = {"ok": "", **REMEDIATION}


@dataclass(frozen=True)
class Property:
    """One CAA record: flags, tag, value (as served)."""

    flags: int
    tag: str
    value: str

    def __str__(self) -> str:
        value = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.flags} {self.tag} "{value}"'


@dataclass(frozen=True)
class Relevant:
    """The relevant CAA RRset of a name: where it was found and what it holds.

    ``domain`` is None when no domain up the tree has CAA; ``error`` is set when a
    lookup failed before the relevant RRset was found.
    """

    name: str
    domain: str | None = None
    properties: tuple[Property, ...] = ()
    error: str | None = None
    message: str = ""
    queried: tuple[str, ...] = ()
    nameserver: str | None = None


@dataclass(frozen=True)
class Verdict:
    name: str
    status: Status
    reason: str
    text: str
    allowed: tuple[str, ...] = ()
    domain: str | None = None
    fix: str = ""


def parse_issuer(value: str) -> tuple[str, dict[str, str]]:
    """The issuer domain (``""`` for ``;``: nobody) and parameters of an issue value."""
    domain, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for item in rest.split(";"):
        key, sep, val = item.strip().partition("=")
        if sep and key.strip():
            params[key.strip().lower()] = val.strip()
    return domain.strip().rstrip(".").lower(), params


def lookup_start(name: str) -> str:
    """Where the search starts: a wildcard's base domain (``*.example.com`` → example.com)."""
    return name[2:] if name.startswith("*.") else name


def tree(name: str) -> list[str]:
    """The name and each parent, not the root: a.b.example.com, b.example.com, example.com, com."""
    labels = lookup_start(name).rstrip(".").split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


def judge(relevant: Relevant, issuers: Iterable[str]) -> Verdict:
    """Whether a CA that is DigiCert may issue for ``relevant.name`` (pure)."""
    name = relevant.name
    if relevant.error is not None:
        return Verdict(name, Status.FAIL, LOOKUP_FAILED, relevant.message, domain=relevant.domain)
    if relevant.domain is None:
        return Verdict(name, Status.PASS, "ok", f"{name}: no CAA up the tree")
    at = relevant.domain
    props = relevant.properties
    critical = [p for p in props if p.flags & CRITICAL_FLAG and p.tag.lower() not in KNOWN_TAGS]
    if critical:
        shown = ", ".join(f"'{p}'" for p in critical)
        return Verdict(
            name,
            Status.FAIL,
            CRITICAL_UNKNOWN,
            f"{name}: {at} has a critical CAA property no CA knows ({shown})",
            domain=at,
        )
    wildcard = name.startswith("*.")
    issue = [p for p in props if p.tag.lower() == "issue"]
    wild = [p for p in props if p.tag.lower() == "issuewild"]
    used, tag = (wild, "issuewild") if wildcard and wild else (issue, "issue")
    if not used:  # only iodef & co.: issuance is not restricted
        return Verdict(name, Status.PASS, "ok", f"{name}: CAA at {at} does not restrict issue")
    ours = set(issuers)
    parsed = [parse_issuer(p.value) for p in used]
    allowed = tuple(sorted({d for d, _ in parsed if d}))
    mine = [(d, params) for d, params in parsed if d in ours]
    if not mine:
        others = ", ".join(allowed) if allowed else 'no CA at all (issue ";")'
        record = f'{at}. CAA 0 {tag} "digicert.com"'
        return Verdict(
            name,
            Status.FAIL,
            FORBIDS,
            f"{name}: CAA at {at} allows {others}, not DigiCert",
            allowed,
            at,
            f"add '{record}'",
        )
    # Any one DigiCert record without limits lets every account and method through.
    if all(any(k in params for k in LIMITING_PARAMETERS) for _, params in mine):
        named = sorted({k for _, params in mine for k in params if k in LIMITING_PARAMETERS})
        values = "; ".join(
            f"{k}={params[k]}" for _, params in mine for k in LIMITING_PARAMETERS if k in params
        )
        return Verdict(
            name,
            Status.WARN,
            PARAMETERS,
            f"{name}: CAA at {at} authorizes DigiCert only with {', '.join(named)} ({values})",
            allowed,
            at,
        )
    return Verdict(
        name, Status.PASS, "ok", f"{name}: CAA at {at} authorizes {mine[0][0]}", allowed, at
    )


# ------------------------------------------------------------------ gathering


class CaaLookups:
    """CAA lookups of one run, each domain asked once however many names share it."""

    def __init__(self, res: dns.asyncresolver.Resolver, deadline: float) -> None:
        self._res = res
        self._deadline = deadline
        self._cache: dict[str, asyncio.Task[Lookup]] = {}
        self._limit = asyncio.Semaphore(CONCURRENCY)

    async def _ask(self, domain: str) -> Lookup:
        async with self._limit:
            budget = self._deadline - asyncio.get_running_loop().time()
            if budget <= 0:
                return Lookup(None, "timeout", f"{domain} CAA: not asked, the time ran out", 0.0)
            return await lookup(self._res, domain + ".", "CAA", budget)

    def get(self, domain: str) -> asyncio.Task[Lookup]:
        task = self._cache.get(domain)
        if task is None:
            task = self._cache[domain] = asyncio.ensure_future(self._ask(domain))
        return task


async def relevant_rrset(name: str, lookups: CaaLookups) -> Relevant:
    """RFC 8659's relevant RRset of ``name``: the first non-empty CAA RRset up the tree."""
    queried: list[str] = []
    for domain in tree(name):
        queried.append(domain)
        got = await lookups.get(domain)
        if got.error == "nxdomain" or (got.error is None and not got.rrset):
            continue
        if got.error is not None:
            return Relevant(
                name,
                domain,
                error=got.error,
                message=f"{name}: {got.message}",
                queried=tuple(queried),
                nameserver=got.nameserver,
            )
        props = tuple(_property(r) for r in got.rrset or ())
        return Relevant(name, domain, props, queried=tuple(queried), nameserver=got.nameserver)
    return Relevant(name, queried=tuple(queried))


def _property(rdata: Any) -> Property:
    caa: dns.rdtypes.ANY.CAA.CAA = rdata
    return Property(
        int(caa.flags),
        caa.tag.decode("ascii", "replace"),
        caa.value.decode("utf-8", "replace"),
    )


# ------------------------------------------------------------------ explaining


def _listed(items: Sequence[str]) -> str:
    shown = "; ".join(items[:SUMMARY_NAMES])
    more = len(items) - SUMMARY_NAMES
    return f"{shown}; and {more} more" if more > 0 else shown


def evaluate(
    verdicts: Sequence[Verdict], relevant: Sequence[Relevant], context: dict[str, Any]
) -> Outcome:
    """Per-name verdicts into one result (worst first, each failing name named)."""
    details: dict[str, Any] = {
        "names": [
            {
                "name": r.name,
                "status": v.status.value,
                "reason": v.reason,
                "found_at": r.domain,
                "records": sorted(str(p) for p in r.properties),
                "allowed": list(v.allowed),
                "queried": list(r.queried),
                "nameserver": r.nameserver,
                **({"error": r.error, "message": r.message} if r.error else {}),
            }
            for v, r in zip(verdicts, relevant, strict=True)
        ],
        **context,
    }
    if not verdicts:
        return Outcome(
            Status.SKIP,
            "No web server names configured or discovered: no CAA to check",
            NO_NAMES,
            REMEDIATION[NO_NAMES],
            details,
        )
    order = (LOOKUP_FAILED, CRITICAL_UNKNOWN, FORBIDS, PARAMETERS)
    for reason in order:
        bad = [v for v in verdicts if v.reason == reason]
        if not bad:
            continue
        status = bad[0].status
        fixes = [f"{v.domain}: {v.fix}" for v in bad if v.fix]
        remediation = REMEDIATION[reason]
        if fixes:
            remediation += " For these names: " + "; ".join(dict.fromkeys(fixes)) + "."
        others = [v for v in verdicts if v.status.severity > Status.PASS.severity and v not in bad]
        tail = f" (and {len(others)} other CAA problem(s), see details)" if others else ""
        return Outcome(status, _listed([v.text for v in bad]) + tail, reason, remediation, details)
    return Outcome(
        Status.PASS,
        f"CAA lets DigiCert issue for all {len(verdicts)} name(s): "
        + _listed([v.text for v in verdicts]),
        "ok",
        "",
        details,
    )


def names_to_check(configured: Sequence[str], discovery: Discovery) -> dict[str, list[str]]:
    """The fqdn_resolution names, plus discovered ``*.`` names (CAA has issuewild for them)."""
    names = collect_names(configured, discovery)
    for skipped in discovery.skipped:
        if (
            skipped.why == "wildcard"
            and skipped.name.startswith("*.")
            and "*" not in skipped.name[2:]
        ):
            names.setdefault(skipped.name.rstrip(".").lower(), []).append(skipped.source)
    return names


async def run(ctx: CheckContext) -> Outcome:
    cfg = ctx.config
    if not cfg.caa.enabled:
        return Outcome(Status.SKIP, "CAA check disabled ([caa] enabled = false)", DISABLED)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.budget
    if cfg.fqdn.discover:
        discovery = await asyncio.to_thread(discover, cfg.fqdn.nginx_conf, cfg.fqdn.apache_roots)
    else:
        discovery = Discovery()
    names = names_to_check(cfg.fqdn.names, discovery)
    servers: Nameservers = dns_nameservers(cfg.fqdn.nameservers, ctx.paths.resolv_conf)
    context: dict[str, Any] = {
        "issuers": list(cfg.caa.issuers),
        "dns": {"nameservers": servers.describe(), "from": servers.source},
    }
    if names and not servers.servers:
        relevant = [
            Relevant(n, error="no_resolver", message=f"{n}: no nameserver configured")
            for n in names
        ]
    else:
        lookups = CaaLookups(resolver(servers, ctx.budget), deadline)
        relevant = list(await asyncio.gather(*(relevant_rrset(n, lookups) for n in names)))
    verdicts = [judge(r, cfg.caa.issuers) for r in relevant]
    return evaluate(verdicts, relevant, context)
