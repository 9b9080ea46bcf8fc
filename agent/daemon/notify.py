"""systemd's notify protocol without libsystemd: one datagram per message to $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from agent import log

_log = log.get("acme_preflight.notify")


class Notifier:
    """Sends ``READY=1``, ``STATUS=…``, ``WATCHDOG=1`` etc. when run under systemd.

    Without ``NOTIFY_SOCKET`` every call is a no-op. Send errors are logged at debug
    level and never raised: systemd going away must not take the daemon with it.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval = _watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` lines as one datagram; True when it was sent."""
        if self.address is None:
            return False
        payload = "\n".join(f.replace("\n", " ") for f in fields).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.setblocking(False)
                s.sendto(payload, self.address)
        except OSError as e:
            _log.debug("sd_notify failed", error=str(e))
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        fields = ["READY=1"]
        if status:
            fields.append(f"STATUS={status}")
        return self.send(*fields)

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        # Type=notify-reload wants MONOTONIC_USEC with RELOADING=1 (CLOCK_MONOTONIC, µs).
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")


def _address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        # An abstract socket: a leading NUL byte instead of '@', no filesystem path.
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # systemd also allows vsock: addresses; not used for services on a host


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds, when the watchdog is meant for this process."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not (usec.isascii() and usec.isdigit()) or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000 / 2
