"""``acme-preflight-collector serve`` as a real process: config, restart, TLS, end to end."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from html import escape
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.clirun import report_of, run_cli
from tests.collectorutil import (
    TOKEN,
    TOKENS_TEXT,
    collector_env,
    report,
    server_process,
)


def tokens_file(tmp_path: Path) -> Path:
    p = tmp_path / "tokens"
    p.write_text(TOKENS_TEXT)
    return p


def http(
    method: str,
    url: str,
    body: Any = None,
    token: str | None = TOKEN,
    context: ssl.SSLContext | None = None,
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            raw = resp.read()
            status = resp.status
            ctype = resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        raw, status, ctype = e.read(), e.code, e.headers.get("Content-Type", "")
    return status, json.loads(raw) if "json" in ctype else raw.decode()


def run_collector(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collector", *args],
        capture_output=True,
        text=True,
        env=collector_env(),
        timeout=timeout,
        check=False,
        cwd="/",
    )


# ---------------------------------------------------------------- config errors (exit 78)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("retention_days = 'forever'\n", "retention_days: expected a number, got a string"),
        ("retention_days = 0\n", "retention_days: 0 is out of range"),
        ("listen = '127.0.0.1'\n", "listen: '127.0.0.1' is not HOST:PORT (the port is missing)"),
        ("lisen = '127.0.0.1:1'\n", "lisen: unknown key"),
        ("read_auth = 'yes'\n", "read_auth: expected true or false"),
        ("read_auth = true\n", "read_tokens_file: required when read_auth = true"),
        ("synchronous = 'off'\n", "synchronous: expected one of full, normal"),
        ("[tls]\nkey = '/k.pem'\n", "[tls] cert: required when [tls] key is set"),
        ("[tls]\ncertificate = '/c.pem'\n", "[tls] certificate: unknown key"),
        ("tls = 1\n", "[tls]: expected a table"),
        ("[limits]\nmax_connections = 0\n", "[limits] max_connections: 0 is out of range"),
        ("[limits]\nmax_connections = 1.5\n", "[limits] max_connections: expected an integer"),
        ("[limits]\nheader_timeout_s = 0\n", "[limits] header_timeout_s: 0 is out of range"),
        ("[limits]\nbody_timeout_s = '30s'\n", "[limits] body_timeout_s: expected a number"),
        ("[limits]\nidle_timeout_s = 86401\n", "[limits] idle_timeout_s: 86401 is out of"),
        ("[limits]\nmax_conns = 5\n", "[limits] max_conns: unknown key (known: max_connections"),
        ("limits = []\n", "[limits]: expected a table"),
        ("retention_days = \n", "invalid TOML"),
        (
            "[store]\nurl = 'postgresql://pf:s3cret-pw@db.example/fleet'\n",
            "[store] url: the URL carries a password: use [store] password_file",
        ),
        (
            "[store]\nurl = 'postgresql://pf@db.example/fleet?password=s3cret-pw'\n",
            "[store] url: the URL carries a password parameter",
        ),
        ("[store]\nurl = 'postgresql://pf:s3cret-pw/fleet'\n", "[store] url: not a valid"),
        ("[store]\nurl = 'postgresql://pf@db.example'\n", "[store] url: name the database"),
        ("[store]\nurl = 5\n", "[store] url: expected a SQLite path or a postgresql:// URL"),
        ("[store]\nhost = 'db'\n", "[store] host: unknown key"),
        ("db = '/a.db'\n[store]\nurl = '/b.db'\n", "set either db or [store] url"),
        ("retention_days = 3\n[retention]\ndays = 4\n", "set either retention_days or"),
        ("[retention]\nhost_days = -1\n", "[retention] host_days: -1 is out of range"),
        ("[retention]\nkeep = 1\n", "[retention] keep: unknown key"),
        ("[store]\npassword_file = '/pw'\n", "[store] password_file: only for a postgresql://"),
        ("new_hosts_per_hour = 'many'\n", "new_hosts_per_hour: expected an integer"),
    ],
)
def test_config_errors_name_the_key_and_exit_78(tmp_path: Path, toml: str, message: str) -> None:
    cfg = tmp_path / "collector.toml"
    cfg.write_text(toml)
    proc = run_collector("serve", "--config", str(cfg), "--tokens-file", str(tokens_file(tmp_path)))
    assert proc.returncode == 78, proc.stderr
    assert message in proc.stderr
    assert "s3cret" not in proc.stderr
    assert proc.stderr.startswith("acme-preflight-collector: config error: ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("short\n", "line 1: the token is shorter than 16 characters"),
        ("# only a comment\n\n", "no tokens in the file"),
        ("good-token-0123456789 host extra\n", "line 1: expected `token [host_id]`"),
        ('bad"token-0123456789abcdef\n', "line 1: the token has characters outside"),
        ("dup-token-0123456789abc a\ndup-token-0123456789abc b\n", "line 2: this token is listed"),
    ],
)
def test_bad_tokens_file_exits_78_without_echoing_the_token(
    tmp_path: Path, text: str, message: str
) -> None:
    tf = tmp_path / "tokens"
    tf.write_text(text)
    proc = run_collector("serve", "--tokens-file", str(tf), "--db", str(tmp_path / "db"))
    assert proc.returncode == 78
    assert message in proc.stderr
    assert "0123456789" not in proc.stderr


def test_no_tokens_file_is_a_config_error(tmp_path: Path) -> None:
    proc = run_collector("serve", "--db", str(tmp_path / "db"))
    assert proc.returncode == 78
    assert "tokens_file: required" in proc.stderr


def test_unusable_db_path_is_reported(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    proc = run_collector(
        "serve",
        "--tokens-file",
        str(tokens_file(tmp_path)),
        "--db",
        str(tmp_path / "file" / "x.db"),
    )
    assert proc.returncode == 73
    assert "database error" in proc.stderr


def test_port_in_use_is_reported(tmp_path: Path) -> None:
    with server_process("--tokens-file", tokens_file(tmp_path), "--db", tmp_path / "a.db") as a:
        port = a.url.rsplit(":", 1)[1]
        proc = run_collector(
            "serve",
            "--tokens-file",
            str(tokens_file(tmp_path)),
            "--db",
            str(tmp_path / "b.db"),
            "--listen",
            f"127.0.0.1:{port}",
        )
    assert proc.returncode == 69
    assert "cannot listen on" in proc.stderr


# ---------------------------------------------------------------- lifecycle


def test_flags_override_the_config_file_and_restart_keeps_data(tmp_path: Path) -> None:
    db = tmp_path / "new" / "dir" / "collector.db"  # created when missing
    cfg = tmp_path / "collector.toml"
    cfg.write_text(f"listen = '127.0.0.1:1'\ndb = '{tmp_path / 'unused.db'}'\nretention_days = 7\n")
    r = report("restart-me", {"sensor_port": "fail"})
    args = ["--config", cfg, "--tokens-file", tokens_file(tmp_path), "--db", db]
    with server_process(*args) as srv:
        assert not srv.url.endswith(":1")  # --listen 127.0.0.1:0 won over the file
        assert http("POST", f"{srv.url}/api/v1/reports", r)[0] == 202
        assert srv.stop() == 0  # SIGTERM: a clean stop
    assert db.exists() and not (tmp_path / "unused.db").exists()
    with server_process(*args) as srv:
        status, data = http("GET", f"{srv.url}/api/v1/hosts", token=None)
        assert status == 200
        assert [h["report_id"] for h in data["hosts"]] == [r["report_id"]]
        assert data["hosts"][0]["status"] == "fail"
        # the repeat after a restart is still a duplicate
        status, body = http("POST", f"{srv.url}/api/v1/reports", r)
        assert (status, body["duplicate"]) == (200, True)


def test_sighup_reloads_tokens(tmp_path: Path) -> None:
    tf = tokens_file(tmp_path)
    new = "rotated-token-0123456789abcdef"
    with server_process("--tokens-file", tf, "--db", tmp_path / "c.db") as srv:
        assert http("POST", f"{srv.url}/api/v1/reports", report(), token=new)[0] == 401
        tf.write_text(f"{new}\n")
        srv.proc.send_signal(signal.SIGHUP)
        for _ in range(50):
            status, _ = http("POST", f"{srv.url}/api/v1/reports", report(), token=new)
            if status == 202:
                break
            time.sleep(0.1)
        assert status == 202
        assert http("POST", f"{srv.url}/api/v1/reports", report(), token=TOKEN)[0] == 401
        # a broken file keeps the current tokens
        tf.write_text("short\n")
        srv.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert http("POST", f"{srv.url}/api/v1/reports", report(), token=new)[0] == 202
        assert srv.stop() == 0
        err = srv.proc.stderr.read() if srv.proc.stderr else ""
        assert "tokens not reloaded" in err
        assert new not in err and TOKEN not in err


# ---------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def write_pki(ca: trustme.CA, tmp_path: Path) -> dict[str, Path]:
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("agent-web-01.example.com")
    other_ca = trustme.CA()
    stranger = other_ca.issue_cert("stranger.example.com")
    paths = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "server.pem",
        "key": tmp_path / "server.key",
        "client": tmp_path / "client.pem",
        "stranger": tmp_path / "stranger.pem",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    for pem in server.cert_chain_pems[1:]:
        pem.write_to_path(str(paths["cert"]), append=True)
    server.private_key_pem.write_to_path(str(paths["key"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths["client"]))
    stranger.private_key_and_cert_chain_pem.write_to_path(str(paths["stranger"]))
    return paths


def test_tls(ca: trustme.CA, tmp_path: Path) -> None:
    pki = write_pki(ca, tmp_path)
    args = ["--tokens-file", tokens_file(tmp_path), "--db", tmp_path / "t.db"]
    with server_process(*args, "--tls-cert", pki["cert"], "--tls-key", pki["key"]) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(pki["ca"]))
        status, _ = http("POST", f"{srv.url}/api/v1/reports", report(), context=ctx)
        assert status == 202
        with pytest.raises(urllib.error.URLError) as info:
            http("GET", f"{srv.url}/healthz", context=ssl.create_default_context())
        assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)


def test_client_certificates(ca: trustme.CA, tmp_path: Path) -> None:
    pki = write_pki(ca, tmp_path)
    args = [
        "--tokens-file",
        tokens_file(tmp_path),
        "--db",
        tmp_path / "m.db",
        "--tls-cert",
        pki["cert"],
        "--tls-key",
        pki["key"],
        "--client-ca",
        pki["ca"],
    ]
    with server_process(*args) as srv:
        url = f"{srv.url}/api/v1/reports"
        good = ssl.create_default_context(cafile=str(pki["ca"]))
        good.load_cert_chain(str(pki["client"]))
        assert http("POST", url, report(), context=good)[0] == 202
        # the token is still required with a good certificate
        assert http("POST", url, report(), token=None, context=good)[0] == 401
        for cert in (None, pki["stranger"]):
            ctx = ssl.create_default_context(cafile=str(pki["ca"]))
            if cert:
                ctx.load_cert_chain(str(cert))
            with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
                http("POST", url, report(), context=ctx)


def test_certificate_only_auth_without_tokens_file(ca: trustme.CA, tmp_path: Path) -> None:
    pki = write_pki(ca, tmp_path)
    args = ["--db", tmp_path / "c.db", "--tls-cert", pki["cert"], "--tls-key", pki["key"]]
    with server_process(*args, "--client-ca", pki["ca"]) as srv:
        ctx = ssl.create_default_context(cafile=str(pki["ca"]))
        ctx.load_cert_chain(str(pki["client"]))
        assert (
            http("POST", f"{srv.url}/api/v1/reports", report(), token=None, context=ctx)[0] == 202
        )


# ---------------------------------------------------------------- end to end with the agent


def test_agent_report_is_ingested_and_shown(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[agent]\nhost_id = "e2e-host"\ninterval = "90s"\n')
    proc = run_cli("--config", cfg, "check", "--json", "--only", "privileges")
    agent_report = report_of(proc)
    with server_process("--tokens-file", tokens_file(tmp_path), "--db", tmp_path / "e.db") as srv:
        status, body = http("POST", f"{srv.url}/api/v1/reports", agent_report)
        assert (status, body["duplicate"]) == (202, False)
        status, data = http("GET", f"{srv.url}/api/v1/hosts", token=None)
        (host,) = data["hosts"]
        assert host["host_id"] == "e2e-host"
        assert host["report_id"] == agent_report["report_id"]
        assert host["status"] == agent_report["status"]
        assert host["interval_s"] == 90
        assert [c["name"] for c in host["checks"]] == ["privileges"]
        status, page = http("GET", f"{srv.url}/", token=None)
        assert status == 200
        assert 'data-host-id="e2e-host"' in page
        summary = agent_report["checks"][0]["summary"]
        if agent_report["status"] in ("warn", "fail", "error"):
            assert escape(summary) in page
        status, history = http("GET", f"{srv.url}/api/v1/hosts/e2e-host/reports", token=None)
        assert history["reports"][0]["report"] == agent_report


# ------------------------------------------------------------- start-up warnings


def _start_warnings(*args: str | Path) -> list[str]:
    with server_process(*args) as srv:
        assert srv.stop() == 0
        assert srv.proc.stderr is not None
        err = srv.proc.stderr.read()
    return [line for line in err.splitlines() if "acme-preflight-collector: warning:" in line]


@pytest.mark.usefixtures("netns_isolated")
def test_listening_beyond_loopback_with_open_reads_warns_at_start(tmp_path: Path) -> None:
    tf = tokens_file(tmp_path)
    tf.chmod(0o600)
    db = tmp_path / "w.db"
    warned = _start_warnings("--tokens-file", tf, "--db", db, "--listen", "0.0.0.0:0")
    assert len(warned) == 1, warned
    assert "listen 0.0.0.0:0: reachable beyond this host while the read endpoints" in warned[0]
    assert "read_auth = true" in warned[0]
    # loopback, or reads behind tokens: nothing to warn about
    assert _start_warnings("--tokens-file", tf, "--db", db, "--listen", "127.0.0.1:0") == []
    read = tmp_path / "read-tokens"
    read.write_text("read-token-0123456789abcdef\n")
    read.chmod(0o600)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"read_auth = true\nread_tokens_file = '{read}'\n")
    assert (
        _start_warnings("--config", cfg, "--tokens-file", tf, "--db", db, "--listen", "0.0.0.0:0")
        == []
    )


def test_a_tokens_file_others_can_read_warns_at_start(tmp_path: Path) -> None:
    tf = tokens_file(tmp_path)
    tf.chmod(0o644)
    warned = _start_warnings("--tokens-file", tf, "--db", tmp_path / "t.db")
    assert warned == [
        f"acme-preflight-collector: warning: tokens_file: {tf} is readable by its group and "
        f"others (mode 0644): anyone who can read it can post as this host; chmod 600 {tf}"
    ]
    assert TOKEN not in "".join(warned)


def test_a_certcentral_key_file_others_can_read_is_warned_by_the_collector(tmp_path: Path) -> None:
    from agent.config import CertCentralConfig
    from collector.config import Settings, start_warnings

    key = tmp_path / "api.key"
    key.write_text("K" * 40 + "\n")
    key.chmod(0o640)
    s = Settings(certcentral=CertCentralConfig(api_key_file=key))
    assert start_warnings(s) == [
        f"[certcentral] api_key_file: {key} is readable by its group (mode 0640): anyone who "
        f"can read it can use the CertCentral account through the API; chmod 600 {key}"
    ]
