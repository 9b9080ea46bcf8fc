"""Client mistakes in the log: at warning, without a traceback, at most one line a minute.

A peer decides how many malformed requests it sends, so each one must not cost a log line
(aiohttp logs a malformed request at error, with a traceback, every time). The first mistake
after a quiet minute is logged at once; the others are counted into the next line. Only the
kind of mistake is quoted, never the offending bytes: a bad header line may be the
``Authorization`` header, token included.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger("acme_preflight.collector")

INTERVAL_S = 60.0
_MAX_TEXT = 200


def _cut(text: str) -> str:
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "..."


class ClientMistakes:
    """Counts client mistakes and logs a line for them at most once per ``interval``."""

    def __init__(
        self, interval: float = INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.total = 0
        self._since = 0
        self._last = -interval

    def note(
        self, status: int, what: Callable[[], str], peer: str | None, path: str | None = None
    ) -> None:
        """Count one; ``what`` (called only when a line is due) says what was wrong."""
        self.total += 1
        self._since += 1
        now = self.clock()
        if now - self._last < self.interval:
            return
        log.warning(
            "client mistake: %d %s (peer %s%s); %d client mistakes in the last %.0f s",
            status,
            _cut(what()),
            peer or "unknown",
            f", {_cut(path)}" if path else "",
            self._since,
            min(now - self._last, self.interval),
        )
        self._last = now
        self._since = 0


if TYPE_CHECKING:
    _LoggerAdapter = logging.LoggerAdapter[logging.Logger]
else:  # LoggerAdapter is subscriptable at runtime only from Python 3.11 on
    _LoggerAdapter = logging.LoggerAdapter


class HttpErrorLog(_LoggerAdapter):
    """aiohttp's server logger (``RequestHandler(logger=...)``) with malformed requests sent to
    :class:`ClientMistakes` instead of being logged with a traceback; real server errors keep
    theirs."""

    def __init__(self, mistakes: ClientMistakes) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self.mistakes = mistakes

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 400) < 500:
            # the message's first line up to its colon: what was wrong, not the bytes
            kind = str(exc.message or "").split("\n", 1)[0].split(":", 1)[0].strip()
            peer = str(args[0]) if args else None
            self.mistakes.note(exc.code or 400, lambda: f"{type(exc).__name__}: {kind}", peer)
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)
