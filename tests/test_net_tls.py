"""agent.net.tls: verification outcomes and the presented certificate, against lab TLS servers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from agent.net.stream import Stream
from agent.net.tcp import tcp_connect
from agent.net.tls import (
    decode_der,
    forget_contexts,
    tls_handshake,
    tls_probe,
    verifying_context,
)
from tests.lab.endpoints import ReplyEndpoint, SilentEndpoint
from tests.lab.https import HttpsServer
from tests.lab.pki import (
    DIGICERT_INTERMEDIATE_CN,
    INSPECTION_CN,
    LabPki,
    certificate,
    sha256_fingerprint,
)

HOST = "127.0.0.2"


@pytest.fixture
def trust_digicert(lab_pki: LabPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lab DigiCert root is the system store, through SSL_CERT_FILE."""
    monkeypatch.setenv("SSL_CERT_FILE", str(lab_pki.write_bundle(tmp_path / "ca.pem")))


@pytest.fixture
async def server(lab_pki: LabPki, trust_digicert: None) -> AsyncIterator[HttpsServer]:
    async with HttpsServer(lab_pki.valid, HOST, 0) as srv:
        yield srv


def opener(port: int, host: str = HOST):  # type: ignore[no-untyped-def]
    async def open_stream(budget: float) -> Stream | None:
        return (await tcp_connect(host, port, budget))[1]

    return open_stream


def colon_hex(fp: str) -> str:
    return ":".join(fp[i : i + 2] for i in range(0, len(fp), 2)).upper()


async def test_verified_handshake_reports_the_session(server: HttpsServer, lab_pki: LabPki) -> None:
    _, stream = await tcp_connect(HOST, server.port, 1.0)
    assert stream is not None
    async with stream:
        result = await tls_handshake(stream, "acme.digicert.com", 1.0)
        assert result.ok and result.verified
        assert stream.ssl_object is not None  # the stream now speaks TLS
    assert server.sni[-1] == "acme.digicert.com"
    assert result.version in ("TLSv1.2", "TLSv1.3") and result.cipher
    cert = result.cert
    assert cert is not None
    assert cert.issuer_cn == DIGICERT_INTERMEDIATE_CN and cert.issuer_org == "DigiCert Inc"
    assert "CN=acme.digicert.com" in cert.subject
    assert cert.sha256 == colon_hex(sha256_fingerprint(lab_pki.valid))
    assert cert.days_left in (333, 334, 335)
    assert "DNS:daas.digicert.com" in cert.san
    not_after = certificate(lab_pki.valid).not_valid_after_utc
    assert cert.not_after == not_after.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("leaf", "word", "text"),
    [
        ("intercepted", "untrusted", "not trusted"),
        ("wrong_host", "hostname_mismatch", "not valid for acme.digicert.com"),
        ("expired", "expired", "has expired"),
        ("not_yet_valid", "not_yet_valid", "not yet valid"),
    ],
)
async def test_verification_failures_name_the_presented_cert(
    server: HttpsServer, lab_pki: LabPki, leaf: str, word: str, text: str
) -> None:
    presented: trustme.LeafCert = getattr(lab_pki, leaf)
    server.cert = presented
    _, stream = await tcp_connect(HOST, server.port, 1.0)
    assert stream is not None
    result = await tls_probe(stream, opener(server.port), "acme.digicert.com", 1.0)
    assert stream.closed  # a failed handshake closes the connection
    assert result.error == word and not result.verified
    assert text in result.message
    assert result.cert is not None
    assert result.cert.sha256 == colon_hex(sha256_fingerprint(presented))
    expected_issuer = INSPECTION_CN if leaf == "intercepted" else DIGICERT_INTERMEDIATE_CN
    assert result.cert.issuer_cn == expected_issuer
    if leaf == "expired":
        assert result.cert.days_left is not None and result.cert.days_left < 0


async def test_inspection_ca_trusted_is_verified_but_shows_its_issuer(
    server: HttpsServer, lab_pki: LabPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = lab_pki.write_bundle(tmp_path / "both.pem", lab_pki.digicert_root, lab_pki.inspection)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    server.cert = lab_pki.intercepted
    _, stream = await tcp_connect(HOST, server.port, 1.0)
    assert stream is not None
    async with stream:
        result = await tls_handshake(stream, "acme.digicert.com", 1.0)
    assert result.ok and result.cert is not None and result.cert.issuer_cn == INSPECTION_CN


async def _verified(port: int) -> bool:
    _, stream = await tcp_connect(HOST, port, 1.0)
    assert stream is not None
    async with stream:
        return (await tls_handshake(stream, "acme.digicert.com", 1.0)).ok


async def test_shared_context_follows_the_ca_store(
    server: HttpsServer, lab_pki: LabPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One verifying context per process, rebuilt when the store changes: a CA installed
    by an administrator counts at the next handshake, without a restart."""
    bundle = lab_pki.write_bundle(tmp_path / "store.pem", lab_pki.digicert_root)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    first = verifying_context()
    assert verifying_context() is first  # shared, not rebuilt per handshake
    server.cert = lab_pki.intercepted
    assert not await _verified(server.port)
    assert verifying_context() is first
    # the administrator installs the inspection CA into the same file
    lab_pki.write_bundle(bundle, lab_pki.digicert_root, lab_pki.inspection)
    second = verifying_context()
    assert second is not first
    assert await _verified(server.port)
    # and removes it again
    lab_pki.write_bundle(bundle, lab_pki.digicert_root)
    assert not await _verified(server.port)
    # another store (SSL_CERT_FILE changed) and an explicit reset give new contexts too
    other = lab_pki.write_bundle(tmp_path / "other.pem", lab_pki.digicert_root, lab_pki.inspection)
    monkeypatch.setenv("SSL_CERT_FILE", str(other))
    third = verifying_context()
    assert third is not second and await _verified(server.port)
    forget_contexts()
    assert verifying_context() is not third


async def test_not_tls_is_a_handshake_error(trust_digicert: None) -> None:
    async with ReplyEndpoint("127.0.0.9", 0) as plain:
        _, stream = await tcp_connect(plain.host, plain.port, 1.0)
        assert stream is not None
        result = await tls_probe(stream, opener(plain.port, plain.host), "acme.digicert.com", 1.0)
    assert result.error == "handshake"
    assert result.cert is None
    assert stream.closed


async def test_silent_peer_is_a_timeout_within_budget(trust_digicert: None) -> None:
    async with SilentEndpoint("127.0.0.7", 0) as silent:
        _, stream = await tcp_connect(silent.host, silent.port, 1.0)
        assert stream is not None
        started = time.monotonic()
        result = await tls_handshake(stream, "acme.digicert.com", 0.3)
        took = time.monotonic() - started
    assert result.error == "timeout"
    assert 0.29 <= took < 0.45
    assert stream.closed


def test_decode_der_reads_what_a_report_needs(lab_pki: LabPki) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    der = certificate(lab_pki.intercepted).public_bytes(Encoding.DER)
    info = decode_der(der)
    assert info.issuer == "C=US, O=Contoso Corp, OU=Network Security, CN=Contoso TLS Inspection CA"
    assert info.sha256 == colon_hex(sha256_fingerprint(lab_pki.intercepted))
    assert decode_der(b"not a certificate").subject == ""  # still a fingerprint, no crash
