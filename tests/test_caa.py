"""The caa check: the CA's rules on facts alone, then every reason from a real zone.

The zones are served by the lab's dnspython server (tests/lab/dns.py) on loopback;
the check runs in-process through the runner, as ``check`` runs it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent import checks, config
from agent.checks import caa
from agent.checks.caa import Property, Relevant, judge, parse_issuer, tree
from agent.context import CheckContext
from agent.daemon.metrics import Metrics
from agent.model import CheckResult, Status
from agent.report import build_report, identity
from agent.runner import run_checks
from agent.schema import report_schema
from tests.collectorutil import READ_TOKEN, TOKEN, auth, check, report, serve, settings
from tests.lab.base import LabThread
from tests.lab.config import write_lab_config
from tests.lab.dns import DnsMode, DnsServer

ISSUERS = config.CaaConfig().issuers
NS = "127.0.0.54"

# One zone with a name for every outcome (RFC 8659 presentation form).
ZONE: dict[str, list[str]] = {
    "rec.example.test": ['0 issue "digicert.com"', '0 iodef "mailto:pki@example.test"'],
    "inherit.example.test": ['0 issue "letsencrypt.org"', '0 issue "sectigo.com"'],
    "wild.example.test": ['0 issue "letsencrypt.org"', '0 issuewild "DigiCert.com"'],
    "nobody.example.test": ['0 issue ";"'],
    "crit.example.test": ['0 issue "digicert.com"', '128 tbs "unknown"'],
    "acct.example.test": [
        '0 issue "digicert.com; accounturi=https://acme.digicert.com/v2/acme/acct/7; '
        'validationmethods=dns-01"'
    ],
    "brand.example.test": ['0 issue "thawte.com"'],
    "empty.example.test": [],  # the name exists, with no CAA: go on to the parent
}


def _prop(text: str) -> Property:
    flags, tag, value = text.split(" ", 2)
    return Property(int(flags), tag, value.strip('"'))


def _relevant(name: str, at: str | None, *records: str) -> Relevant:
    return Relevant(name, at, tuple(_prop(r) for r in records))


# ------------------------------------------------------------------ judge, on facts


def test_tree_climbs_to_the_tld_and_strips_a_wildcard() -> None:
    assert tree("a.b.example.com") == ["a.b.example.com", "b.example.com", "example.com", "com"]
    assert tree("*.example.com") == ["example.com", "com"]


def test_parse_issuer_value() -> None:
    assert parse_issuer(" DigiCert.com. ; accounturi=x ;validationmethods=dns-01") == (
        "digicert.com",
        {"accounturi": "x", "validationmethods": "dns-01"},
    )
    assert parse_issuer(";") == ("", {})


@pytest.mark.parametrize(
    ("name", "records", "status", "reason"),
    [
        ("a.example.com", (), Status.PASS, "ok"),
        ("a.example.com", ('0 issue "digicert.com"',), Status.PASS, "ok"),
        ("a.example.com", ('0 issue "www.digicert.com"',), Status.PASS, "ok"),
        ("a.example.com", ('0 iodef "mailto:x@example.com"',), Status.PASS, "ok"),
        ("a.example.com", ('0 issue "letsencrypt.org"',), Status.FAIL, caa.FORBIDS),
        ("a.example.com", ('0 issue ";"',), Status.FAIL, caa.FORBIDS),
        # issuewild is for wildcards only; issue governs the plain name
        ("a.example.com", ('0 issuewild "digicert.com"', '0 issue ";"'), Status.FAIL, caa.FORBIDS),
        ("*.example.com", ('0 issuewild "digicert.com"', '0 issue ";"'), Status.PASS, "ok"),
        ("*.example.com", ('0 issuewild ";"', '0 issue "digicert.com"'), Status.FAIL, caa.FORBIDS),
        ("*.example.com", ('0 issue "digicert.com"',), Status.PASS, "ok"),  # no issuewild
        (
            "a.example.com",
            ('128 tbs "x"', '0 issue "digicert.com"'),
            Status.FAIL,
            caa.CRITICAL_UNKNOWN,
        ),
        ("a.example.com", ('128 issue "digicert.com"',), Status.PASS, "ok"),  # known tag
        ("a.example.com", ('0 tbs "x"', '0 issue "digicert.com"'), Status.PASS, "ok"),
        (
            "a.example.com",
            ('0 issue "digicert.com; validationmethods=http-01"',),
            Status.WARN,
            caa.PARAMETERS,
        ),
        # one DigiCert record without limits lets everything through
        (
            "a.example.com",
            ('0 issue "digicert.com; accounturi=u"', '0 issue "digicert.com"'),
            Status.PASS,
            "ok",
        ),
        # parameters the RFCs do not define limit nothing
        ("a.example.com", ('0 issue "digicert.com; policy=ev"',), Status.PASS, "ok"),
    ],
)
def test_judge(name: str, records: tuple[str, ...], status: Status, reason: str) -> None:
    at = "example.com" if records else None
    verdict = judge(_relevant(name, at, *records), ISSUERS)
    assert (verdict.status, verdict.reason) == (status, reason), verdict.text


def test_forbids_names_the_domain_the_allowed_cas_and_the_record() -> None:
    v = judge(
        _relevant(
            "www.example.com", "example.com", '0 issue "letsencrypt.org"', '0 issue "pki.goog"'
        ),
        ISSUERS,
    )
    assert (
        v.text
        == "www.example.com: CAA at example.com allows letsencrypt.org, pki.goog, not DigiCert"
    )
    assert v.fix == """add 'example.com. CAA 0 issue "digicert.com"'"""
    wild = judge(
        _relevant("*.example.com", "example.com", '0 issuewild "letsencrypt.org"'), ISSUERS
    )
    assert 'CAA 0 issuewild "digicert.com"' in wild.fix


def test_configured_issuers_decide() -> None:
    facts = _relevant("a.example.com", "example.com", '0 issue "ca.internal.test"')
    assert judge(facts, ISSUERS).reason == caa.FORBIDS
    assert judge(facts, ("ca.internal.test",)).reason == "ok"


def test_a_failed_lookup_fails() -> None:
    facts = Relevant("a.example.com", "example.com", error="servfail", message="SERVFAIL")
    assert judge(facts, ISSUERS).reason == caa.LOOKUP_FAILED


# ------------------------------------------------------------------ real zones


@pytest.fixture
def caa_dns(netns_isolated: None) -> Iterator[DnsServer]:
    with LabThread() as thread:
        server = thread.start(DnsServer({}, NS, 53))
        for name, records in ZONE.items():
            server.set_caa(name, records)
        server.set_cname("alias.example.test", "rec.example.test")
        server.set_cname("dangling.inherit.example.test", "gone.example.test")
        server.set("broken.example.test", mode=DnsMode.SERVFAIL)
        server.set("silent.example.test", mode=DnsMode.SILENCE)
        yield server


async def _run(tmp_path: Path, names: list[str], **overrides: Any) -> CheckResult:
    fqdn = {"names": names, "nameservers": [NS], **overrides.pop("fqdn", {})}
    path = write_lab_config(
        tmp_path / "config.toml", state_dir=tmp_path / "state", fqdn=fqdn, **overrides
    )
    [result] = await run_checks(CheckContext(config.load(path)), only=["caa"])
    assert result.reason in caa.REASONS
    return result


def _names(result: CheckResult) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in result.details["names"]}


async def test_record_on_the_name(tmp_path: Path, caa_dns: DnsServer) -> None:
    r = await _run(tmp_path, ["rec.example.test", "brand.example.test"])
    assert (r.status, r.reason) == (Status.PASS, "ok"), r.summary
    rec = _names(r)["rec.example.test"]
    assert rec["found_at"] == "rec.example.test"
    assert rec["queried"] == ["rec.example.test"]
    assert '0 issue "digicert.com"' in rec["records"]
    assert rec["nameserver"] == f"{NS}:53"
    assert "authorizes thawte.com" in r.summary


async def test_aliases_are_followed(tmp_path: Path, caa_dns: DnsServer) -> None:
    r = await _run(tmp_path, ["alias.example.test", "dangling.inherit.example.test"])
    names = _names(r)
    # the alias's CAA is its target's (the resolver followed the CNAME)
    alias = names["alias.example.test"]
    assert (alias["status"], alias["found_at"]) == ("pass", "alias.example.test")
    assert '0 issue "digicert.com"' in alias["records"]
    # an alias to a name without CAA: the search goes on at the alias's parent (RFC 8659)
    dangling = names["dangling.inherit.example.test"]
    assert dangling["found_at"] == "inherit.example.test"
    assert dangling["reason"] == caa.FORBIDS


async def test_no_caa_anywhere_passes(tmp_path: Path, caa_dns: DnsServer) -> None:
    r = await _run(tmp_path, ["free.example.test"])
    assert (r.status, r.reason) == (Status.PASS, "ok")
    free = _names(r)["free.example.test"]
    assert free["found_at"] is None
    assert free["queried"] == ["free.example.test", "example.test", "test"]
    assert [q.rdtype for q in caa_dns.queried("free.example.test")] == ["CAA"]


async def test_inherited_from_a_parent(tmp_path: Path, caa_dns: DnsServer) -> None:
    caa_dns.queries.clear()
    r = await _run(
        tmp_path,
        ["www.inherit.example.test", "api.inherit.example.test", "x.empty.example.test"],
    )
    assert (r.status, r.reason) == (Status.FAIL, caa.FORBIDS)
    www = _names(r)["www.inherit.example.test"]
    assert www["found_at"] == "inherit.example.test"
    assert www["allowed"] == ["letsencrypt.org", "sectigo.com"]  # sorted: an RRset has no order
    assert (
        "www.inherit.example.test: CAA at inherit.example.test allows letsencrypt.org, "
        "sectigo.com, not DigiCert" in r.summary
    )
    assert """inherit.example.test: add 'inherit.example.test. CAA 0 issue "digicert.com"'""" in (
        r.remediation
    )
    # an existing name with an empty CAA RRset passes the search on to its parent
    assert _names(r)["x.empty.example.test"]["queried"] == [
        "x.empty.example.test",
        "empty.example.test",
        "example.test",
        "test",
    ]
    # two names under one parent: the parent is asked once
    assert len(caa_dns.queried("inherit.example.test")) == 1


async def test_wildcard_uses_issuewild(tmp_path: Path, caa_dns: DnsServer) -> None:
    nginx = tmp_path / "nginx.conf"
    nginx.write_text("http { server { server_name wild.example.test *.wild.example.test; } }\n")
    r = await _run(
        tmp_path,
        [],
        fqdn={"discover": True, "nginx_conf": str(nginx), "apache_roots": [str(tmp_path / "no")]},
    )
    names = _names(r)
    assert names["*.wild.example.test"]["status"] == "pass"
    assert names["*.wild.example.test"]["queried"] == ["wild.example.test"]
    # the plain name follows issue, which allows only Let's Encrypt
    assert names["wild.example.test"]["reason"] == caa.FORBIDS
    assert (r.status, r.reason) == (Status.FAIL, caa.FORBIDS)
    assert r.summary.startswith("wild.example.test: CAA at wild.example.test allows letsencrypt")


async def test_issue_semicolon_forbids_everyone(tmp_path: Path, caa_dns: DnsServer) -> None:
    r = await _run(tmp_path, ["nobody.example.test"])
    assert (r.status, r.reason) == (Status.FAIL, caa.FORBIDS)
    assert 'allows no CA at all (issue ";")' in r.summary


async def test_critical_unknown_tag(tmp_path: Path, caa_dns: DnsServer) -> None:
    r = await _run(tmp_path, ["crit.example.test"])
    assert (r.status, r.reason) == (Status.FAIL, caa.CRITICAL_UNKNOWN)
    assert """'128 tbs "unknown"'""" in r.summary


async def test_accounturi_and_validationmethods_warn(tmp_path: Path, caa_dns: DnsServer) -> None:
    r = await _run(tmp_path, ["acct.example.test"])
    assert (r.status, r.reason) == (Status.WARN, caa.PARAMETERS)
    assert "only with accounturi, validationmethods" in r.summary
    assert "validationmethods=dns-01" in r.summary


async def test_servfail_fails(tmp_path: Path, caa_dns: DnsServer) -> None:
    r = await _run(tmp_path, ["www.broken.example.test"])
    assert (r.status, r.reason) == (Status.FAIL, caa.LOOKUP_FAILED)
    broken = _names(r)["www.broken.example.test"]
    assert broken["found_at"] == "broken.example.test"
    assert broken["error"] == "servfail"


async def test_silence_fails_within_the_budget(tmp_path: Path, caa_dns: DnsServer) -> None:
    started = time.monotonic()
    r = await _run(tmp_path, ["silent.example.test", "rec.example.test"], agent={"timeout": "1s"})
    assert time.monotonic() - started < 1.1
    assert (r.status, r.reason) == (Status.FAIL, caa.LOOKUP_FAILED)
    assert _names(r)["silent.example.test"]["error"] == "timeout"
    assert _names(r)["rec.example.test"]["status"] == "pass"  # one silent name hides no other


async def test_worst_reason_leads_and_the_rest_is_counted(
    tmp_path: Path, caa_dns: DnsServer
) -> None:
    r = await _run(tmp_path, ["rec.example.test", "nobody.example.test", "www.broken.example.test"])
    assert r.reason == caa.LOOKUP_FAILED
    assert r.summary.endswith("(and 1 other CAA problem(s), see details)")


async def test_disabled_and_no_names_skip(tmp_path: Path, caa_dns: DnsServer) -> None:
    off = await _run(tmp_path, ["rec.example.test"], caa={"enabled": False})
    assert (off.status, off.reason) == (Status.SKIP, "disabled")
    none = await _run(tmp_path, [])
    assert (none.status, none.reason) == (Status.SKIP, caa.NO_NAMES)


async def test_report_with_caa_is_valid(tmp_path: Path, caa_dns: DnsServer) -> None:
    r = await _run(tmp_path, ["inherit.example.test", "crit.example.test"])
    assert "caa" in checks.CHECK_NAMES
    cfg = config.load(tmp_path / "config.toml")
    report = build_report(cfg, identity(cfg), [r], "2026-12-01T00:00:00Z").to_dict()
    jsonschema.validate(json.loads(json.dumps(report)), report_schema())


async def test_fleet_page_problems_and_metrics_show_caa(tmp_path: Path, caa_dns: DnsServer) -> None:
    """The new check reaches the collector's pages, problems and /metrics and the daemon's /metrics
    through the generic paths (no code there names it)."""
    result = (await _run(tmp_path, ["www.inherit.example.test"])).to_dict()
    cfg = config.load(tmp_path / "config.toml")
    (tmp_path / "collector").mkdir()
    async with serve(settings(tmp_path / "collector")) as srv, aiohttp.ClientSession() as http:
        body = report("caa-host", checks=[check("privileges"), result])
        async with http.post(f"{srv.url}/api/v1/reports", json=body, headers=auth(TOKEN)) as resp:
            assert resp.status == 202, await resp.text()
        async with http.get(f"{srv.url}/", headers=auth(READ_TOKEN)) as resp:
            page = await resp.text()
        async with http.get(f"{srv.url}/hosts/caa-host", headers=auth(READ_TOKEN)) as resp:
            host_page = await resp.text()
        async with http.get(f"{srv.url}/api/v1/problems", headers=auth(READ_TOKEN)) as resp:
            assert resp.status == 200, await resp.text()
            problems = await resp.json()
        async with http.get(f"{srv.url}/metrics", headers=auth(READ_TOKEN)) as resp:
            collector_metrics = await resp.text()
    assert ">caa<" in page, "no caa column on the fleet page"
    assert "caa_forbids_digicert" in host_page
    assert "allows letsencrypt.org, sectigo.com, not DigiCert" in host_page
    groups = [(g["check"], g["reason"]) for g in problems["problems"]]
    assert ("caa", "caa_forbids_digicert") in groups
    fleet = {f.name: f for f in text_string_to_metric_families(collector_metrics)}
    problem_series = {
        (x.labels["check"], x.labels["reason"], x.labels["status"]): x.value
        for f in fleet.values()
        if f.name.endswith("hosts_problem")
        for x in f.samples
    }
    assert problem_series[("caa", "caa_forbids_digicert", "fail")] == 1
    metrics = Metrics("0", runs=1, delivered=1, dropped=0)
    metrics.last_report = build_report(
        cfg, identity(cfg), [CheckResult.from_dict(result)], "t"
    ).to_dict()
    families = {f.name: f for f in text_string_to_metric_families(metrics.render())}
    status = {s.labels["check"]: s.value for s in families["acme_preflight_check_status"].samples}
    assert status == {"caa": Status.FAIL.code}
