"""TCP endpoints that fail the way real networks do, on loopback.

- :class:`BlackholeEndpoint`: ``connect()`` hangs (a firewall silently dropping SYNs).
- :class:`SilentEndpoint`: accepts, never sends a byte (TLS/HTTP phase timeouts).
- :class:`RefusedEndpoint`: nothing listens; ``connect()`` is refused (RST).
- :class:`ResetEndpoint`: accepts, then resets (RST via SO_LINGER 0).
- :class:`ReplyEndpoint`: accepts, sends fixed bytes (e.g. plain HTTP where TLS is expected).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

from agent import compat
from tests.lab.base import LabServer, StreamServer, bind_socket


class BlackholeEndpoint(LabServer):
    """A listener with backlog 0 whose accept queue is kept full and never accepted from.

    Linux drops a SYN aimed at a listener with a full accept queue, so a new ``connect()``
    gets no answer at all and hangs until the caller's timeout, like a DROP firewall rule.
    ``start()`` fills the queue and verifies that a probe really hangs.
    """

    def __init__(self, host: str = "127.0.0.5", port: int = 443) -> None:
        super().__init__(host, port)
        self._listener: socket.socket | None = None
        self._fillers: list[socket.socket] = []

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._listener = bind_socket(self.host, self.port)
        self._listener.listen(0)
        self.port = self._listener.getsockname()[1]
        for _ in range(8):
            probe = socket.socket(self._listener.family, socket.SOCK_STREAM)
            probe.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(probe, self.address), 0.1)
            except compat.TIMEOUT_ERRORS:
                probe.close()
                if self._fillers:
                    return  # the queue is full: connects now hang
                continue  # an empty queue accepts: this probe was just slow
            except BaseException:
                probe.close()
                await self._stop()
                raise
            self._fillers.append(probe)
        await self._stop()
        raise RuntimeError("connects to a full accept queue do not hang on this kernel")

    async def _stop(self) -> None:
        for s in self._fillers:
            s.close()
        self._fillers.clear()
        if self._listener is not None:
            self._listener.close()


class RefusedEndpoint(LabServer):
    """A port bound but not listening: connects are refused, and nothing else can take it."""

    def __init__(self, host: str = "127.0.0.6", port: int = 443) -> None:
        super().__init__(host, port)
        self._sock: socket.socket | None = None

    async def _start(self) -> None:
        self._sock = bind_socket(self.host, self.port)
        self.port = self._sock.getsockname()[1]

    async def _stop(self) -> None:
        if self._sock is not None:
            self._sock.close()


class SilentEndpoint(StreamServer):
    """Accepts and never answers; reads and discards what the client sends."""

    def __init__(self, host: str = "127.0.0.7", port: int = 443) -> None:
        super().__init__(host, port)
        self.connections = 0
        self.received = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while data := await reader.read(65536):
            self.received += len(data)


class ResetEndpoint(StreamServer):
    """Accepts and resets the connection: at once, or after the first bytes arrive
    (``after_data=True``, like a middlebox killing a TLS ClientHello)."""

    def __init__(
        self, host: str = "127.0.0.8", port: int = 443, *, after_data: bool = False
    ) -> None:
        super().__init__(host, port)
        self.after_data = after_data
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.after_data:
            await reader.read(1)
        sock = writer.get_extra_info("socket")
        with contextlib.suppress(OSError):
            # Linger on with timeout 0: close() sends RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()


class ReplyEndpoint(StreamServer):
    """Accepts, sends ``data`` (default: a plain-HTTP answer), then closes."""

    def __init__(
        self,
        host: str = "127.0.0.9",
        port: int = 443,
        data: bytes = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ) -> None:
        super().__init__(host, port)
        self.data = data

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self.data)
        await writer.drain()
