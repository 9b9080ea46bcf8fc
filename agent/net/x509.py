"""Decode the few fields a report needs from a DER certificate, in memory.

The stdlib decodes a certificate only through ``getpeercert()`` of a *verified* peer, or
``ssl._ssl._test_decode_cert`` on a PEM *file*. An unverified peer's certificate (TLS
inspection, a wrong chain) is exactly the one a report must describe, so this reads it
from DER directly: subject, issuer, validity and subjectAltName, in ``getpeercert()``'s
shape. Anything malformed raises ``ValueError``.
"""

from __future__ import annotations

import calendar
import time
from typing import Any

_SEQUENCE, _SET = 0x30, 0x31
_OID, _BOOLEAN, _OCTETS = 0x06, 0x01, 0x04
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18
_VERSION, _EXTENSIONS = 0xA0, 0xA3
_EMAIL, _DNS_NAME, _URI, _IP_ADDRESS = 0x81, 0x82, 0x86, 0x87
_SAN = "2.5.29.17"
_ATTRIBUTES = {
    "2.5.4.3": "commonName",
    "2.5.4.10": "organizationName",
    "2.5.4.11": "organizationalUnitName",
    "2.5.4.6": "countryName",
    "2.5.4.8": "stateOrProvinceName",
    "2.5.4.7": "localityName",
    "1.2.840.113549.1.9.1": "emailAddress",
    "2.5.4.5": "serialNumber",
    "2.5.4.9": "streetAddress",
    "2.5.4.15": "businessCategory",
    "2.5.4.17": "postalCode",
    "0.9.2342.19200300.100.1.25": "domainComponent",
    "1.3.6.1.4.1.311.60.2.1.3": "jurisdictionCountryName",
}  # OpenSSL's long names; any other attribute is shown as its dotted OID
_STRING_CODECS = {
    0x0C: "utf-8",  # UTF8String
    0x13: "ascii",  # PrintableString
    0x16: "ascii",  # IA5String
    0x14: "latin-1",  # TeletexString, as OpenSSL reads it
    0x1E: "utf-16-be",  # BMPString
    0x1C: "utf-32-be",  # UniversalString
}


def _read(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """One TLV at ``pos``: tag, value, position after it."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    end = pos + length
    if end > len(data):
        raise ValueError("truncated DER")
    return tag, data[pos:end], end


def _items(data: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        tag, value, pos = _read(data, pos)
        out.append((tag, value))
    return out


def _expect(item: tuple[int, bytes], tag: int) -> bytes:
    if item[0] != tag:
        raise ValueError(f"DER tag {item[0]:#x} where {tag:#x} was expected")
    return item[1]


def _oid(value: bytes) -> str:
    if not value:
        raise ValueError("empty OID")
    parts = [min(value[0] // 40, 2)]
    parts.append(value[0] - 40 * parts[0])
    n = 0
    for byte in value[1:]:
        n = n << 7 | byte & 0x7F
        if not byte & 0x80:
            parts.append(n)
            n = 0
    return ".".join(map(str, parts))


def _string(tag: int, value: bytes) -> str:
    return value.decode(_STRING_CODECS.get(tag, "latin-1"), "replace")


def _name(data: bytes) -> tuple[tuple[tuple[str, str], ...], ...]:
    rdns = []
    for rdn in _items(data):
        pairs = []
        for attr in _items(_expect(rdn, _SET)):
            oid, value = _items(_expect(attr, _SEQUENCE))[:2]
            key = _oid(_expect(oid, _OID))
            pairs.append((_ATTRIBUTES.get(key, key), _string(*value)))
        rdns.append(tuple(pairs))
    return tuple(rdns)


def _time(tag: int, value: bytes) -> str:
    text = value.decode("ascii")
    if tag == _UTC_TIME:
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != _GENERALIZED_TIME:
        raise ValueError("bad time in validity")
    parsed = time.strptime(text[:14], "%Y%m%d%H%M%S")
    # getpeercert()'s form, which ssl.cert_time_to_seconds reads
    return time.strftime("%b %e %H:%M:%S %Y GMT", time.gmtime(calendar.timegm(parsed)))


def _ip(raw: bytes) -> str:
    if len(raw) == 4:
        return ".".join(str(b) for b in raw)
    if len(raw) == 16:  # as the ssl module prints it: %X groups, not compressed
        return ":".join(f"{int.from_bytes(raw[i : i + 2], 'big'):X}" for i in range(0, 16, 2))
    return "<invalid>"


_SAN_KINDS = {_EMAIL: "email", _DNS_NAME: "DNS", _URI: "URI"}


def _san(data: bytes) -> tuple[tuple[str, str], ...]:
    names: list[tuple[str, str]] = []
    for tag, value in _items(_expect(_items(data)[0], _SEQUENCE)):
        if tag in _SAN_KINDS:
            names.append((_SAN_KINDS[tag], value.decode("ascii", "replace")))
        elif tag == _IP_ADDRESS:
            names.append(("IP Address", _ip(value)))
    return tuple(names)


def decode(der: bytes) -> dict[str, Any]:
    """subject, issuer, notBefore, notAfter and subjectAltName, as ``getpeercert()`` has them."""
    _, cert, _ = _read(der, 0)
    tbs = _items(_expect(_items(cert)[0], _SEQUENCE))
    if tbs and tbs[0][0] == _VERSION:
        tbs = tbs[1:]
    if len(tbs) < 6:
        raise ValueError("not a certificate")
    # serial, signature algorithm, issuer, validity, subject, key, then optional fields
    issuer = _name(_expect(tbs[2], _SEQUENCE))
    not_before, not_after = _items(_expect(tbs[3], _SEQUENCE))[:2]
    out: dict[str, Any] = {
        "subject": _name(_expect(tbs[4], _SEQUENCE)),
        "issuer": issuer,
        "notBefore": _time(*not_before),
        "notAfter": _time(*not_after),
    }
    for tag, value in tbs[6:]:
        if tag != _EXTENSIONS:
            continue
        for ext in _items(_expect(_items(value)[0], _SEQUENCE)):
            fields = _items(_expect(ext, _SEQUENCE))
            if _oid(_expect(fields[0], _OID)) == _SAN:
                out["subjectAltName"] = _san(_expect(fields[-1], _OCTETS))
    return out
