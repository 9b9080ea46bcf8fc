"""Logging: structlog JSON lines, stdlib loggers through the same renderer, no secrets."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from agent import log

SECRET = "t0ken-5ecret-value"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = {n: logging.getLogger(n).level for n in ("apscheduler", "aiohttp.access")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lvl in noisy.items():
        logging.getLogger(name).setLevel(lvl)
    structlog.reset_defaults()
    log.set_secrets(())


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_lines_on_a_non_tty_stream() -> None:
    buf = io.StringIO()
    log.configure("info", stream=buf)
    log.get().info("checks finished", status="warn", checks=6)
    log.get("acme_preflight.daemon").warning("collector slow", seconds=2.5)
    first, second = lines(buf)
    assert first["event"] == "checks finished"
    assert (first["level"], first["logger"]) == ("info", "acme_preflight")
    assert (first["status"], first["checks"]) == ("warn", 6)
    assert first["timestamp"].endswith("Z")
    assert (second["logger"], second["seconds"]) == ("acme_preflight.daemon", 2.5)


def test_level_from_config() -> None:
    buf = io.StringIO()
    log.configure("warning", stream=buf)
    log.get().debug("d")
    log.get().info("i")
    log.get().warning("w")
    log.get().error("e")
    assert [e["event"] for e in lines(buf)] == ["w", "e"]
    buf = io.StringIO()
    log.configure("debug", stream=buf)
    log.get().debug("d")
    assert [e["event"] for e in lines(buf)] == ["d"]


def test_stdlib_loggers_use_the_same_renderer() -> None:
    buf = io.StringIO()
    log.configure("info", stream=buf)
    logging.getLogger("aiohttp.client").warning("connection to %s lost", "127.0.0.1:443")
    logging.getLogger("apscheduler.scheduler").warning("job %s missed", "checks")
    logging.getLogger("apscheduler.scheduler").info("added job")  # quietened to warning
    aio, aps = lines(buf)
    assert aio == {
        "event": "connection to 127.0.0.1:443 lost",
        "level": "warning",
        "logger": "aiohttp.client",
        "timestamp": aio["timestamp"],
    }
    assert (aps["event"], aps["logger"]) == ("job checks missed", "apscheduler.scheduler")


def test_exceptions_are_rendered_in_the_json() -> None:
    buf = io.StringIO()
    log.configure("info", stream=buf)
    try:
        raise ConnectionResetError("peer went away")
    except ConnectionResetError:
        log.get().exception("delivery failed")
        logging.getLogger("aiohttp.server").exception("handler failed")
    ours, theirs = lines(buf)
    for entry in (ours, theirs):
        assert "Traceback" in entry["exception"]
        assert "ConnectionResetError: peer went away" in entry["exception"]


def test_secrets_never_appear() -> None:
    buf = io.StringIO()
    log.configure("debug", stream=buf)
    log.set_secrets((SECRET,))
    logger = log.get()
    logger.info(f"token is {SECRET}")
    logger.info("posting", headers={"Authorization": f"Bearer {SECRET}"}, tried=[SECRET, 1])
    logger.warning("proxy", url="http://ops:pr0xy-pw@127.0.0.1:3128", auth="Bearer abc.def")
    logging.getLogger("aiohttp.client").error("sent %s", SECRET)
    try:
        raise PermissionError(f"rejected {SECRET}")
    except PermissionError:
        logger.exception("push failed")
    out = buf.getvalue()
    assert len(out.splitlines()) == 5
    for leaked in (SECRET, "pr0xy-pw", "abc.def"):
        assert leaked not in out
    entries = lines(buf)
    assert entries[0]["event"] == "token is ***"
    assert entries[1]["headers"] == {"Authorization": "Bearer ***"}
    assert entries[1]["tried"] == ["***", 1]
    assert entries[2]["url"] == "http://ops:***@127.0.0.1:3128"
    assert entries[3]["event"] == "sent ***"
    assert "rejected ***" in entries[4]["exception"]


def test_console_rendering_on_a_tty() -> None:
    master, slave = pty.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            log.configure("info", stream=tty)
            log.get().info("checks finished", status="pass")
            tty.flush()
            out = os.read(master, 65536).decode()
    finally:
        os.close(master)
        os.close(slave)
    assert "checks finished" in out
    assert "status" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out.splitlines()[0])


def test_json_can_be_forced_on_a_tty() -> None:
    master, slave = pty.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            log.configure("info", stream=tty, json=True)
            log.get().info("forced")
            tty.flush()
            out = os.read(master, 65536).decode()
    finally:
        os.close(master)
        os.close(slave)
    assert json.loads(out.splitlines()[0])["event"] == "forced"
