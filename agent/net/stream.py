"""An open byte stream (TCP, proxy tunnel, or TLS over either) and a shared deadline."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time

from agent import compat

# How long a graceful close (TLS close_notify, FIN) may take before the stream is aborted:
# a peer that never answers must not hold a check past its budget.
CLOSE_GRACE = 0.25


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a ``time.perf_counter()`` value), rounded for reports."""
    return round((time.perf_counter() - started) * 1000, 1)


class Deadline:
    """A point in time several sequential phases share: each gets what is left."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0


class Stream:
    """A connected reader/writer pair; TLS may be started on it in place.

    ``close()`` is bounded and never raises; ``abort()`` drops the connection at once.
    Usable as ``async with`` so every path closes it.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        obj = self.writer.get_extra_info("ssl_object")
        return obj if isinstance(obj, ssl.SSLObject) else None

    @property
    def closed(self) -> bool:
        return self.writer.transport.is_closing()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.transport.abort()

    async def close(self) -> None:
        try:
            if not self.writer.transport.is_closing():
                self.writer.close()
                async with compat.timeout(CLOSE_GRACE):
                    await self.writer.wait_closed()
        except Exception:  # noqa: S110 - a peer resetting or ignoring close_notify changes nothing
            pass
        finally:
            self.abort()  # releases the socket even when cancelled mid-close

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
