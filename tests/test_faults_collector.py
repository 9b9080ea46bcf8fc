"""Collector faults against the real daemon subprocess: it never crashes, never loses a
report, keeps its memory bounded, and ``/metrics`` and ``/status/daemon`` say what is wrong.

Faults: down (refused), 500, 503 and 429 with ``Retry-After``, an answer slower than
``[collector] timeout``, a reset in the middle of the request and of the answer, and TLS
with a certificate from a CA the agent does not trust. Each time the fault clears, every
report generated meanwhile reaches the collector (which keeps each ``report_id`` once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from tests.clirun import run_cli
from tests.daemonproc import (
    TOKEN,
    DaemonProc,
    base_config,
    fill_spool,
    free_port,
    wait_http,
    write_config,
)
from tests.lab.base import LabThread, StreamServer
from tests.lab.endpoints import ResetEndpoint
from tests.lab.recorder import Recorder

MIB = 1024 * 1024
RSS_GROWTH_MAX = 20 * MIB


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    p = tmp_path / "token"
    p.write_text(TOKEN + "\n")
    return p


def start(tmp: Path, cfg: dict[str, Any]) -> DaemonProc:
    return DaemonProc(write_config(tmp / "config.toml", cfg), tmp / "daemon.log")


def run_ids(d: DaemonProc) -> list[str]:
    return [e["report_id"] for e in d.events("check run finished")]


def metrics(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    _, text = wait_http(port, "/metrics")
    return {
        f.name: [(s.labels, s.value) for s in f.samples]
        for f in text_string_to_metric_families(text)
    }


def daemon_status(port: int) -> dict[str, Any]:
    code, body = wait_http(port, "/status/daemon")
    assert code == 200, body
    data: dict[str, Any] = json.loads(body)
    return data


def wait_until(pred: Callable[[], Any], timeout: float, what: str, d: DaemonProc) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        assert d.proc.poll() is None, f"daemon exited:\n{d.log_text()}"
        time.sleep(0.05)
    raise AssertionError(f"{what} not seen within {timeout}s:\n{d.log_text()[-3000:]}")


def wait_failing(d: DaemonProc, port: int, kind: str, status: int | None = None) -> dict[str, Any]:
    """/metrics and /status/daemon both report the fault; the delivery section."""

    def seen() -> dict[str, Any] | None:
        m = metrics(port)
        info = m.get("acme_preflight_last_delivery_error_info", [])
        want = {"kind": kind, **({"http_status": str(status)} if status else {})}
        if not any(labels == want and v == 1 for labels, v in info):
            return None
        delivery: dict[str, Any] = daemon_status(port)["delivery"]
        return delivery if delivery["failing"] else None

    delivery = wait_until(seen, 15, f"delivery error {kind} {status}", d)
    assert m_value(port, "acme_preflight_delivery_failing") == 1
    assert delivery["error_kind"] == kind and delivery["consecutive_failures"] >= 1
    assert delivery["http_status"] == status
    assert TOKEN not in json.dumps(delivery)
    return delivery


def m_value(port: int, name: str) -> float:
    samples = metrics(port)[name]
    return samples[0][1]


def wait_delivered_all(
    d: DaemonProc, port: int, accepted: Callable[[], set[str]], timeout: float = 20
) -> None:
    """Every report the daemon generated so far is at the collector; the fault is cleared."""

    def done() -> bool:
        ids = run_ids(d)
        return (
            bool(ids)
            and set(ids) <= accepted()
            and m_value(port, "acme_preflight_spool_reports") == 0
        )

    wait_until(done, timeout, "all reports delivered", d)
    wait_until(
        lambda: m_value(port, "acme_preflight_delivery_failing") == 0, 10, "failing cleared", d
    )
    assert daemon_status(port)["delivery"]["error"] is None
    assert "acme_preflight_last_delivery_error_info" not in metrics(port)


def rss(d: DaemonProc) -> int:
    return int(psutil.Process(d.proc.pid).memory_info().rss)


def accepted_ids(*recs: Recorder) -> set[str]:
    return {r["report_id"] for rec in recs for r in rec.snapshot()[0]}


def test_http_errors_down_and_slow_collector(tmp_path: Path, token_file: Path) -> None:
    port = free_port()
    with Recorder(token=TOKEN) as rec:
        cfg = base_config(tmp_path, rec.url, token_file=token_file, status_port=port)
        cfg["collector"]["timeout"] = "0.5s"
        with start(tmp_path, cfg) as d:
            wait_delivered_all(d, port, lambda: accepted_ids(rec))
            baseline = rss(d)

            rec.answer(500, times=10_000)
            wait_failing(d, port, "http", 500)
            rec.clear_script()
            wait_delivered_all(d, port, lambda: accepted_ids(rec))

            for status in (503, 429):
                rec.answer(status, {"Retry-After": "1"}, times=10_000)
                delivery = wait_failing(d, port, "http", status)
                assert f"HTTP {status}" in delivery["error"]
                rec.clear_script()
                wait_delivered_all(d, port, lambda: accepted_ids(rec))

            rec.down()
            wait_failing(d, port, "connection")
            rec.up()
            wait_delivered_all(d, port, lambda: accepted_ids(rec))

            rec.delay = 30.0  # far beyond [collector] timeout = 0.5 s
            delivery = wait_failing(d, port, "timeout")
            assert "timed out" in delivery["error"]
            rec.delay = 0.0
            wait_delivered_all(d, port, lambda: accepted_ids(rec))

            grown = rss(d) - baseline
            failures = m_value(port, "acme_preflight_delivery_failures")
            assert d.stop() == 0
    assert failures >= 5
    assert grown < RSS_GROWTH_MAX, f"RSS grew by {grown / MIB:.1f} MiB"
    # the collector holds each report once (it acknowledges the repeats of timed-out POSTs)
    accepted = [r["report_id"] for r in rec.accepted]
    assert len(accepted) == len(set(accepted))
    assert set(run_ids(d)) <= set(accepted)


class PartialAnswer(StreamServer):
    """Reads the request head, answers a 500 with half its body, then resets."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            writer.write(b"HTTP/1.1 500 Oops\r\nContent-Length: 1000\r\n\r\nhalf of it")
            await writer.drain()
            await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()


@pytest.fixture
def lab() -> Iterator[LabThread]:
    with LabThread() as lab:
        yield lab


def test_resets_mid_request_and_mid_answer(
    tmp_path: Path, token_file: Path, lab: LabThread
) -> None:
    port, col_port = free_port(), free_port()
    url = f"http://127.0.0.1:{col_port}"
    cfg = base_config(tmp_path, url, token_file=token_file, status_port=port)
    reset = lab.start(ResetEndpoint("127.0.0.1", col_port, after_data=True))
    with start(tmp_path, cfg) as d:
        wait_failing(d, port, "connection")
        assert reset.connections >= 1
        lab.stop(reset)
        partial = lab.start(PartialAnswer("127.0.0.1", col_port))
        d.signal(signal.SIGHUP)  # a reload ends the backoff (docs/daemon.md)
        before = m_value(port, "acme_preflight_delivery_failures")
        wait_until(lambda: partial.connections >= 1, 15, "an attempt at the half answer", d)
        wait_until(
            lambda: m_value(port, "acme_preflight_delivery_failures") > before,
            15,
            "the half answer counted as a failure",
            d,
        )
        # the reset while the 500's body is read may hide the status: either is honest
        assert daemon_status(port)["delivery"]["error_kind"] in ("http", "connection")
        assert m_value(port, "acme_preflight_spool_reports") >= 1
        lab.stop(partial)
        with Recorder(port=col_port, token=TOKEN) as rec:
            d.signal(signal.SIGHUP)
            wait_delivered_all(d, port, lambda: accepted_ids(rec))
            assert d.stop() == 0
    assert set(run_ids(d)) <= accepted_ids(rec)
    assert d.proc.returncode == 0


def test_tls_certificate_from_the_wrong_ca(tmp_path: Path, token_file: Path) -> None:
    trusted, stranger = trustme.CA(), trustme.CA()
    ca_file = tmp_path / "collector-ca.pem"
    trusted.cert_pem.write_to_path(str(ca_file))

    def server_ctx(ca: trustme.CA) -> Any:
        import ssl

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(ctx)
        return ctx

    port, col_port = free_port(), free_port()
    cfg = base_config(
        tmp_path,
        f"https://127.0.0.1:{col_port}",
        token_file=token_file,
        status_port=port,
        ca_file=ca_file,
    )
    with start(tmp_path, cfg) as d:
        with Recorder(port=col_port, token=TOKEN, ssl_context=server_ctx(stranger)) as impostor:
            delivery = wait_failing(d, port, "tls")
            assert "certificate" in delivery["error"].lower()
            assert run_ids(d)
        assert impostor.accepted == []  # never a report over an unverified connection
        with Recorder(port=col_port, token=TOKEN, ssl_context=server_ctx(trusted)) as rec:
            wait_delivered_all(d, port, lambda: accepted_ids(rec))
            assert d.stop() == 0


def test_private_ca_without_ca_file_names_the_fix(tmp_path: Path, token_file: Path) -> None:
    """A collector whose certificate comes from a private CA, and no ``ca_file``: the log
    line, ``/status/daemon`` and ``acme-preflight status`` all say to set
    ``[collector] ca_file``; once it is set and reloaded, the reports go out."""
    import ssl

    private = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    private.issue_cert("127.0.0.1").configure_cert(ctx)
    port, col_port = free_port(), free_port()
    cfg = base_config(
        tmp_path, f"https://127.0.0.1:{col_port}", token_file=token_file, status_port=port
    )
    with (
        Recorder(port=col_port, token=TOKEN, ssl_context=ctx) as rec,
        start(tmp_path, cfg) as d,
    ):
        delivery = wait_failing(d, port, "tls")
        assert "set [collector] ca_file" in delivery["error"], delivery
        line = d.wait_log(lambda e: "ca_file" in e.get("event", ""))
        assert line["level"] == "error" and "[collector] ca_file" in line["error"], line
        shown = run_cli("--config", tmp_path / "config.toml", "status")
        assert "[collector] ca_file" in shown.stdout, shown.stdout + shown.stderr
        assert rec.accepted == []
        ca_file = tmp_path / "collector-ca.pem"
        private.cert_pem.write_to_path(str(ca_file))
        cfg["collector"]["ca_file"] = ca_file
        write_config(tmp_path / "config.toml", cfg)
        d.signal(signal.SIGHUP)
        wait_delivered_all(d, port, lambda: accepted_ids(rec))
        assert d.stop() == 0


WAVE = 3001


def dropped_total(port: int) -> float:
    return sum(v for _, v in metrics(port)["acme_preflight_reports_dropped"])


def test_a_400_wave_holds_the_spool_instead_of_destroying_it(
    tmp_path: Path, token_file: Path
) -> None:
    """Issue 14 item 7, as attacked: 3,001 reports spooled and a server (a WAF before the
    collector) answering 400 to everything. Before, 2,001 were destroyed in 10 s with
    ``reports_dropped_total`` still 0; now the spool is held, said in /status/daemon and
    /metrics, and every report is delivered once the 400s stop."""
    ids = fill_spool(tmp_path / "state", WAVE)
    port = free_port()
    with Recorder(token=TOKEN) as rec:
        rec.answer(400, times=1_000_000, body="<html>Request blocked by policy</html>")
        cfg = base_config(tmp_path, rec.url, token_file=token_file, status_port=port)
        with start(tmp_path, cfg) as d:
            wait_until(lambda: m_value(port, "acme_preflight_delivery_held") == 1, 15, "held", d)
            time.sleep(3)  # the wave goes on
            assert m_value(port, "acme_preflight_dead_letter_reports") == 0
            assert m_value(port, "acme_preflight_spool_reports") >= WAVE
            assert dropped_total(port) == 0
            delivery = daemon_status(port)["delivery"]
            assert delivery["held"] is True and "400" in delivery["held_reason"]
            assert delivery["http_status"] == 400
            _, attempts = rec.snapshot()
            assert len(attempts) < 100, len(attempts)  # backing off, not hammering
            assert d.events(
                "collector rejects every report: spool held, reports kept and retried"
                " (a proxy or WAF in front of it, or the collector itself, refuses them)"
            )
            rec.clear_script()  # the rule is lifted
            t0 = time.monotonic()
            d.signal(signal.SIGHUP)  # a reload ends the backoff (docs/daemon.md)
            wait_delivered_all(d, port, lambda: accepted_ids(rec), timeout=60)
            print(
                f"\n400 wave: {WAVE} spooled, {len(attempts)} POSTs while held, 0 dead-lettered;"
                f" all delivered {time.monotonic() - t0:.1f}s after the 400s stopped"
            )
            assert m_value(port, "acme_preflight_delivery_held") == 0
            assert d.stop() == 0
    assert set(ids) <= accepted_ids(rec)
    assert spool_counts(tmp_path / "state") == (0, 0)


def test_a_captive_portal_200_is_not_a_delivery(tmp_path: Path, token_file: Path) -> None:
    """Issue 14 item 8: a proxy answering 200 with an HTML login page. Before, 50 spooled
    reports were deleted as delivered; now they are kept until the collector itself
    acknowledges them."""
    ids = fill_spool(tmp_path / "state", 50)
    port = free_port()
    page = "<!doctype html><title>Wi-Fi login</title><form>Sign in to continue</form>"
    with Recorder(token=TOKEN) as rec:
        rec.answer(200, times=1_000_000, body=page)
        cfg = base_config(tmp_path, rec.url, token_file=token_file, status_port=port)
        with start(tmp_path, cfg) as d:
            delivery = wait_failing(d, port, "http", 200)
            assert "not the collector's acknowledgement" in delivery["error"]
            assert m_value(port, "acme_preflight_spool_reports") >= 50
            assert m_value(port, "acme_preflight_reports_delivered") == 0
            rec.clear_script()
            d.signal(signal.SIGHUP)
            wait_delivered_all(d, port, lambda: accepted_ids(rec))
            assert d.stop() == 0
    assert set(ids) <= accepted_ids(rec)


def spool_counts(state: Path) -> tuple[int, int]:
    import sqlite3

    con = sqlite3.connect(state / "spool.sqlite3")
    try:
        (n,) = con.execute("SELECT COUNT(*) FROM reports").fetchone()
        (dead,) = con.execute("SELECT COUNT(*) FROM dead_letters").fetchone()
        return int(n), int(dead)
    finally:
        con.close()
