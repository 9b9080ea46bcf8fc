"""Reason codes and remediation sentences for network failures, shared by the checks.

A reason code is ``<phase>_<error word>`` (``dns_nxdomain``, ``tcp_timeout``,
``tls_untrusted``, ``proxy_auth_required``...). The remediation is a sentence a
sysadmin can act on, naming the host, address, port, proxy or issuer involved.
"""

from __future__ import annotations

from agent.net.probe import HttpsProbe
from agent.net.tls import CertInfo

PHASE_PREFIX = {"dns": "dns", "connect": "tcp", "proxy": "proxy", "tls": "tls", "http": "http"}
_HTTP_WORDS = {"timeout": "timeout", "protocol": "error"}


def reason_of(probe: HttpsProbe) -> str:
    """The reason code of a failed probe (``ok`` when it did not fail)."""
    if probe.phase is None or probe.error is None:
        return "ok"
    word = _HTTP_WORDS.get(probe.error, probe.error) if probe.phase == "http" else probe.error
    return f"{PHASE_PREFIX[probe.phase]}_{word}"


def is_digicert_issuer(cert: CertInfo | None) -> bool:
    if cert is None:
        return False
    return "digicert" in f"{cert.issuer_org or ''} {cert.issuer_cn or ''}".lower()


def family_name(family: str) -> str:
    return {"ipv4": "IPv4", "ipv6": "IPv6"}.get(family, family)


def _dns_servers(probe: HttpsProbe) -> str:
    if probe.dns is None:
        return "the resolver"
    names = ", ".join(probe.dns.nameservers.describe()) or "none"
    return f"the resolver ({names}, from {probe.dns.nameservers.source})"


# Every reason a probe can end in (``<phase>_<word>`` for each primitive's error words,
# see reason_of), with its remediation. ``{...}`` fields are filled from the probe (see
# _fields); ``reason:variant`` keys are alternatives :func:`remediation` picks between.
# The docs' reason tables are checked against this table (tests/test_reasons.py).
REMEDIATIONS: dict[str, str] = {
    "dns_nxdomain": (
        "{Resolver} says {host} does not exist: look for a DNS override (split-horizon "
        "zone, RPZ or DNS filtering) and make sure public DigiCert names resolve, or set "
        "[dns] nameservers to a resolver that does."
    ),
    "dns_no_answer": (
        "{Resolver} has no A or AAAA record for {host}: a local zone or filter blanks it; "
        "fix the resolver so the public records are returned."
    ),
    "dns_servfail": (
        "{Resolver} fails to resolve {host} (SERVFAIL/REFUSED): check its forwarders and "
        "DNSSEC validation, or set [dns] nameservers to a working resolver."
    ),
    "dns_timeout": (
        "{Resolver} did not answer for {host}: check the resolver is running and that UDP "
        "and TCP port 53 to it are allowed."
    ),
    "dns_unreachable": (
        "{Resolver} cannot be reached: fix the nameserver entries in /etc/resolv.conf or "
        "[dns] nameservers."
    ),
    "dns_no_resolver": "Configure a nameserver in /etc/resolv.conf or in [dns] nameservers.",
    "dns_error": "{Resolver} gave an unusable answer for {host}; check the resolver.",
    "tcp_timeout": (
        "Packets to {addresses} port {port} are silently dropped (a firewall DROP rule or a "
        "missing egress allow): allow outbound TCP {port} from this host to {addresses}, or "
        "set [proxy] url if this host must go through a proxy."
    ),
    "tcp_refused": (
        "Connections to {addresses} port {port} are actively refused, which on the internet "
        "means a REJECT firewall rule or an intercepting device: allow outbound TCP {port} "
        "from this host to {addresses}."
    ),
    "tcp_unreachable": (
        "This host has no route to {addresses}: check the default route and gateway "
        "(`ip route get {first_address}`), or set [proxy] url if outbound traffic must go "
        "through a proxy."
    ),
    "tcp_error": (
        "Connecting to {addresses} port {port} failed; check the host's network configuration."
    ),
    "proxy_refused": (
        "Nothing accepts connections at {proxy}: check the host and port of [proxy] url (or "
        "the environment's HTTPS_PROXY) and that the proxy is running."
    ),
    "proxy_unreachable": (
        "This host has no route to {proxy}: check [proxy] url and the network path to it."
    ),
    "proxy_timeout": (
        "{Proxy} does not answer: check that it is running and that a firewall between this "
        "host and the proxy allows the connection."
    ),
    "proxy_dns": "The proxy's host name in {proxy} does not resolve: use its IP or fix DNS.",
    "proxy_auth_required": (
        "{Proxy} requires authentication: put valid credentials in [proxy] url "
        "(http://user:password@host:port) or let this host through without them."
    ),
    "proxy_connect_failed": (
        "{Proxy} refuses to tunnel to {host}:{port}: allow CONNECT to {host}:{port} "
        "(*.digicert.com) in the proxy's policy."
    ),
    "proxy_unsupported": (
        "Only http:// CONNECT proxies are supported: set [proxy] url to one "
        "(http://host:port), or remove the unsupported proxy from the environment."
    ),
    # No host name or fingerprint here (the summary has them): targets behind the same
    # inspection device then share one sentence.
    "tls_untrusted": (
        "A certificate issued by '{issuer}' is presented instead of DigiCert's: TLS "
        "inspection is suspected. Exempt *.digicert.com from TLS inspection on the proxy "
        "or firewall, or add the inspection CA to the trust store the ACME agent uses "
        "(the system store or SSL_CERT_FILE)."
    ),
    "tls_untrusted:digicert": (
        "The DigiCert chain presented is not trusted here: update the system CA bundle "
        "(ca-certificates) or point SSL_CERT_FILE at a bundle that includes DigiCert's roots."
    ),
    "tls_hostname_mismatch": (
        "What answers for {host} presents a certificate for {names}: a captive portal, "
        "transparent proxy, or a wrong /etc/hosts or DNS entry is in the path; make {host} "
        "reach DigiCert directly."
    ),
    "tls_expired": (
        "The certificate presented for {host} expired ({not_after}): an intercepting device "
        "serves a stale certificate, or this host's clock is far ahead; check the clock "
        "(see clock_skew) and the network path."
    ),
    "tls_not_yet_valid": (
        "The certificate for {host} is valid only from {not_before}: this host's clock is "
        "probably behind; synchronise it with NTP (timedatectl set-ntp true)."
    ),
    "tls_timeout": (
        "TCP to {host}:{port} opens but the TLS handshake never completes: a firewall or IPS "
        "is holding TLS to {host}; allow it."
    ),
    "tls_handshake": (
        "The TLS handshake with {host} failed: a middlebox in the path blocks or breaks "
        "TLS; exempt *.digicert.com from it."
    ),
    "http_status": (
        "HTTP {status} from {host}: a proxy or web filter may be blocking the ACME URL "
        "(403/407), or the service is failing (5xx); allow the URL, or retry later."
    ),
    "http_not_acme": (
        "What answers for {host} is not the ACME directory: a captive portal or filtering "
        "proxy answers instead of DigiCert; exempt {host} from it."
    ),
    "http_timeout": (
        "TLS to {host} works but the HTTP request got no answer in time: a filtering proxy "
        "may hold it; check the path, or raise [agent] timeout."
    ),
    "http_error": "The answer from {host} is not valid HTTP: a middlebox is interfering.",
    "acme_no_nonce": (
        "The ACME server at {host} serves its directory but no nonce (HEAD newNonce must answer 200 or 204 "
        "with a Replay-Nonce header), so every ACME client fails at its first request: a "
        "proxy or filter that allows only the directory URL, or strips response headers, is "
        "in the path; allow all of https://{host}/v2/acme/ and pass its headers unchanged."
    ),
}


def _variant(reason: str, probe: HttpsProbe) -> str:
    cert = probe.tls.cert if probe.tls else None
    if reason == "tls_untrusted" and is_digicert_issuer(cert):
        return "tls_untrusted:digicert"
    return reason


def _fields(probe: HttpsProbe) -> dict[str, object]:
    cert = probe.tls.cert if probe.tls else None
    addresses = ", ".join(c.ip for c in probe.connects) or probe.host
    resolver = _dns_servers(probe)
    return {
        "host": probe.host,
        "port": probe.port,
        "proxy": probe.proxy.display or "the proxy",
        # to start a sentence: "The proxy http://host:3128" (or just "The proxy")
        "Proxy": " ".join(("The proxy", *((probe.proxy.display,) if probe.proxy.display else ()))),
        "resolver": resolver,
        "Resolver": resolver[:1].upper() + resolver[1:],
        "addresses": addresses,
        "first_address": addresses.split(",")[0].strip("[]"),
        "issuer": cert.issuer if cert else "an unknown issuer",
        "names": ", ".join(cert.san) if cert and cert.san else (cert.subject if cert else "?"),
        "not_after": cert.not_after if cert and cert.not_after else "an earlier date",
        "not_before": cert.not_before if cert and cert.not_before else "a later date",
        "status": probe.http.status if probe.http else None,
    }


def tcp_remediation(word: str, addresses: str, port: int) -> str:
    """What to do about a TCP failure to ``addresses`` (text like ``216.168.244.42``)."""
    template = REMEDIATIONS.get(f"tcp_{word}", REMEDIATIONS["tcp_error"])
    first = addresses.split(",")[0].strip("[]")
    return template.format(addresses=addresses, port=port, first_address=first)


def remediation(reason: str, probe: HttpsProbe) -> str:
    """The sentence for ``reason`` about ``probe``'s target ("" for a reason not listed)."""
    template = REMEDIATIONS.get(_variant(reason, probe))
    return "" if template is None else template.format(**_fields(probe))


def reasons() -> tuple[str, ...]:
    """Every reason code in the table (variants folded)."""
    return tuple(dict.fromkeys(k.partition(":")[0] for k in REMEDIATIONS))
