"""digicert_ip against the lab: the IP directly, and whether DNS agrees with it."""

from __future__ import annotations

import json
import time
from typing import Any

from agent import config
from agent.checks import digicert_ip
from agent.context import CheckContext
from agent.model import Outcome, Status
from agent.net.dns import DnsAnswer, DnsResult, Nameservers
from agent.net.tcp import TcpResult
from agent.runner import run_check
from tests.lab.digicert import DigicertLab
from tests.lab.endpoints import BlackholeEndpoint


def ctx(lab: DigicertLab, **sections: Any) -> CheckContext:
    return CheckContext(config.load(lab.write_config(**sections)))


async def check(lab: DigicertLab, **sections: Any) -> Outcome:
    return await digicert_ip.run(ctx(lab, **sections))


async def test_pass_when_reachable_and_dns_agrees(digicert_lab: DigicertLab) -> None:
    out = await check(digicert_lab)
    assert (out.status, out.reason) == (Status.PASS, "ok"), out.summary
    assert "127.0.0.2:443 is reachable directly" in out.summary
    assert out.details["tcp"]["outcome"] == "connected"
    assert [d["ipv4"] for d in out.details["dns"]] == [["127.0.0.2"], ["127.0.0.2"]]
    assert all(q["type"] == "A" for d in out.details["dns"] for q in d["queries"])
    json.dumps(out.details)


async def test_dns_answering_another_address_warns_naming_it(digicert_lab: DigicertLab) -> None:
    digicert_lab.dns.set("daas.digicert.com", ["127.0.0.2", "127.0.0.3"])
    out = await check(digicert_lab)
    assert (out.status, out.reason) == (Status.WARN, "dns_other_address")
    assert "daas.digicert.com -> 127.0.0.3" in out.summary
    assert "allow-list keyed on 127.0.0.2" in out.remediation and "127.0.0.3" in out.remediation


async def test_unresolvable_name_warns(digicert_lab: DigicertLab) -> None:
    digicert_lab.dns.set("acme.digicert.com", mode="nxdomain")
    out = await check(digicert_lab)
    assert (out.status, out.reason) == (Status.WARN, "dns_unresolved")
    assert "acme.digicert.com does not exist" in out.summary


async def test_refused(digicert_lab: DigicertLab) -> None:
    out = await check(digicert_lab, targets={"ip": "127.0.0.6"})
    assert (out.status, out.reason) == (Status.FAIL, "tcp_refused")
    assert "127.0.0.6:443" in out.summary
    assert "allow outbound TCP 443 from this host to 127.0.0.6" in out.remediation


async def test_unreachable(digicert_lab: DigicertLab) -> None:
    out = await check(digicert_lab, targets={"ip": "10.255.255.1"})
    assert (out.status, out.reason) == (Status.FAIL, "tcp_unreachable")
    assert "no route to 10.255.255.1" in out.remediation


async def test_silent_drop_fails_within_the_timeout(digicert_lab: DigicertLab) -> None:
    hole = digicert_lab.start(BlackholeEndpoint("127.0.0.5", 443))
    c = ctx(digicert_lab, targets={"ip": hole.host}, agent={"timeout": "1s"})
    started = time.monotonic()
    result = await run_check("digicert_ip", digicert_ip.run, c)
    assert time.monotonic() - started <= 1.1
    assert (result.status, result.reason) == (Status.FAIL, "tcp_timeout")
    assert "silently dropped" in result.remediation and "127.0.0.5" in result.remediation
    assert len(result.details["dns"]) == 2  # DNS was still compared


async def test_behind_a_proxy_the_direct_path_only_warns(digicert_lab: DigicertLab) -> None:
    out = await check(
        digicert_lab, targets={"ip": "127.0.0.6"}, proxy={"url": "http://127.0.0.4:48999"}
    )
    assert (out.status, out.reason) == (Status.WARN, "tcp_refused")
    assert "the agent uses proxy http://127.0.0.4:48999" in out.summary


# ------------------------------------------------------------------ judge, on facts alone


def _facts(
    tcp_error: str | None = None,
    answers: dict[str, tuple[str, ...]] | None = None,
    proxies: tuple[str, ...] = ("no proxy", "no proxy"),
) -> digicert_ip.Facts:
    servers = Nameservers((("192.0.2.53", 53),), "[dns] nameservers")
    answers = answers if answers is not None else {"acme.digicert.com": ("216.168.244.42",)}
    dns = tuple(
        DnsResult(
            name,
            (DnsAnswer("A", addrs, None if addrs else "nxdomain", "m", 1.0),),
            servers,
            1.0,
        )
        for name, addrs in answers.items()
    )
    tcp = TcpResult("216.168.244.42", 443, tcp_error, f"tcp {tcp_error}", 3.0)
    return digicert_ip.Facts("216.168.244.42", 443, tcp, dns, proxies)


def test_judge_on_facts() -> None:
    assert digicert_ip.judge(_facts()).reason == "ok"
    other = digicert_ip.judge(_facts(answers={"acme.digicert.com": ("192.0.2.9",)}))
    assert (other.status, other.reason) == (Status.WARN, "dns_other_address")
    assert "also allow TCP 443 to 192.0.2.9" in other.remediation
    unresolved = digicert_ip.judge(_facts(answers={"acme.digicert.com": ()}))
    assert (unresolved.status, unresolved.reason) == (Status.WARN, "dns_unresolved")
    dropped = digicert_ip.judge(_facts("timeout"))
    assert (dropped.status, dropped.reason) == (Status.FAIL, "tcp_timeout")
    assert "216.168.244.42 port 443 are silently dropped" in dropped.remediation
    proxied = digicert_ip.judge(
        _facts("refused", proxies=("proxy http://p:3128 (from [proxy] url)",))
    )
    assert (proxied.status, proxied.reason) == (Status.WARN, "tcp_refused")
    assert proxied.remediation.startswith("Only needed if the ACME agent bypasses the proxy")
