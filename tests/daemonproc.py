"""Running ``acme-preflight run`` as a real subprocess, with a real systemd notify socket."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.clirun import cli_env
from tests.lab.config import to_toml
from tests.lab.netns import assert_netns_isolated

TOKEN = "tok-7f3a9c1e-DO-NOT-LOG"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_config(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    path.write_text(to_toml(sections))
    return path


def base_config(
    tmp: Path,
    collector: str | None,
    *,
    interval: str = "1s",
    status_port: int | None = None,
    token_file: Path | None = None,
    **collector_extra: Any,
) -> dict[str, dict[str, Any]]:
    """Only the ``privileges`` check (no network lab needed), short interval and timeouts."""
    cfg: dict[str, dict[str, Any]] = {
        "agent": {
            "interval": interval,
            "timeout": "0.5s",
            "jitter": 0,
            "checks": ["privileges"],
            "state_dir": tmp / "state",
            "host_id": "daemon-test",
        },
        "status": {"listen": f"127.0.0.1:{status_port}" if status_port else ""},
    }
    if collector:
        col: dict[str, Any] = {"url": collector, "timeout": "2s", **collector_extra}
        if token_file is not None:
            col["token_file"] = token_file
        cfg["collector"] = col
    return cfg


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's ``$NOTIFY_SOCKET``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self._running = True
        self._thread = threading.Thread(target=self._recv, daemon=True)
        self._thread.start()

    def _recv(self) -> None:
        while self._running:
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def all(self) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return list(self.messages)

    def times(self, key: str, value: str | None = None) -> list[float]:
        return [t for t, f in self.all() if key in f and (value is None or f[key] == value)]

    def wait_for(self, key: str, value: str | None = None, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.times(key, value)
            if found:
                return found[-1]
            time.sleep(0.02)
        raise AssertionError(f"no {key}={value or '*'} on the notify socket: {self.all()}")

    def close(self) -> None:
        self._running = False
        self._sock.close()
        self._thread.join(2)


class DaemonProc:
    """``python -m agent --config CFG run`` with its log in a file."""

    def __init__(
        self,
        config: Path,
        log: Path,
        env: Mapping[str, str] | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        """``prefix`` runs the daemon under a wrapper that ends in ``exec`` (same pid),
        e.g. ``unshare --mount -- sh -c '...; exec "$@"' sh``."""
        # The daemon looks up its FQDN: only ever inside a namespace with nothing but lo.
        assert_netns_isolated()
        self.config = config
        self.log_path = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "agent", "--config", str(config), "run"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=cli_env(env),
            cwd="/",
        )

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": line, "unparsed": True})
        return out

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.logs():
                if pred(entry):
                    return entry
            assert self.proc.poll() is None, f"daemon exited: {self.log_text()}"
            time.sleep(0.05)
        raise AssertionError(f"log line not seen within {timeout}s:\n{self.log_text()}")

    def events(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.logs() if e.get("event") == event]

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
        self._log.close()

    def __enter__(self) -> DaemonProc:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


def http_get(port: int, path: str, timeout: float = 3.0) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_http(port: int, path: str, timeout: float = 10.0) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return http_get(port, path)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def fill_spool(state_dir: Path, n: int, pad: int = 200) -> list[str]:
    """A spool an earlier daemon left behind in ``state_dir``, with ``n`` reports that the
    lab recorder accepts (written in one transaction); their report_ids, oldest first."""
    from agent.daemon.spool import SPOOL_FILE, Spool

    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    Spool(state_dir / SPOOL_FILE, 100_000, 1 << 30).close()  # the schema
    ids = [str(uuid.uuid4()) for _ in range(n)]
    rows = []
    for rid in ids:
        body = json.dumps({"report_id": rid, "pad": "x" * pad}).encode()
        rows.append((rid, body, len(body)))
    with contextlib.closing(sqlite3.connect(state_dir / SPOOL_FILE)) as db, db:
        db.executemany(
            "INSERT INTO reports (report_id, body, size, spooled_at) VALUES (?, ?, ?, 0)", rows
        )
    return ids
