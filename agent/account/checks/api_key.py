"""``api_key``: CertCentral accepts the key, and its user may set up automation.

DigiCert: "You must have Administrator or Manager access to install and configure
automation clients", and "Users restricted to single sign-on (SSO) authentication may be
unable to generate the required automation credentials".
"""

from __future__ import annotations

from typing import Any

from agent.account.client import ApiError
from agent.account.common import api_failure, text
from agent.account.context import AccountContext
from agent.model import Outcome, Status

# CertCentral's access role ids (GET /user/me access_roles).
ROLES = {
    1: "Administrator",
    2: "Limited User",
    3: "Finance Manager",
    4: "Manager",
    5: "Standard User",
}
AUTOMATION_ROLES = frozenset({"Administrator", "Manager"})


def role_names(me: dict[str, Any]) -> list[str]:
    """The user's role names (by id where the name is missing); empty when unknown."""
    out: list[str] = []
    roles = me.get("access_roles")
    if not isinstance(roles, list):
        return out
    for r in roles:
        if not isinstance(r, dict):
            continue
        name = r.get("name")
        rid = r.get("id")
        if isinstance(name, str) and name.strip():
            out.append(text(name, 40))
        elif isinstance(rid, int) and rid in ROLES:
            out.append(ROLES[rid])
    return out


def judge(me: dict[str, Any]) -> Outcome:
    """Pure: the /user/me answer to a result."""
    user = text(me.get("username")) or f"user {text(me.get('id'))}"
    roles = role_names(me)
    details: dict[str, Any] = {
        "user_id": me.get("id") if isinstance(me.get("id"), int) else None,
        "username": text(me.get("username")),
        "account_id": me.get("account_id") if isinstance(me.get("account_id"), int) else None,
        "user_status": text(me.get("status"), 40) or None,
        "roles": roles,
        "is_saml_sso_only": me.get("is_saml_sso_only")
        if isinstance(me.get("is_saml_sso_only"), bool)
        else None,
    }
    status = me.get("status")
    if isinstance(status, str) and status.lower() != "active":
        return Outcome(
            Status.FAIL,
            f"The API key belongs to {user}, whose CertCentral user is {text(status, 40)}, not active",
            "user_inactive",
            "Activate the user in CertCentral (Account > Users) or create the API key as an "
            "active Administrator or Manager.",
            details,
        )
    if not roles:
        return Outcome(
            Status.WARN,
            f"The API key belongs to {user}; CertCentral did not say which role the user has",
            "role_unknown",
            "Check in CertCentral (Account > Users) that the key's user is an Administrator "
            "or Manager.",
            details,
        )
    shown = ", ".join(roles)
    if not AUTOMATION_ROLES & set(roles):
        return Outcome(
            Status.FAIL,
            f"The API key belongs to {user}, whose role is {shown}; automation needs "
            "Administrator or Manager",
            "role_insufficient",
            "Give the user the Administrator or Manager role (Account > Users > Edit), or "
            "create the key as a user who has one.",
            details,
        )
    if details["is_saml_sso_only"]:
        return Outcome(
            Status.WARN,
            f"The API key belongs to {user} ({shown}), who may sign in with SSO only and "
            "may be unable to create automation credentials",
            "sso_only_user",
            "Have a user who may also sign in with a password create the ACME credentials, "
            "or confirm with DigiCert that your account lets SSO-only users create API keys.",
            details,
        )
    return Outcome(
        Status.PASS,
        f"The API key is accepted: {user} ({shown}), account {details['account_id']}",
        "ok",
        "",
        details,
    )


async def run(ctx: AccountContext) -> Outcome:
    try:
        me = await ctx.client.get("/user/me", ctx.budget)
    except ApiError as e:
        if e.kind == "rejected":
            return Outcome(
                Status.FAIL,
                f"CertCentral rejected the API key: {e.message}",
                "api_key_rejected",
                "Create a new API key in CertCentral (Integrations > API Keys) as an "
                "Administrator or Manager, and put it in [certcentral] "
                "api_key_file; check base_url too (EU accounts use certcentral.digicert.eu).",
                {"error": e.to_dict()},
            )
        return api_failure(e, "the key's user (GET /user/me)")
    return judge(me)
