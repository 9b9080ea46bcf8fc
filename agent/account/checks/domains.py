"""``domains``: domain validation (DCV) is current, and the fleet's names are covered.

Every active domain of the account (``GET /domain``, paged) whose DCV has expired fails,
one expiring within ``[certcentral] expiry_warn`` warns. Then each web server name (the
fleet's ``fqdn_resolution`` names in the collector, ``--fqdn`` in the CLI) is matched to
the most specific account domain covering it: not covered warns (DCV happens at order
time; on non-Authkey accounts DV automation requests wait in "Approval pending" until it
completes); covered by a domain whose DCV has expired fails.
"""

from __future__ import annotations

from typing import Any

from agent.account.client import ApiError
from agent.account.common import DAY, api_failure
from agent.account.context import AccountContext
from agent.account.coverage import Domain, account_domains, covering
from agent.model import Outcome, Status

SHOWN = 5  # names listed in a summary


def _listed(items: list[str]) -> str:
    more = len(items) - SHOWN
    return ", ".join(items[:SHOWN]) + (f" and {more} more" if more > 0 else "")


def name_states(
    fqdns: tuple[str, ...], domains: dict[str, Domain], now: float, warn_s: float
) -> list[dict[str, Any]]:
    """Each name with the account domain that covers it and that domain's DCV state."""
    out = []
    for name in fqdns:
        dom = covering(name, domains)
        out.append(
            {
                "name": name,
                "domain": dom.name if dom else None,
                "state": dom.state(now, warn_s) if dom else "not_covered",
                "dcv_until": dom.dcv_until.isoformat() if dom and dom.dcv_until else None,
            }
        )
    return out


def judge(
    domains: dict[str, Domain],
    fqdns: tuple[str, ...],
    warn_s: float,
    now: float,
    truncated: bool = False,
) -> Outcome:
    """Pure: the account's domains and the names to cover, to one result."""
    states = {name: d.state(now, warn_s) for name, d in domains.items()}
    names = name_states(fqdns, domains, now, warn_s)
    expired = sorted(n for n, s in states.items() if s == "expired")
    expiring = sorted(
        (f"{n} ({domains[n].dcv_until})" for n, s in states.items() if s == "expiring")
    )
    uncovered = [n["name"] for n in names if n["state"] in ("not_covered", "pending")]
    name_expired = [f"{n['name']} (via {n['domain']})" for n in names if n["state"] == "expired"]
    details: dict[str, Any] = {
        "domains": len(domains),
        "listing_truncated": truncated,
        "expiry_warn_days": round(warn_s / DAY, 1),
        "expired": expired[:100],
        "expiring": expiring[:100],
        "names": names,
    }
    cut = " (the domain list was cut short)" if truncated else ""
    if name_expired:
        return Outcome(
            Status.FAIL,
            f"Web server names are covered by domains whose DCV has expired: "
            f"{_listed(name_expired)}",
            "fqdn_dcv_expired",
            "Revalidate those domains in CertCentral (Certificates > Domains > the domain > "
            "Submit for validation); certificates for them cannot be issued until DCV "
            "completes again.",
            details,
        )
    if expired:
        return Outcome(
            Status.FAIL,
            f"DCV has expired for {len(expired)} account domain{'s' if len(expired) > 1 else ''}: "
            f"{_listed(expired)}",
            "dcv_expired",
            "Revalidate the domains you still use in CertCentral (Certificates > Domains), "
            "and deactivate the ones you do not.",
            details,
        )
    if uncovered:
        return Outcome(
            Status.WARN,
            f"Web server names not prevalidated in the account{cut}: {_listed(uncovered)}",
            "fqdn_not_prevalidated",
            "Add and validate the domains in CertCentral (Certificates > Domains > Add "
            "Domain) before automating: DCV otherwise happens at order time, and non-Authkey "
            "accounts hold DV automation requests in 'Approval pending' until it completes.",
            details,
        )
    if expiring:
        return Outcome(
            Status.WARN,
            f"DCV expires soon for: {_listed(expiring)}",
            "dcv_expiring",
            "Revalidate these domains in CertCentral (Certificates > Domains) before the "
            "date, or automated renewals for them will wait for DCV.",
            details,
        )
    if not domains:
        return Outcome(
            Status.WARN,
            "The account has no active domains: every order needs DCV at order time",
            "no_domains",
            "Add and validate your domains in CertCentral (Certificates > Domains > Add "
            "Domain) so automated orders can be issued at once.",
            details,
        )
    covered = (
        f"; {len(fqdns)} web server name{'s' if len(fqdns) != 1 else ''} covered" if fqdns else ""
    )
    return Outcome(
        Status.PASS,
        f"DCV is current for {len(domains)} account domain{'s' if len(domains) != 1 else ''}"
        f"{covered}{cut}",
        "ok",
        "",
        details,
    )


async def run(ctx: AccountContext) -> Outcome:
    try:
        items, truncated = await ctx.client.domains(ctx.budget)
    except ApiError as e:
        return api_failure(e, "the domains (GET /domain)")
    return judge(
        account_domains(items), ctx.fqdns, ctx.config.certcentral.expiry_warn, ctx.now, truncated
    )
