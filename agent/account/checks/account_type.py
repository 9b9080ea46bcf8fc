"""``account_type``: which kind of CertCentral account this is, and its coverage model.

The words are DigiCert's (prerequisites page, "Identify your account type"). The type is
read from ``GET /account``: ``pricing_model`` "subscription" is a Subscription account,
``cert_central_type`` "enterprise" Enterprise, "reseller" Partner, "retail" Legacy.
"""

from __future__ import annotations

from typing import Any

from agent.account.client import ApiError
from agent.account.common import api_failure, text
from agent.account.context import AccountContext
from agent.model import Outcome, Status

COVERAGE = {
    "Subscription": "12-month subscription per protected asset; no Annual Plans or "
    "Multi-year Plans, and no per-certificate payment at request time",
    "Enterprise": "Annual Plans and Multi-year Plans; up to five user roles",
    "Partner": "Annual Plans and Multi-year Plans; reseller and subaccount management",
    "Legacy": "transitioning to the Subscription model",
}
_BY_CC_TYPE = {"enterprise": "Enterprise", "reseller": "Partner", "retail": "Legacy"}


def account_type(account: dict[str, Any]) -> str | None:
    """Subscription, Enterprise, Partner or Legacy; None when the answer does not say."""
    pricing = account.get("pricing_model")
    if isinstance(pricing, str) and pricing.strip().lower() == "subscription":
        return "Subscription"
    cc_type = account.get("cert_central_type")
    if isinstance(cc_type, str):
        return _BY_CC_TYPE.get(cc_type.strip().lower())
    return None


def judge(account: dict[str, Any]) -> Outcome:
    kind = account_type(account)
    details: dict[str, Any] = {
        "account_id": account.get("id") if isinstance(account.get("id"), int) else None,
        "cert_central_type": text(account.get("cert_central_type"), 40) or None,
        "pricing_model": text(account.get("pricing_model"), 40) or None,
        "account_type": kind,
    }
    if kind is None:
        return Outcome(
            Status.WARN,
            "The account type could not be determined (cert_central_type "
            f"{details['cert_central_type']!r}, pricing_model {details['pricing_model']!r})",
            "account_type_unknown",
            "Look at the CertCentral menu: 'Shop DigiCert Products' means Subscription; "
            "'Request a Certificate' with an Enterprise or Partner logo means that type, "
            "without a suffix Legacy.",
            details,
        )
    details["coverage"] = COVERAGE[kind]
    return Outcome(
        Status.PASS,
        f"{kind} account: {COVERAGE[kind]}",
        "ok",
        "",
        details,
    )


async def run(ctx: AccountContext) -> Outcome:
    try:
        account = await ctx.client.get("/account", ctx.budget)
    except ApiError as e:
        return api_failure(e, "the account (GET /account)")
    return judge(account)
