"""``balance``: automated renewal has funds to draw on.

DigiCert: "Auto-renew and automated renewal require an account balance. Credit card
payment is not supported for automated renewal." Subscription accounts pay per protected
asset and are skipped. ``[certcentral] container_id`` is passed to ``GET /finance/balance``
on accounts with divisions; ``min_balance`` (0: off) warns below that amount.
"""

from __future__ import annotations

from typing import Any

from agent.account.checks.account_type import account_type
from agent.account.client import ApiError
from agent.account.common import api_failure, text
from agent.account.context import AccountContext
from agent.model import Outcome, Status


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def judge(balance: dict[str, Any], min_balance: float) -> Outcome:
    available = _number(balance.get("total_available_funds"))
    unlimited = balance.get("unlimited_negative_balance") is True
    currency = text(balance.get("currency"), 8) or ""
    details: dict[str, Any] = {
        "balance": _number(balance.get("balance")),
        "currency": currency or None,
        "unpaid_invoice_balance": _number(balance.get("unpaid_invoice_balance")),
        "negative_balance_limit": _number(balance.get("negative_balance_limit")),
        "total_available_funds": available,
        "unlimited_negative_balance": unlimited,
        "min_balance": min_balance,
    }
    if unlimited:
        return Outcome(
            Status.PASS,
            "The account has an unlimited negative balance: automated renewal can be billed",
            "ok",
            "",
            details,
        )
    if available is None:
        return Outcome(
            Status.WARN,
            "CertCentral did not say how much is available for automated renewal",
            "balance_unknown",
            "Check the balance in CertCentral (Finance > Deposit Funds); automated renewal "
            "needs account funds, not a credit card.",
            details,
        )
    amount = f"{available:,.2f} {currency}".strip()
    if available <= 0:
        return Outcome(
            Status.FAIL,
            f"No funds for automated renewal: {amount} available",
            "no_funds",
            "Deposit funds or arrange a purchase order/invoice in CertCentral (Finance > "
            "Deposit Funds); credit cards are not supported for automated renewal.",
            details,
        )
    if min_balance and available < min_balance:
        return Outcome(
            Status.WARN,
            f"Funds for automated renewal are low: {amount} available, below "
            f"[certcentral] min_balance {min_balance:,.2f}",
            "low_funds",
            "Deposit funds in CertCentral (Finance > Deposit Funds) before renewals fail.",
            details,
        )
    return Outcome(Status.PASS, f"{amount} available for automated renewal", "ok", "", details)


async def run(ctx: AccountContext) -> Outcome:
    cc = ctx.config.certcentral
    try:
        account = await ctx.client.get("/account", ctx.budget)
    except ApiError as e:
        return api_failure(e, "the account (GET /account)")
    if account_type(account) == "Subscription":
        return Outcome(
            Status.SKIP,
            "Subscription account: paid per protected asset, no balance needed at request time",
            "subscription_account",
            "",
            {"account_type": "Subscription"},
        )
    params: dict[str, str | int] = {}
    if cc.container_id is not None:
        params["container_id"] = cc.container_id
    try:
        balance = await ctx.client.get("/finance/balance", ctx.budget, **params)
    except ApiError as e:
        return api_failure(e, "the balance (GET /finance/balance)")
    return judge(balance, cc.min_balance)
