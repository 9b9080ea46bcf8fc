"""Cached reads for the fleet page and API: rendering must not take ingest's budget.

An answer is never older than the request it serves: a request may use a result that was
begun after it arrived, or one made while this process committed nothing since (for at most
``max_age`` seconds: other workers and collectors on the same database commit without telling
us). Requests that arrive while such a result is being produced wait for it, so eight
browsers reloading ``/`` cost one render. And one key is rendered at most once per
``min_interval``: under steady ingest every commit changes the generation, and without this
each reload would render again; with it a reader waits at most that long (or longer for a
key that is slow to produce: rendering takes at most ``busy_share`` of the time), and ingest
keeps its share of the CPU.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class _Entry:
    generation: int
    started: float
    future: asyncio.Future[Any]
    made: float = 0.0
    gap: float = 0.0  # the time to wait after ``started`` before the next render of this key


class ReadCache:
    def __init__(
        self,
        max_age: float = 1.0,
        min_interval: float = 0.25,
        max_entries: int = 64,
        clock: Callable[[], float] = time.monotonic,
        busy_share: float = 0.2,
    ) -> None:
        """``busy_share``: a key that takes long to produce waits longer between renders, so
        that producing it takes at most this share of the time (a 300 ms page on 100,000
        hosts: one render per 1.5 s)."""
        self._max_age = max_age
        self._min_interval = min_interval
        self._busy_share = busy_share
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def _usable(self, e: _Entry, arrived: float, generation: int, now: float) -> bool:
        if e.started >= arrived:  # begun after this request arrived: it saw every commit
            return True
        if e.generation != generation:
            return False
        return not e.future.done() or now - e.made < self._max_age

    async def get(
        self, key: str, generation: Callable[[], int], produce: Callable[[], Awaitable[T]]
    ) -> T:
        """The result for ``key``; ``generation()`` counts this process's commits."""
        arrived = self._clock()
        while True:
            now = self._clock()
            entry = self._entries.get(key)
            if entry is not None:
                if self._usable(entry, arrived, generation(), now):
                    self._entries.move_to_end(key)
                    result: T = await asyncio.shield(entry.future)
                    return result
                wait = entry.started + max(self._min_interval, entry.gap) - now
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
            break
        entry = _Entry(generation(), now, asyncio.get_running_loop().create_future())
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        fut = entry.future
        try:
            value = await produce()
        except BaseException as e:
            if self._entries.get(key) is entry:
                del self._entries[key]  # never cache a failure
            if isinstance(e, Exception):
                fut.set_exception(e)
                fut.exception()  # retrieved: no "never retrieved" warning if nobody waits
            else:
                fut.cancel()
            raise
        entry.made = self._clock()
        entry.gap = (entry.made - entry.started) / self._busy_share
        fut.set_result(value)
        return value
