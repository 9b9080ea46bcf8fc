"""Connection exhaustion against the real collector process (collector/limits.py).

The attack from issue 14: more idle TCP connections than the process has descriptors (the
collector started with systemd's default soft limit of 1024), slow request heads (slowloris),
trickled bodies and stalled TLS handshakes. Agents' real POSTs must still get their 202
within a second, the slow connections must be closed at their deadlines, and the accept loop
must neither spin nor flood the log.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import resource
import selectors
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest
import trustme

from tests.collectorutil import (
    REPO,
    TOKEN,
    TOKENS_TEXT,
    ServerProcess,
    collector_env,
    report,
    server_process,
)

UNIT_SOFT_NOFILE = 1024  # systemd's default soft limit, what the issue's attack ran against


@pytest.fixture(autouse=True)
def _enough_descriptors_for_the_attacker() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _config(tmp_path: Path, **limits: Any) -> list[str | Path]:
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS_TEXT)
    table = "".join(f"{k} = {v!r}\n" for k, v in limits.items())
    cfg = tmp_path / "collector.toml"
    cfg.write_text(f"tokens_file = {str(tokens)!r}\n\n[limits]\n{table}")
    return ["--config", cfg, "--db", tmp_path / "c.db"]


def _addr(srv: ServerProcess) -> tuple[str, int]:
    parts = urlsplit(srv.url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def _post(
    srv: ServerProcess, context: ssl.SSLContext | None = None, timeout: float = 5
) -> tuple[int, dict[str, Any], float, http.client.HTTPResponse]:
    """One agent delivery on a new connection: (status, body, seconds, response)."""
    host, port = _addr(srv)
    conn: http.client.HTTPConnection
    if context is not None:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    t0 = time.monotonic()
    try:
        conn.request(
            "POST",
            "/api/v1/reports",
            json.dumps(report("agent-under-attack")).encode(),
            {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        body = json.loads(resp.read() or b"{}")
        return resp.status, body, time.monotonic() - t0, resp
    finally:
        conn.close()


REOPEN_PER_S = 500


class Crowd:
    """Attacker connections, held open from a background thread.

    ``idle``: connect and send nothing; each one the collector closes is opened again (up to
    REOPEN_PER_S a second), so that more than the cap stay open. ``slow``: a request head one header line at a time.
    ``trickle``: a full authenticated head with ``Content-Length: 100000``, then a byte at a
    time. ``closed`` records, per kind, how many seconds after opening the collector closed
    each connection (reset or EOF), and ``answers`` what it said first, if anything.
    """

    def __init__(self, host: str, port: int, reopen_idle: bool = True) -> None:
        self.addr = (host, port)
        self.reopen_idle = reopen_idle
        self.sel = selectors.DefaultSelector()
        self.opened: dict[socket.socket, tuple[str, float]] = {}
        self.closed: dict[str, list[float]] = {"idle": [], "slow": [], "trickle": []}
        self.answers: dict[str, list[bytes]] = {"idle": [], "slow": [], "trickle": []}
        self.lock = threading.Lock()
        self._reopen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def open(self, kind: str, count: int) -> None:
        for _ in range(count):
            s = socket.create_connection(self.addr, timeout=5)
            if kind == "slow":
                s.sendall(b"POST /api/v1/reports HTTP/1.1\r\nHost: collector\r\n")
            elif kind == "trickle":
                s.sendall(
                    b"POST /api/v1/reports HTTP/1.1\r\nHost: collector\r\n"
                    b"Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100000\r\n\r\n{" % TOKEN.encode()
                )
            s.setblocking(False)
            with self.lock:
                self.opened[s] = (kind, time.monotonic())
                self.sel.register(s, selectors.EVENT_READ)

    def count(self, kind: str) -> int:
        with self.lock:
            return sum(1 for k, _ in self.opened.values() if k == kind)

    def held(self) -> int:
        with self.lock:
            return len(self.opened)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for s in list(self.opened):
            s.close()

    def _run(self) -> None:
        last_tick = 0.0
        while not self._stop.is_set():
            with self.lock:
                events = self.sel.select(0.05) if self.opened else []
            for key, _ in events:
                self._readable(key.fileobj)  # type: ignore[arg-type]
            now = time.monotonic()
            if now - last_tick >= 0.2:  # one more header line / body byte
                last_tick = now
                again, self._reopen = min(self._reopen, REOPEN_PER_S // 5), 0
                if self.reopen_idle:
                    with contextlib.suppress(OSError):
                        self.open("idle", again)
                with self.lock:
                    slow = [(s, k) for s, (k, _) in self.opened.items() if k != "idle"]
                for s, kind in slow:
                    with contextlib.suppress(OSError):
                        s.send(b"X-Slow: 1\r\n" if kind == "slow" else b" ")

    def _readable(self, s: socket.socket) -> None:
        try:
            data = s.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        with self.lock:
            kind, t0 = self.opened[s]
            if data:
                self.answers[kind].append(data)
            self.sel.unregister(s)
            del self.opened[s]
            self.closed[kind].append(time.monotonic() - t0)
        s.close()
        if kind == "idle":
            self._reopen += 1


def _stderr(srv: ServerProcess) -> str:
    """What the collector logged (JSON lines), once it has stopped."""
    assert srv.stop() == 0
    assert srv.proc.stderr is not None
    return srv.proc.stderr.read()


def test_agents_get_202_within_a_second_while_connections_are_exhausted(
    tmp_path: Path,
) -> None:
    # default max_connections (1024) under the unit's old soft limit: the collector lowers
    # the cap to fit (1024 - 576 reserved) instead of running out of descriptors
    args = _config(tmp_path, header_timeout_s=2.0, body_timeout_s=4.0, idle_timeout_s=60.0)
    with server_process(*args, nofile=UNIT_SOFT_NOFILE) as srv:
        crowd = Crowd(*_addr(srv))
        crowd.start()
        try:
            crowd.open("trickle", 20)
            crowd.open("slow", 100)
            time.sleep(1.0)  # the bodies' heads are in (a busy request is never evicted)
            # more than the cap, and than the collector's 1024 descriptors; each one the
            # collector closes is opened again, for as long as the agents post
            crowd.open("idle", 1100)
            time.sleep(0.5)
            proc = psutil.Process(srv.proc.pid)
            proc.cpu_percent()
            t0 = time.monotonic()
            answers = [_post(srv) for _ in range(20)]
            print(f"20 agents served in {time.monotonic() - t0:.2f} s")
            for status, body, seconds, _ in answers:
                assert status == 202, body
                assert seconds < 1.0, [round(a[2], 3) for a in answers]
            # the slow heads die at the header deadline (or earlier, evicted), the trickled
            # bodies at the body deadline with a 408; the idle ones only make room
            deadline = time.monotonic() + 8
            while (crowd.count("slow") or crowd.count("trickle")) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert crowd.count("slow") == 0 and crowd.count("trickle") == 0
            # (seen late by this process while it reopens connections as fast as it can)
            assert max(crowd.closed["slow"]) < 2.0 + 3
            assert len(crowd.closed["trickle"]) == 20
            trickle = sorted(crowd.closed["trickle"])
            assert trickle[0] > 3.9 and trickle[-1] < 4.0 + 5, trickle  # 5 s: a busy machine
            assert len(crowd.answers["trickle"]) == 20  # each answered, none evicted
            assert all(a.startswith(b"HTTP/1.1 408 ") for a in crowd.answers["trickle"])
            assert len(crowd.closed["idle"]) >= 1220 - 448  # closed to make room
            slow = crowd.closed["slow"]
            print(f"slow heads closed after {min(slow):.2f}-{max(slow):.2f} s (header 2 s)")
            print(f"trickled bodies: 408 after {min(trickle):.2f}-{max(trickle):.2f} s (body 4 s)")
            # no accept loop spinning (the issue saw 96 % with the connections merely held)
            cpu = proc.cpu_percent()
            print(f"collector CPU under attack: {cpu:.0f} % ({len(crowd.closed['idle'])} closed)")
            assert cpu < 60
            assert _post(srv)[0] == 202
        finally:
            crowd.stop()
        err = _stderr(srv)
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    lowered = [e for e in events if e["event"].startswith("[limits] max_connections lowered")]
    assert lowered and lowered[0]["max_connections"] == 448 and lowered[0]["nofile"] == 1024
    assert "accept" not in err.lower()  # never ran out of descriptors
    full = [e for e in events if e["event"].startswith("connection limit (448) reached")]
    assert 1 <= len(full) <= 2 and full[0]["level"] == "warning"  # once a minute at most


def test_when_every_connection_is_busy_a_newcomer_gets_503(tmp_path: Path) -> None:
    args = _config(tmp_path, max_connections=4, body_timeout_s=2.0)
    with server_process(*args) as srv:
        crowd = Crowd(*_addr(srv))
        crowd.start()
        try:
            crowd.open("trickle", 4)  # inside a request: never evicted
            time.sleep(0.3)
            status, body, seconds, resp = _post(srv)
            assert status == 503 and seconds < 1.0
            assert resp.getheader("Retry-After") == "1"
            assert "too many connections" in body["error"]
            deadline = time.monotonic() + 5
            while crowd.count("trickle") and time.monotonic() < deadline:
                time.sleep(0.1)
            assert all(a.startswith(b"HTTP/1.1 408 ") for a in crowd.answers["trickle"])
            assert _post(srv)[0] == 202
        finally:
            crowd.stop()


def test_timeouts_at_their_bounds(tmp_path: Path) -> None:
    args = _config(tmp_path, header_timeout_s=1.0, idle_timeout_s=1.5, body_timeout_s=1.0)
    with server_process(*args) as srv:
        host, port = _addr(srv)
        crowd = Crowd(host, port, reopen_idle=False)
        crowd.start()
        try:
            crowd.open("idle", 3)  # a fresh connection must send its head within 1 s
            crowd.open("slow", 3)  # a line every 0.2 s does not extend it
            # keep-alive: after a response the connection may idle 1.5 s
            conn = http.client.HTTPConnection(host, port, timeout=5)
            conn.request("GET", "/healthz")
            assert conn.getresponse().read()
            t0 = time.monotonic()
            sock = conn.sock
            assert sock is not None
            sock.settimeout(5)
            assert sock.recv(1) == b""  # closed by the collector
            idle = time.monotonic() - t0
            time.sleep(0.2)
        finally:
            crowd.stop()
        heads = crowd.closed["idle"] + crowd.closed["slow"]
        print(f"\nidle keep-alive closed after {idle:.2f} s (idle_timeout_s 1.5); heads closed")
        print(f"after {min(heads):.2f}-{max(heads):.2f} s (header_timeout_s 1)")
        assert 1.3 < idle < 2.5
        assert len(crowd.closed["idle"]) == 3 and len(crowd.closed["slow"]) == 3
        assert all(0.9 < t < 2.0 for t in crowd.closed["idle"] + crowd.closed["slow"])


def test_stalled_tls_handshakes_count_and_time_out(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "server.pem", tmp_path / "server.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    args = _config(tmp_path, max_connections=30, header_timeout_s=1.5)
    tls = ["--tls-cert", cert_file, "--tls-key", key_file]
    with server_process(*args, *tls) as srv:
        crowd = Crowd(*_addr(srv), reopen_idle=False)
        crowd.start()
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        try:
            crowd.open("idle", 60)  # TCP connected, no ClientHello: a handshake never begun
            time.sleep(0.3)
            for _ in range(5):
                status, _, seconds, _ = _post(srv, context=ctx)
                assert status == 202 and seconds < 1.0
            deadline = time.monotonic() + 4
            while crowd.count("idle") and time.monotonic() < deadline:
                time.sleep(0.1)
            assert crowd.count("idle") == 0
            assert max(crowd.closed["idle"]) < 1.5 + 1.5
        finally:
            crowd.stop()


EMFILE_SERVER = """
import asyncio, logging, os, sys
logging.basicConfig(format="%(levelname)s %(message)s")
from collector.limits import quiet_accept_errors

async def main():
    if sys.argv[1] == "quiet":
        quiet_accept_errors(asyncio.get_running_loop())
    srv = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    print(srv.sockets[0].getsockname()[1], flush=True)
    hog = []
    try:
        while True:
            hog.append(os.open("/dev/null", os.O_RDONLY))  # every descriptor taken
    except OSError:
        pass
    await asyncio.sleep(2.6)

asyncio.run(main())
"""


def _accept_errors_logged(mode: str) -> str:
    proc = subprocess.Popen(
        [sys.executable, "-c", EMFILE_SERVER, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=collector_env(),
        cwd=REPO,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)),
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    time.sleep(0.2)
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(30)]
    _, err = proc.communicate(timeout=20)
    for s in held:
        s.close()
    return err


def test_accept_errors_are_logged_once_per_interval() -> None:
    # the event loop retries accept() every second while out of descriptors; by default each
    # retry logs an error with a traceback
    loud = _accept_errors_logged("default")
    assert loud.count("socket.accept() out of system resource") >= 3
    quiet = _accept_errors_logged("quiet")
    assert quiet.count("cannot accept connections") == 1, quiet
    assert "Too many open files" in quiet
    assert "Traceback" not in quiet and "out of system resource" not in quiet
