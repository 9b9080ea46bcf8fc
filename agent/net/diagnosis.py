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


def tcp_remediation(word: str, addresses: str, port: int) -> str:
    """What to do about a TCP failure to ``addresses`` (text like ``216.168.244.42``)."""
    if word == "timeout":
        return (
            f"Packets to {addresses} port {port} are silently dropped (a firewall DROP rule "
            f"or a missing egress allow): allow outbound TCP {port} from this host to "
            f"{addresses}, or set [proxy] url if this host must go through a proxy."
        )
    if word == "refused":
        return (
            f"Connections to {addresses} port {port} are actively refused, which on the "
            f"internet means a REJECT firewall rule or an intercepting device: allow outbound "
            f"TCP {port} from this host to {addresses}."
        )
    if word == "unreachable":
        return (
            f"This host has no route to {addresses}: check the default route and gateway "
            f"(`ip route get {addresses.split(',')[0].strip('[]')}`), or set [proxy] url if "
            f"outbound traffic must go through a proxy."
        )
    return f"Connecting to {addresses} port {port} failed; check the host's network configuration."


def remediation(reason: str, probe: HttpsProbe) -> str:
    """The sentence for ``reason`` about ``probe``'s target."""
    host, port = probe.host, probe.port
    proxy = probe.proxy.display or "the proxy"
    cert = probe.tls.cert if probe.tls else None
    if reason == "dns_nxdomain":
        return (
            f"{_dns_servers(probe)} says {host} does not exist: look for a DNS override "
            "(split-horizon zone, RPZ or DNS filtering) and make sure public DigiCert names "
            "resolve, or set [dns] nameservers to a resolver that does."
        )
    if reason == "dns_no_answer":
        return (
            f"{_dns_servers(probe)} has no A or AAAA record for {host}: a local zone or "
            "filter blanks it; fix the resolver so the public records are returned."
        )
    if reason == "dns_servfail":
        return (
            f"{_dns_servers(probe)} fails to resolve {host} (SERVFAIL/REFUSED): check its "
            "forwarders and DNSSEC validation, or set [dns] nameservers to a working resolver."
        )
    if reason == "dns_timeout":
        return (
            f"{_dns_servers(probe)} did not answer for {host}: check the resolver is running "
            "and that UDP and TCP port 53 to it are allowed."
        )
    if reason == "dns_unreachable":
        return (
            f"{_dns_servers(probe)} cannot be reached: fix the nameserver entries in "
            "/etc/resolv.conf or [dns] nameservers."
        )
    if reason == "dns_no_resolver":
        return "Configure a nameserver in /etc/resolv.conf or in [dns] nameservers."
    if reason.startswith("dns_"):
        return f"{_dns_servers(probe)} gave an unusable answer for {host}; check the resolver."
    if reason.startswith("tcp_"):
        addrs = ", ".join(c.ip for c in probe.connects) or host
        return tcp_remediation(reason.removeprefix("tcp_"), addrs, port)
    if reason == "proxy_refused":
        return (
            f"Nothing accepts connections at {proxy}: check the host and port of [proxy] url "
            "(or the environment's HTTPS_PROXY) and that the proxy is running."
        )
    if reason == "proxy_unreachable":
        return f"This host has no route to {proxy}: check [proxy] url and the network path to it."
    if reason == "proxy_timeout":
        return (
            f"{proxy} does not answer: check that it is running and that a firewall between "
            "this host and the proxy allows the connection."
        )
    if reason == "proxy_dns":
        return f"The proxy's host name in {proxy} does not resolve: use its IP or fix DNS."
    if reason == "proxy_auth_required":
        return (
            f"{proxy} requires authentication: put valid credentials in [proxy] url "
            "(http://user:password@host:port) or let this host through without them."
        )
    if reason == "proxy_connect_failed":
        return (
            f"{proxy} refuses to tunnel to {host}:{port}: allow CONNECT to {host}:{port} "
            "(*.digicert.com) in the proxy's policy."
        )
    if reason == "proxy_unsupported":
        return (
            "Only http:// CONNECT proxies are supported: set [proxy] url to one "
            "(http://host:port), or remove the unsupported proxy from the environment."
        )
    if reason == "tls_untrusted":
        # No host name or fingerprint here (the summary has them): targets behind the
        # same inspection device then share one sentence.
        issuer = cert.issuer if cert else "an unknown issuer"
        if cert is not None and is_digicert_issuer(cert):
            return (
                "The DigiCert chain presented is not trusted here: update the system CA "
                "bundle (ca-certificates) or point SSL_CERT_FILE at a bundle that includes "
                "DigiCert's roots."
            )
        return (
            f"A certificate issued by '{issuer}' is presented instead of DigiCert's: TLS "
            "inspection is suspected. Exempt *.digicert.com from TLS inspection on the proxy "
            "or firewall, or add the inspection CA to the trust store the ACME agent uses "
            "(the system store or SSL_CERT_FILE)."
        )
    if reason == "tls_hostname_mismatch":
        shown = ", ".join(cert.san) if cert and cert.san else (cert.subject if cert else "?")
        return (
            f"What answers for {host} presents a certificate for {shown}: a captive portal, "
            "transparent proxy, or a wrong /etc/hosts or DNS entry is in the path; make "
            f"{host} reach DigiCert directly."
        )
    if reason == "tls_expired":
        when = cert.not_after if cert and cert.not_after else "an earlier date"
        return (
            f"The certificate presented for {host} expired ({when}): an intercepting device "
            "serves a stale certificate, or this host's clock is far ahead; check the clock "
            "(see clock_skew) and the network path."
        )
    if reason == "tls_not_yet_valid":
        when = cert.not_before if cert and cert.not_before else "a later date"
        return (
            f"The certificate for {host} is valid only from {when}: this host's clock is "
            "probably behind; synchronise it with NTP (timedatectl set-ntp true)."
        )
    if reason == "tls_timeout":
        return (
            f"TCP to {host}:{port} opens but the TLS handshake never completes: a firewall "
            f"or IPS is holding TLS to {host}; allow it."
        )
    if reason.startswith("tls_"):
        return (
            f"The TLS handshake with {host} failed: a middlebox in the path blocks or breaks "
            "TLS; exempt *.digicert.com from it."
        )
    if reason == "http_status":
        status = probe.http.status if probe.http else None
        return (
            f"{host} answered HTTP {status}: a proxy or web filter may be blocking the ACME "
            "URL (403/407), or the service is failing (5xx); allow the URL, or retry later."
        )
    if reason == "http_not_acme":
        return (
            f"{host} did not return the ACME directory: a captive portal or filtering proxy "
            f"answers instead of DigiCert; exempt {host} from it."
        )
    if reason == "http_timeout":
        return (
            f"{host} accepted TLS but did not answer the HTTP request in time: a filtering "
            "proxy may hold it; check the path, or raise [agent] timeout."
        )
    if reason.startswith("http_"):
        return f"{host} sent an answer that is not valid HTTP: a middlebox is interfering."
    return ""
