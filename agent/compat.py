"""What Python 3.10 (Ubuntu 22.04) lacks from 3.11, in one place.

On 3.11+ every name is the standard library's own; on 3.10 a backport with the same
behaviour: ``timeout`` is the ``async-timeout`` package's, ``tomllib`` is ``tomli``.
``TIMEOUT_ERRORS`` is what to catch around ``asyncio.wait_for``/``timeout``: on 3.10
``asyncio.TimeoutError`` is not the builtin ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from typing import Any, cast

if sys.version_info >= (3, 11):  # noqa: UP036 - the 3.10 branch is why this module exists
    import tomllib
    from asyncio import TaskGroup, Timeout, timeout
    from datetime import UTC
    from enum import StrEnum
else:  # pragma: no cover - exercised by tests/test_python_versions.py under 3.10
    import enum
    from collections.abc import Coroutine
    from datetime import timezone
    from types import TracebackType
    from typing import TypeVar

    import tomli as tomllib
    from async_timeout import Timeout, timeout

    _T = TypeVar("_T")
    UTC = timezone.utc  # noqa: UP017 - datetime.UTC is 3.11+

    class StrEnum(str, enum.Enum):  # noqa: UP042 - enum.StrEnum is 3.11+
        """enum.StrEnum: members are their values, ``str()`` and ``format()`` included."""

        def __str__(self) -> str:
            return str(self.value)

        @staticmethod
        def _generate_next_value_(name: str, start: int, count: int, last_values: list[Any]) -> str:
            return name.lower()

    class TaskGroup:
        """asyncio.TaskGroup's contract, minimally: ``__aexit__`` waits for every task;
        the first failure cancels the others and is raised."""

        def __init__(self) -> None:
            self._tasks: list[asyncio.Task[Any]] = []

        async def __aenter__(self) -> TaskGroup:
            return self

        def create_task(self, coro: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
            task = asyncio.ensure_future(coro)
            self._tasks.append(task)
            return task

        async def __aexit__(
            self,
            et: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> None:
            if et is not None:
                for task in self._tasks:
                    task.cancel()
            pending = set(self._tasks)
            first: BaseException | None = None
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    if first is None and not task.cancelled() and task.exception() is not None:
                        first = task.exception()
                        for other in pending:
                            other.cancel()
            if first is not None and et is None:
                raise first


async def start_tls(
    writer: asyncio.StreamWriter,
    sslcontext: ssl.SSLContext,
    *,
    server_hostname: str | None = None,
) -> None:
    """``StreamWriter.start_tls`` (3.11+): upgrade the stream to TLS in place."""
    if sys.version_info >= (3, 11):  # noqa: UP036 - 3.10 below
        await writer.start_tls(sslcontext, server_hostname=server_hostname)
        return
    # 3.10: what 3.11's StreamWriter.start_tls and StreamReaderProtocol._replace_writer do
    protocol: Any = writer._protocol
    server_side = protocol._client_connected_cb is not None
    await writer.drain()
    loop = asyncio.get_running_loop()
    transport = await loop.start_tls(
        writer.transport,
        protocol,
        sslcontext,
        server_side=server_side,
        server_hostname=server_hostname,
    )
    writer._transport = transport
    protocol._stream_writer = writer
    protocol._transport = transport
    protocol._over_ssl = transport.get_extra_info("sslcontext") is not None


def pause_reading_from_start(transport: asyncio.BaseTransport) -> None:
    """Pause a transport from ``connection_made`` on, so no byte is read before, say,
    ``start_tls``. Python 3.10's socket transports start reading after ``connection_made``
    even when it paused them (3.11 respects the pause): pause them again right after."""
    reading = cast(asyncio.ReadTransport, transport)
    reading.pause_reading()
    if sys.version_info < (3, 11):  # noqa: UP036 - the 3.10 fix-up
        asyncio.get_running_loop().call_soon(_pause_again, reading)


def _pause_again(transport: asyncio.ReadTransport) -> None:
    if not transport.is_closing() and not transport.is_reading():
        # resume+pause removes the reader 3.10 added despite the pause (and cancels a
        # read it had already queued)
        transport.resume_reading()
        transport.pause_reading()


# asyncio.TimeoutError is an alias of TimeoutError only from 3.11 on.
TIMEOUT_ERRORS: tuple[type[Exception], ...] = (TimeoutError, asyncio.TimeoutError)

__all__ = [
    "TIMEOUT_ERRORS",
    "UTC",
    "StrEnum",
    "TaskGroup",
    "Timeout",
    "start_tls",
    "timeout",
    "tomllib",
]
