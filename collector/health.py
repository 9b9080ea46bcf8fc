"""Whether the store can commit, for ``/healthz``.

Healthy means the latest commit worked: an ingest group, or a probe (a one-row write in its own
transaction, on the writer). While unhealthy a health check probes again at most once a second,
so that ``/healthz`` turns 200 as soon as the store can commit again even when no agent posts;
while nothing has been committed for ``idle_s`` it probes at most once per ``idle_s``, so that a
full disk is noticed without ingest. A probe that does not finish in ``timeout_s`` counts as a
failure (a store that hangs cannot commit either).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from agent import compat


class StoreHealth:
    def __init__(
        self,
        probe: Callable[[], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
        idle_s: float = 30.0,
        retry_s: float = 1.0,
        timeout_s: float = 5.0,
    ) -> None:
        self._probe = probe
        self._clock = clock
        self.idle_s, self.retry_s, self.timeout_s = idle_s, retry_s, timeout_s
        self.error: str | None = None
        self._last_commit = clock()
        self._last_probe = -idle_s
        self._running: asyncio.Future[None] | None = None

    def committed(self) -> None:
        self.error = None
        self._last_commit = self._clock()

    def failed(self, error: str) -> None:
        self.error = error or "unknown error"

    async def check(self) -> str | None:
        """None when the store can commit, else why it cannot."""
        now = self._clock()
        wait = self.retry_s if self.error is not None else self.idle_s
        if now - self._last_commit >= wait and now - self._last_probe >= wait:
            self._last_probe = now
            await self._run_probe()
        return self.error

    async def _run_probe(self) -> None:
        if self._running is None or self._running.done():  # one probe at a time
            self._running = asyncio.ensure_future(self._probe())
        try:
            await asyncio.wait_for(asyncio.shield(self._running), self.timeout_s)
        except compat.TIMEOUT_ERRORS:
            self.failed(f"a test commit did not finish within {self.timeout_s:g} s")
        except Exception as e:
            self.failed(str(e))
        else:
            self.committed()
