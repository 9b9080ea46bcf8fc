"""Text from a peer: secrets it echoes are redacted before anything cuts it, and what reaches a
terminal carries no control characters.

The peer is a collector-like TCP server (raw sockets, its own answers) in front of the real
daemon run as a subprocess; what is checked is what the daemon wrote: its log, its spool
database (the dead-letter reason and last error), its ``/status`` and ``acme-preflight status``.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.output import printable, render_table
from agent.redact import redact_cut, redact_text
from tests.clirun import run_cli
from tests.daemonproc import DaemonProc, base_config, free_port, wait_http, write_config

pytestmark = pytest.mark.usefixtures("netns_isolated")

# '+', '/' and '=' make the URL-encoded form differ from the token itself
TOKEN = "tok+7f3a/9c1e=DO-NOT-LOG-5b2d"
HALF = TOKEN[: len(TOKEN) // 2]


class _Collector(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    answer: bytes = b""


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server: _Collector = self.server  # type: ignore[assignment]
        while True:
            length = 0
            line = self.rfile.readline(65536)
            if not line:
                return
            while line not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
                line = self.rfile.readline(65536)
            self.rfile.read(length)
            self.wfile.write(server.answer)
            self.wfile.flush()


@pytest.fixture
def collector() -> Iterator[_Collector]:
    srv = _Collector(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def _answer(status: str, body: str) -> bytes:
    data = body.encode()
    head = f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(data)}\r\n\r\n"
    return head.encode() + data


def _config(tmp: Path, srv: _Collector, status_port: int | None = None) -> Path:
    token = tmp / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    url = f"http://127.0.0.1:{srv.server_address[1]}/"
    data = base_config(tmp, url, token_file=token, status_port=status_port)
    return write_config(tmp / "config.toml", data)


def _stored_text(state: Path) -> bytes:
    """Every byte the daemon keeps on disk (the spool database with its WAL, last.json)."""
    return b"".join(p.read_bytes() for p in sorted(state.iterdir()) if p.is_file())


def test_a_token_echoed_across_the_cut_is_redacted_everywhere(
    tmp_path: Path, collector: _Collector
) -> None:
    quoted = urllib.parse.quote(TOKEN, safe="")
    assert quoted != TOKEN
    # 290 characters, then the token straddling the 300th, then its URL-encoded form
    body = "E" * 289 + " " + TOKEN + " sent; as a query: ?t=" + quoted + " and again " + TOKEN
    collector.answer = _answer("400 Bad Request", body)
    cfg = _config(tmp_path, collector)
    with DaemonProc(cfg, tmp_path / "daemon.log") as daemon:
        entry = daemon.wait_log(lambda e: "HTTP 400" in str(e.get("error", "")), timeout=20)
        assert daemon.stop() == 0
    assert "***" in entry["error"] or entry["error"].endswith("...")
    text = daemon.log_text()
    stored = _stored_text(tmp_path / "state")
    assert b"HTTP 400" in stored  # the reason was kept (dead letter or last error)
    for fragment in (HALF, urllib.parse.quote(HALF, safe=""), TOKEN[-8:]):
        assert fragment not in text, fragment
        assert fragment.encode() not in stored, fragment


def test_the_collectors_escape_codes_never_reach_the_terminal(
    tmp_path: Path, collector: _Collector
) -> None:
    evil = "\x1b]0;owned\x07\x1b[2J\x1b[31mEVIL\x1b[0m\x08\x08 \u202egnp.exe"
    collector.answer = _answer("503 Service Unavailable", f"down for maintenance {evil}")
    port = free_port()
    cfg = _config(tmp_path, collector, status_port=port)
    with DaemonProc(cfg, tmp_path / "daemon.log") as daemon:
        daemon.wait_log(lambda e: "HTTP 503" in str(e.get("error", "")), timeout=20)
        wait_http(port, "/status/daemon")
        proc = run_cli("status", "--config", cfg)
        assert daemon.stop() == 0
    out = proc.stdout
    assert "Delivery FAILING" in out, (out, proc.stderr)
    assert "down for maintenance" in out and "EVIL" in out
    assert not any((ord(c) < 32 and c != "\n") or 0x7F <= ord(c) <= 0x9F for c in out), repr(out)
    assert "\u202e" not in out


def test_redact_cut_keeps_no_part_of_a_secret_at_the_bound() -> None:
    for cut in range(len(TOKEN) * 3 + 2):
        # the text is only the start of a longer body: it may end inside a secret, in any form
        for form in (TOKEN, urllib.parse.quote(TOKEN, safe="")):
            text = ("x" * 40 + form + " tail")[: 40 + cut]
            shown = redact_cut(text, 300, [TOKEN], partial=True)
            assert HALF[:6] not in shown and "%2B7f3a" not in shown, (cut, shown)


def test_redact_encoded_forms() -> None:
    forms = [
        TOKEN,
        urllib.parse.quote(TOKEN, safe=""),
        urllib.parse.quote(TOKEN, safe="").replace("%2B", "%2b").replace("%2F", "%2f"),
        urllib.parse.quote_plus(TOKEN),
        TOKEN.replace("/", "\\/"),  # as JSON may escape it
        "".join(f"&#{ord(c)};" for c in TOKEN),  # HTML numeric entities
        "".join(f"&#x{ord(c):X};" for c in TOKEN),
    ]
    for form in forms:
        assert redact_text(f"echo: {form}!", [TOKEN]) == "echo: ***!", form


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("missing or unknown bearer token", "missing or unknown bearer token"),
        ("Authorization: Bearer abc123.def", "Authorization: Bearer ***"),
        ("bearer abcdefgh", "bearer ***"),  # letters only, still a credential
        ("GET /x?token=s3cr3t&page=2", "GET /x?token=***&page=2"),
        ("https://h/cb?a=1&access_token=abc#frag", "https://h/cb?a=1&access_token=***#frag"),
        ("https://u:pw@h/", "https://u:***@h/"),
    ],
)
def test_redact_patterns(text: str, shown: str) -> None:
    assert redact_text(text) == shown


def test_printable_strips_what_a_terminal_would_obey() -> None:
    assert printable("a\x1b[31mred\x1b[0m b") == "ared b"
    assert printable("t\x1b]0;title\x07x") == "tx"
    assert printable("line\nbreak\ttab") == "line break tab"
    assert printable("bs\x08\x07\x9b") == "bs\ufffd\ufffd\ufffd"
    assert printable("\u202eevil") == "\ufffdevil"
    assert printable("plain ünïcode") == "plain ünïcode"


def test_the_table_prints_no_peer_escape_codes() -> None:
    report = {
        "agent": {"version": "1", "hostname": "h\x1b[2J", "host_id": "x"},
        "finished_at": "2026-12-01T00:00:00Z",
        "status": "fail",
        "checks": [
            {
                "name": "c\x1b[1m",
                "status": "fail",
                "summary": "bad \x1b]8;;http://evil\x07link",
                "remediation": "Fix\r\x1b[Kit.",
            }
        ],
    }
    out = render_table(report, width=100)
    assert "\x1b" not in out and "\r" not in out
    assert "bad link" in out


def test_a_socket_server_is_really_what_the_daemon_talks_to(collector: _Collector) -> None:
    """The stand-in answers over a real socket with exactly what it was given."""
    collector.answer = _answer("400 Bad Request", "hello")
    with socket.create_connection(collector.server_address, timeout=5) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        assert s.recv(4096).endswith(b"\r\n\r\nhello")
