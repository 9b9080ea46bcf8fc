"""Lifecycle shared by the lab servers: async context manager, tracked connections,
and :class:`LabThread` to run servers on a background event loop for sync tests."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from agent import compat

if TYPE_CHECKING:
    from typing import Self  # 3.11+; annotations only, so 3.10 can run the lab

T = TypeVar("T")
S = TypeVar("S", bound="LabServer")


def bind_socket(host: str, port: int, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A non-blocking socket bound to (host, port); ``port=0`` picks a free port."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets
    # whose proto says TCP, and accepted sockets inherit it. With Nagle on, a response
    # written right after the TLS 1.3 session tickets waits for the client's delayed ACK:
    # Go clients (blackbox_exporter) saw every other first request stall ~40 ms.
    proto = socket.IPPROTO_TCP if kind == socket.SOCK_STREAM else 0
    sock = socket.socket(family, kind, proto)
    try:
        if kind == socket.SOCK_STREAM:
            # Restarting a server on the same port must not trip over TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class LabServer:
    """Base of every lab server: ``async with Server(...) as s`` or ``await s.start()``.

    ``host``/``port`` are the requested address; after start ``port`` is the bound one.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.running = False

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    async def start(self) -> Self:
        await self._start()
        self.running = True
        return self

    async def stop(self) -> None:
        if self.running:
            self.running = False
            await self._stop()

    async def _start(self) -> None:
        raise NotImplementedError

    async def _stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.host}:{self.port}>"


class StreamServer(LabServer):
    """A TCP server whose connections are tracked, so ``stop()`` closes every one."""

    backlog = 128
    # Keep the first bytes in the kernel until handle() takes over (start_tls needs the
    # ClientHello, which the stream reader would otherwise swallow).
    pause_on_accept = False

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _start(self) -> None:
        sock = bind_socket(self.host, self.port)
        sock.listen(self.backlog)
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._accept, sock=sock)

    def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Coroutine[Any, Any, None]:
        # Runs synchronously in connection_made, before the transport reads anything.
        if self.pause_on_accept:
            compat.pause_reading_from_start(writer.transport)
        return self._connection(reader, writer)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The handler runs in an inner task that stop() cancels; this outer task (which
        # asyncio's stream protocol watches) then ends normally, so Python 3.11 does not
        # log the cancellation as an error.
        task = asyncio.create_task(self.handle(reader, writer))
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await task
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # a peer hanging up or sending junk ends its connection, nothing more
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()


class LabThread:
    """An event loop in a daemon thread, for sync tests (e.g. the CLI as a subprocess).

    ``lab.start(server)`` starts a server there and returns it; ``close()`` (or leaving
    the ``with`` block) stops every server it started, then the loop.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._servers: list[LabServer] = []
        self._thread = threading.Thread(target=self.loop.run_forever, name="lab-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run a coroutine on the lab loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, server: S) -> S:
        self.run(server.start())
        self._servers.append(server)
        return server

    def stop(self, server: LabServer) -> None:
        self.run(server.stop())
        with contextlib.suppress(ValueError):
            self._servers.remove(server)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        try:
            while self._servers:
                self.run(self._servers.pop().stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
