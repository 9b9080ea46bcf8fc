"""The CertCentral client against the lab: pacing to the per-key limits, 429 and
Retry-After, paging, bounds on answers, the proxy, and where the key goes."""

from __future__ import annotations

import time
from email.utils import formatdate
from pathlib import Path

import pytest

from agent.account.client import ApiError, CertCentral, retry_after
from agent.account.pacing import CERTCENTRAL_LIMITS, Pacer
from agent.config import CertCentralConfig, parse_section
from tests.accountutil import certcentral_table, write_key
from tests.lab.base import LabThread
from tests.lab.certcentral import KEYS, LIMITS, CertCentralLab, domain
from tests.lab.proxy import ConnectProxy


def client(lab: CertCentralLab, tmp: Path, key: str = KEYS["ready"], **kw: object) -> CertCentral:
    cfg = certcentral_section_(certcentral_table(lab, write_key(tmp, key)))
    return CertCentral(cfg, key, **kw)  # type: ignore[arg-type]


def max_in_window(times: list[float], span: float) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - span:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_the_client_paces_to_the_documented_limits() -> None:
    assert CERTCENTRAL_LIMITS == LIMITS == ((100, 5.0), (1000, 180.0))


async def test_paging_a_large_domain_list_never_bursts_past_100_per_5s(
    certcentral_lab: CertCentralLab, tmp_path: Path
) -> None:
    """120 pages: the first 100 go at once, the rest wait for the window; no 429 at all."""
    lab = certcentral_lab
    lab.page_max = 5
    lab.accounts[KEYS["ready"]].domains = [domain(i, f"d{i}.example.com", 100) for i in range(600)]
    c = client(lab, tmp_path)
    started = time.monotonic()
    try:
        items, cut = await c.domains(budget=30)
    finally:
        await c.close()
    assert len(items) == 600 and not cut
    assert {d["name"] for d in items} == {f"d{i}.example.com" for i in range(600)}
    arrivals = [r.at for r in lab.requests if r.path.endswith("/domain")]
    assert len(arrivals) == 120
    assert max_in_window(arrivals, 5.0) <= 100
    assert c.stats.rate_limited == 0
    assert time.monotonic() - started >= 5.0  # it really waited for the window
    offsets = [int(r.query["offset"]) for r in lab.requests if r.path.endswith("/domain")]
    assert offsets == list(range(0, 600, 5))


async def test_429_is_honoured_with_its_retry_after(
    certcentral_lab: CertCentralLab, tmp_path: Path
) -> None:
    """Another client filled the key's window: the lab answers 429 Retry-After: 1; the
    client sends nothing until it has passed, then gets its answer."""
    lab = certcentral_lab
    lab.limits = ((3, 1.0),)
    lab.burn(KEYS["ready"], 3)
    c = client(lab, tmp_path)
    try:
        me = await c.get("/user/me", budget=5)
    finally:
        await c.close()
    assert me["username"] == "ada.admin"
    assert c.stats.rate_limited == 1 and c.stats.requests == 2
    first, second = [r.at for r in lab.requests if r.key == KEYS["ready"]]
    assert second - first >= 1.0  # Retry-After: 1 was honoured


async def test_429_beyond_the_budget_is_reported_not_retried(
    certcentral_lab: CertCentralLab, tmp_path: Path
) -> None:
    lab = certcentral_lab
    lab.limits = ((3, 30.0),)
    lab.burn(KEYS["ready"], 3)
    c = client(lab, tmp_path)
    try:
        with pytest.raises(ApiError) as info:
            await c.get("/user/me", budget=2)
        # the block holds for the next request too: nothing is sent while it lasts
        with pytest.raises(ApiError) as again:
            await c.get("/account", budget=2)
    finally:
        await c.close()
    assert info.value.kind == "rate_limited" and info.value.status == 429
    assert info.value.code == "request_limit_exceeded" and info.value.retry_after == 30
    assert again.value.kind == "rate_limited" and again.value.status is None
    assert len([r for r in lab.requests if r.key == KEYS["ready"]]) == 1


async def test_pacer_refuses_to_wait_past_the_budget() -> None:
    now = [100.0]
    p = Pacer(((2, 10.0),), clock=lambda: now[0])
    await p.acquire(1)
    await p.acquire(1)
    with pytest.raises(Exception, match="rate limit"):
        await p.acquire(1)
    now[0] += 10.3
    await p.acquire(1)


def test_retry_after_forms() -> None:
    assert retry_after("7") == 7
    assert retry_after("100000") == 300  # bounded
    assert retry_after(None) is None and retry_after("soon") is None
    when = retry_after(formatdate(time.time() + 30, usegmt=True))
    assert when is not None and 28 <= when <= 31


async def test_answers_larger_than_the_bound_are_refused(
    certcentral_lab: CertCentralLab, tmp_path: Path
) -> None:
    lab = certcentral_lab
    lab.accounts[KEYS["ready"]].domains = [domain(i, f"d{i}.example.com", 100) for i in range(300)]
    c = client(lab, tmp_path, max_answer=64 * 1024)
    try:
        with pytest.raises(ApiError) as info:
            await c.domains(budget=10)
    finally:
        await c.close()
    assert info.value.kind == "bad_answer" and "more than 65536 bytes" in info.value.message


async def test_the_listing_stops_at_max_pages(
    certcentral_lab: CertCentralLab, tmp_path: Path
) -> None:
    lab = certcentral_lab
    lab.page_max = 2
    lab.accounts[KEYS["ready"]].domains = [domain(i, f"d{i}.example.com", 100) for i in range(20)]
    c = client(lab, tmp_path, max_pages=3)
    try:
        items, cut = await c.domains(budget=10)
    finally:
        await c.close()
    assert len(items) == 6 and cut


async def test_through_the_configured_proxy_with_credentials(
    certcentral_lab: CertCentralLab, lab_thread: LabThread, tmp_path: Path
) -> None:
    lab = certcentral_lab
    proxy = lab_thread.start(
        ConnectProxy(
            "127.0.0.4",
            0,
            upstreams={"www.digicert.com": (lab.host, lab.port)},
            auth=("ops", "pr0xy-s3cret"),
            allowed_ports=(lab.port,),
        )
    )
    table = certcentral_table(lab, write_key(tmp_path, KEYS["ready"]))
    table["base_url"] = f"https://www.digicert.com:{lab.port}/services/v2"
    c = CertCentral(
        certcentral_section_(table),
        KEYS["ready"],
        proxy_url=f"http://ops:pr0xy-s3cret@127.0.0.4:{proxy.port}",
    )
    try:
        me = await c.get("/user/me", budget=5)
    finally:
        await c.close()
    assert me["account_id"] == 5137
    assert [r.target for r in proxy.requests] == [f"www.digicert.com:{lab.port}"]
    assert proxy.requests[0].status == 200
    assert lab.requests[-1].key == KEYS["ready"]


async def test_concurrent_checks_share_one_request(
    certcentral_lab: CertCentralLab, tmp_path: Path
) -> None:
    import asyncio

    c = client(certcentral_lab, tmp_path)
    try:
        a, b = await asyncio.gather(c.get("/user/me", 5), c.get("/user/me", 5))
    finally:
        await c.close()
    assert a == b and c.stats.requests == 1


def certcentral_section_(table: dict[str, object]) -> CertCentralConfig:
    cfg: CertCentralConfig = parse_section("certcentral", table)
    return cfg
