"""sd_notify datagrams to a real AF_UNIX socket, path and abstract."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from agent.daemon.notify import Notifier


def _recv(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.splitlines())


def test_path_socket(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        n = Notifier({"NOTIFY_SOCKET": str(path)})
        assert n.ready("up\nand running")
        assert _recv(sock) == {"READY": "1", "STATUS": "up and running"}
        assert n.reloading()
        msg = _recv(sock)
        assert msg["RELOADING"] == "1" and int(msg["MONOTONIC_USEC"]) > 0
        n.stopping()
        assert _recv(sock) == {"STOPPING": "1"}


def test_abstract_socket() -> None:
    name = f"acme-preflight-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).watchdog()
        assert _recv(sock) == {"WATCHDOG": "1"}


def test_without_systemd_everything_is_a_no_op(tmp_path: Path) -> None:
    n = Notifier({})
    assert not n.enabled and not n.ready() and n.watchdog_interval is None
    # a socket that went away is not an error either
    assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).status("x")


def test_watchdog_interval_is_half_and_only_for_this_pid() -> None:
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval == 15.0
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_interval == 1.0
    other = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}
    assert Notifier(other).watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "junk"}).watchdog_interval is None
