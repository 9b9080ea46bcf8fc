"""agent.net.proxy: proxy selection (config, env, NO_PROXY) and CONNECT tunnels through the lab proxy."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.net.proxy import ProxyChoice, no_proxy_match, open_tunnel, select_proxy
from agent.net.tls import tls_handshake
from tests.lab.endpoints import BlackholeEndpoint, SilentEndpoint
from tests.lab.https import HttpsServer
from tests.lab.netns import assert_netns_isolated
from tests.lab.pki import LabPki
from tests.lab.proxy import ConnectProxy

SECRET = "s3cr3t-Pa55"


# ------------------------------------------------------------------ selection


def test_config_wins_over_environment() -> None:
    env = {"HTTPS_PROXY": "http://envproxy:3128"}
    choice = select_proxy("http://u:pw@cfg:8080", "acme.digicert.com", 443, env)
    assert choice.source == "config" and choice.endpoint == ("cfg", 8080)
    assert choice.display == "http://u:***@cfg:8080"
    assert choice.describe() == "proxy http://u:***@cfg:8080 (from [proxy] url)"


@pytest.mark.parametrize("var", ["HTTPS_PROXY", "https_proxy", "ALL_PROXY"])
def test_environment_proxy_records_its_variable(var: str) -> None:
    choice = select_proxy(None, "acme.digicert.com", 443, {var: f"http://me:{SECRET}@p:3128"})
    assert choice.source == f"env:{var}" and choice.url
    assert SECRET not in json.dumps(choice.to_dict()) and SECRET not in choice.describe()
    assert var in choice.describe()


def test_no_proxy_bypasses_env_proxy_and_says_why() -> None:
    env = {"HTTPS_PROXY": "http://p:3128", "no_proxy": "localhost, .digicert.com"}
    choice = select_proxy(None, "acme.digicert.com", 443, env)
    assert choice.url is None and choice.no_proxy_match == ".digicert.com"
    assert "NO_PROXY" in choice.describe()
    assert select_proxy(None, "example.com", 443, env).url == "http://p:3128"


def test_no_environment_means_no_proxy() -> None:
    choice = select_proxy(None, "acme.digicert.com", 443, {})
    assert choice == ProxyChoice(None, "none")
    assert choice.describe() == "no proxy"


@pytest.mark.parametrize(
    ("host", "port", "value", "match"),
    [
        ("acme.digicert.com", 443, "*", "*"),
        ("acme.digicert.com", 443, "digicert.com", "digicert.com"),
        ("acme.digicert.com", 443, "*.digicert.com", "*.digicert.com"),
        ("digicert.com", 443, ".digicert.com", ".digicert.com"),
        ("ACME.DigiCert.com.", 443, "acme.digicert.com", "acme.digicert.com"),
        ("acme.digicert.com", 443, "other.com,acme.digicert.com:443", "acme.digicert.com:443"),
        ("acme.digicert.com", 443, "acme.digicert.com:8443", None),
        ("notdigicert.com", 443, "digicert.com", None),
        ("216.168.244.42", 443, "216.168.0.0/16", "216.168.0.0/16"),
        ("216.168.244.42", 443, "216.168.244.42", "216.168.244.42"),
        ("::1", 443, "[::1]:443", "[::1]:443"),
        ("10.0.0.1", 443, "digicert.com", None),
        ("acme.digicert.com", 443, "", None),
    ],
)
def test_no_proxy_rules(host: str, port: int, value: str, match: str | None) -> None:
    assert no_proxy_match(host, port, value) == match


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (f"socks5://u:{SECRET}@p:1080", "only http://"),
        (f"https://u:{SECRET}@p:443", "only http://"),
        ("http://p:notaport", "not a valid URL"),
    ],
)
def test_unusable_env_proxy_is_a_problem_not_a_crash(value: str, problem: str) -> None:
    choice = select_proxy(None, "acme.digicert.com", 443, {"HTTPS_PROXY": value})
    assert choice.problem is not None and problem in choice.problem
    assert SECRET not in choice.problem


def test_schemeless_env_proxy_is_http() -> None:
    choice = select_proxy(None, "acme.digicert.com", 443, {"https_proxy": "p.corp:3128"})
    assert choice.problem is None and choice.endpoint == ("p.corp", 3128)


# -------------------------------------------------------------------- tunnels


@pytest.fixture
async def upstream(
    lab_pki: LabPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[HttpsServer]:
    monkeypatch.setenv("SSL_CERT_FILE", str(lab_pki.write_bundle(tmp_path / "ca.pem")))
    async with HttpsServer(lab_pki.valid, "127.0.0.2", 0) as srv:
        yield srv


@pytest.fixture
async def proxy(upstream: HttpsServer) -> AsyncIterator[ConnectProxy]:
    ups = {"acme.digicert.com": upstream.address}
    async with ConnectProxy("127.0.0.4", 0, upstreams=ups) as p:
        yield p


async def test_tunnel_then_tls_through_it(proxy: ConnectProxy, upstream: HttpsServer) -> None:
    choice = select_proxy(proxy.url, "acme.digicert.com")
    result, stream = await open_tunnel(choice, "acme.digicert.com", 443, 1.0)
    assert result.ok and stream is not None, result
    async with stream:
        tls = await tls_handshake(stream, "acme.digicert.com", 1.0)
    assert tls.ok and upstream.sni == ["acme.digicert.com"]
    assert result.status == 200 and result.proxy_address == f"127.0.0.4:{proxy.port}"
    assert result.connect_ms is not None and result.tunnel_ms is not None
    assert proxy.requests[-1].target == "acme.digicert.com:443"
    assert proxy.requests[-1].proxy_authorization is None


async def test_credentials_are_sent_and_never_shown(proxy: ConnectProxy) -> None:
    proxy.auth = ("agent", SECRET)
    url = f"http://agent:{SECRET}@127.0.0.4:{proxy.port}"
    result, stream = await open_tunnel(select_proxy(url, "x"), "acme.digicert.com", 443, 1.0)
    assert result.ok and stream is not None
    await stream.close()
    assert proxy.requests[-1].proxy_authorization == "Basic YWdlbnQ6czNjcjN0LVBhNTU="
    assert SECRET not in json.dumps(result.to_dict())


@pytest.mark.parametrize(
    ("url_auth", "text"),
    [("", "has no credentials"), ("agent:wrong-pw@", "rejected the credentials of user 'agent'")],
)
async def test_407_is_auth_required(proxy: ConnectProxy, url_auth: str, text: str) -> None:
    proxy.auth = ("agent", SECRET)
    url = f"http://{url_auth}127.0.0.4:{proxy.port}"
    result, stream = await open_tunnel(select_proxy(url, "x"), "acme.digicert.com", 443, 1.0)
    assert stream is None
    assert result.error == "auth_required" and result.status == 407
    assert text in result.message and 'Basic realm="DigiCert sensor"' in result.message
    assert "wrong-pw" not in json.dumps(result.to_dict())


@pytest.mark.parametrize(
    ("target", "status"), [("evil.example.com", 403), ("daas.digicert.com", 502)]
)
async def test_refused_connect_names_the_status(
    proxy: ConnectProxy, target: str, status: int
) -> None:
    result, stream = await open_tunnel(select_proxy(proxy.url, target), target, 443, 1.0)
    assert stream is None
    assert result.error == "connect_failed" and result.status == status
    assert result.status_line is not None and result.status_line.startswith(f"HTTP/1.1 {status}")
    assert result.status_line in result.message


async def test_proxy_not_listening_is_refused() -> None:
    result, stream = await open_tunnel(
        select_proxy("http://127.0.0.4:1", "x"), "acme.digicert.com", 443, 1.0
    )
    assert stream is None and result.error == "refused"
    assert "refused the connection" in result.message


@pytest.mark.parametrize("kind", ["blackhole", "silent"])
async def test_proxy_hanging_is_a_timeout_within_budget(kind: str) -> None:
    endpoint = (
        BlackholeEndpoint("127.0.0.5", 0) if kind == "blackhole" else SilentEndpoint("127.0.0.7", 0)
    )
    async with endpoint:
        url = f"http://{endpoint.host}:{endpoint.port}"
        started = time.monotonic()
        result, stream = await open_tunnel(select_proxy(url, "x"), "acme.digicert.com", 443, 0.3)
        took = time.monotonic() - started
    assert stream is None and result.error == "timeout"
    assert 0.29 <= took < 0.45
    if kind == "silent":
        assert "did not answer CONNECT" in result.message


async def test_proxy_by_name_uses_the_system_resolver(upstream: HttpsServer) -> None:
    assert_netns_isolated()  # getaddrinfo may ask resolv.conf's nameserver if hosts lacks it
    ups = {"acme.digicert.com": upstream.address}
    async with ConnectProxy("127.0.0.1", 0, upstreams=ups) as p:
        choice = select_proxy(f"http://localhost:{p.port}", "x")
        result, stream = await open_tunnel(choice, "acme.digicert.com", 443, 1.0)
        assert result.ok and stream is not None
        await stream.close()
    assert result.proxy_address == f"127.0.0.1:{p.port}"


async def test_unsupported_proxy_is_reported() -> None:
    choice = select_proxy(None, "acme.digicert.com", 443, {"HTTPS_PROXY": "socks5://p:1080"})
    result, stream = await open_tunnel(choice, "acme.digicert.com", 443, 1.0)
    assert stream is None and result.error == "unsupported"
