"""outbound_https against the lab: every reason code from a real condition."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from agent import config
from agent.checks import outbound_https
from agent.context import CheckContext
from agent.model import Outcome, Status
from agent.runner import run_check
from tests.lab.digicert import DigicertLab
from tests.lab.endpoints import BlackholeEndpoint, ReplyEndpoint, SilentEndpoint
from tests.lab.https import HttpsServer, acme_directory
from tests.lab.pki import INSPECTION_CN, LabPki

SECRET = "pr0xy-Secret"


def ctx(lab: DigicertLab, **sections: Any) -> CheckContext:
    return CheckContext(config.load(lab.write_config(**sections)))


async def check(lab: DigicertLab, **sections: Any) -> Outcome:
    return await outbound_https.run(ctx(lab, **sections))


def target(outcome: Outcome, host: str) -> dict[str, Any]:
    return next(t for t in outcome.details["targets"] if t["host"] == host)


async def test_pass_reports_every_phase(digicert_lab: DigicertLab) -> None:
    out = await check(digicert_lab)
    assert out.status is Status.PASS and out.reason == "ok", out.summary
    assert "acme.digicert.com (ACME directory and nonce OK)" in out.summary
    assert "no proxy" in out.summary
    assert "requires external account binding (EAB)" in out.summary
    assert out.details["external_account_required"] is True
    acme, daas = target(out, "acme.digicert.com"), target(out, "daas.digicert.com")
    assert set(acme["phases_ms"]) == {"dns", "connect", "tls", "http", "nonce"}
    assert acme["nonce"]["status"] == 200 and acme["nonce"]["replay_nonce"] is True
    # the HEAD went on the directory's connection, as an ACME client's would
    methods = [(r.method, r.path) for r in digicert_lab.https.requests]
    assert methods == [("GET", "/v2/acme/directory/"), ("HEAD", "/v2/acme/new-nonce")]
    assert len(digicert_lab.https.sni) == 2  # acme and daas: one handshake each
    assert set(daas["phases_ms"]) == {"dns", "connect", "tls"}
    assert acme["dns"]["ipv4"] == ["127.0.0.2"]
    assert acme["addresses"][0]["outcome"] == "connected"
    tls = acme["tls"]
    assert tls["verified"] and tls["version"].startswith("TLSv1.")
    assert tls["certificate"]["issuer"].endswith("DigiCert Global G2 TLS RSA SHA256 2020 CA1")
    assert len(tls["certificate"]["sha256"]) == 95 and tls["certificate"]["days_left"] > 300
    assert acme["http"]["status"] == 200
    json.dumps(out.details)  # JSON-serialisable


@pytest.mark.parametrize(
    ("mode", "reason", "words"),
    [
        ("nxdomain", "dns_nxdomain", "does not exist"),
        ("servfail", "dns_servfail", "SERVFAIL"),
        ("silence", "dns_timeout", "no DNS answer"),
    ],
)
async def test_dns_failures(digicert_lab: DigicertLab, mode: str, reason: str, words: str) -> None:
    digicert_lab.dns.set("daas.digicert.com", mode=mode)
    out = await check(digicert_lab, agent={"timeout": "0.5s"})
    assert out.status is Status.FAIL and out.reason == reason
    assert out.summary.startswith("daas.digicert.com: ") and words in out.summary
    assert "127.0.0.53" in out.remediation
    assert target(out, "acme.digicert.com")["status"] == "pass"  # the other target still reported


async def test_tcp_refused(digicert_lab: DigicertLab) -> None:
    digicert_lab.dns.set("daas.digicert.com", ["127.0.0.6"])
    out = await check(digicert_lab)
    assert (out.status, out.reason) == (Status.FAIL, "tcp_refused")
    assert "127.0.0.6:443 refused" in out.summary
    assert "REJECT" in out.remediation and "127.0.0.6" in out.remediation


async def test_tcp_unreachable(digicert_lab: DigicertLab) -> None:
    digicert_lab.dns.set("daas.digicert.com", ["10.255.255.1"])
    out = await check(digicert_lab)
    assert (out.status, out.reason) == (Status.FAIL, "tcp_unreachable")
    assert "no route" in out.remediation


async def test_tcp_timeout_keeps_other_targets_and_the_bound(digicert_lab: DigicertLab) -> None:
    hole = digicert_lab.start(BlackholeEndpoint("127.0.0.5", 443))
    digicert_lab.dns.set("daas.digicert.com", [hole.host])
    c = ctx(digicert_lab, agent={"timeout": "1s"})
    started = time.monotonic()
    result = await run_check("outbound_https", outbound_https.run, c)
    took = time.monotonic() - started
    assert took <= 1.1, took
    assert (result.status, result.reason) == (Status.FAIL, "tcp_timeout")
    assert "silently dropped" in result.remediation and "DROP" in result.remediation
    acme = next(t for t in result.details["targets"] if t["host"] == "acme.digicert.com")
    assert acme["status"] == "pass" and acme["http"]["status"] == 200


async def test_ipv6_broken_while_ipv4_works_is_a_warning(digicert_lab: DigicertLab) -> None:
    digicert_lab.dns.set("acme.digicert.com", ["127.0.0.2", "::1"])  # nothing on [::1]:443
    out = await check(digicert_lab)
    assert (out.status, out.reason) == (Status.WARN, "ipv6_broken")
    assert "IPv6 fails" in out.summary and "[::1]:443 refused" in out.summary
    assert "gai.conf" in out.remediation
    fams = {a["family"]: a["outcome"] for a in target(out, "acme.digicert.com")["addresses"]}
    assert fams == {"ipv4": "connected", "ipv6": "refused"}


async def test_ipv4_broken_while_ipv6_works_is_a_warning(
    digicert_lab: DigicertLab, lab_pki: LabPki
) -> None:
    digicert_lab.start(HttpsServer(lab_pki.valid, "::1", 443))
    digicert_lab.dns.set("acme.digicert.com", ["127.0.0.6", "::1"])
    out = await check(digicert_lab)
    assert (out.status, out.reason) == (Status.WARN, "ipv4_broken")
    assert target(out, "acme.digicert.com")["address_used"] == "[::1]:443"


async def test_tls_inspection_names_the_issuer(digicert_lab: DigicertLab, lab_pki: LabPki) -> None:
    digicert_lab.https.cert = lab_pki.intercepted
    out = await check(digicert_lab)
    assert (out.status, out.reason) == (Status.FAIL, "tls_untrusted")
    assert INSPECTION_CN in out.summary and "TLS inspection suspected" in out.summary
    assert "Exempt *.digicert.com from TLS inspection" in out.remediation
    assert "add the inspection CA" in out.remediation
    cert = target(out, "acme.digicert.com")["tls"]["certificate"]
    assert cert["sha256"].replace(":", "").lower() in out.summary.replace(":", "").lower()


async def test_targets_failing_the_same_way_share_one_summary(
    digicert_lab: DigicertLab, lab_pki: LabPki
) -> None:
    digicert_lab.https.cert = lab_pki.intercepted  # one inspection box in front of both names
    out = await check(digicert_lab)
    fingerprint = target(out, "acme.digicert.com")["tls"]["certificate"]["sha256"]
    assert out.summary.count(fingerprint) == 1, out.summary
    assert out.summary.endswith("(the same for daas.digicert.com)")
    # different failures still get a line each
    digicert_lab.https.sni_certs["daas.digicert.com"] = lab_pki.expired
    out = await check(digicert_lab)
    assert "the same for" not in out.summary
    assert "acme.digicert.com:" in out.summary and "daas.digicert.com:" in out.summary


async def test_untrusted_digicert_chain_points_at_the_ca_bundle(
    digicert_lab: DigicertLab, lab_pki: LabPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = lab_pki.write_bundle(digicert_lab.workdir / "other.pem", lab_pki.inspection)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    out = await check(digicert_lab)
    assert out.reason == "tls_untrusted"
    assert "TLS inspection" not in out.summary and "ca-certificates" in out.remediation


@pytest.mark.parametrize(
    ("leaf", "reason", "words"),
    [
        ("wrong_host", "tls_hostname_mismatch", "wrong.example.net"),
        ("expired", "tls_expired", "expired"),
        ("not_yet_valid", "tls_not_yet_valid", "clock"),
    ],
)
async def test_tls_certificate_problems(
    digicert_lab: DigicertLab, lab_pki: LabPki, leaf: str, reason: str, words: str
) -> None:
    digicert_lab.https.cert = getattr(lab_pki, leaf)
    out = await check(digicert_lab)
    assert (out.status, out.reason) == (Status.FAIL, reason)
    assert words in out.summary + out.remediation


async def test_tls_handshake_with_something_not_tls(digicert_lab: DigicertLab) -> None:
    digicert_lab.start(ReplyEndpoint("127.0.0.9", 443))
    digicert_lab.dns.set("daas.digicert.com", ["127.0.0.9"])
    out = await check(digicert_lab)
    assert (out.status, out.reason) == (Status.FAIL, "tls_handshake")


async def test_tls_timeout_when_the_handshake_hangs(digicert_lab: DigicertLab) -> None:
    digicert_lab.start(SilentEndpoint("127.0.0.7", 443))
    digicert_lab.dns.set("daas.digicert.com", ["127.0.0.7"])
    started = time.monotonic()
    out = await check(digicert_lab, agent={"timeout": "0.5s"})
    assert time.monotonic() - started <= 0.55
    assert (out.status, out.reason) == (Status.FAIL, "tls_timeout")


async def test_http_status(digicert_lab: DigicertLab) -> None:
    digicert_lab.https.behaviour.status = 503
    out = await check(digicert_lab)
    assert (out.status, out.reason) == (Status.FAIL, "http_status")
    assert "HTTP 503" in out.summary


@pytest.mark.parametrize(
    ("body", "words"),
    [({"hello": "world"}, "JSON without newNonce"), ("<html>portal</html>", "text/html")],
)
async def test_http_not_acme(digicert_lab: DigicertLab, body: object, words: str) -> None:
    digicert_lab.https.behaviour.body = body
    out = await check(digicert_lab)
    assert (out.status, out.reason) == (Status.FAIL, "http_not_acme")
    assert words in out.summary and "captive portal" in out.remediation


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("no_header", "answered 200 without a Replay-Nonce header"),
        ("not_found", "answered HTTP 404 Not Found"),
    ],
)
async def test_acme_no_nonce(digicert_lab: DigicertLab, mode: str, words: str) -> None:
    digicert_lab.https.behaviour.nonce = mode
    out = await check(digicert_lab)
    assert (out.status, out.reason) == (Status.FAIL, "acme_no_nonce"), out.summary
    assert out.summary.startswith("acme.digicert.com: the ACME directory answers but no nonce")
    assert words in out.summary
    assert "Replay-Nonce" in out.remediation and "https://acme.digicert.com/v2/acme/" in (
        out.remediation
    )


async def test_nonce_on_a_new_connection_when_the_server_closes(digicert_lab: DigicertLab) -> None:
    digicert_lab.https.behaviour.nonce = "close"
    out = await check(digicert_lab)
    assert out.status is Status.PASS, out.summary
    assert len(digicert_lab.https.sni) == 3  # daas, acme, acme again for the nonce
    assert target(out, "acme.digicert.com")["nonce"]["replay_nonce"] is True


@pytest.mark.parametrize("missing", ["newAccount", "newOrder", "newNonce"])
async def test_directory_without_what_a_client_needs(
    digicert_lab: DigicertLab, missing: str
) -> None:
    body = acme_directory()
    del body[missing]
    digicert_lab.https.behaviour.body = body
    out = await check(digicert_lab)
    assert (out.status, out.reason) == (Status.FAIL, "http_not_acme")
    assert f"(JSON without {missing})" in out.summary
    heads = [r for r in digicert_lab.https.requests if r.method == "HEAD"]
    assert len(heads) == (0 if missing == "newNonce" else 1)


async def test_http_timeout(digicert_lab: DigicertLab) -> None:
    digicert_lab.https.behaviour.delay = 5
    out = await check(digicert_lab, agent={"timeout": "0.5s"})
    assert (out.status, out.reason) == (Status.FAIL, "http_timeout")


# ---------------------------------------------------------------------- proxy


async def test_through_the_proxy(digicert_lab: DigicertLab) -> None:
    sensor = digicert_lab.start_sensor()
    out = await check(digicert_lab, proxy={"url": sensor.url})
    assert out.status is Status.PASS, out.summary
    assert f"proxy {sensor.url} (from [proxy] url)" in out.summary
    acme = target(out, "acme.digicert.com")
    assert set(acme["phases_ms"]) == {"connect", "proxy", "tls", "http", "nonce"}
    assert acme["nonce"]["replay_nonce"] is True
    assert acme["dns"] is None and acme["proxy"]["source"] == "config"
    assert {r.target for r in sensor.requests} == {"acme.digicert.com:443", "daas.digicert.com:443"}


@pytest.mark.parametrize("mode", ["ok", "close", "no_header"])
async def test_nonce_through_the_sensor(digicert_lab: DigicertLab, mode: str) -> None:
    digicert_lab.https.behaviour.nonce = mode
    sensor = digicert_lab.start_sensor()
    out = await check(digicert_lab, proxy={"url": sensor.url})
    acme_tunnels = [r for r in sensor.requests if r.target == "acme.digicert.com:443"]
    if mode == "no_header":
        assert (out.status, out.reason) == (Status.FAIL, "acme_no_nonce")
        return
    assert out.status is Status.PASS, out.summary
    assert "ACME directory and nonce OK" in out.summary
    # a closed connection is reopened through the sensor, never around it
    assert len(acme_tunnels) == (2 if mode == "close" else 1)
    heads = [r for r in digicert_lab.https.requests if r.method == "HEAD"]
    assert [r.path for r in heads] == ["/v2/acme/new-nonce"]


async def test_proxy_refused(digicert_lab: DigicertLab) -> None:
    out = await check(digicert_lab, proxy={"url": "http://127.0.0.4:3128"})
    assert (out.status, out.reason) == (Status.FAIL, "proxy_refused")
    assert "[proxy] url" in out.remediation


async def test_proxy_auth_required_and_password_never_shown(digicert_lab: DigicertLab) -> None:
    sensor = digicert_lab.start_sensor(auth=("agent", SECRET))
    out = await check(digicert_lab, proxy={"url": f"http://agent:wrong-{SECRET}@127.0.0.4:48999"})
    assert (out.status, out.reason) == (Status.FAIL, "proxy_auth_required")
    assert "407" in out.summary
    assert SECRET not in json.dumps([out.summary, out.remediation, out.details])
    good = await check(digicert_lab, proxy={"url": f"http://agent:{SECRET}@127.0.0.4:48999"})
    assert good.status is Status.PASS
    assert SECRET not in json.dumps([good.summary, good.remediation, good.details])
    assert sensor.requests[-1].proxy_authorization is not None


async def test_proxy_connect_failed_names_the_status(digicert_lab: DigicertLab) -> None:
    sensor = digicert_lab.start_sensor()
    sensor.connect_status = 403
    out = await check(digicert_lab, proxy={"url": sensor.url})
    assert (out.status, out.reason) == (Status.FAIL, "proxy_connect_failed")
    assert "HTTP/1.1 403 Forbidden" in out.summary
    assert "allow CONNECT to acme.digicert.com:443" in out.remediation


async def test_proxy_that_hangs_is_bounded(digicert_lab: DigicertLab) -> None:
    hole = digicert_lab.start(BlackholeEndpoint("127.0.0.5", 3128))
    c = ctx(
        digicert_lab, agent={"timeout": "0.5s"}, proxy={"url": f"http://{hole.host}:{hole.port}"}
    )
    started = time.monotonic()
    result = await run_check("outbound_https", outbound_https.run, c)
    assert time.monotonic() - started <= 0.55
    assert result.reason == "proxy_timeout"


async def test_environment_proxy_and_no_proxy(
    digicert_lab: DigicertLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    sensor = digicert_lab.start_sensor()
    monkeypatch.setenv("HTTPS_PROXY", sensor.url)
    monkeypatch.setenv("NO_PROXY", "daas.digicert.com")
    out = await check(digicert_lab)
    assert out.status is Status.PASS
    acme, daas = target(out, "acme.digicert.com"), target(out, "daas.digicert.com")
    assert acme["proxy"]["source"] == "env:HTTPS_PROXY" and acme["proxy"]["url"] == sensor.url
    assert daas["proxy"] == {
        "url": None,
        "source": "env:HTTPS_PROXY",
        "no_proxy_match": "daas.digicert.com",
        "problem": None,
    }
    assert "from HTTPS_PROXY" in out.summary and "NO_PROXY" in out.summary
    assert [r.target for r in sensor.requests] == ["acme.digicert.com:443"]
