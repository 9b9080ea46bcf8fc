"""The account checks: one module each, ``async def run(ctx: AccountContext) -> Outcome``."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable

from agent.account.context import AccountContext
from agent.model import Outcome

AccountCheckFn = Callable[[AccountContext], Awaitable[Outcome]]

# Order is the order of the table and the report.
MODULES: dict[str, str] = {
    "api_key": "agent.account.checks.api_key",
    "account_type": "agent.account.checks.account_type",
    "balance": "agent.account.checks.balance",
    "organizations": "agent.account.checks.organizations",
    "domains": "agent.account.checks.domains",
    "automation": "agent.account.checks.automation",
}


def available() -> tuple[str, ...]:
    return tuple(MODULES)


def load(name: str) -> AccountCheckFn:
    fn: AccountCheckFn = importlib.import_module(MODULES[name]).run
    return fn
