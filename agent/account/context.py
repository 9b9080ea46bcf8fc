"""What every account check receives: the host checks' context plus the API client."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from agent.account.client import CertCentral
from agent.context import BUDGET_SHARE, CheckContext


@dataclass(frozen=True)
class AccountContext(CheckContext):
    """``async def run(ctx: AccountContext) -> Outcome``, run by agent/runner.py.

    ``fqdns``: the web server names to match against the account's domains (the fleet's
    names in the collector, ``--fqdn`` in the CLI). ``now``: the wall clock the expiry
    judgements use (a parameter, so tests can move it).
    """

    client: CertCentral = field(kw_only=True)
    fqdns: tuple[str, ...] = ()
    now: float = field(default_factory=time.time)

    @property
    def timeout(self) -> float:
        return self.config.certcentral.timeout

    @property
    def timeout_key(self) -> str:
        return "[certcentral] timeout"

    @property
    def budget(self) -> float:
        return self.timeout * BUDGET_SHARE

    def secrets(self) -> tuple[str, ...]:
        return (*self.config.secrets(), self.client.api_key)
