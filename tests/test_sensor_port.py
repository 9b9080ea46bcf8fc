"""sensor_port against the lab: a CONNECT proxy standing in for the DigiCert sensor, the
acme.digicert.com stand-in behind it, and ports that are closed, silent or held by
something that is not a proxy."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from agent.checks import sensor_port
from agent.config import ConfigError, SensorConfig, SensorVersion, from_mapping
from agent.context import CheckContext
from agent.model import CheckResult, Status
from agent.net.proxy import TunnelResult
from agent.net.tls import TlsResult
from agent.runner import run_check
from tests.lab.digicert import DigicertLab
from tests.lab.endpoints import BlackholeEndpoint, SilentEndpoint
from tests.lab.https import HttpsServer
from tests.lab.netns import assert_netns_isolated
from tests.lab.pki import INSPECTION_CN, LabPki
from tests.lab.proxy import ConnectProxy

SENSOR = "127.0.0.4"
ACME = ("127.0.0.2", 443)
UPSTREAMS = {"acme.digicert.com": ACME, "daas.digicert.com": ACME}


@pytest.fixture(autouse=True)
def _isolated_and_trusting(
    lab_pki: LabPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # These tests bind the sensor's real ports (8080, 48999): only in a private netns.
    assert_netns_isolated()
    bundle = lab_pki.write_bundle(tmp_path / "digicert-root.pem")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))


@pytest.fixture
async def acme(lab_pki: LabPki) -> AsyncIterator[HttpsServer]:
    async with HttpsServer(lab_pki.valid, *ACME) as server:
        yield server


def ctx_for(sensor: dict[str, Any], timeout: float = 1.0, **targets: Any) -> CheckContext:
    raw: dict[str, Any] = {"agent": {"timeout": timeout, "interval": 60}, "sensor": sensor}
    if targets:
        raw["targets"] = targets
    return CheckContext(from_mapping(raw))


async def check(ctx: CheckContext) -> CheckResult:
    return await run_check("sensor_port", sensor_port.run, ctx)


# ------------------------------------------------------------------ the version rule


@pytest.mark.parametrize(
    ("version", "port"),
    [
        ("3.8.46", 8080),
        ("3.8.9", 8080),
        ("3.7.100", 8080),
        ("2.0.0", 8080),
        ("3.8.46.7", 8080),  # a build of 3.8.46 is still 3.8.46
        ("3.8.47", 48999),
        ("3.8.47.0", 48999),
        ("3.8.100", 48999),  # numeric, not string, comparison
        ("3.9.0", 48999),
        ("3.10.0", 48999),
        ("4.0.0", 48999),
    ],
)
def test_version_rule(version: str, port: int) -> None:
    chosen, rule = SensorConfig("s", SensorVersion.parse(version)).port_rule()
    assert chosen == port
    assert version in rule and str(port) in rule


def test_explicit_port_wins_and_no_version_assumes_new() -> None:
    assert SensorConfig("s", SensorVersion.parse("3.8.46"), 3128).port_rule() == (
        3128,
        "explicit [sensor] port",
    )
    port, rule = SensorConfig("s").port_rule()
    assert port == 48999 and "no [sensor] version" in rule


@pytest.mark.parametrize("bad", ["3.8", "3.8.x", "v3.8.47", "3.8.47-beta", "", "3..47"])
def test_unparseable_version_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping({"sensor": {"host": "10.0.0.5", "version": bad}})
    assert err.value.key == "[sensor] version"


def test_unparseable_version_exits_78(tmp_path: Path) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text('[sensor]\nhost = "10.0.0.5"\nversion = "3.8"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(conf), "config", "validate"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 78
    assert "[sensor] version" in proc.stderr + proc.stdout


async def test_skipped_without_sensor() -> None:
    result = await check(ctx_for({}))
    assert result.status is Status.SKIP
    assert result.reason == "no_sensor"


# ------------------------------------------------------------- against the lab proxy


@pytest.mark.parametrize(
    ("version", "port"),
    [("3.8.46", 8080), ("3.8.47", 48999), ("3.8.100", 48999), ("3.10.0", 48999), ("4.0.0", 48999)],
)
async def test_sensor_on_its_rule_port_tunnels(acme: HttpsServer, version: str, port: int) -> None:
    async with ConnectProxy(SENSOR, port, upstreams=UPSTREAMS) as proxy:
        result = await check(ctx_for({"host": SENSOR, "version": version}))
    assert result.status is Status.PASS, result.summary
    assert result.details["port"] == port
    assert f"sensor {version} is" in result.details["port_rule"]
    assert [r.target for r in proxy.requests] == ["acme.digicert.com:443"]
    assert acme.sni == ["acme.digicert.com"]  # SNI through the tunnel
    assert result.details["tls"]["verified"] is True
    # the lab proxy is this very process, on this host
    assert result.details["same_host"] is True
    assert "advises against" in result.details["note"]
    assert [lst["pid"] for lst in result.details["local_listeners"]] == [psutil.Process().pid]


@pytest.mark.parametrize(("host", "bind"), [("localhost", "127.0.0.1"), ("::1", "::1")])
async def test_sensor_by_name_or_ipv6(acme: HttpsServer, host: str, bind: str) -> None:
    async with ConnectProxy(bind, 48999, upstreams=UPSTREAMS):
        result = await check(ctx_for({"host": host, "version": "3.8.47"}))
    assert result.status is Status.PASS, result.summary
    assert result.details["tunnel"]["proxy_address"].startswith((bind, f"[{bind}]"))
    # the local lookup also works when the address is only known after connecting
    assert [lst["pid"] for lst in result.details["local_listeners"]] == [psutil.Process().pid]


async def test_explicit_port_wins(acme: HttpsServer) -> None:
    async with ConnectProxy(SENSOR, 3128, upstreams=UPSTREAMS):
        result = await check(ctx_for({"host": SENSOR, "version": "3.8.47", "port": 3128}))
    assert result.status is Status.PASS, result.summary
    assert result.details["port"] == 3128
    assert result.details["port_rule"] == "explicit [sensor] port"


async def test_closed_port_is_refused() -> None:
    result = await check(ctx_for({"host": SENSOR, "version": "3.8.47"}))
    assert result.status is Status.FAIL
    assert result.reason == "sensor_refused"
    assert "48999" in result.summary and "refused" in result.summary
    assert "48999" in result.remediation
    # the other rule's port was probed and is closed too
    assert result.details["other_ports"] == [{"port": 8080, "outcome": "refused"}]
    assert result.details["local_listeners"] == []


@pytest.mark.parametrize(
    ("sensor", "listening", "expect"),
    [
        (
            {"version": "3.8.46"},
            48999,
            "sensor 3.8.46 should listen on 8080, but 48999 answers: the sensor is "
            "probably 3.8.47 or newer; set [sensor] version",
        ),
        (
            {"version": "3.8.47"},
            8080,
            "sensor 3.8.47 should listen on 48999, but 8080 answers: the sensor is "
            "probably 3.8.46 or older; set [sensor] version",
        ),
        ({}, 8080, "no [sensor] version is set, so 48999 was tried, but 8080 answers"),
        (
            {"port": 3128},
            48999,
            "does not tunnel on [sensor] port 3128, but 48999 answers (the port of sensor "
            "3.8.47 or newer); check [sensor] port",
        ),
    ],
)
async def test_wrong_port_diagnosis(
    acme: HttpsServer, sensor: dict[str, Any], listening: int, expect: str
) -> None:
    async with ConnectProxy(SENSOR, listening, upstreams=UPSTREAMS):
        result = await check(ctx_for({"host": SENSOR, **sensor}))
    assert result.status is Status.FAIL
    assert result.reason == "sensor_wrong_port"
    assert expect in result.summary
    key = "[sensor] port" if "port" in sensor else "[sensor] version"
    assert key in result.remediation
    assert result.details["tunnel"]["outcome"] == "refused"


async def test_connect_denied_for_a_target_outside_digicert(acme: HttpsServer) -> None:
    async with ConnectProxy(SENSOR, 48999, upstreams=UPSTREAMS) as proxy:
        result = await check(
            ctx_for({"host": SENSOR, "version": "3.8.47"}, hostnames=["acme.example.net"])
        )
    assert [r.status for r in proxy.requests] == [403]
    assert result.status is Status.FAIL
    assert result.reason == "sensor_connect_denied"
    assert "403" in result.summary
    assert "allow-list" in result.remediation
    # a proxy that says no is still a proxy: no "does not behave like a proxy"
    assert "does not behave like a proxy" not in result.summary


@pytest.mark.parametrize("status", [502, 407])
async def test_connect_denied_by_scripted_sensor(acme: HttpsServer, status: int) -> None:
    async with ConnectProxy(SENSOR, 48999, upstreams=UPSTREAMS) as proxy:
        proxy.connect_status = status
        result = await check(ctx_for({"host": SENSOR, "version": "3.8.47"}))
    assert result.reason == "sensor_connect_denied"
    assert result.details["tunnel"]["status"] == status
    assert "other_ports" not in result.details  # the port answered: no wrong-port guess


async def test_tunnel_to_inspection_ca_fails_tls(lab_pki: LabPki) -> None:
    async with (
        HttpsServer(lab_pki.intercepted, *ACME),
        ConnectProxy(SENSOR, 48999, upstreams=UPSTREAMS),
    ):
        result = await check(ctx_for({"host": SENSOR, "version": "3.8.47"}))
    assert result.status is Status.FAIL
    assert result.reason == "sensor_tunnel_tls_failed"
    assert INSPECTION_CN in result.summary  # the presented issuer, fetched unverified
    assert "SHA-256" in result.summary
    assert result.details["tls"]["outcome"] == "untrusted"
    assert "inspection" in result.remediation


async def test_far_end_silent_through_the_tunnel() -> None:
    """The sensor tunnels, but what it reaches never speaks TLS."""
    async with (
        SilentEndpoint(*ACME),
        ConnectProxy(SENSOR, 48999, upstreams=UPSTREAMS),
    ):
        result = await check(ctx_for({"host": SENSOR, "version": "3.8.47"}, timeout=0.6))
    assert result.reason == "sensor_tunnel_tls_failed", result.summary
    assert result.details["tls"]["outcome"] == "timeout"
    assert "outbound path to DigiCert" in result.remediation


async def test_never_answering_sensor_is_bounded_by_the_timeout() -> None:
    async with BlackholeEndpoint(SENSOR, 48999):
        started = time.monotonic()
        result = await check(ctx_for({"host": SENSOR, "version": "3.8.47"}, timeout=0.6))
        took = time.monotonic() - started
    # the check's own verdict, not the runner cutting it off (check_timeout)
    assert result.reason == "sensor_timeout", result.summary
    assert result.details["phase"] == "connect"
    # the budget was split: time was left to probe the other rule's port
    assert result.details["other_ports"] == [{"port": 8080, "outcome": "refused"}]
    assert took < 5  # sanity: not hanging on a kernel SYN retry


async def test_silent_sensor_times_out_on_connect_answer() -> None:
    async with SilentEndpoint(SENSOR, 48999) as silent:
        result = await check(ctx_for({"host": SENSOR, "version": "3.8.47"}, timeout=0.6))
    assert result.reason == "sensor_timeout", result.summary
    assert result.details["phase"] == "CONNECT"
    assert silent.received > 0  # it got the CONNECT request and said nothing
    assert "did not answer CONNECT" in result.summary


@pytest.mark.parametrize(("version", "exit_code"), [("3.8.47", 0), ("3.8.46", 2)])
def test_cli_check_only_sensor_port(
    digicert_lab: DigicertLab, version: str, exit_code: int
) -> None:
    """End to end: config file, CLI, runner, registry; the sensor listens on 48999."""
    digicert_lab.start_sensor()
    conf = digicert_lab.write_config(sensor={"host": "127.0.0.4", "version": version})
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "--config",
            str(conf),
            "check",
            "--only",
            "sensor_port",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == exit_code, proc.stderr
    (result,) = json.loads(proc.stdout)["checks"]
    assert result["name"] == "sensor_port"
    assert result["reason"] == ("ok" if exit_code == 0 else "sensor_wrong_port")


def _wait_listening(host: str, port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited"
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {host}:{port}")


@pytest.fixture
def web_server_on_8080() -> Iterator[subprocess.Popen[bytes]]:
    """A plain HTTP server (not a proxy) holding the old sensor port, like a Tomcat."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", "8080", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening("127.0.0.1", 8080, proc)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


async def test_local_non_proxy_listener_is_named(
    web_server_on_8080: subprocess.Popen[bytes],
) -> None:
    pid = web_server_on_8080.pid
    result = await check(ctx_for({"host": "127.0.0.1", "version": "3.8.46"}))
    assert result.status is Status.FAIL
    assert result.reason == "sensor_connect_denied"
    assert f"port 8080 is held by pid {pid} (python" in result.summary
    assert "does not behave like a proxy" in result.summary
    assert f"pid {pid}" in result.remediation
    (listener,) = result.details["local_listeners"]
    assert listener["pid"] == pid
    assert "http.server" in listener["cmdline"]
    assert result.details["same_host"] is True


# ------------------------------------------------------------------------- helpers


def test_cmdline_secrets_are_masked() -> None:
    text = sensor_port._clean_cmdline(
        ["java", "--db-password=hunter2", "-Dapi.token", "t0k3n", "http://u:pw1@h/x"]
    )
    assert "hunter2" not in text and "t0k3n" not in text and "pw1" not in text
    assert text.startswith("java --db-password=***")


async def test_listener_lookup_sees_wildcard_binds() -> None:
    srv = await asyncio.start_server(lambda r, w: None, "0.0.0.0", 48999)
    try:
        found = sensor_port.listeners_on("127.0.0.3", 48999)
    finally:
        srv.close()
        await srv.wait_closed()
    assert [lst.pid for lst in found] == [psutil.Process().pid]
    assert found[0].address == "0.0.0.0:48999"


# ------------------------------------------------------------------ judge, on facts alone


def test_judge_on_facts() -> None:
    sensor = SensorConfig(host="10.0.0.5", version=SensorVersion.parse("3.8.46"))
    port, rule = sensor.port_rule()
    target = "acme.digicert.com:443"
    opened = TunnelResult(target, "http://10.0.0.5:8080", None, "ok", 200, "HTTP/1.1 200", 1, 2)
    verified = TlsResult("acme.digicert.com", None, "TLS 1.3, verified", 3.0, verified=True)
    details: dict[str, Any] = {"host": "10.0.0.5"}

    def judge(tunnel: TunnelResult, tls: TlsResult | None, answering: int | None = None) -> Any:
        return sensor_port.judge(sensor, port, rule, tunnel, tls, answering, [], details)

    assert judge(opened, verified).reason == "ok"
    refused = TunnelResult(target, "http://10.0.0.5:8080", "refused", "refused", connect_ms=1)
    wrong = judge(refused, None, answering=48999)
    assert (wrong.status, wrong.reason) == (Status.FAIL, "sensor_wrong_port")
    assert "48999" in wrong.remediation
    assert judge(refused, None).reason == "sensor_refused"
    denied = TunnelResult(target, "p", "connect_failed", "403", 403, "HTTP/1.1 403", 1, 2)
    assert judge(denied, None).reason == "sensor_connect_denied"
    broken = TlsResult("acme.digicert.com", "untrusted", "not trusted", 3.0, verify_code=20)
    failed = judge(opened, broken)
    assert (failed.status, failed.reason) == (Status.FAIL, "sensor_tunnel_tls_failed")
    assert failed.details["tls_phase_error"] == "untrusted"
    assert details == {"host": "10.0.0.5"}  # the caller's facts are not changed
