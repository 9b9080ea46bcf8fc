"""The runner: concurrency, per-check timeouts, and the exception boundary.

The checks here are fakes that sleep, hang or raise: the runner is the unit under test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from agent import checks, runner
from agent.account.client import CertCentral
from agent.account.context import AccountContext
from agent.config import AgentConfig, CertCentralConfig, Config, ProxyConfig
from agent.context import CheckContext
from agent.model import CheckResult, Outcome, Status

Fake = Callable[[CheckContext], Awaitable[Outcome]]


def ok(summary: str = "fine", delay: float = 0.0) -> Fake:
    async def run(ctx: CheckContext) -> Outcome:
        await asyncio.sleep(delay)
        return Outcome(Status.PASS, summary, "ok")

    return run


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Fake]]:
    """Register fake checks: fill the returned dict before running."""
    registry: dict[str, Fake] = {}
    # MODULES gives the names and their order; load() hands out the fakes.
    monkeypatch.setattr(checks, "MODULES", registry)
    monkeypatch.setattr(checks, "load", lambda name: registry[name])
    yield registry


def ctx_for(names: list[str], timeout: float = 5.0, proxy: str | None = None) -> CheckContext:
    cfg = Config(
        agent=AgentConfig(timeout=timeout, checks=tuple(names)), proxy=ProxyConfig(url=proxy)
    )
    return CheckContext(cfg)


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


async def test_checks_run_concurrently(fakes: dict[str, Fake]) -> None:
    delays = {"a": 0.3, "b": 0.4, "c": 0.3, "d": 0.5}
    for name, delay in delays.items():
        fakes[name] = ok(delay=delay)
    started = time.perf_counter()
    results = await runner.run_checks(ctx_for(list(delays)))
    wall = time.perf_counter() - started
    assert [r.status for r in results] == [Status.PASS] * 4
    # tracks the slowest (0.5 s), nowhere near the sum (1.5 s)
    assert 0.5 <= wall < 1.0
    # each result carries its own duration
    for r in results:
        assert delays[r.name] * 1000 <= r.duration_ms < delays[r.name] * 1000 + 300


async def test_results_keep_the_registration_order(fakes: dict[str, Fake]) -> None:
    fakes["slow"] = ok(delay=0.2)
    fakes["fast"] = ok()
    results = await runner.run_checks(ctx_for(["fast", "slow"]))
    assert [r.name for r in results] == ["slow", "fast"]


async def test_a_raising_check_becomes_an_error_and_the_others_are_unaffected(
    fakes: dict[str, Fake],
) -> None:
    async def broken(ctx: CheckContext) -> Outcome:
        await asyncio.sleep(0.05)
        raise ValueError("disk on fire")

    fakes["before"] = ok("first fine", delay=0.1)
    fakes["broken"] = broken
    fakes["after"] = ok("last fine", delay=0.1)
    results = by_name(await runner.run_checks(ctx_for(["before", "broken", "after"])))
    crashed = results["broken"]
    assert (crashed.status, crashed.reason) == (Status.ERROR, "check_crashed")
    assert crashed.summary == "broken could not run: ValueError: disk on fire"
    assert crashed.details == {"exception": "ValueError"}
    assert crashed.remediation
    assert (results["before"].status, results["before"].summary) == (Status.PASS, "first fine")
    assert (results["after"].status, results["after"].summary) == (Status.PASS, "last fine")


async def test_a_check_that_raises_immediately(fakes: dict[str, Fake]) -> None:
    def not_even_async(ctx: CheckContext) -> Awaitable[Outcome]:
        raise KeyError("missing")

    fakes["sync"] = not_even_async
    fakes["fine"] = ok()
    results = by_name(await runner.run_checks(ctx_for(["sync", "fine"])))
    assert results["sync"].reason == "check_crashed"
    assert "KeyError" in results["sync"].summary
    assert results["fine"].status is Status.PASS


async def test_a_wrong_return_type_is_a_crash(fakes: dict[str, Fake]) -> None:
    async def sloppy(ctx: CheckContext) -> Outcome:
        return "pass"  # type: ignore[return-value]

    fakes["sloppy"] = sloppy
    [result] = await runner.run_checks(ctx_for(["sloppy"]))
    assert result.reason == "check_crashed"
    assert "returned str, not an Outcome" in result.summary


async def test_a_hanging_check_times_out(fakes: dict[str, Fake]) -> None:
    async def hang(ctx: CheckContext) -> Outcome:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    fakes["hang"] = hang
    fakes["fine"] = ok(delay=0.1)
    timeout = 0.3
    started = time.perf_counter()
    results = by_name(await runner.run_checks(ctx_for(["hang", "fine"], timeout=timeout)))
    wall = time.perf_counter() - started
    hung = results["hang"]
    assert (hung.status, hung.reason) == (Status.ERROR, "check_timeout")
    assert hung.summary == "hang did not finish within its 0.3s timeout"
    assert hung.details == {"timeout_s": timeout}
    assert "raise [agent] timeout" in hung.remediation
    assert timeout <= wall < timeout + runner.timeout_grace(timeout) + 0.4
    assert results["fine"].status is Status.PASS


async def test_an_account_check_timing_out_names_its_own_setting() -> None:
    """The account checks are bounded by [certcentral] timeout, not [agent] timeout."""

    async def hang(ctx: AccountContext) -> Outcome:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    cfg = Config(certcentral=CertCentralConfig(timeout=0.2))
    ctx = AccountContext(cfg, client=CertCentral(cfg.certcentral, "k" * 32))
    result = await runner.run_check("api_key", hang, ctx)
    assert (result.reason, result.details) == ("check_timeout", {"timeout_s": 0.2})
    assert "raise [certcentral] timeout" in result.remediation
    assert "[agent]" not in result.remediation


async def test_a_check_swallowing_its_cancellation_is_abandoned(fakes: dict[str, Fake]) -> None:
    async def stubborn(ctx: CheckContext) -> Outcome:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(3)  # ignores the cancellation for a long while
        return Outcome(Status.PASS, "too late", "ok")

    fakes["stubborn"] = stubborn
    timeout = 0.2
    started = time.perf_counter()
    [result] = await runner.run_checks(ctx_for(["stubborn"], timeout=timeout))
    wall = time.perf_counter() - started
    assert result.reason == "check_timeout"
    assert wall < timeout + runner.timeout_grace(timeout) + runner.CANCEL_GRACE + 0.5


async def test_a_timeout_error_inside_a_check_is_a_crash_not_a_timeout(
    fakes: dict[str, Fake],
) -> None:
    async def inner_timeout(ctx: CheckContext) -> Outcome:
        raise TimeoutError("the check's own socket timed out")

    fakes["inner"] = inner_timeout
    [result] = await runner.run_checks(ctx_for(["inner"], timeout=5))
    assert result.reason == "check_crashed"
    assert "TimeoutError: the check's own socket timed out" in result.summary


async def test_a_check_cancelling_itself_does_not_stop_the_run(fakes: dict[str, Fake]) -> None:
    async def self_cancel(ctx: CheckContext) -> Outcome:
        raise asyncio.CancelledError

    fakes["self_cancel"] = self_cancel
    fakes["fine"] = ok(delay=0.05)
    results = by_name(await runner.run_checks(ctx_for(["self_cancel", "fine"])))
    assert results["self_cancel"].reason == "check_crashed"
    assert "CancelledError" in results["self_cancel"].summary
    assert results["fine"].status is Status.PASS


async def test_cancelling_the_run_cancels_the_checks(fakes: dict[str, Fake]) -> None:
    cancelled = asyncio.Event()

    async def long(ctx: CheckContext) -> Outcome:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    fakes["long"] = long
    task = asyncio.ensure_future(runner.run_checks(ctx_for(["long"])))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(cancelled.wait(), 1)


async def test_secrets_in_an_exception_are_redacted(fakes: dict[str, Fake]) -> None:
    proxy = "http://ops:pr0xy-s3cret@127.0.0.1:3128"

    async def leaky(ctx: CheckContext) -> Outcome:
        raise ConnectionError(f"via {proxy} failed; password was pr0xy-s3cret")

    async def leaky_outcome(ctx: CheckContext) -> Outcome:
        return Outcome(
            Status.FAIL,
            f"proxy {proxy} refused",
            "proxy_refused",
            "check pr0xy-s3cret",
            {"proxy": proxy, "tried": [proxy, {"auth": "Bearer abc.def-123"}]},
        )

    fakes["leaky"] = leaky
    fakes["leaky_outcome"] = leaky_outcome
    results = await runner.run_checks(ctx_for(["leaky", "leaky_outcome"], proxy=proxy))
    for r in results:
        assert "pr0xy-s3cret" not in repr(r.to_dict())
        assert "abc.def-123" not in repr(r.to_dict())
    crashed, failed = results
    assert crashed.summary == (
        "leaky could not run: ConnectionError: via http://ops:***@127.0.0.1:3128 failed; "
        "password was ***"
    )
    assert failed.details["proxy"] == "http://ops:***@127.0.0.1:3128"
    assert failed.details["tried"][1] == {"auth": "Bearer ***"}


async def test_a_check_that_cannot_be_loaded_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(checks.MODULES, "ghost", "agent.checks.does_not_exist")
    results = by_name(await runner.run_checks(ctx_for(["privileges", "ghost"])))
    assert results["ghost"].reason == "check_crashed"
    assert "could not be loaded: ModuleNotFoundError" in results["ghost"].summary
    assert results["privileges"].status is not Status.ERROR


def test_selected_follows_config_and_only(fakes: dict[str, Fake]) -> None:
    for name in ("a", "b", "c"):
        fakes[name] = ok()
    ctx = ctx_for(["c", "a"])
    assert runner.selected(ctx) == ["a", "c"]
    assert runner.selected(ctx, ["c"]) == ["c"]
    # asking by name runs a check the config leaves out, rather than an empty "all clear"
    assert runner.selected(ctx, ["b"]) == ["b"]
