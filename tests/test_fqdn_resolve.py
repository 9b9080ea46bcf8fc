"""The DNS view against the lab DNS server; the system view in a mount namespace."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from agent.fqdn.resolve import dns_nameservers, dns_view
from tests.fqdn_sysview import run_with_etc, write_etc
from tests.lab.dns import DnsMode, DnsServer

ZONE = {
    "web.example.test": ["127.0.0.7", "::1"],
    "v4only.example.test": ["127.0.0.8"],
    "remote.example.test": ["192.0.2.10"],
}


async def test_dns_view_answers_a_and_aaaa(netns_isolated: None) -> None:
    async with DnsServer(ZONE, "127.0.0.53", 0) as server:
        servers = dns_nameservers([f"127.0.0.53:{server.port}"], Path("/nonexistent"))
        answer = await dns_view("web.example.test", servers, 1.0)
        assert answer.status == "ok"
        assert answer.addresses == ("127.0.0.7", "::1")
        assert answer.extra == {"a": "ok", "aaaa": "ok"}
        v4 = await dns_view("v4only.example.test", servers, 1.0)
        assert v4.addresses == ("127.0.0.8",)
        assert v4.extra == {"a": "ok", "aaaa": "no_answer"}
        assert {q.rdtype for q in server.queried("v4only.example.test")} == {"A", "AAAA"}


@pytest.mark.parametrize(
    ("mode", "status"),
    [
        (DnsMode.NXDOMAIN, "nxdomain"),
        (DnsMode.SERVFAIL, "servfail"),
        (DnsMode.REFUSED, "servfail"),
    ],
)
async def test_dns_view_failures_told_apart(
    mode: DnsMode, status: str, netns_isolated: None
) -> None:
    async with DnsServer(ZONE, "127.0.0.53", 0) as server:
        server.set("web.example.test", mode=mode)
        servers = dns_nameservers([f"127.0.0.53:{server.port}"], Path("/nonexistent"))
        answer = await dns_view("web.example.test", servers, 1.0)
        assert answer.status == status
        assert answer.addresses == ()
        assert answer.detail


async def test_dns_view_no_answer(netns_isolated: None) -> None:
    async with DnsServer({"empty.example.test": []}, "127.0.0.53", 0) as server:
        servers = dns_nameservers([f"127.0.0.53:{server.port}"], Path("/nonexistent"))
        answer = await dns_view("empty.example.test", servers, 1.0)
        assert answer.status == "no_answer"


async def test_dns_view_timeout_is_bounded(netns_isolated: None) -> None:
    async with DnsServer(ZONE, "127.0.0.53", 0) as server:
        server.override = DnsMode.SILENCE
        servers = dns_nameservers([f"127.0.0.53:{server.port}"], Path("/nonexistent"))
        started = time.monotonic()
        answer = await dns_view("web.example.test", servers, 0.4)
        elapsed = time.monotonic() - started
    assert answer.status == "timeout"
    assert elapsed < 1.0


async def test_nameserver_precedence(tmp_path: Path, netns_isolated: None) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.99\n")
    explicit = dns_nameservers(["127.0.0.1:5353", "[::1]:53"], resolv)
    assert explicit.servers == (("127.0.0.1", 5353), ("::1", 53))
    assert explicit.source == "[fqdn] nameservers"
    from_file = dns_nameservers([], resolv)
    assert from_file.servers == (("127.0.0.99", 53),) and from_file.source == str(resolv)
    none = dns_nameservers([], tmp_path / "missing")
    answer = await dns_view("web.example.test", none, 0.5)
    assert answer.status == "no_resolver"


SYSTEM_SCRIPT = """
import asyncio, json, sys, time
from agent.fqdn.resolve import system_view

async def main():
    out = {}
    for name in sys.argv[2:]:
        started = time.monotonic()
        answer = await system_view(name, float(sys.argv[1]))
        out[name] = dict(answer.to_dict(), seconds=time.monotonic() - started)
    print(json.dumps(out))

asyncio.run(main())
"""


async def test_system_view_through_nsswitch(tmp_path: Path, netns_isolated: None) -> None:
    async with DnsServer(ZONE, "127.0.0.53", 53) as server:
        server.set("silent.example.test", ["127.0.0.9"], mode=DnsMode.SILENCE)
        etc = write_etc(
            tmp_path,
            {
                "hosts": "127.0.1.1 hosts-only.example.test\n10.0.0.1 remote.example.test\n",
                "host.conf": "multi off\n",
                "resolv.conf": "nameserver 127.0.0.53\noptions timeout:1 attempts:1\n",
                "nsswitch.conf": "hosts: files dns\n",
            },
        )
        names = [
            "hosts-only.example.test",
            "web.example.test",
            "remote.example.test",
            "missing.example.test",
            "silent.example.test",
        ]
        started = time.monotonic()
        rc, out, err = await run_with_etc(etc, [sys.executable, "-c", SYSTEM_SCRIPT, "0.5", *names])
        wall = time.monotonic() - started
    assert rc == 0, err
    got = json.loads(out)
    assert got["hosts-only.example.test"]["addresses"] == ["127.0.1.1"]
    assert sorted(got["web.example.test"]["addresses"]) == ["127.0.0.7", "::1"]
    # the hosts entry hides what DNS says (192.0.2.10)
    assert got["remote.example.test"]["addresses"] == ["10.0.0.1"]
    assert got["missing.example.test"]["status"] == "not_found"
    assert got["silent.example.test"]["status"] == "timeout"
    assert got["silent.example.test"]["seconds"] < 0.9
    # the abandoned getaddrinfo thread does not hold the process at exit
    assert wall < 5
