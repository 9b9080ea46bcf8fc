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


# ------------------------------------------------------------------ journal / logfmt


def _journal_file(tmp_path: Any) -> tuple[Any, dict[str, str]]:
    """A real file standing in for the journal's stream socket: JOURNAL_STREAM names its
    device and inode, which is all systemd promises about the variable."""
    f = open(tmp_path / "journal", "w+")  # noqa: SIM115 - closed by the caller
    st = os.fstat(f.fileno())
    return f, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def test_journal_stream_gets_logfmt_with_priority_prefixes(tmp_path: Any) -> None:
    f, env = _journal_file(tmp_path)
    with f:
        assert log.configure("debug", stream=f, environ=env) == "logfmt"
        log.get("acme_preflight.daemon").info(
            "check run finished", status="fail", **{"pass": 1, "warn": 1, "fail": 2}
        )
        log.get().debug("d")
        log.get().warning("collector slow", seconds=2.5)
        log.get().error("cannot write last.json", error="No space left on device")
        logging.getLogger("apscheduler.scheduler").warning("job %s missed", "checks")
        f.flush()
        out = (tmp_path / "journal").read_text().splitlines()
    assert out == [
        "<6>check run finished status=fail pass=1 warn=1 fail=2",
        "<7>d",
        "<4>collector slow seconds=2.5",
        '<3>cannot write last.json error="No space left on device"',
        "<4>job checks missed logger=apscheduler.scheduler",
    ]


def test_journal_stream_variable_for_another_file_is_ignored(tmp_path: Any) -> None:
    # A child of the service whose stdout was redirected inherits JOURNAL_STREAM.
    f, env = _journal_file(tmp_path)
    with f, open(tmp_path / "other", "w") as other:
        assert log.configure("info", stream=other, environ=env) == "json"
        for bad in ("", "12", "a:b", "1:2:3"):
            assert not log.is_journal(f, {"JOURNAL_STREAM": bad})
        assert log.is_journal(f, env)
        assert not log.is_journal(io.StringIO(), env)  # no file descriptor at all


def test_log_format_overrides_the_journal_default(tmp_path: Any) -> None:
    f, env = _journal_file(tmp_path)
    with f:
        log.configure("info", stream=f, environ=env, fmt="json")
        log.get().warning("w", n=1)
        f.flush()
        line = (tmp_path / "journal").read_text().splitlines()[0]
    # journald strips the prefix, so the journal's MESSAGE is still plain JSON.
    assert line.startswith("<4>{")
    assert json.loads(line[3:])["event"] == "w"


def test_logfmt_outside_the_journal_keeps_time_and_level() -> None:
    buf = io.StringIO()
    assert log.configure("info", stream=buf, fmt="logfmt") == "logfmt"
    log.get().info("started", checks=["privileges", "caa"], collector=None, flag=True)
    (line,) = buf.getvalue().splitlines()
    stamp, level, rest = line.split(" ", 2)
    assert stamp.endswith("Z") and level == "info"
    assert rest == "started checks=privileges,caa collector=null flag=true"


def test_logfmt_is_one_line_per_event_and_quotes_what_needs_it() -> None:
    buf = io.StringIO()
    log.configure("info", stream=buf, fmt="logfmt")
    log.set_secrets((SECRET,))
    try:
        raise ConnectionResetError(f'peer "went"\naway {SECRET}')
    except ConnectionResetError:
        log.get().exception("delivery\nfailed", path="a b=c", detail={"k": [1]})
    (line,) = buf.getvalue().splitlines()
    assert " delivery failed " in line
    assert 'path="a b=c"' in line
    assert 'detail="{\\"k\\":[1]}"' in line
    assert "\\nTraceback" not in line and "Traceback" in line
    assert 'ConnectionResetError: peer \\"went\\"\\naway ***' in line
    assert SECRET not in line


def test_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="xml"):
        log.configure("info", stream=io.StringIO(), fmt="xml")


def test_asyncios_tls_eof_noise_is_dropped_and_nothing_else() -> None:
    stream = io.StringIO()
    log.configure("info", stream=stream, json=True)
    aio = logging.getLogger("asyncio")
    aio.warning("returning true from eof_received() has no effect when using ssl")
    aio.warning("some other asyncio warning")
    out = stream.getvalue()
    assert "eof_received" not in out
    assert "some other asyncio warning" in out
