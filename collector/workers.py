"""Several collector processes on one port and one database (``workers > 1``).

The supervisor (the process started by ``serve``) migrates the database once, binds one
listening socket per worker and address with ``SO_REUSEPORT`` (so the kernel spreads new
connections over the workers, and a port chosen with ``:0`` is the same for all), allocates
the shared metrics rows, then forks the workers. Each worker is a whole collector (event loop,
writer thread, reader threads) serving its own sockets; their writers take turns on the
database (store.Writer; with SQLite on ``<db>.lock``) and the unique ``(host_id, report_id)``
keeps ingest idempotent across workers. Worker 0 alone runs retention.

The supervisor prints the "listening on" line once every worker serves, forwards SIGTERM,
SIGINT (as SIGTERM) and SIGHUP to the workers, and when a worker dies on its own it stops the
others and exits non-zero (systemd's ``Restart=`` brings the service back whole).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import ssl
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from collector import limits
from collector.config import Settings
from collector.metrics import Row

EX_SOFTWARE = 70
_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}
START_TIMEOUT_S = 60.0


@dataclass
class Worker:
    """What one forked worker gets from the supervisor."""

    index: int
    sockets: list[socket.socket]
    metrics_rows: Sequence[Row]
    ready_fd: int

    def ready(self) -> None:
        os.write(self.ready_fd, b"r")
        os.close(self.ready_fd)


def bind(
    host: str, port: int, count: int, backlog: int = limits.BACKLOG
) -> list[list[socket.socket]]:
    """``count`` sets of listening sockets on every address of ``host``, all on one port."""
    infos = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_ADDRCONFIG
    )
    groups: list[list[socket.socket]] = [[] for _ in range(count)]
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, addr in infos:
            if (family, addr[0]) in seen:
                continue
            seen.add((family, addr[0]))
            for group in groups:
                sock = socket.socket(family, kind, proto)
                group.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((addr[0], port, *addr[2:]))
                port = sock.getsockname()[1]  # ":0": the kernel's choice, then the same for all
                sock.listen(backlog)
                sock.setblocking(False)
    except BaseException:
        for group in groups:
            for sock in group:
                sock.close()
        raise
    return groups


def _fail(message: str) -> None:
    print(f"acme-preflight-collector: {message}", file=sys.stderr, flush=True)


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code  # killed by a signal: 128 + signal number


def supervise(
    s: Settings,
    ctx: ssl.SSLContext | None,
    run: Callable[[Worker], int],
    listening_line: Callable[[tuple[Any, ...], bool], str],
) -> int:
    """Start ``s.workers`` workers, each calling ``run(worker)``; return the exit code."""
    from collector import metrics, store

    try:  # create and migrate once, before any worker opens the database
        store.prepare(
            store.open_backend(
                s.postgres_url or str(s.db),
                synchronous=s.synchronous,
                password_file=s.store_password_file,
            )
        )
    except store.StoreError as e:
        _fail(f"database error: {e}")
        return 73
    host, port = s.host_port
    try:
        groups = bind(host, port, s.workers)
    except OSError as e:
        _fail(f"cannot listen on {s.listen}: {e}")
        return 69
    bound = groups[0][0].getsockname()
    rows = metrics.shared_rows(s.workers)
    ready_r, ready_w = os.pipe()
    # Signals wait in the mask until sigwaitinfo() takes them; workers unblock them at once.
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    sys.stdout.flush()
    sys.stderr.flush()
    pids: dict[int, int] = {}
    for index in range(s.workers):
        pid = os.fork()
        if pid == 0:  # the worker
            code = EX_SOFTWARE
            try:
                os.close(ready_r)
                for other, group in enumerate(groups):
                    if other != index:
                        for sock in group:
                            sock.close()
                signal.pthread_sigmask(signal.SIG_SETMASK, set())
                code = run(Worker(index, groups[index], rows, ready_w))
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        pids[pid] = index
    os.close(ready_w)
    for group in groups:
        for sock in group:
            sock.close()
    failed = _wait_ready(ready_r, pids, s.workers)
    os.close(ready_r)
    if failed is not None:
        return _stop_all(pids, failed)
    print(listening_line(bound, ctx is not None), flush=True)
    return _supervise_loop(pids)


def _wait_ready(ready_r: int, pids: dict[int, int], count: int) -> int | None:
    """None once every worker serves; else the exit code of a worker that gave up."""
    ready = 0
    deadline = time.monotonic() + START_TIMEOUT_S
    while ready < count:
        readable, _, _ = select.select([ready_r], [], [], 0.1)
        if readable:
            ready += len(os.read(ready_r, 64))
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid:
            del pids[pid]
            return _exit_code(status) or EX_SOFTWARE
        if time.monotonic() > deadline:
            _fail(f"workers did not start within {START_TIMEOUT_S:g} s")
            return EX_SOFTWARE
    return None


def _supervise_loop(pids: dict[int, int]) -> int:
    while True:
        info = signal.sigwaitinfo(_SIGNALS)
        if info.si_signo in (signal.SIGTERM, signal.SIGINT):
            return _stop_all(pids, 0)
        if info.si_signo == signal.SIGHUP:
            for pid in pids:
                os.kill(pid, signal.SIGHUP)
            continue
        # SIGCHLD: a worker ended without being asked to
        while pids:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if not pid:
                break
            index = pids.pop(pid)
            _fail(f"worker {index} exited ({_exit_code(status)}); stopping the others")
            return _stop_all(pids, _exit_code(status) or EX_SOFTWARE)


def _stop_all(pids: dict[int, int], code: int) -> int:
    """SIGTERM every remaining worker (each commits what it holds) and reap them."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    while pids:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pids.pop(pid, None) is not None and code == 0:
            code = _exit_code(status)
    return code
