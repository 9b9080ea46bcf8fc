"""The lab stand-ins behave like the real DigiCert services (and fail like real networks)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email.utils
import json
import os
import socket
import ssl
import subprocess
import sys
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncquery
import dns.exception
import dns.message
import dns.resolver
import pytest

from agent import config as agent_config
from tests.lab.base import LabThread, StreamServer
from tests.lab.digicert import HOSTNAMES, DigicertLab
from tests.lab.dns import DnsMode, DnsQuery, DnsServer
from tests.lab.endpoints import (
    BlackholeEndpoint,
    RefusedEndpoint,
    ReplyEndpoint,
    ResetEndpoint,
    SilentEndpoint,
)
from tests.lab.https import DIRECTORY_PATH, NONCE_PATH, HttpsServer
from tests.lab.netns import assert_netns_isolated
from tests.lab.pki import DIGICERT_INTERMEDIATE_CN, INSPECTION_CN, LabPki, certificate
from tests.lab.plugin import clear_network_env
from tests.lab.proxy import ConnectProxy


def client_context(pki: LabPki, *cas: Any) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=pki.bundle_pem(*cas).decode())


async def get(
    server: HttpsServer,
    ctx: ssl.SSLContext,
    path: str = DIRECTORY_PATH,
    method: str = "GET",
    sni: str = "acme.digicert.com",
) -> tuple[int, dict[str, str], bytes]:
    url = f"https://{server.host}:{server.port}{path}"
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, ssl=ctx, server_hostname=sni, headers={"Host": sni}) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


async def handshake(host: str, port: int, ctx: ssl.SSLContext, sni: str | None) -> dict[str, Any]:
    _, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=sni)
    try:
        peer = writer.get_extra_info("peercert")
        return dict(peer) if peer else {}
    finally:
        writer.close()
        await writer.wait_closed()


def issuer_cn(peer: dict[str, Any]) -> str:
    return str(dict(x[0] for x in peer["issuer"])["commonName"])


# ------------------------------------------------------------------------- PKI + HTTPS


def test_pki_names_look_like_digicert(lab_pki: LabPki) -> None:
    cert = certificate(lab_pki.valid)
    assert "DigiCert" in cert.issuer.rfc4514_string()
    assert DIGICERT_INTERMEDIATE_CN in cert.issuer.rfc4514_string()
    assert INSPECTION_CN in certificate(lab_pki.intercepted).issuer.rfc4514_string()
    now = dt.datetime.now(dt.UTC)
    assert certificate(lab_pki.expired).not_valid_after_utc < now
    assert certificate(lab_pki.not_yet_valid).not_valid_before_utc > now
    # The leaf carries the intermediate, like a real server's chain.
    assert len(lab_pki.valid.cert_chain_pems) == 2


def test_write_bundle(lab_pki: LabPki, tmp_path: Path) -> None:
    path = lab_pki.write_bundle(tmp_path / "ca.pem", lab_pki.digicert_root, lab_pki.inspection)
    ctx = ssl.create_default_context(cafile=str(path))
    assert len(ctx.get_ca_certs()) == 2


@pytest.mark.parametrize("sni", ["acme.digicert.com", "daas.digicert.com", "x.digicert.com"])
async def test_tls_verifies_against_bundle_with_sni(lab_pki: LabPki, sni: str) -> None:
    async with HttpsServer(lab_pki.valid, "127.0.0.2", 0) as server:
        peer = await handshake(server.host, server.port, client_context(lab_pki), sni)
        assert issuer_cn(peer) == DIGICERT_INTERMEDIATE_CN
        assert server.sni == [sni]


@pytest.mark.parametrize(
    ("cert", "message"),
    [
        ("intercepted", "unable to get local issuer certificate"),
        ("wrong_host", "Hostname mismatch"),
        ("expired", "certificate has expired"),
        ("not_yet_valid", "certificate is not yet valid"),
    ],
)
async def test_tls_verify_failures(lab_pki: LabPki, cert: str, message: str) -> None:
    async with HttpsServer(getattr(lab_pki, cert), "127.0.0.2", 0) as server:
        with pytest.raises(ssl.SSLCertVerificationError, match=message):
            await handshake(server.host, server.port, client_context(lab_pki), "acme.digicert.com")


async def test_inspection_ca_trusted_shows_its_issuer(lab_pki: LabPki) -> None:
    """A middlebox whose CA the host trusts: the handshake verifies, the issuer gives it away."""
    ctx = client_context(lab_pki, lab_pki.digicert_root, lab_pki.inspection)
    async with HttpsServer(lab_pki.intercepted, "127.0.0.2", 0) as server:
        peer = await handshake(server.host, server.port, ctx, "acme.digicert.com")
    assert issuer_cn(peer) == INSPECTION_CN


async def test_sni_selects_cert_and_cert_switches_at_runtime(lab_pki: LabPki) -> None:
    ctx = client_context(lab_pki)
    async with HttpsServer(
        lab_pki.valid, "127.0.0.2", 0, sni_certs={"daas.digicert.com": lab_pki.expired}
    ) as server:
        await handshake(server.host, server.port, ctx, "acme.digicert.com")
        with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
            await handshake(server.host, server.port, ctx, "daas.digicert.com")
        server.cert = lab_pki.intercepted
        with pytest.raises(ssl.SSLCertVerificationError, match="local issuer"):
            await handshake(server.host, server.port, ctx, "acme.digicert.com")


async def test_acme_directory_like_digicert(lab_pki: LabPki) -> None:
    async with HttpsServer(lab_pki.valid, "127.0.0.2", 0) as server:
        status, headers, body = await get(server, client_context(lab_pki))
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    directory = json.loads(body)
    for key in ("newNonce", "newAccount", "newOrder", "revokeCert", "keyChange"):
        assert directory[key].startswith("https://acme.digicert.com/v2/acme/")
    assert directory["meta"]["externalAccountRequired"] is True
    assert directory["meta"]["termsOfService"].startswith("https://www.digicert.com/")
    date = email.utils.parsedate_to_datetime(headers["Date"])
    assert abs((date - dt.datetime.now(dt.UTC)).total_seconds()) < 5
    assert server.requests[0].path == DIRECTORY_PATH
    assert server.requests[0].host == "acme.digicert.com"


async def test_new_nonce(lab_pki: LabPki) -> None:
    async with HttpsServer(lab_pki.valid, "127.0.0.2", 0) as server:
        ctx = client_context(lab_pki)
        status, headers, _ = await get(server, ctx, NONCE_PATH, "HEAD")
        assert status == 200
        assert headers["Cache-Control"] == "no-store"
        status2, headers2, body = await get(server, ctx, NONCE_PATH, "GET")
    assert (status2, body) == (204, b"")
    assert headers["Replay-Nonce"] != headers2["Replay-Nonce"]


async def test_lab_connections_send_without_nagle() -> None:
    """Like a real server (nginx's tcp_nodelay): no response waits for a delayed ACK."""
    seen: list[int] = []

    class Probe(StreamServer):
        async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    async with Probe("127.0.0.2", 0) as server:
        _, writer = await asyncio.open_connection(*server.address)
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        writer.close()
    assert seen and seen[0] != 0


async def test_behaviours_status_body_clock(lab_pki: LabPki) -> None:
    ctx = client_context(lab_pki)
    async with HttpsServer(lab_pki.valid, "127.0.0.2", 0) as server:
        server.behaviour.status = 503
        status, headers, _ = await get(server, ctx)
        assert status == 503
        assert "Date" in headers
        server.behaviour.status = 200
        server.behaviour.body = {"hello": "world"}
        assert (await get(server, ctx))[2] == b'{"hello": "world"}'
        server.behaviour.body = "<html>captive portal</html>"
        _, headers, body = await get(server, ctx)
        assert headers["Content-Type"].startswith("text/html")
        assert b"captive portal" in body
        server.behaviour.body = None
        server.behaviour.clock_offset = -400
        _, headers, _ = await get(server, ctx)
    skew = email.utils.parsedate_to_datetime(headers["Date"]) - dt.datetime.now(dt.UTC)
    assert -405 < skew.total_seconds() < -395


async def test_https_stop_closes_every_connection(lab_pki: LabPki) -> None:
    server = await HttpsServer(lab_pki.valid, "127.0.0.2", 0).start()
    port = server.port
    assert port != 0
    ctx = client_context(lab_pki)
    sni = "acme.digicert.com"
    idle_reader, idle_writer = await asyncio.open_connection(
        "127.0.0.2", port, ssl=ctx, server_hostname=sni
    )  # keep-alive, idle
    raw_reader, raw_writer = await asyncio.open_connection("127.0.0.2", port)  # mid-handshake
    server.behaviour.delay = 30
    busy_reader, busy_writer = await asyncio.open_connection(
        "127.0.0.2", port, ssl=ctx, server_hostname=sni
    )
    busy_writer.write(f"GET {DIRECTORY_PATH} HTTP/1.1\r\nHost: {sni}\r\n\r\n".encode())
    await asyncio.sleep(0.05)
    await server.stop()
    for reader in (idle_reader, raw_reader, busy_reader):
        assert await asyncio.wait_for(reader.read(), 2) == b""
    for writer in (idle_writer, raw_writer, busy_writer):
        writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.2", port)


def test_https_in_background_thread(lab_pki: LabPki) -> None:
    """Sync tests (subprocess CLI runs) get servers on a background loop."""
    with LabThread() as lab:
        server = lab.start(HttpsServer(lab_pki.valid, "127.0.0.2", 443))
        ctx = client_context(lab_pki)
        with (
            socket.create_connection(("127.0.0.2", 443), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="acme.digicert.com") as tls,
        ):
            tls.sendall(b"GET /v2/acme/directory/ HTTP/1.1\r\nHost: acme.digicert.com\r\n\r\n")
            assert tls.recv(100).startswith(b"HTTP/1.1 200 OK")
    assert not server.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", 443), timeout=5)


# ------------------------------------------------------------------------------- DNS


def resolver(server: DnsServer, lifetime: float = 1.0) -> dns.resolver.Resolver:
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [server.host]
    r.port = server.port
    r.lifetime = lifetime
    return r


def addresses(answer: dns.resolver.Answer) -> list[str]:
    return sorted(rr.to_text() for rr in answer)


ZONE = {"acme.digicert.com": ["127.0.0.2", "::2"], "daas.digicert.com": ["127.0.0.2"]}


@pytest.mark.parametrize("tcp", [False, True])
async def test_dns_answers_a_and_aaaa(tcp: bool) -> None:
    async with DnsServer(ZONE, "127.0.0.53", 0) as server:
        r = resolver(server)
        a = await asyncio.to_thread(r.resolve, "acme.digicert.com", "A", tcp=tcp)
        aaaa = await asyncio.to_thread(r.resolve, "ACME.digicert.com.", "AAAA", tcp=tcp)
        assert addresses(a) == ["127.0.0.2"]
        assert addresses(aaaa) == ["::2"]
        with pytest.raises(dns.resolver.NoAnswer):
            await asyncio.to_thread(r.resolve, "daas.digicert.com", "AAAA", tcp=tcp)
    transport = "tcp" if tcp else "udp"
    assert server.queries[:2] == [
        DnsQuery(transport, "acme.digicert.com", "A"),
        DnsQuery(transport, "acme.digicert.com", "AAAA"),
    ]


async def test_dns_modes() -> None:
    async with DnsServer(ZONE, "127.0.0.53", 0) as server:
        r = resolver(server, lifetime=0.4)
        with pytest.raises(dns.resolver.NXDOMAIN):
            await asyncio.to_thread(r.resolve, "unknown.digicert.com", "A")
        server.set("acme.digicert.com", mode=DnsMode.NXDOMAIN)
        with pytest.raises(dns.resolver.NXDOMAIN):
            await asyncio.to_thread(r.resolve, "acme.digicert.com", "A")
        server.set("acme.digicert.com", mode="servfail")
        with pytest.raises(dns.resolver.NoNameservers, match="SERVFAIL"):
            await asyncio.to_thread(r.resolve, "acme.digicert.com", "A")
        server.set("acme.digicert.com", mode=DnsMode.SILENCE)
        with pytest.raises(dns.resolver.LifetimeTimeout):
            await asyncio.to_thread(r.resolve, "acme.digicert.com", "A")
        with pytest.raises(dns.resolver.LifetimeTimeout):
            await asyncio.to_thread(r.resolve, "acme.digicert.com", "A", tcp=True)
        # Other names are unaffected; addresses change at runtime.
        server.set("daas.digicert.com", ["192.0.2.7"])
        answer = await asyncio.to_thread(r.resolve, "daas.digicert.com", "A")
        assert addresses(answer) == ["192.0.2.7"]
        server.override = DnsMode.SILENCE
        with pytest.raises(dns.resolver.LifetimeTimeout):
            await asyncio.to_thread(r.resolve, "daas.digicert.com", "A")


async def test_dns_truncated_falls_back_to_tcp() -> None:
    async with DnsServer(ZONE, "127.0.0.53", 0) as server:
        server.set("acme.digicert.com", mode=DnsMode.TRUNCATED)
        answer = await asyncio.to_thread(resolver(server).resolve, "acme.digicert.com", "A")
    assert addresses(answer) == ["127.0.0.2"]
    assert [q.transport for q in server.queries] == ["udp", "tcp"]


async def test_dns_garbage_is_not_a_dns_message() -> None:
    async with DnsServer(ZONE, "127.0.0.53", 0) as server:
        server.set("acme.digicert.com", mode=DnsMode.GARBAGE)
        query = dns.message.make_query("acme.digicert.com", "A")
        with pytest.raises(dns.exception.DNSException):
            await dns.asyncquery.tcp(query, server.host, port=server.port, timeout=1)
        # Junk sent *to* the server is dropped; it keeps answering.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"\x00junk", (server.host, server.port))
        server.set("acme.digicert.com", mode=DnsMode.ANSWER)
        reply = await dns.asyncquery.udp(query, server.host, port=server.port, timeout=1)
        assert reply.answer


async def test_dns_stop_closes_udp_and_tcp() -> None:
    server = await DnsServer(ZONE, "127.0.0.53", 0).start()
    # A TCP client left connected must not keep the server alive.
    _, writer = await asyncio.open_connection(server.host, server.port)
    await server.stop()
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(server.host, server.port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((server.host, server.port))  # the UDP port is free again


# ----------------------------------------------------------------------------- proxy


async def connect_via(
    proxy: ConnectProxy, target: str, auth: str | None = None, method: str = "CONNECT"
) -> tuple[int, str, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    head = f"{method} {target} HTTP/1.1\r\nHost: {target}\r\n"
    if auth:
        head += f"Proxy-Authorization: Basic {base64.b64encode(auth.encode()).decode()}\r\n"
    writer.write(head.encode() + b"\r\n")
    response = (await reader.readuntil(b"\r\n\r\n")).decode()
    return int(response.split(" ")[1]), response, reader, writer


async def connect_status(
    proxy: ConnectProxy, target: str, auth: str | None = None, method: str = "CONNECT"
) -> int:
    status, _, _, writer = await connect_via(proxy, target, auth, method)
    writer.close()
    await writer.wait_closed()
    return status


async def test_proxy_tunnels_to_digicert_via_upstream_map(lab_pki: LabPki) -> None:
    async with HttpsServer(lab_pki.valid, "127.0.0.2", 0) as https:
        upstreams = {"acme.digicert.com": (https.host, https.port)}
        async with ConnectProxy("127.0.0.4", 0, upstreams=upstreams) as proxy:
            async with (
                aiohttp.ClientSession() as session,
                session.get(
                    "https://acme.digicert.com/v2/acme/directory/",
                    proxy=proxy.url,
                    ssl=client_context(lab_pki),
                ) as resp,
            ):
                directory = await resp.json()
            assert directory["meta"]["externalAccountRequired"] is True
            assert proxy.requests[0].target == "acme.digicert.com:443"
            assert proxy.requests[0].status == 200
            assert proxy.bytes_up > 0
            assert proxy.bytes_down > 0
            assert https.sni == ["acme.digicert.com"]


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("example.com:443", 403),
        ("digicert.com.evil.net:443", 403),
        ("127.0.0.2:443", 403),
        ("acme.digicert.com:22", 403),
        ("daas.digicert.com:443", 502),  # allowed but not in the upstream map: no DNS
        ("nonsense", 400),
    ],
)
async def test_proxy_denies(target: str, status: int) -> None:
    async with ConnectProxy("127.0.0.4", 0, upstreams={"acme.digicert.com": ("127.0.0.2", 9)}) as p:
        got, response, reader, writer = await connect_via(p, target)
        assert got == status
        assert "Connection: close" in response
        assert await reader.read() == f"{status} {HTTPStatus(status).phrase}\n".encode()
        writer.close()
    assert p.requests[0].status == status


async def test_proxy_auth_and_modes() -> None:
    upstreams = {"acme.digicert.com": ("127.0.0.2", 1)}  # nothing listens there
    async with ConnectProxy("127.0.0.4", 0, upstreams=upstreams, auth=("agent", "s3cret")) as p:
        status, response, _, writer = await connect_via(p, "acme.digicert.com:443")
        writer.close()
        assert status == 407
        assert 'Proxy-Authenticate: Basic realm="DigiCert sensor"' in response
        assert await connect_status(p, "acme.digicert.com:443", "agent:wrong") == 407
        assert await connect_status(p, "acme.digicert.com:443", "agent:s3cret") == 502
        assert await connect_status(p, "acme.digicert.com:443", "agent:s3cret", "GET") == 405
        p.connect_status = 503
        assert await connect_status(p, "acme.digicert.com:443", "agent:s3cret") == 503
    assert [r.status for r in p.requests] == [407, 407, 502, 405, 503]
    assert p.requests[0].proxy_authorization is None


async def test_proxy_stop_closes_tunnels(lab_pki: LabPki) -> None:
    async with HttpsServer(lab_pki.valid, "127.0.0.2", 0) as https:
        proxy = await ConnectProxy(
            "127.0.0.4", 0, upstreams={"acme.digicert.com": https.address}
        ).start()
        status, _, reader, writer = await connect_via(proxy, "acme.digicert.com:443")
        assert status == 200
        await proxy.stop()
        assert await asyncio.wait_for(reader.read(), 2) == b""  # tunnel closed by the proxy
        writer.close()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(proxy.host, proxy.port)


# ------------------------------------------------------------------------- endpoints


async def test_blackhole_connect_times_out() -> None:
    async with BlackholeEndpoint("127.0.0.5", 0) as hole:
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempts = [asyncio.wait_for(asyncio.open_connection(*hole.address), 0.4) for _ in range(3)]
        results = await asyncio.gather(*attempts, return_exceptions=True)
        assert all(isinstance(r, TimeoutError) for r in results), results
        assert loop.time() - started >= 0.4
        # Blocking clients (the CLI in a subprocess) hang the same way.
        with pytest.raises(TimeoutError):
            await asyncio.to_thread(socket.create_connection, hole.address, 0.3)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(*hole.address)


async def test_refused_really_refuses() -> None:
    async with RefusedEndpoint("127.0.0.6", 0) as refused:
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(*refused.address)
        with pytest.raises(OSError, match="in use"), socket.socket() as s:
            s.bind(refused.address)  # the port is held: no other test server can take it


async def test_silent_endpoint_hangs_tls_handshake(lab_pki: LabPki) -> None:
    async with SilentEndpoint("127.0.0.7", 0) as silent:
        ctx = client_context(lab_pki)
        coro = asyncio.open_connection(
            *silent.address, ssl=ctx, server_hostname="acme.digicert.com"
        )
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(coro, 0.3)
        assert silent.connections == 1
        assert silent.received > 0  # it did get the ClientHello


@pytest.mark.parametrize("after_data", [False, True])
async def test_reset_endpoint(lab_pki: LabPki, after_data: bool) -> None:
    async with ResetEndpoint("127.0.0.8", 0, after_data=after_data) as reset:
        ctx = client_context(lab_pki)
        with pytest.raises(ConnectionResetError):
            await asyncio.open_connection(
                *reset.address, ssl=ctx, server_hostname="acme.digicert.com"
            )
    assert reset.connections == 1


async def test_reply_endpoint_plain_http_where_tls_expected(lab_pki: LabPki) -> None:
    async with ReplyEndpoint("127.0.0.9", 0) as reply:
        ctx = client_context(lab_pki)
        with pytest.raises(ssl.SSLError, match=r"(?i)wrong.version.number"):
            await asyncio.open_connection(
                *reply.address, ssl=ctx, server_hostname="acme.digicert.com"
            )


# --------------------------------------------------------------- fixtures and plugin


def test_clear_network_env() -> None:
    mp = pytest.MonkeyPatch()
    try:
        for var in ("HTTPS_PROXY", "https_proxy", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR"):
            mp.setenv(var, "http://127.0.0.9:1")
        clear_network_env(mp)
        assert not {"HTTPS_PROXY", "https_proxy", "no_proxy", "SSL_CERT_FILE"} & set(os.environ)
        assert "SSL_CERT_DIR" not in os.environ
    finally:
        mp.undo()


def test_netns_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    assert_netns_isolated()  # make test runs in a private namespace
    monkeypatch.setattr(socket, "if_nameindex", lambda: [(1, "lo"), (2, "eth0")])
    with pytest.raises(pytest.fail.Exception, match="eth0"):
        assert_netns_isolated()


async def test_digicert_lab_end_to_end(digicert_lab: DigicertLab) -> None:
    """What a check does: resolve via the lab DNS, TLS with the default trust store
    (SSL_CERT_FILE), GET the directory."""
    assert os.environ["SSL_CERT_FILE"] == str(digicert_lab.ca_bundle)
    assert digicert_lab.https.address == ("127.0.0.2", 443)
    assert digicert_lab.dns.address == ("127.0.0.53", 53)
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [digicert_lab.nameserver]
    r.lifetime = 1
    for name in HOSTNAMES:
        answer = await asyncio.to_thread(r.resolve, name, "A")
        assert addresses(answer) == ["127.0.0.2"]
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                "https://127.0.0.2/v2/acme/directory/",
                server_hostname=name,
                headers={"Host": name},
                ssl=ssl.create_default_context(),
            ) as resp,
        ):
            assert "newNonce" in await resp.json()
    assert digicert_lab.https.sni == list(HOSTNAMES)


SUBPROCESS_CLIENT = """
import json, socket, ssl, sys
import dns.resolver
r = dns.resolver.Resolver(configure=False)
r.nameservers = [sys.argv[1]]
ip = r.resolve("acme.digicert.com", "A")[0].to_text()
ctx = ssl.create_default_context()  # trusts SSL_CERT_FILE, inherited from the test
with socket.create_connection((ip, 443), timeout=2) as raw:
    with ctx.wrap_socket(raw, server_hostname="acme.digicert.com") as tls:
        tls.sendall(b"GET /v2/acme/directory/ HTTP/1.0\\r\\nHost: acme.digicert.com\\r\\n\\r\\n")
        data = b""
        while chunk := tls.recv(4096):
            data += chunk
head, _, body = data.partition(b"\\r\\n\\r\\n")
print(ip, head.split(b"\\r\\n")[0].decode(), json.loads(body)["meta"]["externalAccountRequired"])
"""


def test_digicert_lab_from_a_subprocess(digicert_lab: DigicertLab) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SUBPROCESS_CLIENT, digicert_lab.nameserver],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    assert out.split() == ["127.0.0.2", "HTTP/1.1", "200", "OK", "True"]


def test_digicert_lab_sensor(digicert_lab: DigicertLab) -> None:
    sensor = digicert_lab.start_sensor(auth=("agent", "pw"))
    assert sensor.address == ("127.0.0.4", 48999)
    creds = base64.b64encode(b"agent:pw").decode()
    with socket.create_connection(sensor.address, timeout=2) as raw:
        raw.sendall(
            b"CONNECT acme.digicert.com:443 HTTP/1.1\r\nHost: acme.digicert.com:443\r\n"
            + f"Proxy-Authorization: Basic {creds}\r\n\r\n".encode()
        )
        assert raw.recv(100) == b"HTTP/1.1 200 Connection established\r\n\r\n"
        ctx = ssl.create_default_context()
        with ctx.wrap_socket(raw, server_hostname="daas.digicert.com") as tls:
            assert tls.getpeercert()
    assert sensor.requests[0].status == 200


def test_lab_config_loads_in_the_agent(digicert_lab: DigicertLab) -> None:
    cfg = agent_config.load(digicert_lab.write_config())
    assert cfg.targets.ip == "127.0.0.2"
    assert cfg.targets.acme_directory == "https://acme.digicert.com/v2/acme/directory/"
    assert cfg.dns.nameservers == ("127.0.0.53",)
    assert cfg.agent.timeout == 1.0
    assert cfg.agent.host_id == "lab-host"
    assert not cfg.fqdn.discover
    path = digicert_lab.write_config(
        digicert_lab.workdir / "other.toml",
        agent={"timeout": "0.5s", "host_id": None},
        sensor={"host": "127.0.0.4", "version": "3.8.47"},
        dns=None,
    )
    cfg = agent_config.load(path)
    assert cfg.agent.timeout == 0.5
    assert cfg.agent.host_id is None
    assert cfg.sensor.port_rule()[0] == 48999
    assert cfg.dns.nameservers == ()


async def test_lab_config_for_nonstandard_ports(lab_pki: LabPki, tmp_path: Path) -> None:
    with DigicertLab(lab_pki, tmp_path, https_port=0, dns_port=0) as lab:
        assert lab.https.port != 443
        cfg = agent_config.load(lab.write_config())
    assert cfg.targets.port == lab.https.port
    assert (
        cfg.targets.acme_directory
        == f"https://acme.digicert.com:{lab.https.port}/v2/acme/directory/"
    )
    assert cfg.dns.nameservers == (f"127.0.0.53:{lab.dns.port}",)


def test_lab_thread_fixture_runs_endpoints(lab_thread: LabThread) -> None:
    silent = lab_thread.start(SilentEndpoint("127.0.0.7", 0))
    with socket.create_connection(silent.address, timeout=2) as s:
        s.settimeout(0.2)
        with pytest.raises(TimeoutError):
            s.recv(1)
