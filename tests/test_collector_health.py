"""What the collector tells the outside about itself, against the real process: ``/healthz``
while its disk is full (a real tmpfs in its own mount namespace), client mistakes in the log,
the ``Server`` header, the pages' Content-Security-Policy."""

from __future__ import annotations

import http.client
import json
import shlex
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.collectorutil import TOKEN, TOKENS_TEXT, ServerProcess, report, server_process


def _tokens(tmp_path: Path) -> Path:
    p = tmp_path / "tokens"
    p.write_text(TOKENS_TEXT)
    p.chmod(0o600)
    return p


def _request(
    srv: ServerProcess,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, http.client.HTTPMessage]:
    parts = urlsplit(srv.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        h = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        conn.request(method, path, data, {**h, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.headers
    finally:
        conn.close()


def _raw(srv: ServerProcess, data: bytes) -> bytes:
    parts = urlsplit(srv.url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), 10) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def _events(srv: ServerProcess) -> tuple[str, list[dict[str, Any]]]:
    assert srv.stop() == 0
    assert srv.proc.stderr is not None
    err = srv.proc.stderr.read()
    return err, [json.loads(line) for line in err.splitlines() if line.startswith("{")]


# ---------------------------------------------------------------- /healthz and a full disk


def test_healthz_is_503_while_the_store_cannot_commit_and_200_again_after(tmp_path: Path) -> None:
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    mount = f"mount -t tmpfs -o size=2m,mode=0700 collector-db {shlex.quote(str(db_dir))}"
    prefix = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c"]
    prefix += [f'{mount} && exec "$@"', "sh"]
    args = ["--tokens-file", _tokens(tmp_path), "--db", db_dir / "c.db"]
    with server_process(*args, prefix=prefix) as srv:

        def in_ns(script: str) -> None:
            cmd = ["nsenter", "-t", str(srv.proc.pid), "-m", "--", "sh", "-c", script]
            subprocess.run(cmd, capture_output=True, timeout=20, check=False)

        assert _request(srv, "POST", "/api/v1/reports", report("before"))[0] == 202
        assert _request(srv, "GET", "/healthz")[0] == 200
        in_ns(f"dd if=/dev/zero of={shlex.quote(str(db_dir / 'fill'))} bs=64k")  # until ENOSPC
        statuses = [_request(srv, "POST", "/api/v1/reports", report(f"h{i}"))[0] for i in range(40)]
        assert 503 in statuses, statuses
        status, body, headers = _request(srv, "GET", "/healthz")
        assert status == 503, body  # was 200 while every report got 503
        assert "cannot commit" in json.loads(body)["error"]
        assert "full" in json.loads(body)["error"]
        assert headers["Retry-After"] == "5"
        in_ns(f"rm {shlex.quote(str(db_dir / 'fill'))}")
        # no report arrives: a test commit notices that the disk has room again
        deadline = time.monotonic() + 10
        while _request(srv, "GET", "/healthz")[0] != 200:
            assert time.monotonic() < deadline, "healthz stayed 503 after the disk had room"
            time.sleep(0.3)
        assert _request(srv, "POST", "/api/v1/reports", report("after"))[0] == 202


# ---------------------------------------------------------------- client mistakes in the log

SECRET = "s3cret-token-0123456789abcdef"
MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: c\r\nContent-Length: abc\r\n\r\n",
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: c\r\n\r\n",
    b"POST /api/v1/reports HTTP/1.1\r\nHost: c\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    # a bad Authorization header line: aiohttp's message quotes it, token and all
    b"GET / HTTP/1.1\r\nHost: c\r\nAuthorization: Bearer " + SECRET.encode() + b"\x01\r\n\r\n",
]


def test_client_mistakes_are_a_warning_a_minute_without_tracebacks_or_secrets(
    tmp_path: Path,
) -> None:
    with server_process("--tokens-file", _tokens(tmp_path), "--db", tmp_path / "c.db") as srv:
        for _ in range(20):
            for data in MALFORMED:
                assert _raw(srv, data).startswith(b"HTTP/1.")
            assert _request(srv, "POST", "/api/v1/reports", b"{not json")[0] == 400
            assert (
                _request(srv, "POST", "/api/v1/reports", report(), {"Authorization": ""})[0] == 401
            )
            assert _request(srv, "GET", "/no/such/page")[0] == 404
            assert _request(srv, "GET", f"/api/v1/hosts/x/reports?before={2**63}")[0] == 400
        assert _request(srv, "GET", "/healthz")[0] == 200
        err, events = _events(srv)
    assert "Traceback" not in err
    assert SECRET not in err
    assert [e for e in events if e["level"] in ("error", "critical")] == []
    mistakes = [e for e in events if e["event"].startswith("client mistake")]
    assert len(mistakes) == 1, mistakes  # 180 mistakes within a minute: one line
    assert mistakes[0]["level"] == "warning"


# ---------------------------------------------------------------- headers


def test_no_version_in_the_server_header(tmp_path: Path) -> None:
    with server_process("--tokens-file", _tokens(tmp_path), "--db", tmp_path / "c.db") as srv:
        answers = [
            _request(srv, "POST", "/api/v1/reports", report())[2],
            _request(srv, "GET", "/")[2],
            _request(srv, "GET", "/nothing-here")[2],  # the router's own 404
            _request(srv, "PUT", "/api/v1/reports")[2],  # its 405
        ]
        servers = [h["Server"] for h in answers]
        parser_400 = _raw(srv, MALFORMED[1])  # aiohttp's own answer to a malformed request
    assert servers == ["acme-preflight-collector"] * 4
    head = parser_400.split(b"\r\n\r\n", 1)[0].decode()
    assert "Server: acme-preflight-collector" in head
    for text in (*servers, head):
        assert "aiohttp" not in text and "Python" not in text


def test_pages_carry_a_content_security_policy(tmp_path: Path) -> None:
    with server_process("--tokens-file", _tokens(tmp_path), "--db", tmp_path / "c.db") as srv:
        assert _request(srv, "POST", "/api/v1/reports", report("web-01"))[0] == 202
        pages = [_request(srv, "GET", p) for p in ("/", "/hosts/web-01", "/hosts/nobody")]
        api = _request(srv, "GET", "/api/v1/hosts")
    assert [p[0] for p in pages] == [200, 200, 404]
    for _, _, headers in pages:
        csp = headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "script-src" not in csp  # no script at all: default-src 'none' covers it
        assert headers["X-Frame-Options"] == "DENY"
    assert "Content-Security-Policy" not in api[2]
