"""clock_skew against the lab's Date header (the lab server's clock can be shifted)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent import config
from agent.checks import clock_skew
from agent.context import CheckContext
from agent.model import Outcome, Status
from tests.lab.digicert import DigicertLab
from tests.lab.pki import LabPki


async def check(lab: DigicertLab, **sections: Any) -> Outcome:
    return await clock_skew.run(CheckContext(config.load(lab.write_config(**sections))))


async def test_in_sync_passes(digicert_lab: DigicertLab) -> None:
    out = await check(digicert_lab)
    assert (out.status, out.reason) == (Status.PASS, "ok"), out.summary
    assert abs(out.details["skew_s"]) < 2
    assert out.details["date_header"].endswith("GMT")


@pytest.mark.parametrize(
    ("offset", "status", "reason", "words"),
    [
        (150, Status.WARN, "clock_behind", "2.5 min behind"),
        (-150, Status.WARN, "clock_ahead", "2.5 min ahead of"),
        (400, Status.FAIL, "clock_behind", "more than 300 s"),
        (-400, Status.FAIL, "clock_ahead", "more than 300 s"),
        (30, Status.PASS, "ok", "behind"),
    ],
)
async def test_default_thresholds(
    digicert_lab: DigicertLab, offset: float, status: Status, reason: str, words: str
) -> None:
    digicert_lab.https.behaviour.clock_offset = offset
    out = await check(digicert_lab)
    assert (out.status, out.reason) == (status, reason), out.summary
    assert words in out.summary
    assert out.details["skew_s"] == pytest.approx(-offset, abs=1.5)
    if status is not Status.PASS:
        assert "NTP" in out.remediation


async def test_thresholds_are_configurable(digicert_lab: DigicertLab) -> None:
    digicert_lab.https.behaviour.clock_offset = 20
    out = await check(digicert_lab, clock_skew={"warn": "10s", "fail": "15s"})
    assert (out.status, out.reason) == (Status.FAIL, "clock_behind")
    digicert_lab.https.behaviour.clock_offset = 12
    out = await check(digicert_lab, clock_skew={"warn": "10s", "fail": "15s"})
    assert out.status is Status.WARN


async def test_skips_when_the_endpoint_is_unreachable(digicert_lab: DigicertLab) -> None:
    digicert_lab.dns.set("acme.digicert.com", mode="nxdomain")
    out = await check(digicert_lab)
    assert (out.status, out.reason) == (Status.SKIP, "endpoint_unreachable")
    assert "does not exist" in out.summary and "outbound_https" in out.remediation


async def test_an_error_status_still_carries_a_date(digicert_lab: DigicertLab) -> None:
    digicert_lab.https.behaviour.status = 503
    digicert_lab.https.behaviour.clock_offset = -400
    out = await check(digicert_lab)
    assert (out.status, out.reason) == (Status.FAIL, "clock_ahead")


async def test_through_the_proxy(digicert_lab: DigicertLab) -> None:
    sensor = digicert_lab.start_sensor()
    digicert_lab.https.behaviour.clock_offset = 120
    out = await check(digicert_lab, proxy={"url": sensor.url})
    assert out.reason == "clock_behind"
    assert out.details["proxy"]["source"] == "config"


@pytest.fixture
async def dateless(lab_pki: LabPki) -> AsyncIterator[str]:
    """An HTTPS server for acme.digicert.com whose answers carry no Date header."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    lab_pki.valid.configure_cert(ctx)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.12", 443, ssl=ctx)
    async with server:
        yield "127.0.0.12"


async def test_no_date_header_skips(digicert_lab: DigicertLab, dateless: str) -> None:
    digicert_lab.dns.set("acme.digicert.com", [dateless])
    out = await check(digicert_lab)
    assert (out.status, out.reason) == (Status.SKIP, "no_date_header")


# ------------------------------------------------------------------ judge, on facts alone


def test_judge_on_facts() -> None:
    limits = config.ClockSkewConfig(warn=60, fail=300)
    date = "Tue, 01 Dec 2026 12:00:00 GMT"
    server = 1796126400.0  # that Date as a timestamp

    def at(offset: float) -> Outcome:
        sent = server + 0.5 + offset - 0.01
        facts = clock_skew.Facts("u", "acme.digicert.com", {}, True, date, sent, sent + 0.02)
        return clock_skew.judge(facts, limits)

    assert clock_skew.parse_date(date) == server
    assert at(0).reason == "ok"
    assert (at(90).status, at(90).reason) == (Status.WARN, "clock_ahead")
    assert (at(-400).status, at(-400).reason) == (Status.FAIL, "clock_behind")
    assert at(-400).remediation.startswith("Synchronise this host's clock with NTP")
    none = clock_skew.judge(clock_skew.Facts("u", "h", {}, True, None, 1.0, 1.1), limits)
    assert (none.status, none.reason) == (Status.SKIP, "no_date_header")
    down = clock_skew.judge(
        clock_skew.Facts("u", "h", {}, False, failure="x (tcp_timeout)"), limits
    )
    assert (down.status, down.reason) == (Status.SKIP, "endpoint_unreachable")
    assert down.summary == "Could not read the clock of u: x (tcp_timeout)"
