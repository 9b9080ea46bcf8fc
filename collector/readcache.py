"""Cached reads for the fleet page and API: rendering must not take ingest's budget.

Identical requests share one result while this process has committed nothing since it was
begun: those that arrive while it is being produced wait for it (eight browsers reloading
``/`` cost one render), later ones reuse it for at most ``max_age`` seconds (other workers and
collectors on the same database commit without telling us, so an answer is never older).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class ReadCache:
    def __init__(
        self,
        max_age: float = 1.0,
        max_entries: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_age = max_age
        self._max_entries = max_entries
        self._clock = clock
        # key -> (generation, made at, the result's future)
        self._entries: OrderedDict[str, tuple[int, float, asyncio.Future[Any]]] = OrderedDict()

    async def get(self, key: str, generation: int, produce: Callable[[], Awaitable[T]]) -> T:
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None:
            gen, made, fut = entry
            # an answer begun before a commit we acknowledged would miss that report
            if gen == generation and (not fut.done() or now - made < self._max_age):
                self._entries.move_to_end(key)
                result: T = await asyncio.shield(fut)
                return result
        fut = asyncio.get_running_loop().create_future()
        self._entries[key] = (generation, now, fut)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        try:
            value = await produce()
        except BaseException as e:
            if self._entries.get(key, (0, 0.0, None))[2] is fut:
                del self._entries[key]  # never cache a failure
            if isinstance(e, Exception):
                fut.set_exception(e)
                fut.exception()  # retrieved: no "never retrieved" warning if nobody waits
            else:
                fut.cancel()
            raise
        fut.set_result(value)
        return value
