"""TLS handshake with SNI and full verification, classified, with the presented certificate.

Verification uses ``ssl.create_default_context()``: the system store, and
``SSL_CERT_FILE``/``SSL_CERT_DIR`` when set; one such context is shared per process
(``verifying_context``). When verification fails, a second,
unverified handshake fetches the certificate the peer presented, so the report can
name its issuer and fingerprint (how TLS inspection shows itself).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from agent import compat
from agent.net import x509
from agent.net.stream import Deadline, Stream, elapsed_ms

# Error words; the checks map them to ``tls_<word>`` reason codes.
#   untrusted          the chain does not lead to a trusted CA (interception, private CA)
#   hostname_mismatch  the certificate is not for the name asked for
#   expired            the certificate (or one in its chain) is past notAfter
#   not_yet_valid      before notBefore: usually this host's clock
#   handshake          the handshake failed for another reason (protocol, alert, reset)
#   timeout            no handshake within the time
_UNTRUSTED = {2, 18, 19, 20, 21, 27, 28}  # X509_V_ERR_* chain codes
_EXPIRED = 10
_NOT_YET_VALID = 9
_MISMATCH = {62, 64}  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH

_NAME_KEYS = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "emailAddress": "emailAddress",
}


@dataclass(frozen=True)
class CertInfo:
    """What a report needs from a certificate."""

    subject: str
    issuer: str
    issuer_cn: str | None
    issuer_org: str | None
    sha256: str
    not_before: str | None
    not_after: str | None
    days_left: int | None
    san: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "sha256": self.sha256,
            "not_before": self.not_before,
            "not_after": self.not_after,
            "days_left": self.days_left,
            "san": list(self.san),
        }


def _format_name(rdns: Any) -> tuple[str, dict[str, str]]:
    parts: list[str] = []
    flat: dict[str, str] = {}
    for rdn in rdns or ():
        for key, value in rdn:
            short = _NAME_KEYS.get(key, key)
            parts.append(f"{short}={value}")
            flat.setdefault(short, value)
    return ", ".join(parts), flat


def _iso(cert_time: str | None) -> tuple[str | None, float | None]:
    if not cert_time:
        return None, None
    try:
        ts = float(ssl.cert_time_to_seconds(cert_time))
    except ValueError:
        return cert_time, None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)), ts


# Certificates decoded lately, by DER: the same peers present the same certificate every
# run, so each is decoded once (days_left is recomputed per call). Bounded, oldest out.
_DECODED: dict[bytes, tuple[CertInfo, float | None]] = {}
DECODED_MAX = 16


def decode_der(
    der: bytes, now: float | None = None, decoded: dict[str, Any] | None = None
) -> CertInfo:
    """What a report needs from a DER certificate, decoded in memory.

    ``decoded`` is ``getpeercert()``'s dict when the peer was verified (OpenSSL already
    decoded it); otherwise the DER is read by :mod:`agent.net.x509`. No temporary file.
    """
    hit = _DECODED.get(der)
    if hit is None:
        hit = _decode(der, decoded)
        while len(_DECODED) >= DECODED_MAX:
            _DECODED.pop(next(iter(_DECODED)))
        _DECODED[der] = hit
    info, expires = hit
    now = time.time() if now is None else now
    return replace(info, days_left=None if expires is None else math.floor((expires - now) / 86400))


def _decode(der: bytes, decoded: dict[str, Any] | None) -> tuple[CertInfo, float | None]:
    fingerprint = hashlib.sha256(der).hexdigest().upper()
    if not decoded:
        try:
            decoded = x509.decode(der)
        except (ValueError, IndexError, UnicodeDecodeError):
            decoded = {}  # undecodable: the fingerprint alone still identifies it
    subject, _ = _format_name(decoded.get("subject"))
    issuer, issuer_flat = _format_name(decoded.get("issuer"))
    not_before, _ = _iso(decoded.get("notBefore"))
    not_after, expires = _iso(decoded.get("notAfter"))
    san = tuple(f"{kind}:{value}" for kind, value in decoded.get("subjectAltName", ()))
    info = CertInfo(
        subject=subject,
        issuer=issuer,
        issuer_cn=issuer_flat.get("CN"),
        issuer_org=issuer_flat.get("O"),
        sha256=":".join(fingerprint[i : i + 2] for i in range(0, len(fingerprint), 2)),
        not_before=not_before,
        not_after=not_after,
        days_left=None,
        san=san,
    )
    return info, expires


@dataclass(frozen=True)
class TlsResult:
    server_name: str
    error: str | None
    message: str
    elapsed_ms: float
    version: str | None = None
    cipher: str | None = None
    cert: CertInfo | None = None  # the presented leaf, verified or not
    verified: bool = False
    verify_code: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "server_name": self.server_name,
            "outcome": self.error or "verified",
            "message": self.message,
            "tls_ms": self.elapsed_ms,
            "version": self.version,
            "cipher": self.cipher,
            "verified": self.verified,
            "verify_code": self.verify_code,
            "certificate": self.cert.to_dict() if self.cert else None,
        }


# The verifying context this process shares, with the state of the CA store it was built
# from (see verifying_context).
_shared: tuple[tuple[object, ...], ssl.SSLContext] | None = None


def _store_state() -> tuple[object, ...]:
    """Where the CA store is (``SSL_CERT_FILE``/``SSL_CERT_DIR`` included) and how its
    files look now: a CA added, removed or updated changes this."""
    paths = ssl.get_default_verify_paths()
    state: list[object] = [paths.cafile, paths.capath]
    for path in (paths.cafile, paths.capath):
        try:
            st = os.stat(path) if path else None
        except OSError:
            st = None
        state.append(None if st is None else (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(state)


def verifying_context() -> ssl.SSLContext:
    """Full verification against the system store (``SSL_CERT_FILE`` honoured).

    One context per process, shared by every handshake: building one parses the whole
    CA store (with a 144-CA system store about 0.8 MiB and 20 ms each, and the memory is
    not given back to the OS), and the checks made three a run. Sharing changes no
    verdict: every handshake still verifies the full chain (a client context does not
    resume sessions on its own). It is rebuilt when the store's files change (so a CA an
    administrator installs counts at the next run) and after :func:`forget_contexts`
    (the daemon's SIGHUP). Callers must not modify it.
    """
    global _shared
    state = _store_state()
    if _shared is None or _shared[0] != state:
        ctx = ssl.create_default_context()
        ctx.set_alpn_protocols(["http/1.1"])
        _shared = (state, ctx)
    return _shared[1]


def forget_contexts() -> None:
    """Drop the shared verifying context: the next handshake builds a new one."""
    global _shared
    _shared = None


def inspecting_context() -> ssl.SSLContext:
    """No verification: only to see which certificate the peer presents."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _classify_verify(exc: ssl.SSLCertVerificationError, name: str) -> tuple[str, str]:
    code = exc.verify_code
    why = exc.verify_message or exc.reason or str(exc)
    if code == _EXPIRED:
        return "expired", f"the certificate for {name} has expired ({why})"
    if code == _NOT_YET_VALID:
        return "not_yet_valid", f"the certificate for {name} is not yet valid ({why})"
    if code in _MISMATCH:
        return "hostname_mismatch", f"the certificate presented is not valid for {name} ({why})"
    return "untrusted", f"the certificate chain for {name} is not trusted ({why})"


def _session_facts(stream: Stream) -> tuple[str | None, str | None, CertInfo | None]:
    obj = stream.ssl_object
    if obj is None:
        return None, None, None
    der = obj.getpeercert(binary_form=True)
    cipher = obj.cipher()
    if not der:
        return obj.version(), cipher[0] if cipher else None, None
    # A verified peer's certificate is decoded already ({} when not verified); one seen
    # lately needs no decoding at all.
    decoded = None if der in _DECODED else obj.getpeercert() or None
    return obj.version(), cipher[0] if cipher else None, decode_der(der, decoded=decoded)


async def tls_handshake(
    stream: Stream,
    server_name: str,
    budget: float,
    context: ssl.SSLContext | None = None,
) -> TlsResult:
    """Start TLS on ``stream`` in place (SNI ``server_name``) within ``budget`` seconds.

    On success the stream now speaks TLS; on any failure it has been closed.
    """
    ctx = context or verifying_context()
    verifying = ctx.verify_mode != ssl.CERT_NONE
    started = time.perf_counter()
    try:
        async with compat.timeout(max(budget, 0.0)):
            await compat.start_tls(stream.writer, ctx, server_hostname=server_name)
    except compat.TIMEOUT_ERRORS:
        stream.abort()
        ms = elapsed_ms(started)
        return TlsResult(
            server_name, "timeout", f"no TLS handshake with {server_name} within {ms:.0f} ms", ms
        )
    except ssl.SSLCertVerificationError as exc:
        stream.abort()
        word, text = _classify_verify(exc, server_name)
        return TlsResult(server_name, word, text, elapsed_ms(started), verify_code=exc.verify_code)
    except ssl.SSLError as exc:
        stream.abort()
        why = exc.reason or exc.strerror or str(exc)
        text = f"TLS handshake with {server_name} failed: {why}"
        return TlsResult(server_name, "handshake", text, elapsed_ms(started))
    except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
        stream.abort()
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        text = f"the connection closed during the TLS handshake with {server_name} ({why})"
        return TlsResult(server_name, "handshake", text, elapsed_ms(started))
    except BaseException:
        stream.abort()
        raise
    ms = elapsed_ms(started)
    try:
        version, cipher, cert = _session_facts(stream)
    except (ssl.SSLError, ValueError) as exc:
        await stream.close()
        return TlsResult(server_name, "handshake", f"unreadable peer certificate: {exc}", ms)
    text = f"TLS {version or '?'} with {server_name}" + (", verified" if verifying else "")
    return TlsResult(server_name, None, text, ms, version, cipher, cert, verifying)


Opener = Callable[[float], Awaitable[Stream | None]]


async def presented_certificate(
    open_stream: Opener, server_name: str, budget: float
) -> TlsResult | None:
    """An unverified handshake on a fresh connection, to read the peer's certificate."""
    deadline = Deadline(budget)
    stream = await open_stream(deadline.remaining())
    if stream is None:
        return None
    async with stream:
        return await tls_handshake(stream, server_name, deadline.remaining(), inspecting_context())


async def tls_probe(
    stream: Stream,
    open_stream: Opener,
    server_name: str,
    budget: float,
    context: ssl.SSLContext | None = None,
) -> TlsResult:
    """Verified handshake on ``stream``; when verification fails, also fetch (through
    ``open_stream``, a new connection the same way) the certificate that was presented.

    On success ``stream`` speaks TLS and stays open for the caller.
    """
    deadline = Deadline(budget)
    result = await tls_handshake(stream, server_name, deadline.remaining(), context)
    if result.verify_code is None or deadline.expired:
        return result
    seen = await presented_certificate(open_stream, server_name, deadline.remaining())
    if seen is None or seen.cert is None:
        return result
    return replace(result, version=seen.version, cipher=seen.cipher, cert=seen.cert)
