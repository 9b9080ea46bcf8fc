"""agent.net.dns: every classification from a real DNS server on loopback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.net.dns import nameservers_for, parse_resolv_conf, resolve_host
from tests.lab.dns import DnsMode, DnsServer
from tests.lab.netns import assert_netns_isolated

ZONE = {"acme.digicert.com": ["127.0.0.2", "::1"], "daas.digicert.com": ["127.0.0.2"]}
NOWHERE = Path("/nonexistent/resolv.conf")


async def test_answers_a_and_aaaa_with_timings() -> None:
    async with DnsServer(ZONE, "127.0.0.53", 0) as server:
        ns = nameservers_for([f"127.0.0.53:{server.port}"], NOWHERE)
        result = await resolve_host("acme.digicert.com", ns, 1.0)
    assert result.error is None
    assert result.ipv4 == ("127.0.0.2",) and result.ipv6 == ("::1",)
    data = result.to_dict()
    assert data["nameservers_from"] == "[dns] nameservers"
    assert [q["type"] for q in data["queries"]] == ["A", "AAAA"]
    assert all(
        q["ms"] >= 0 and q["nameserver"] == f"127.0.0.53:{server.port}" for q in data["queries"]
    )
    assert {q.rdtype for q in server.queries} == {"A", "AAAA"}


async def test_one_family_missing_is_no_answer_not_an_error() -> None:
    async with DnsServer(ZONE, "127.0.0.53", 0) as server:
        ns = nameservers_for([f"127.0.0.53:{server.port}"], NOWHERE)
        result = await resolve_host("daas.digicert.com", ns, 1.0)
    assert result.error is None and result.ipv6 == ()
    assert [a.error for a in result.answers] == [None, "no_answer"]


@pytest.mark.parametrize(
    ("mode", "word", "text"),
    [
        (DnsMode.NXDOMAIN, "nxdomain", "does not exist"),
        (DnsMode.SERVFAIL, "servfail", "SERVFAIL"),
        (DnsMode.REFUSED, "servfail", "REFUSED"),
    ],
)
async def test_failure_modes(mode: DnsMode, word: str, text: str) -> None:
    async with DnsServer(ZONE, "127.0.0.53", 0) as server:
        server.set("acme.digicert.com", mode=mode)
        ns = nameservers_for([f"127.0.0.53:{server.port}"], NOWHERE)
        result = await resolve_host("acme.digicert.com", ns, 1.0)
    assert result.error == word
    assert text in result.message


async def test_silence_is_a_timeout_within_budget() -> None:
    async with DnsServer(ZONE, "127.0.0.53", 0) as server:
        server.override = DnsMode.SILENCE
        ns = nameservers_for([f"127.0.0.53:{server.port}"], NOWHERE)
        started = time.monotonic()
        result = await resolve_host("acme.digicert.com", ns, 0.4)
        took = time.monotonic() - started
    assert result.error == "timeout"
    assert 0.35 <= took < 0.6


async def test_second_nameserver_answers_when_first_is_silent() -> None:
    async with (
        DnsServer(ZONE, "127.0.0.53", 0) as silent,
        DnsServer(ZONE, "127.0.0.54", 0) as good,
    ):
        silent.override = DnsMode.SILENCE
        ns = nameservers_for([f"127.0.0.53:{silent.port}", f"127.0.0.54:{good.port}"], NOWHERE)
        result = await resolve_host("acme.digicert.com", ns, 1.0)
    assert result.error is None and result.ipv4 == ("127.0.0.2",)


async def test_no_server_listening_is_a_timeout() -> None:
    # dnspython's UDP socket is unconnected, so the ICMP port-unreachable is not seen.
    ns = nameservers_for(["127.0.0.55"], NOWHERE)
    result = await resolve_host("acme.digicert.com", ns, 0.3)
    assert result.error == "timeout"


async def test_nameserver_without_route_is_unreachable() -> None:
    assert_netns_isolated()
    ns = nameservers_for(["10.255.255.53"], NOWHERE)
    result = await resolve_host("acme.digicert.com", ns, 1.0)
    assert result.error == "unreachable"
    assert "10.255.255.53:53" in result.message
    # dnspython's internal name for the server stays out of what people read
    assert "Do53" not in result.message and "@53" not in result.message


async def test_resolv_conf_is_the_fallback(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "# generated\nsearch example.net\noptions ndots:5\n"
        "nameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver bogus\n"
    )
    assert parse_resolv_conf(conf) == (("127.0.0.53", 53), ("fe80::1", 53))
    ns = nameservers_for([], conf)
    assert ns.source == str(conf)
    async with DnsServer(ZONE, "127.0.0.53", 53):
        result = await resolve_host("acme.digicert.com", nameservers_for([], conf), 1.0)
    assert result.ipv4 == ("127.0.0.2",)
    assert result.to_dict()["nameservers_from"] == str(conf)


async def test_no_nameserver_at_all(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("search example.net\n")
    result = await resolve_host("acme.digicert.com", nameservers_for([], conf), 1.0)
    assert result.error == "no_resolver"
    assert str(conf) in result.message
