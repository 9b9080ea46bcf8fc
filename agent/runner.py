"""Runs checks concurrently; owns timeouts, timing and turning exceptions into results."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from agent import checks
from agent.context import CheckContext
from agent.model import CheckResult, Outcome, Status
from agent.redact import redact_obj, redact_text

# Grace beyond the per-check timeout before the runner cancels a check, as a share of the
# timeout (at least 50 ms, at most 1 s): a check that stops at its budget gets to report
# what it found even on a loaded host, and nothing runs longer than timeout + 10%.
TIMEOUT_GRACE_SHARE = 0.1

# Any context a check takes: the host checks' CheckContext or a subclass (the account checks').
C = TypeVar("C", bound=CheckContext)


def timeout_grace(timeout: float) -> float:
    return min(max(timeout * TIMEOUT_GRACE_SHARE, 0.05), 1.0)


# How long a timed-out check gets to unwind after cancellation before it is abandoned.
CANCEL_GRACE = 0.2


def selected(ctx: CheckContext, only: Iterable[str] = ()) -> list[str]:
    """Checks to run in report order: ``only`` when given, else the enabled ones.

    A check named explicitly runs even when ``[agent] checks`` leaves it out: asking
    for it and silently getting an empty report would read as "all clear".
    """
    wanted = set(only) or set(ctx.config.agent.checks)
    return [name for name in checks.available() if name in wanted]


async def run_check(name: str, fn: Callable[[C], Awaitable[Outcome]], ctx: C) -> CheckResult:
    """One check under its timeout; never raises (except cancellation of the caller)."""
    timeout = ctx.timeout
    started = time.perf_counter()
    task: asyncio.Future[Outcome] | None = None
    try:
        # A task rather than wait_for: a check that swallows its cancellation is
        # abandoned after CANCEL_GRACE instead of holding the whole run hostage.
        task = asyncio.ensure_future(fn(ctx))
        done, _ = await asyncio.wait({task}, timeout=timeout + timeout_grace(timeout))
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=CANCEL_GRACE)
            task.add_done_callback(_discard_result)
            outcome = _timed_out(name, timeout, ctx.timeout_key)
        elif task.cancelled():
            # the check cancelled itself (the runner did not): a crash, not a stop signal
            outcome = _crashed(name, asyncio.CancelledError())
        else:
            outcome = task.result()
            if not isinstance(outcome, Outcome):
                raise TypeError(f"check returned {type(outcome).__name__}, not an Outcome")
    except asyncio.CancelledError:
        if task is not None:
            task.cancel()
        raise
    except Exception as exc:  # the boundary: one broken check never stops the others
        outcome = _crashed(name, exc)
    elapsed_ms = (time.perf_counter() - started) * 1000
    secrets = ctx.secrets()
    if secrets or "://" in repr(outcome):
        outcome = Outcome(
            outcome.status,
            redact_text(outcome.summary, secrets),
            outcome.reason,
            redact_text(outcome.remediation, secrets),
            redact_obj(outcome.details, secrets),
        )
    return CheckResult.from_outcome(name, outcome, elapsed_ms)


def _timed_out(name: str, timeout: float, timeout_key: str) -> Outcome:
    return Outcome(
        Status.ERROR,
        f"{name} did not finish within its {timeout:g}s timeout",
        "check_timeout",
        checks.RUNNER_REASONS["check_timeout"].format(timeout_key=timeout_key),
        {"timeout_s": timeout},
    )


def _crashed(name: str, exc: BaseException) -> Outcome:
    return Outcome(
        Status.ERROR,
        f"{name} could not run: {type(exc).__name__}: {exc}".rstrip(": "),
        "check_crashed",
        checks.RUNNER_REASONS["check_crashed"],
        {"exception": type(exc).__name__},
    )


def _discard_result(task: asyncio.Future[Outcome]) -> None:
    """Retrieve an abandoned check's result so asyncio does not log it as lost."""
    if not task.cancelled():
        task.exception()


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
