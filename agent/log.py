"""Logging: one line per event on stdout, in the format the reader wants.

- ``json``: structlog JSON lines, for log shippers (the default when stdout is a file/pipe).
- ``logfmt``: ``check run finished status=fail pass=1 fail=2``, readable in ``journalctl``
  (the default when stdout is the journal, i.e. ``JOURNAL_STREAM`` names it).
- ``console``: structlog's console renderer (the default on a TTY).

When the stream is the journal every line starts with the syslog priority (``<3>`` … ``<7>``),
which journald strips and stores as PRIORITY, so ``journalctl -p warning`` works. The stdlib
loggers of aiohttp and APScheduler go through the same renderer.
"""

from __future__ import annotations

import json as jsonlib
import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog

from agent.redact import redact_obj

LOG_FORMATS = ("json", "logfmt", "console")
# syslog(3) priorities of the stdlib levels.
_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
_BARE = re.compile(r"[^\s\"=\\\x00-\x1f\x7f]+")

_secrets: tuple[str, ...] = ()


def set_secrets(secrets: tuple[str, ...]) -> None:
    """Known secrets to scrub from every log line (e.g. the collector token)."""
    global _secrets
    _secrets = tuple(s for s in secrets if s)


def _scrub(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    # every string at any depth: a secret can hide in a list or dict field too
    for key, value in event_dict.items():
        if isinstance(value, str | list | tuple | dict):
            event_dict[key] = redact_obj(value, _secrets)
    return event_dict


def is_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` is the journal: ``JOURNAL_STREAM`` ("DEV:INODE", set by systemd)
    names the file descriptor's device and inode (a child whose stdout was redirected
    inherits the variable but not the stream, hence the comparison)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def _logfmt_value(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, list | tuple):
        text = ",".join(str(v) for v in value)
    elif isinstance(value, dict):
        text = jsonlib.dumps(value, separators=(",", ":"), default=str)
    else:
        text = str(value)
    # One line per event, always: newlines (tracebacks) and quotes are escaped.
    return text if _BARE.fullmatch(text) else jsonlib.dumps(text, ensure_ascii=False)


def _logfmt_key(key: str) -> str:
    return key if _BARE.fullmatch(key) else re.sub(r"[^A-Za-z0-9_.-]", "_", key) or "_"


class LogfmtLine:
    """``EVENT key=value ...``: the event as text, then the fields, one line.

    ``prefix_time`` adds the timestamp and level in front (outside the journal, which
    records both by itself)."""

    def __init__(self, prefix_time: bool) -> None:
        self.prefix_time = prefix_time

    def __call__(self, _: Any, __: str, event_dict: dict[str, Any]) -> str:
        fields = dict(event_dict)
        event = str(fields.pop("event", ""))
        timestamp, level = fields.pop("timestamp", None), fields.pop("level", None)
        if str(fields.get("logger", "")).startswith("acme_preflight"):
            del fields["logger"]  # ours: the unit says so; foreign loggers keep their name
        head = event.replace("\n", " ").replace("\r", " ")
        if self.prefix_time:
            head = f"{timestamp} {level} {head}"
        parts = [head, *(f"{_logfmt_key(str(k))}={_logfmt_value(v)}" for k, v in fields.items())]
        return " ".join(parts)


class _JournalFormatter(structlog.stdlib.ProcessorFormatter):
    """Puts ``<N>`` in front of every rendered line (and of nothing else)."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        return f"<{_PRIORITY.get(record.levelname.lower(), 6)}>{line}"


class TlsEofNoise(logging.Filter):
    """Drops asyncio's "returning true from eof_received() has no effect when using ssl".

    A stream upgraded with ``start_tls`` learns it is over TLS only when the coroutine resumes
    after the handshake; a peer that hangs up in between (a TLS-only probe does) makes asyncio
    log that line, about its own StreamReaderProtocol (cpython#82918, httpx#859). Nothing is
    wrong and nothing can be done about it, so it is not logged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("returning true from eof_received()")


def quiet_tls_eof_noise() -> None:
    """Install :class:`TlsEofNoise` on the asyncio logger (once)."""
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, TlsEofNoise) for f in logger.filters):
        logger.addFilter(TlsEofNoise())


def configure(
    level: str = "info",
    stream: TextIO | None = None,
    json: bool | None = None,
    fmt: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Route structlog and the stdlib loggers to ``stream`` (stdout). ``fmt`` is one of
    :data:`LOG_FORMATS` (``[agent] log_format``); None picks by the stream (journal: logfmt,
    TTY: console, else json). ``json`` is the older boolean spelling. Returns the format used."""
    stream = stream or sys.stdout
    journal = is_journal(stream, environ)
    tty = hasattr(stream, "isatty") and stream.isatty()
    if fmt is None and json is not None:
        fmt = "json" if json else "console"
    if fmt is None:
        fmt = "logfmt" if journal else "console" if tty else "json"
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(LOG_FORMATS)}")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _scrub,
    ]
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    elif fmt == "logfmt":
        renderer = LogfmtLine(prefix_time=not journal)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=tty)
    handler = logging.StreamHandler(stream)
    formatter_cls = _JournalFormatter if journal else structlog.stdlib.ProcessorFormatter
    handler.setFormatter(
        formatter_cls(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    quiet_tls_eof_noise()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("apscheduler", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return fmt


def get(name: str = "acme_preflight") -> Any:
    return structlog.get_logger(name)
