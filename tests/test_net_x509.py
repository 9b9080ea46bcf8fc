"""agent.net.x509 against OpenSSL's own decoder, and decode_der without a temporary file."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from agent.net import x509
from agent.net.tls import decode_der
from tests.lab.pki import LabPki, certificate

FIELDS = ("subject", "issuer", "notBefore", "notAfter", "subjectAltName")


def openssl_decode(der: bytes, tmp: Path) -> dict[str, Any]:
    """What ssl's C decoder (getpeercert's) makes of the certificate."""
    path = tmp / "cert.pem"
    path.write_text(ssl.DER_cert_to_PEM_cert(der))
    decoded: dict[str, Any] = ssl._ssl._test_decode_cert(str(path))  # type: ignore[attr-defined]
    return decoded


def _lab_ders(pki: LabPki) -> list[bytes]:
    leaves = [v for v in vars(pki).values() if isinstance(v, trustme.LeafCert)]
    assert len(leaves) >= 3
    return [certificate(leaf).public_bytes(Encoding.DER) for leaf in leaves]


def _odd_cert() -> bytes:
    """IPv4 and IPv6 SANs, a UTF-8 and a BMP string, an unknown attribute, 2050+ dates."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = cx509.Name(
        [
            cx509.NameAttribute(NameOID.COMMON_NAME, "zürich.example.test"),
            cx509.NameAttribute(
                NameOID.ORGANIZATION_NAME, "Ünïcode Org", cx509.name._ASN1Type.BMPString
            ),
            cx509.NameAttribute(NameOID.SERIAL_NUMBER, "42"),
            cx509.NameAttribute(cx509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), "unknown"),
        ]
    )
    cert = (
        cx509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(datetime.datetime(2049, 12, 31, 23, 59, 59))
        .not_valid_after(datetime.datetime(2051, 1, 2, 3, 4, 5))
        .add_extension(
            cx509.SubjectAlternativeName(
                [
                    cx509.DNSName("a.example.test"),
                    cx509.IPAddress(ipaddress.ip_address("192.0.2.7")),
                    cx509.IPAddress(ipaddress.ip_address("2001:db8::1")),
                    cx509.RFC822Name("pki@example.test"),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.DER)


def test_same_fields_as_openssl(lab_pki: LabPki, tmp_path: Path) -> None:
    for der in [*_lab_ders(lab_pki), _odd_cert()]:
        ours, theirs = x509.decode(der), openssl_decode(der, tmp_path)
        for field in FIELDS:
            assert ours.get(field) == theirs.get(field), field


def test_decode_der_writes_no_file(lab_pki: LabPki, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_files(*args: object, **kwargs: object) -> None:
        raise AssertionError("decode_der wrote a temporary file")

    monkeypatch.setattr(tempfile, "mkstemp", no_files)
    der = certificate(lab_pki.intercepted).public_bytes(Encoding.DER)
    info = decode_der(der)
    assert info.issuer_cn == "Contoso TLS Inspection CA"
    assert info.days_left is not None and info.not_after is not None


def test_damaged_certificates_never_crash(lab_pki: LabPki) -> None:
    der = _lab_ders(lab_pki)[0]
    for cut in range(0, len(der), 7):
        decode_der(der[:cut])  # a fingerprint at least, never an exception
    flipped = bytearray(der)
    for i in range(0, len(flipped), 11):
        flipped[i] ^= 0xFF
        decode_der(bytes(flipped))


def test_decoded_once_and_bounded(lab_pki: LabPki, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.net import tls

    ders = _lab_ders(lab_pki)
    calls: list[bytes] = []
    real = x509.decode

    def counting(der: bytes) -> dict[str, Any]:
        calls.append(der)
        return real(der)

    monkeypatch.setattr(x509, "decode", counting)
    monkeypatch.setattr(tls, "_DECODED", {})
    first = decode_der(ders[0], now=0.0)
    later = decode_der(ders[0], now=86400.0 * 10)
    assert len(calls) == 1
    assert first.sha256 == later.sha256 and first.days_left == later.days_left + 10  # type: ignore[operator]
    for i in range(tls.DECODED_MAX + 5):
        decode_der(ders[0] + bytes([i]))  # distinct (undecodable) DER: each kept a while
    assert len(tls._DECODED) == tls.DECODED_MAX
