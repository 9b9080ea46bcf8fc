"""``sensor_port``: the DigiCert sensor the ACME agent uses as its proxy answers and tunnels.

The sensor listens on 8080 (3.8.46 and older) or 48999 (3.8.47 and newer). An open port
is not enough: the check asks the sensor for a tunnel (HTTP CONNECT) to the first
DigiCert hostname and completes a verified TLS handshake through it, which proves the
sensor really reaches DigiCert. When the sensor is this host, the process that holds the
port is named, because a Tomcat or Jenkins on 8080 is a classic way for this to fail.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any

import psutil

from agent import compat
from agent.config import SENSOR_NEW_PORT, SENSOR_OLD_PORT, SensorConfig
from agent.context import CheckContext
from agent.fqdn.locality import interface_addresses, is_local
from agent.model import Outcome, Status
from agent.net import Deadline, ProxyChoice, Stream, TunnelResult, open_tunnel, tcp_connect
from agent.net.tcp import format_addr
from agent.net.tls import TlsResult, tls_probe
from agent.redact import redact_text

# Share of the budget the tunnel (TCP + CONNECT) may use before the rest is left for the
# TLS handshake, or for probing the other rule's port when the tunnel failed.
TUNNEL_SHARE = 0.6
# The local listener lookup reads /proc in a thread; never wait longer than this for it.
LOOKUP_CAP = 2.0
CMDLINE_MAX = 300

SAME_HOST_NOTE = (
    "The sensor runs on this host: DigiCert advises against running a sensor and an "
    "ACME agent on the same host; prefer a sensor on a separate machine."
)

RULE_PORTS = {SENSOR_OLD_PORT: "3.8.46 or older", SENSOR_NEW_PORT: "3.8.47 or newer"}

# A command line may carry secrets: mask the value of any flag that looks like one.
_SECRET_ARG_RE = re.compile(
    r"(?i)(-{1,2}[\w.-]*(?:pass|secret|token|key|credential)[\w.-]*(?:=|\s+))(\S+)"
)


@dataclass(frozen=True)
class Listener:
    """A local process listening on the sensor's port."""

    pid: int | None
    name: str | None
    cmdline: str | None
    address: str

    def describe(self) -> str:
        if self.pid is None:
            return f"a process this user cannot see (listening on {self.address})"
        return f"pid {self.pid} ({self.name or 'unknown'})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "name": self.name,
            "cmdline": self.cmdline,
            "address": self.address,
        }


def _clean_cmdline(argv: list[str]) -> str:
    text = _SECRET_ARG_RE.sub(lambda m: m.group(1) + "***", " ".join(argv))
    text = redact_text(text)
    return text if len(text) <= CMDLINE_MAX else text[: CMDLINE_MAX - 3] + "..."


def _accepts(listen_ip: str, ip: str) -> bool:
    """Whether a socket listening on ``listen_ip`` takes connections to ``ip``."""
    if listen_ip == ip:
        return True
    try:
        lst, dst = ipaddress.ip_address(listen_ip), ipaddress.ip_address(ip)
    except ValueError:
        return False
    if lst.is_unspecified:
        # 0.0.0.0 takes IPv4 only; :: takes IPv6 and (without IPV6_V6ONLY) IPv4 too.
        return lst.version == 6 or dst.version == 4
    mapped = getattr(lst, "ipv4_mapped", None)
    return mapped is not None and mapped == dst


def listeners_on(ip: str, port: int) -> list[Listener]:
    """Processes of this host listening where a connection to ``ip:port`` would land."""
    found: list[Listener] = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port:
            continue
        if conn.type != socket.SOCK_STREAM or not _accepts(conn.laddr.ip, ip):
            continue
        name: str | None = None
        cmdline: str | None = None
        if conn.pid is not None:
            try:
                proc = psutil.Process(conn.pid)
                name = proc.name()
                cmdline = _clean_cmdline(proc.cmdline())
            except psutil.Error:
                pass  # it exited meanwhile, or we may not look at it: the pid still helps
        found.append(Listener(conn.pid, name, cmdline, format_addr(conn.laddr.ip, port)))
    # one socket per pid is enough (a server often listens on :: and 0.0.0.0)
    return list({(lst.pid, lst.address if lst.pid is None else ""): lst for lst in found}.values())


async def _lookup_listeners(ip: str, port: int, budget: float) -> tuple[list[Listener], str | None]:
    """``listeners_on`` in a thread, bounded; the second item says why it found nothing."""
    try:
        async with compat.timeout(max(0.0, min(budget, LOOKUP_CAP))):
            return await asyncio.to_thread(listeners_on, ip, port), None
    except compat.TIMEOUT_ERRORS:
        return [], "listing this host's sockets took too long"
    except psutil.Error as exc:
        return [], f"cannot list this host's sockets: {type(exc).__name__}"


def other_ports(sensor: SensorConfig, port: int) -> list[int]:
    """The ports worth probing when ``port`` does not work: the other rule's port."""
    if sensor.port is not None and sensor.version is not None:
        rule_port, _ = SensorConfig(sensor.host, sensor.version).port_rule()
        return [rule_port] if rule_port != port else []
    return [p for p in RULE_PORTS if p != port]


def wrong_port_summary(sensor: SensorConfig, port: int, rule: str, answering: int) -> str:
    """Why ``port`` is probably wrong, given that ``answering`` accepts connections."""
    host = sensor.host or "?"
    if sensor.port is not None:
        return (
            f"the sensor {host} does not tunnel on [sensor] port {port}, but {answering} "
            f"answers (the port of sensor {RULE_PORTS.get(answering, 'releases')}); "
            "check [sensor] port"
        )
    if sensor.version is None:
        return (
            f"no [sensor] version is set, so {port} was tried, but {answering} answers: "
            f"the sensor is probably {RULE_PORTS[answering]}; set [sensor] version"
        )
    return (
        f"sensor {sensor.version} should listen on {port}, but {answering} answers: "
        f"the sensor is probably {RULE_PORTS[answering]}; set [sensor] version"
    )


def _ip_of(address: str | None) -> str | None:
    if not address:
        return None
    host = address.rsplit(":", 1)[0]
    return host.strip("[]")


async def run(ctx: CheckContext) -> Outcome:
    sensor = ctx.config.sensor
    if not sensor.configured or sensor.host is None:
        return Outcome(
            Status.SKIP,
            "No DigiCert sensor configured ([sensor] host is not set)",
            NO_SENSOR,
            REASONS[NO_SENSOR],
            {},
        )
    deadline = Deadline(ctx.budget)
    port, rule = sensor.port_rule()
    target = ctx.config.targets.hostnames[0]
    target_port = ctx.config.targets.port
    host = sensor.host
    url_host = f"[{host}]" if ":" in host else host
    choice = ProxyChoice(f"http://{url_host}:{port}", "sensor")
    details: dict[str, Any] = {
        "host": host,
        "port": port,
        "port_rule": rule,
        "version": None if sensor.version is None else str(sensor.version),
        "target": f"{target}:{target_port}",
    }

    # When the host is an address literal the local lookup can start right away.
    literal = host if _is_ip(host) else None
    lookup: asyncio.Task[tuple[list[Listener], str | None]] | None = None
    if literal is not None and is_local(literal, await _addresses()):
        lookup = asyncio.create_task(_lookup_listeners(literal, port, deadline.remaining()))
    try:
        tunnel, stream = await open_tunnel(
            choice, target, target_port, deadline.remaining() * TUNNEL_SHARE
        )
        details["tunnel"] = tunnel.to_dict()
        ip = _ip_of(tunnel.proxy_address) or literal
        if lookup is None and ip is not None and is_local(ip, await _addresses()):
            lookup = asyncio.create_task(_lookup_listeners(ip, port, deadline.remaining()))

        tls: TlsResult | None = None
        if stream is not None:
            tls = await _tls_through(stream, choice, target, target_port, deadline)
            details["tls"] = tls.to_dict()

        # The wrong-port diagnosis is for a closed port only: a port that answers CONNECT
        # with an error is a proxy (or another program) that must be reported as such.
        answering: int | None = None
        closed = tunnel.error in ("refused", "timeout") and tunnel.tunnel_ms is None
        if closed and ip is not None:
            answering = await _probe_other(sensor, ip, port, deadline, details)

        listeners: list[Listener] = []
        if lookup is not None:
            listeners, why = await lookup
            lookup = None
            details["same_host"] = True
            details["note"] = SAME_HOST_NOTE
            details["local_listeners"] = [lst.to_dict() for lst in listeners]
            if why:
                details["local_lookup_problem"] = why
        else:
            details["same_host"] = False
        return judge(sensor, port, rule, tunnel, tls, answering, listeners, details)
    finally:
        if lookup is not None:
            lookup.cancel()


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


async def _addresses() -> frozenset[str]:
    try:
        return await asyncio.to_thread(interface_addresses)
    except (OSError, psutil.Error):
        return frozenset()


async def _tls_through(
    stream: Stream, choice: ProxyChoice, target: str, target_port: int, deadline: Deadline
) -> TlsResult:
    """Verified TLS with ``target`` through the tunnel; closes the stream."""

    async def reopen(budget: float) -> Stream | None:
        _, again = await open_tunnel(choice, target, target_port, budget)
        return again

    async with stream:
        return await tls_probe(stream, reopen, target, deadline.remaining())


async def _probe_other(
    sensor: SensorConfig, ip: str, port: int, deadline: Deadline, details: dict[str, Any]
) -> int | None:
    """TCP-probe the other rule's port(s); the first that accepts, or None."""
    probes: list[dict[str, Any]] = []
    answering: int | None = None
    candidates = other_ports(sensor, port)
    for i, other in enumerate(candidates):
        share = deadline.remaining() / (len(candidates) - i)
        result, conn = await tcp_connect(ip, other, share)
        if conn is not None:
            await conn.close()
        probes.append({"port": other, "outcome": result.error or "connected"})
        if result.ok and answering is None:
            answering = other
    if probes:
        details["other_ports"] = probes
    return answering


# What a CONNECT proxy answers when it will not tunnel. Anything else from a port that
# accepted the connection (400, 404, 405, 501, no HTTP at all, silence) means the program
# there is not a proxy: a web server or an application server holding the sensor's port.
PROXY_DENIALS = frozenset({403, 407, 502, 503, 504})


def not_a_proxy(tunnel: TunnelResult) -> bool:
    """The port accepted the connection but did not answer CONNECT like a proxy."""
    return tunnel.tunnel_ms is not None and tunnel.status not in PROXY_DENIALS


OK = "ok"
NO_SENSOR = "no_sensor"
UNREACHABLE = "sensor_unreachable"
REFUSED = "sensor_refused"
TIMEOUT = "sensor_timeout"
WRONG_PORT = "sensor_wrong_port"
CONNECT_DENIED = "sensor_connect_denied"
TUNNEL_TLS_FAILED = "sensor_tunnel_tls_failed"

# Every reason this check gives, with the gist of its remediation (the sentence in a
# result names the sensor, port and target: see _tunnel_remediation, _tls_remediation).
REASONS: dict[str, str] = {
    OK: "",
    NO_SENSOR: (
        "Nothing to do unless the ACME agent goes through a DigiCert sensor; then set "
        "[sensor] host and [sensor] version."
    ),
    UNREACHABLE: "Fix [sensor] host, or the route and firewall to the sensor.",
    REFUSED: "Start the sensor, open its port in its firewall, or set [sensor] port.",
    TIMEOUT: "Allow TCP to the sensor's port from this host; check the sensor is running.",
    WRONG_PORT: "Set [sensor] version to the sensor's real version (or [sensor] port).",
    CONNECT_DENIED: (
        "Allow *.digicert.com:443 in the sensor's allow-list, and make sure the program on "
        "the port is the sensor."
    ),
    TUNNEL_TLS_FAILED: (
        "Exempt *.digicert.com from TLS inspection behind the sensor; check the clock and the "
        "sensor's own path to DigiCert."
    ),
}

_TUNNEL_REASONS = {
    "dns": UNREACHABLE,
    "unreachable": UNREACHABLE,
    "refused": REFUSED,
    "timeout": TIMEOUT,
    "auth_required": CONNECT_DENIED,
    "connect_failed": CONNECT_DENIED,
    "unsupported": CONNECT_DENIED,
}


def judge(
    sensor: SensorConfig,
    port: int,
    rule: str,
    tunnel: TunnelResult,
    tls: TlsResult | None,
    answering: int | None,
    listeners: list[Listener],
    details: dict[str, Any],
) -> Outcome:
    """The result from what :func:`run` gathered (pure: ``details`` is copied, not changed).

    ``tunnel``: TCP + CONNECT to the sensor; ``tls``: the handshake through it (None when
    no tunnel opened); ``answering``: the other rule's port when only it answered;
    ``listeners``: what holds the port when the sensor is this host.
    """
    details = dict(details)
    host = sensor.host or "?"
    where = f"{format_addr(host, port) if ':' in host else f'{host}:{port}'}"
    target = tunnel.target
    if tls is not None and tls.ok:
        issuer = tls.cert.issuer_cn if tls.cert and tls.cert.issuer_cn else "a trusted CA"
        return Outcome(
            Status.PASS,
            f"Sensor {where} tunnels to {target}: TLS verified (issuer {issuer}); {rule}",
            "ok",
            "",
            details,
        )
    held = ""
    if listeners:
        held = f"; on this host port {port} is held by " + ", ".join(
            lst.describe() for lst in listeners
        )
        if tls is None and not_a_proxy(tunnel):
            held += ", which does not behave like a proxy"
    if answering is not None:
        remediation = (
            f"Set [sensor] version to the version the sensor at {host} really runs "
            f"(or [sensor] port to {answering}), or move the sensor to port {port}."
        )
        if sensor.port is not None:
            remediation = (
                f"Set [sensor] port to the port the sensor at {host} listens on "
                f"(probably {answering}), or remove it to use the version rule."
            )
        return Outcome(
            Status.FAIL,
            "Wrong sensor port: " + wrong_port_summary(sensor, port, rule, answering) + held,
            "sensor_wrong_port",
            remediation,
            details,
        )
    if tls is not None:
        details["tls_phase_error"] = tls.error
        seen = ""
        if tls.cert is not None:
            seen = f" (presented: issuer {tls.cert.issuer}, SHA-256 {tls.cert.sha256})"
        return Outcome(
            Status.FAIL,
            f"Sensor {where} opened a tunnel to {target}, but TLS failed: {tls.message}"
            + seen
            + held,
            "sensor_tunnel_tls_failed",
            _tls_remediation(tls, target),
            details,
        )
    reason = _TUNNEL_REASONS.get(tunnel.error or "", "sensor_connect_denied")
    phase = "connect" if tunnel.tunnel_ms is None else "CONNECT"
    details["phase"] = phase
    summary = _tunnel_summary(tunnel, where)
    if phase == "connect" and reason in ("sensor_refused", "sensor_timeout"):
        summary += f" ({rule})"
    return Outcome(
        Status.FAIL,
        summary + held,
        reason,
        _tunnel_remediation(reason, tunnel, host, port, phase, listeners),
        details,
    )


def _tunnel_summary(tunnel: TunnelResult, where: str) -> str:
    """The tunnel's message told about the sensor rather than about "the proxy"."""
    msg = tunnel.message
    shown = f"Sensor {where}"
    ip = _ip_of(tunnel.proxy_address)
    if ip is not None and not where.startswith((ip, f"[{ip}]")):
        shown += f" ({ip})"
    for prefix in (
        f"the proxy {tunnel.proxy} at {tunnel.proxy_address}",
        f"the proxy {tunnel.proxy}",
    ):
        if msg.startswith(prefix):
            return shown + msg[len(prefix) :]
    return f"{shown}: {msg}"


def _tunnel_remediation(
    reason: str, tunnel: TunnelResult, host: str, port: int, phase: str, listeners: list[Listener]
) -> str:
    target = tunnel.target
    if listeners and not_a_proxy(tunnel):
        return (
            f"Port {port} on this host belongs to {listeners[0].describe()}, which does not "
            "act as a DigiCert sensor: stop or move that program, or run the sensor on "
            "another port and set [sensor] port or [sensor] version to match."
        )
    if not_a_proxy(tunnel) and reason == "sensor_connect_denied":
        return (
            f"The program on {host}:{port} is not an HTTP proxy: check that the DigiCert "
            "sensor runs there, or set [sensor] port / [sensor] version to its real port."
        )
    if reason == "sensor_unreachable":
        if tunnel.error == "dns":
            return f"Fix [sensor] host: {host!r} does not resolve on this host (hosts file or DNS)."
        return (
            f"Check the route and firewalls between this host and the sensor at {host}, "
            "and that [sensor] host names the sensor."
        )
    if reason == "sensor_refused":
        return (
            f"Nothing accepts connections on port {port} of {host}: start the DigiCert sensor "
            f"there, or open TCP {port} in its firewall; if it listens elsewhere set [sensor] port."
        )
    if reason == "sensor_timeout":
        if phase == "CONNECT":
            return (
                f"The sensor at {host} accepted the connection but did not answer CONNECT "
                f"{target}: check that it is a running DigiCert sensor and that it reaches "
                f"{target} itself."
            )
        return (
            f"A firewall between this host and {host} probably drops TCP {port} silently: "
            f"allow TCP {port} from this host to the sensor."
        )
    if tunnel.status == 407:
        return (
            "The sensor wants proxy authentication: allow this host on the sensor without "
            "credentials, as the ACME agent connects to it without them."
        )
    return (
        f"The sensor at {host}:{port} does not tunnel to {target}: allow {target} "
        "(*.digicert.com on port 443) in the sensor's allow-list, and make sure the program "
        f"on port {port} is the DigiCert sensor."
    )


def _tls_remediation(tls: TlsResult, target: str) -> str:
    if tls.error in ("untrusted", "hostname_mismatch"):
        return (
            f"Something behind the sensor intercepts TLS to {target} (see the presented "
            "issuer): exempt *.digicert.com from TLS inspection on that path, or check that "
            "this host trusts the DigiCert roots."
        )
    if tls.error == "not_yet_valid":
        return f"Check this host's clock: the certificate of {target} looks not yet valid."
    if tls.error == "timeout":
        return (
            f"The tunnel opened but {target} did not complete a TLS handshake in time: check "
            "the sensor's own outbound path to DigiCert on port 443."
        )
    return (
        f"The sensor opened the tunnel but TLS with {target} failed: check the sensor's "
        "outbound path to DigiCert on port 443 for proxies or filters."
    )
