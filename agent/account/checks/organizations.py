"""``organizations``: OV/EV organization validation is complete and not about to expire.

DigiCert: "OV and EV certificates: Require completed organization validation before
automated issuance." Each active organization's validations come from
``GET /organization/{id}/validation``; an OV or EV validation that is not complete, or
whose ``validated_until`` has passed, fails; one expiring within ``[certcentral]
expiry_warn`` warns, naming the organization and the date.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agent.account.client import ApiError
from agent.account.common import DAY, api_failure, days_left, parse_date, text
from agent.account.context import AccountContext
from agent.model import Outcome, Status

MAX_ORGANIZATIONS = 50  # validations are read for at most this many organizations
ORG_TYPES = ("ov", "ev")
COMPLETE = frozenset({"completed", "active", "validated", "approved"})


def _org_items(orgs: dict[str, Any]) -> list[dict[str, Any]]:
    items = orgs.get("organizations")
    if not isinstance(items, list):
        return []
    return [o for o in items if isinstance(o, dict) and o.get("is_active", True) is not False]


def judge(
    orgs: list[tuple[dict[str, Any], list[dict[str, Any]]]], expiry_warn: float, now: float
) -> Outcome:
    """Pure: each organization with its validations to one result."""
    warn_days = expiry_warn / DAY
    failed: list[str] = []
    expiring: list[str] = []
    rows: list[dict[str, Any]] = []
    for org, validations in orgs:
        name = text(org.get("name"), 80) or f"organization {text(org.get('id'))}"
        by_type = {str(v.get("type", "")).lower(): v for v in validations if isinstance(v, dict)}
        for vtype in ORG_TYPES:
            v = by_type.get(vtype)
            row: dict[str, Any] = {"organization": name, "id": org.get("id"), "type": vtype}
            if v is None:
                row["state"] = "missing"
                failed.append(f"{name}: no {vtype.upper()} validation")
                rows.append(row)
                continue
            status = text(v.get("status"), 40).lower()
            until = parse_date(v.get("validated_until"))
            row |= {
                "status": status or None,
                "validated_until": until.isoformat() if until else None,
            }
            if status and status not in COMPLETE:
                row["state"] = "incomplete"
                failed.append(f"{name}: {vtype.upper()} validation is {status}")
            elif until is None:
                row["state"] = "unknown"
                failed.append(f"{name}: {vtype.upper()} validation has no validated_until date")
            elif (left := days_left(until, now)) < 0:
                row["state"] = "expired"
                failed.append(f"{name}: {vtype.upper()} validation expired on {until.isoformat()}")
            elif left <= warn_days:
                row["state"] = "expiring"
                expiring.append(
                    f"{name}: {vtype.upper()} validation expires on {until.isoformat()} "
                    f"(in {left} days)"
                )
            else:
                row["state"] = "valid"
            rows.append(row)
    details: dict[str, Any] = {"organizations": rows, "expiry_warn_days": round(warn_days, 1)}
    if not orgs:
        return Outcome(
            Status.WARN,
            "The account has no active organizations: OV and EV certificates cannot be issued",
            "no_organizations",
            "Add and validate an organization in CertCentral (Certificates > Organizations) "
            "if you need OV or EV certificates; DV automation does not need one.",
            details,
        )
    if failed:
        return Outcome(
            Status.FAIL,
            "Organization validation is not complete: "
            + "; ".join(failed[:5])
            + (f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""),
            "org_validation_incomplete",
            "Submit the organization for OV/EV validation in CertCentral (Certificates > "
            "Organizations > the organization > Submit for validation) and complete it; "
            "automated OV/EV issuance waits for it.",
            details,
        )
    if expiring:
        return Outcome(
            Status.WARN,
            "Organization validation expires soon: " + "; ".join(expiring[:5]),
            "org_validation_expiring",
            "Revalidate the organization in CertCentral before the date, or OV/EV "
            "renewals will stop.",
            details,
        )
    return Outcome(
        Status.PASS,
        f"OV and EV validation is complete for {len(orgs)} organization"
        f"{'s' if len(orgs) != 1 else ''}",
        "ok",
        "",
        details,
    )


async def run(ctx: AccountContext) -> Outcome:
    try:
        listing = await ctx.client.get("/organization", ctx.budget)
    except ApiError as e:
        return api_failure(e, "the organizations (GET /organization)")
    orgs = [o for o in _org_items(listing) if isinstance(o.get("id"), int)][:MAX_ORGANIZATIONS]
    try:
        answers = await asyncio.gather(
            *(ctx.client.get(f"/organization/{o['id']}/validation", ctx.budget) for o in orgs)
        )
    except ApiError as e:
        return api_failure(e, "an organization's validations (GET /organization/{id}/validation)")
    pairs = []
    for org, answer in zip(orgs, answers, strict=True):
        vals = answer.get("validations")
        pairs.append(
            (org, [v for v in vals if isinstance(v, dict)] if isinstance(vals, list) else [])
        )
    return judge(pairs, ctx.config.certcentral.expiry_warn, ctx.now)
