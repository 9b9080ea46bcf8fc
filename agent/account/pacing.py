"""Pacing requests to CertCentral's per-key rate limits.

DigiCert allows 1000 requests per 3 minutes and 100 per 5 seconds for each API key. A
:class:`Pacer` remembers when each request went out and makes the next one wait until
every window has room, so paging a large domain list never bursts past a limit. A 429
from the server (another client using the same key) blocks every request until its
``Retry-After`` has passed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

# (requests, seconds) per API key, as DigiCert documents them.
CERTCENTRAL_LIMITS: tuple[tuple[int, float], ...] = ((100, 5.0), (1000, 180.0))
# Added to each window: the server stamps a request when it arrives, later than we sent
# it, so pacing exactly to the limit could still see the 101st inside its 5 s.
WINDOW_MARGIN = 0.25


class RateLimited(Exception):
    """The next request could not go out before the caller's deadline."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"the rate limit allows the next request in {wait:.1f}s")
        self.wait = wait


class Pacer:
    """Sliding-window pacing shared by every request made with one key."""

    def __init__(
        self,
        limits: tuple[tuple[int, float], ...] = CERTCENTRAL_LIMITS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = tuple((n, w + WINDOW_MARGIN) for n, w in limits)
        self._clock = clock
        self._sent: deque[float] = deque(maxlen=max(n for n, _ in limits))
        self._blocked_until = 0.0
        self._lock: asyncio.Lock | None = None
        self.waited_s = 0.0  # total pacing delay, for the report's details

    def delay(self) -> float:
        """Seconds until a request may go out now."""
        now = self._clock()
        wait = self._blocked_until - now
        for count, window in self.limits:
            if len(self._sent) >= count:
                wait = max(wait, self._sent[-count] + window - now)
        return max(wait, 0.0)

    def block(self, seconds: float) -> None:
        """The server said 429: nothing goes out for ``seconds``."""
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)

    async def acquire(self, budget: float) -> None:
        """Wait for room in every window (raises RateLimited if it is beyond ``budget``)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one at a time: waiters queue in order
            deadline = self._clock() + budget
            while (wait := self.delay()) > 0:
                if self._clock() + wait > deadline:
                    raise RateLimited(wait)
                self.waited_s += wait
                await asyncio.sleep(wait)
            self._sent.append(self._clock())
