"""Lab PKI: a trustme CA posing as DigiCert, a TLS-inspecting middlebox CA, and leaf certs.

The DigiCert chain mirrors the real one: root "DigiCert Global Root G2" -> intermediate
"DigiCert Global G2 TLS RSA SHA256 2020 CA1" (O=DigiCert Inc) -> leaf. Keys are ECDSA
P-256 (fast to generate); the names are what checks report.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent import compat

DIGICERT_NAMES = ("acme.digicert.com", "daas.digicert.com", "*.digicert.com")
WRONG_NAME = "wrong.example.net"
DIGICERT_ORG = "DigiCert Inc"
DIGICERT_ROOT_CN = "DigiCert Global Root G2"
DIGICERT_INTERMEDIATE_CN = "DigiCert Global G2 TLS RSA SHA256 2020 CA1"
INSPECTION_ORG = "Contoso Corp"
INSPECTION_CN = "Contoso TLS Inspection CA"


def _name(cn: str, org: str, unit: str | None = None) -> x509.Name:
    attrs = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
    ]
    if unit:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def named_ca(
    subject: x509.Name, parent: trustme.CA | None = None, path_length: int = 1
) -> trustme.CA:
    """A trustme CA with a chosen subject (trustme itself cannot set a CA's CN).

    Built with ``cryptography`` and loaded through the public ``CA.from_pem``; setting
    ``parent_cert`` makes issued leaves carry the chain up to (not including) the root.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(compat.UTC)
    if parent is None:
        issuer, sign_key = subject, key
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())
    else:
        parent_cert = x509.load_pem_x509_certificate(parent.cert_pem.bytes())
        parent_key = serialization.load_pem_private_key(parent.private_key_pem.bytes(), None)
        assert isinstance(parent_key, ec.EllipticCurvePrivateKey)
        issuer, sign_key = parent_cert.subject, parent_key
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(parent_key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=365))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(aki, critical=False)
        .sign(sign_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    ca = trustme.CA.from_pem(cert.public_bytes(serialization.Encoding.PEM), key_pem)
    ca.parent_cert = parent
    return ca


def issue(
    ca: trustme.CA,
    *names: str,
    org: str = "DigiCert, Inc.",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> trustme.LeafCert:
    """A leaf for ``names`` (first one is the CN), valid now unless dates are given."""
    now = dt.datetime.now(compat.UTC)
    return ca.issue_cert(
        *names,
        common_name=names[0],
        organization_name=org,
        organization_unit_name="acme-preflight lab",
        not_before=not_before or now - dt.timedelta(days=30),
        not_after=not_after or now + dt.timedelta(days=335),
    )


def certificate(leaf: trustme.LeafCert) -> x509.Certificate:
    """The parsed end-entity certificate of ``leaf``."""
    return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())


def sha256_fingerprint(leaf: trustme.LeafCert) -> str:
    """Lowercase hex SHA-256 of the leaf's DER (what a check reports as the fingerprint)."""
    der = certificate(leaf).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class LabPki:
    """Everything the lab's TLS servers present and clients trust.

    ``digicert_root`` is the trust anchor clients get (via :meth:`write_bundle`);
    ``digicert`` is the intermediate that issued ``valid``/``wrong_host``/``expired``/
    ``not_yet_valid``; ``inspection`` is a middlebox CA that issued ``intercepted``
    for the same DigiCert names.
    """

    digicert_root: trustme.CA
    digicert: trustme.CA
    inspection: trustme.CA
    valid: trustme.LeafCert
    wrong_host: trustme.LeafCert
    expired: trustme.LeafCert
    not_yet_valid: trustme.LeafCert
    intercepted: trustme.LeafCert

    def bundle_pem(self, *cas: trustme.CA) -> bytes:
        """PEM of the given CAs (default: the DigiCert root) for a trust store."""
        return b"".join(ca.cert_pem.bytes() for ca in (cas or (self.digicert_root,)))

    def write_bundle(self, path: Path, *cas: trustme.CA) -> Path:
        """Write a CA bundle (default: the DigiCert root only); use it as SSL_CERT_FILE."""
        path.write_bytes(self.bundle_pem(*cas))
        return path


def make_pki() -> LabPki:
    root = named_ca(_name(DIGICERT_ROOT_CN, DIGICERT_ORG, "www.digicert.com"))
    inter = named_ca(_name(DIGICERT_INTERMEDIATE_CN, DIGICERT_ORG), parent=root, path_length=0)
    inspection = named_ca(_name(INSPECTION_CN, INSPECTION_ORG, "Network Security"))
    now = dt.datetime.now(compat.UTC)
    return LabPki(
        digicert_root=root,
        digicert=inter,
        inspection=inspection,
        valid=issue(inter, *DIGICERT_NAMES),
        wrong_host=issue(inter, WRONG_NAME, org="Example Networks"),
        expired=issue(
            inter,
            *DIGICERT_NAMES,
            not_before=now - dt.timedelta(days=400),
            not_after=now - dt.timedelta(days=2),
        ),
        not_yet_valid=issue(
            inter,
            *DIGICERT_NAMES,
            not_before=now + dt.timedelta(days=2),
            not_after=now + dt.timedelta(days=400),
        ),
        intercepted=issue(inspection, *DIGICERT_NAMES, org=INSPECTION_ORG),
    )
