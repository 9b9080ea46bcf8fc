"""Connection limits and timeouts of the collector's HTTP server: the one place that owns them.

Every accepted TCP connection goes through a guard (an asyncio protocol in front of aiohttp's
request handler) that

- counts it against the connection cap. When the cap is reached, the connection that has
  waited longest without a request in progress (idle keep-alive, a slow request head, a TLS
  handshake that does not finish) is closed to make room; only when every connection is busy
  inside a request does the newcomer get a ``503`` with ``Retry-After``;
- does the TLS handshake itself (``loop.start_tls``), so that a stalled handshake counts
  against the cap and times out like slow headers;
- closes a connection whose request head is not complete ``header_timeout_s`` after it
  connected (TLS handshake included) or after the first byte that follows a response, one
  that stays idle ``idle_timeout_s`` between requests, and one whose response makes no
  progress for ``idle_timeout_s`` (a client that does not read).

The body deadline (``body_timeout_s``) is applied where the body is read (:func:`body_deadline`),
so that the client still gets a ``408``. Evictions and rejections are logged at most once a
minute, with counts; so are the event loop's ``accept()`` errors (``EMFILE``).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_runner import BaseRunner

from agent import compat

log = logging.getLogger("acme_preflight.collector")

# The listen queue, and how many connections the event loop accepts in one go before any of
# them reaches a guard (asyncio uses one number for both).
BACKLOG = 128
# Descriptors kept free for everything that is not a counted client connection: the listening
# sockets, SQLite's files (database, WAL, shared memory) for the writer and each reader
# thread, the workers' lock file, the event loop's own, logs (64); and the connections the
# loop has accepted but not yet handed to a guard (that takes it two iterations, each of which
# may accept another backlog), plus those closed to make room, whose descriptors are released
# an iteration later: four backlogs (measured: three were not always enough under churn).
RESERVE_FDS = 64 + 4 * BACKLOG
# Rejected connections get a short answer and up to LINGER_S to read it; at most this many at
# once (beyond that a rejected connection is closed at once), out of the 64 reserved.
MAX_LINGERING = 16
LINGER_S = 1.0
LOG_INTERVAL_S = 60.0

_BUSY_BODY = b'{"error":"the collector has too many connections in progress; retry later"}'
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


@dataclass(frozen=True)
class Limits:
    """The ``[limits]`` table of collector.toml."""

    # client connections per process (each worker has its own)
    max_connections: int = 1024
    # connect (TLS handshake included) or first byte after a response -> complete request head
    header_timeout_s: float = 10.0
    # complete request head -> complete body
    body_timeout_s: float = 30.0
    # between requests on a keep-alive connection; also how long a response may stall
    idle_timeout_s: float = 30.0


def fd_budget(wanted: int, reserve: int = RESERVE_FDS) -> tuple[int, int]:
    """``(connection cap, soft RLIMIT_NOFILE)``, raising the soft limit toward what ``wanted``
    connections need (never above the hard limit); the cap fits the limit that results."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    inf = resource.RLIM_INFINITY
    need = wanted + reserve
    if soft != inf and soft < need:
        new = need if hard == inf else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft == inf:
        return wanted, soft
    return max(1, min(wanted, soft - reserve)), soft


class _Events:
    """Counts of what the limiter did, logged at most once per LOG_INTERVAL_S."""

    def __init__(self) -> None:
        self.evicted = 0
        self.rejected = 0
        self.timed_out = 0
        self._last_log = -LOG_INTERVAL_S
        self._flush: asyncio.TimerHandle | None = None

    def note(self, loop: asyncio.AbstractEventLoop, cap: int) -> None:
        if time.monotonic() - self._last_log >= LOG_INTERVAL_S:
            self.log(cap)
        elif self._flush is None:
            self._flush = loop.call_later(LOG_INTERVAL_S, self.log, cap)

    def log(self, cap: int) -> None:
        self._flush = None
        if self.evicted or self.rejected:
            log.warning(
                "connection limit (%d) reached: closed %d waiting connections to make room, "
                "answered %d with 503, timed out %d slow or idle ones (in the last %.0f s)",
                cap,
                self.evicted,
                self.rejected,
                self.timed_out,
                LOG_INTERVAL_S,
            )
        self.evicted = self.rejected = self.timed_out = 0
        self._last_log = time.monotonic()


class ConnectionLimiter:
    """The connection cap and timeouts for one process; see the module docstring."""

    def __init__(self, limits: Limits, cap: int | None = None) -> None:
        self.limits = limits
        self.cap = limits.max_connections if cap is None else cap
        self.open = 0
        self.lingering = 0
        self.events = _Events()
        # guards with no request in progress, the longest waiting first (dicts keep order)
        self._waiting: dict[_Guard, None] = {}
        self._by_handler: dict[asyncio.BaseProtocol, _Guard] = {}

    def factory(
        self, handler_factory: Callable[[], asyncio.BaseProtocol], tls: ssl.SSLContext | None
    ) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` (with ``ssl=None``: TLS is ours)."""
        return lambda: _Guard(self, handler_factory, tls)

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Marks the connection busy while a handler runs (it is then never evicted)."""
        guard = self._by_handler.get(request.protocol)
        if guard is None:  # served without a GuardedSite
            return await handler(request)
        guard.begin()
        try:
            return await handler(request)
        finally:
            guard.end()

    def _make_room(self) -> bool:
        """Close the connection that has waited longest; False when none is waiting."""
        victim = next(iter(self._waiting), None)
        if victim is None:
            return False
        victim.abort()
        self.events.evicted += 1
        self.events.note(asyncio.get_running_loop(), self.cap)
        return True


class _Guard(asyncio.Protocol):
    __slots__ = (
        "_busy",
        "_due",
        "_early",
        "_factory",
        "_idle",
        "_inner",
        "_lim",
        "_loop",
        "_rejected",
        "_released",
        "_task",
        "_timer",
        "_tls",
        "_transport",
        "_unsent",
    )

    def __init__(
        self,
        lim: ConnectionLimiter,
        factory: Callable[[], asyncio.BaseProtocol],
        tls: ssl.SSLContext | None,
    ) -> None:
        self._lim = lim
        self._loop = asyncio.get_running_loop()
        self._factory = factory
        self._tls = tls
        self._inner: Any = None  # aiohttp's RequestHandler once attached
        self._transport: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0  # loop time of the deadline; 0: none (a request is in progress)
        self._busy = 0
        self._idle = False  # after a response, before the next request's first byte
        self._released = True
        self._rejected = False
        self._unsent = -1
        self._task: asyncio.Task[None] | None = None
        self._early: list[bytes] | None = None  # decrypted before start_tls() returned

    # ------------------------------------------------------------ asyncio protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        lim = self._lim
        self._transport = transport
        if lim.open >= lim.cap and not lim._make_room():
            self._reject(transport)
            return
        lim.open += 1
        self._released = False
        lim._waiting[self] = None
        self._set_due(lim.limits.header_timeout_s)
        if self._tls is None:
            self._attach(transport)
        else:
            compat.pause_reading_from_start(transport)  # no byte before start_tls
            self._task = self._loop.create_task(self._handshake(transport, self._tls))

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            if self._task is not None and not self._released:
                # the TLS layer hands over what came with the handshake before start_tls()
                # returns; bounded by what one loop iteration reads
                self._early = [*(self._early or ()), data]
            return  # else rejected: the request is not read
        if self._idle:  # the first byte of the next request: the head is due soon
            self._idle = False
            self._set_due(self._lim.limits.header_timeout_s)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is None:
            return None
        return bool(self._inner.eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        if self._rejected:
            self._rejected = False
            self._lim.lingering -= 1
        self._release()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        inner, self._inner = self._inner, None
        if inner is not None:
            self._lim._by_handler.pop(inner, None)
            inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # ------------------------------------------------------------ request state

    def begin(self) -> None:
        self._busy += 1
        self._due = 0.0
        self._idle = False
        self._lim._waiting.pop(self, None)

    def end(self) -> None:
        self._busy -= 1
        if self._busy or self._released:
            return
        self._idle = True
        self._unsent = -1
        self._lim._waiting[self] = None  # now the most recent waiter
        self._set_due(self._lim.limits.idle_timeout_s)

    def abort(self) -> None:
        self._release()
        if self._transport is not None:
            self._transport.abort()

    # ------------------------------------------------------------ internals

    def _attach(self, transport: asyncio.BaseTransport) -> None:
        self._inner = self._factory()
        self._lim._by_handler[self._inner] = self
        self._inner.connection_made(transport)
        early, self._early = self._early, None
        for data in early or ():
            self.data_received(data)

    async def _handshake(self, raw: asyncio.BaseTransport, ctx: ssl.SSLContext) -> None:
        try:
            tls = await self._loop.start_tls(
                raw,  # type: ignore[arg-type]
                self,
                ctx,
                server_side=True,
                ssl_handshake_timeout=self._lim.limits.header_timeout_s,
            )
        except Exception:  # a failed handshake: reset, timeout, bad TLS
            self._task = None
            self.abort()  # connection_lost follows, from the TLS layer
            return
        if self._released or tls is None:  # evicted or timed out meanwhile
            if tls is not None:
                tls.abort()
            return
        self._transport = tls
        self._task = None
        self._attach(tls)

    def _reject(self, transport: asyncio.BaseTransport) -> None:
        lim = self._lim
        lim.events.rejected += 1
        lim.events.note(self._loop, lim.cap)
        if self._tls is not None or lim.lingering >= MAX_LINGERING:
            transport.abort()  # type: ignore[attr-defined]
            return
        # The answer, then a moment to read it: closing with the request unread would send
        # a reset, and the client could lose the 503 before reading it.
        self._rejected = True
        lim.lingering += 1
        transport.write(_BUSY)  # type: ignore[attr-defined]
        self._due = self._loop.time() + LINGER_S
        self._timer = self._loop.call_at(self._due, transport.abort)  # type: ignore[attr-defined]

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        self._due = 0.0
        lim = self._lim
        lim.open -= 1
        lim._waiting.pop(self, None)

    def _set_due(self, delay: float) -> None:
        due = self._loop.time() + delay
        self._due = due
        timer = self._timer
        if timer is None or timer.when() > due:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(due, self._expired)

    def _expired(self) -> None:
        self._timer = None
        if self._due == 0.0 or self._released:
            return
        if self._loop.time() < self._due:  # the deadline moved on meanwhile
            self._timer = self._loop.call_at(self._due, self._expired)
            return
        # a response still draining to a slow reader gets more time while it moves
        unsent = self._transport.get_write_buffer_size() if self._transport is not None else 0
        if unsent and unsent != self._unsent:
            self._unsent = unsent
            self._set_due(self._lim.limits.idle_timeout_s)
            return
        self._lim.events.timed_out += 1
        self.abort()


def body_deadline(limits: Limits) -> compat.Timeout:
    """``async with body_deadline(limits):`` around reading a request body."""
    return compat.timeout(limits.body_timeout_s)


class GuardedSite(web.BaseSite):
    """A listening site whose connections go through ``limiter``: ``host``/``port`` to bind,
    or ``sock``, a socket bound and listening already (the workers' ``SO_REUSEPORT`` sets)."""

    __slots__ = ("_host", "_limiter", "_port", "_sock")

    def __init__(
        self,
        runner: BaseRunner,
        limiter: ConnectionLimiter,
        *,
        host: str | None = None,
        port: int = 0,
        sock: Any = None,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = BACKLOG,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._limiter = limiter
        self._host, self._port, self._sock = host, port, sock

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        factory = self._limiter.factory(server, self._ssl_context)
        loop = asyncio.get_running_loop()
        if self._sock is not None:
            self._server = await loop.create_server(factory, sock=self._sock, backlog=self._backlog)
        else:
            self._server = await loop.create_server(
                factory, self._host, self._port, backlog=self._backlog
            )


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, interval: float = LOG_INTERVAL_S) -> None:
    """Log the event loop's ``accept()`` failures (``EMFILE``: out of descriptors) once per
    ``interval`` with a count, without a traceback, instead of once per attempt."""
    previous = loop.get_exception_handler()
    state = {"last": -interval, "since": 0}

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            state["since"] += 1
            now = time.monotonic()
            if now - state["last"] >= interval:
                log.warning(
                    "cannot accept connections: %s (%d times in the last %.0f s); "
                    "raise LimitNOFILE= or lower [limits] max_connections",
                    context.get("exception"),
                    state["since"],
                    min(now - state["last"], interval),
                )
                state["last"], state["since"] = now, 0
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
