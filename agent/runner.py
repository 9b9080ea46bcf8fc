"""Runs checks concurrently; owns timeouts, timing and turning exceptions into results."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from agent import checks
from agent.context import CheckContext
from agent.model import CheckResult, Outcome, Status
from agent.redact import redact_obj, redact_text

# Grace beyond the per-check timeout before the runner cancels a check: a check that
# splits its budget gets to report what it found instead of being cut off.
TIMEOUT_GRACE = 0.05


def selected(ctx: CheckContext, only: Iterable[str] = ()) -> list[str]:
    """Enabled checks in report order, narrowed to ``only`` when given."""
    wanted = set(only)
    return [
        name
        for name in checks.available()
        if name in ctx.config.agent.checks and (not wanted or name in wanted)
    ]


async def run_check(name: str, fn: checks.CheckFn, ctx: CheckContext) -> CheckResult:
    """One check under its timeout; never raises (except cancellation of the caller)."""
    timeout = ctx.timeout
    started = time.perf_counter()
    try:
        outcome = await asyncio.wait_for(fn(ctx), timeout + TIMEOUT_GRACE)
        if not isinstance(outcome, Outcome):
            raise TypeError(f"check returned {type(outcome).__name__}, not an Outcome")
    except TimeoutError:
        outcome = Outcome(
            Status.ERROR,
            f"{name} did not finish within its {timeout:g}s timeout",
            "check_timeout",
            "Something the check waits on is hanging; raise [agent] timeout or look at the "
            "details of the other checks for the endpoint that does not answer.",
        )
    except Exception as exc:  # the boundary: one broken check never stops the others
        outcome = Outcome(
            Status.ERROR,
            f"{name} could not run: {type(exc).__name__}: {exc}",
            "check_crashed",
            "This is a bug in acme-preflight or an unexpected host condition; "
            "please report it with the output of 'acme-preflight check --json'.",
            {"exception": type(exc).__name__},
        )
    elapsed_ms = (time.perf_counter() - started) * 1000
    secrets = ctx.config.secrets()
    if secrets or "://" in repr(outcome):
        outcome = Outcome(
            outcome.status,
            redact_text(outcome.summary, secrets),
            outcome.reason,
            redact_text(outcome.remediation, secrets),
            redact_obj(outcome.details, secrets),
        )
    return CheckResult.from_outcome(name, outcome, elapsed_ms)


async def run_checks(ctx: CheckContext, only: Iterable[str] = ()) -> list[CheckResult]:
    """All selected checks at once; wall time tracks the slowest, not the sum."""
    names = selected(ctx, only)
    results = await asyncio.gather(*(_load_and_run(name, ctx) for name in names))
    return list(results)


async def _load_and_run(name: str, ctx: CheckContext) -> CheckResult:
    try:
        fn = checks.load(name)
    except Exception as exc:
        return CheckResult.from_outcome(
            name,
            Outcome(
                Status.ERROR,
                f"{name} could not be loaded: {type(exc).__name__}: {exc}",
                "check_crashed",
                "The installation looks broken; reinstall acme-preflight.",
            ),
            0.0,
        )
    return await run_check(name, fn, ctx)
