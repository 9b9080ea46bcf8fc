"""One run of the account checks, as an ``acme-preflight.account/1`` report."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from agent.account import checks
from agent.account.client import CertCentral
from agent.account.context import AccountContext
from agent.account.pacing import Pacer
from agent.config import Config
from agent.model import AgentIdentity, CheckResult, worst
from agent.redact import redact_obj
from agent.report import utc_now
from agent.runner import run_check

SCHEMA_ID = "acme-preflight.account/1"
MAX_FQDNS = 10_000  # names joined with the account's domains in one run


def selected(only: Iterable[str] = ()) -> list[str]:
    wanted = set(only)
    return [n for n in checks.available() if not wanted or n in wanted]


async def run_account(
    config: Config,
    api_key: str,
    identity: AgentIdentity,
    fqdns: Sequence[str] = (),
    only: Iterable[str] = (),
    pacer: Pacer | None = None,
) -> dict[str, Any]:
    """Run the account checks at once (the runner owns timeouts and exceptions)."""
    names = tuple(dict.fromkeys(n.strip().rstrip(".").lower() for n in fqdns if n.strip()))
    names = names[:MAX_FQDNS]
    client = CertCentral(config.certcentral, api_key, config.proxy.url, pacer)
    ctx = AccountContext(config, client=client, fqdns=names)
    started = utc_now()
    try:
        results = await asyncio.gather(
            *(run_check(name, checks.load(name), ctx) for name in selected(only))
        )
    finally:
        await client.close()
    report = build(list(results), identity, started, utc_now(), config, names)
    report["api"]["requests"] = client.stats.requests
    report["api"]["rate_limited"] = client.stats.rate_limited
    report["api"]["paced_s"] = round(client.pacer.waited_s, 3)
    # the runner scrubbed each result; this covers what is around them
    scrubbed: dict[str, Any] = redact_obj(report, ctx.secrets())
    return scrubbed


def build(
    results: Sequence[CheckResult],
    identity: AgentIdentity,
    started_at: str,
    finished_at: str,
    config: Config,
    fqdns: Sequence[str],
) -> dict[str, Any]:
    return {
        "schema": SCHEMA_ID,
        "report_id": str(uuid.uuid4()),
        "agent": identity.to_dict(),
        "started_at": started_at,
        "finished_at": finished_at,
        "status": worst([r.status for r in results]).value,
        "api": {
            "base_url": config.certcentral.base_url,
            "automation_url": config.certcentral.automation_url,
        },
        "fqdns": list(fqdns),
        "checks": [r.to_dict() for r in results],
    }
