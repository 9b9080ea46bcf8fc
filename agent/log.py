"""Logging: structlog JSON lines on stdout (console rendering on a TTY).

The stdlib loggers of aiohttp and APScheduler go through the same renderer.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from agent.redact import redact_obj

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


def configure(level: str = "info", stream: TextIO | None = None, json: bool | None = None) -> None:
    stream = stream or sys.stdout
    if json is None:
        json = not (hasattr(stream, "isatty") and stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _scrub,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
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


def get(name: str = "acme_preflight") -> Any:
    return structlog.get_logger(name)
