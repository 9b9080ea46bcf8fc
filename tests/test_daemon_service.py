"""``acme-preflight run`` end to end: the daemon as a subprocess, a recording collector,
real signals, a real notify socket, the real SQLite spool."""

from __future__ import annotations

import itertools
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.clirun import assert_valid_report, cli_env, run_cli
from tests.daemonproc import (
    TOKEN,
    DaemonProc,
    NotifySocket,
    base_config,
    free_port,
    http_get,
    wait_http,
    write_config,
)
from tests.lab.recorder import Recorder


@pytest.fixture
def rec() -> Iterator[Recorder]:
    with Recorder(token=TOKEN) as r:
        yield r


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    p = tmp_path / "token"
    p.write_text(TOKEN + "\n")
    return p


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def start(tmp: Path, cfg: dict[str, Any], env: dict[str, str] | None = None) -> DaemonProc:
    return DaemonProc(write_config(tmp / "config.toml", cfg), tmp / "daemon.log", env)


def run_ids(d: DaemonProc) -> list[str]:
    """report_ids of the finished runs, in run order, from the daemon's own log."""
    return [e["report_id"] for e in d.events("check run finished")]


def spool_rows(state: Path, table: str = "reports") -> list[tuple[Any, ...]]:
    db = sqlite3.connect(state / "spool.sqlite3")
    try:
        if table == "reports":
            return db.execute("SELECT report_id FROM reports ORDER BY seq").fetchall()
        return db.execute(
            "SELECT report_id, http_status, reason FROM dead_letters ORDER BY seq"
        ).fetchall()
    finally:
        db.close()


def wait_runs(d: DaemonProc, n: int, timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ids = run_ids(d)
        if len(ids) >= n:
            return ids
        assert d.proc.poll() is None, d.log_text()
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} runs in {timeout}s:\n{d.log_text()}")


def test_collector_down_then_up_delivers_every_report_oldest_first_once(
    tmp_path: Path, rec: Recorder, token_file: Path
) -> None:
    rec.down()
    with start(tmp_path, base_config(tmp_path, rec.url, token_file=token_file)) as d:
        spooled = wait_runs(d, 3)  # three intervals with nothing listening
        assert d.events("delivery failed; will retry"), d.log_text()
        rec.up()
        got = [r["report_id"] for r in rec.wait_for(len(spooled), timeout=20)]
        assert got[: len(spooled)] == spooled  # oldest first, none missing
        assert d.stop() == 0
    ran = run_ids(d)
    accepted, attempts = rec.snapshot()
    ids = [r["report_id"] for r in accepted]
    assert ids == ran[: len(ids)]  # in run order
    assert rec.duplicates == 0 and len(set(ids)) == len(ids)  # none twice
    for report in accepted:
        assert_valid_report(report)
    # gzipped on the wire, with a Content-Length, and the bearer token
    a = attempts[-1]
    assert a.headers["Content-Encoding"] == "gzip"
    assert int(a.headers["Content-Length"]) < len(json.dumps(a.report))
    assert a.headers["Authorization"] == f"Bearer {TOKEN}"


def test_kill9_with_a_full_spool_then_restart_delivers_everything(
    tmp_path: Path, rec: Recorder, token_file: Path
) -> None:
    rec.down()
    cfg = base_config(tmp_path, rec.url, token_file=token_file)
    d = start(tmp_path, cfg)
    wait_runs(d, 3)
    d.kill9()
    spooled = [r[0] for r in spool_rows(tmp_path / "state")]
    assert len(spooled) >= 3
    rec.up()
    with start(tmp_path, cfg) as d2:
        got = [r["report_id"] for r in rec.wait_for(len(spooled), timeout=10)]
        assert got[: len(spooled)] == spooled
        assert d2.stop() == 0
    assert rec.duplicates == 0


def test_429_with_retry_after_waits_at_least_that_long(
    tmp_path: Path, rec: Recorder, token_file: Path
) -> None:
    rec.answer(429, {"Retry-After": "2"})
    with start(tmp_path, base_config(tmp_path, rec.url, token_file=token_file)) as d:
        first = run_ids(d) or wait_runs(d, 1)
        rec.wait_for(1, timeout=10)
        assert d.stop() == 0
    _, attempts = rec.snapshot()
    assert attempts[0].status == 429 and attempts[1].status == 202
    assert attempts[1].report_id == attempts[0].report_id == first[0]
    assert attempts[1].at - attempts[0].at >= 2.0


def test_a_report_the_collector_never_takes_is_dead_lettered_and_the_rest_flows(
    tmp_path: Path, rec: Recorder, token_file: Path
) -> None:
    rec.poison(422)  # the first report is refused every time; every other one is accepted
    port = free_port()
    cfg = base_config(tmp_path, rec.url, token_file=token_file, status_port=port)
    with start(tmp_path, cfg) as d:
        rec.wait_for(2, timeout=20)
        d.wait_log(lambda e: "dead-letter table" in e.get("event", ""), timeout=20)
        _, text = wait_http(port, "/metrics")
        assert d.stop() == 0
    (rejected,) = rec.poisoned
    dead = spool_rows(tmp_path / "state", "dead_letters")
    assert [(r[0], r[1]) for r in dead] == [(rejected, 422)]
    assert f"invalid report {rejected}" in dead[0][2]
    assert rejected not in [r["report_id"] for r in rec.accepted]
    assert "acme_preflight_reports_dead_lettered_total 1" in text
    assert "acme_preflight_dead_letter_reports 1" in text
    assert 'acme_preflight_reports_dropped_total{reason="dead_letter"} 1' in text


def test_a_rejection_that_passes_is_not_a_dead_letter(
    tmp_path: Path, rec: Recorder, token_file: Path
) -> None:
    """One 400 (a proxy's blip) and then the collector takes the same report: delivered,
    not dead-lettered (before, the first 400 destroyed it)."""
    rec.answer(400)
    cfg = base_config(tmp_path, rec.url, token_file=token_file)
    with start(tmp_path, cfg) as d:
        first = rec.wait_attempts(1, timeout=10)[0].report_id
        rec.wait_for(2, timeout=20)
        assert d.stop() == 0
    assert first in [r["report_id"] for r in rec.accepted]
    assert spool_rows(tmp_path / "state", "dead_letters") == []


def test_401_keeps_the_data_and_the_token_is_never_shown(
    tmp_path: Path, rec: Recorder, token_file: Path
) -> None:
    rec.answer(401, times=1000)  # the collector refuses the token
    port = free_port()
    cfg = base_config(tmp_path, rec.url, token_file=token_file, status_port=port)
    cfg["agent"]["log_level"] = "debug"
    with start(tmp_path, cfg) as d:
        spooled = wait_runs(d, 3)
        d.wait_log(lambda e: "REFUSED THE TOKEN" in e.get("event", ""))
        assert {r[0] for r in spool_rows(tmp_path / "state")} >= set(spooled[:2])
        shown = [http_get(port, p)[1] for p in ("/status", "/metrics", "/healthz")]
        rec.clear_script()  # credentials fixed on the collector's side
        got = [r["report_id"] for r in rec.wait_for(len(spooled), timeout=20)]
        assert got[: len(spooled)] == spooled
        assert d.stop() == 0
    assert len(rec.attempts) > len(rec.accepted)
    everything = [
        d.log_text(),
        *shown,
        (tmp_path / "state" / "last.json").read_text(),
        (tmp_path / "state" / "spool.sqlite3").read_bytes().decode("latin-1"),
    ]
    for text in everything:
        assert TOKEN not in text
    assert "Bearer" not in d.log_text()


def test_sighup_broken_config_is_kept_and_a_good_one_applies_the_new_interval(
    tmp_path: Path, rec: Recorder, token_file: Path, notify: NotifySocket
) -> None:
    port = free_port()
    cfg = base_config(tmp_path, rec.url, token_file=token_file, status_port=port)
    cfg_path = tmp_path / "config.toml"
    with start(tmp_path, cfg, {"NOTIFY_SOCKET": str(notify.path)}) as d:
        notify.wait_for("READY", "1")
        wait_runs(d, 1)
        cfg_path.write_text('[agent]\ninterval = "soon"\n')  # broken
        d.signal(signal.SIGHUP)
        failed = d.wait_log(lambda e: e.get("event", "").startswith("config reload failed"))
        assert "[agent] interval" in failed["error"]
        reloading = notify.wait_for("RELOADING", "1")
        n = len(run_ids(d))
        wait_runs(d, n + 2, timeout=5)  # still running every second
        assert "MONOTONIC_USEC" in next(f for t, f in notify.all() if t == reloading)

        cfg["agent"]["interval"] = "2s"
        write_config(cfg_path, cfg)
        d.signal(signal.SIGHUP)
        ok = d.wait_log(lambda e: e.get("event") == "config reloaded")
        assert ok["interval_s"] == 2.0
        reloaded_at = time.monotonic()
        n = len(run_ids(d))
        wait_runs(d, n + 2, timeout=10)
        elapsed = time.monotonic() - reloaded_at
        _, metrics = http_get(port, "/metrics")
        assert d.stop() == 0
    # two runs at the new interval take about 4 s, not 2
    assert elapsed >= 3.5
    runs = d.events("check run finished")
    stamps = [datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")) for e in runs]
    assert (stamps[-1] - stamps[-2]).total_seconds() >= 1.8
    assert 'acme_preflight_config_reloads_total{result="failed"} 1' in metrics
    assert 'acme_preflight_config_reloads_total{result="ok"} 1' in metrics
    # READY=1 again after each reload
    assert len(notify.times("READY", "1")) >= 3


def test_notify_ready_status_watchdog_stopping(tmp_path: Path, notify: NotifySocket) -> None:
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    with start(tmp_path, base_config(tmp_path, None), env) as d:
        ready = notify.wait_for("READY", "1")
        status_seen = notify.wait_for("STATUS")
        time.sleep(1.5)
        pings = notify.times("WATCHDOG", "1")
        assert d.stop() == 0
    stopping = notify.wait_for("STOPPING", "1")
    assert stopping > ready and status_seen
    # every 0.2 s (half of WATCHDOG_USEC): about 7 in 1.5 s
    assert len(pings) >= 5
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps) < 0.4
    statuses = [f["STATUS"] for _, f in notify.all() if "STATUS" in f]
    assert any(s.startswith("last run ") for s in statuses), statuses


def test_status_endpoint_metrics_and_status_command(tmp_path: Path) -> None:
    port = free_port()
    cfg = base_config(tmp_path, None, status_port=port)
    with start(tmp_path, cfg) as d:
        wait_runs(d, 1)
        code, health = wait_http(port, "/healthz")
        assert code == 200 and health.startswith("ok")
        code, body = http_get(port, "/status")
        assert code == 200
        report = json.loads(body)
        assert_valid_report(report)
        _, text = http_get(port, "/metrics")
        live = run_cli("--config", tmp_path / "config.toml", "status")
        # the endpoint is served without aiohttp (its C extensions would be mapped)
        maps = Path(f"/proc/{d.proc.pid}/maps").read_text()
        assert "/aiohttp/" not in maps and "/multidict/" not in maps
        assert d.stop() == 0

    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert all(name.startswith("acme_preflight_") for name in families)
    for name in (
        "acme_preflight_build_info",
        "acme_preflight_check_status",
        "acme_preflight_check_up",
        "acme_preflight_check_duration_seconds",
        "acme_preflight_last_run_timestamp_seconds",
        "acme_preflight_spool_reports",
        "acme_preflight_spool_bytes",
        "acme_preflight_reports_delivered",
        "acme_preflight_delivery_failures",
        "acme_preflight_reports_dead_lettered",
        "acme_preflight_reports_dropped",
    ):
        assert name in families, sorted(families)
    status_sample = families["acme_preflight_check_status"].samples[0]
    assert status_sample.labels == {"check": "privileges"}
    codes = {"pass": 0, "warn": 1, "fail": 2, "error": 3, "skip": 4}
    assert status_sample.value == codes[report["checks"][0]["status"]]
    assert families["acme_preflight_build_info"].samples[0].labels["version"]

    # `status` with the daemon running: the table from /status
    exit_codes = {"pass": 0, "skip": 0, "warn": 1, "fail": 2, "error": 3}
    assert live.returncode == exit_codes[report["status"]], live.stderr
    assert "privileges" in live.stdout and "Overall:" in live.stdout
    assert "running daemon" in live.stderr
    # and with the daemon down: the same table from last.json
    down = run_cli("--config", tmp_path / "config.toml", "status")
    assert "last.json" in down.stderr and "not reachable" in down.stderr
    assert down.returncode == live.returncode
    assert "privileges" in down.stdout and "Overall:" in down.stdout
    as_json = run_cli("--config", tmp_path / "config.toml", "status", "--json")
    last = json.loads(as_json.stdout)
    assert_valid_report(last)
    assert last["report_id"] == run_ids(d)[-1]


def test_status_command_without_any_result(tmp_path: Path) -> None:
    write_config(tmp_path / "config.toml", base_config(tmp_path, None, status_port=free_port()))
    proc = run_cli("--config", tmp_path / "config.toml", "status")
    assert proc.returncode == 3
    assert "does not exist" in proc.stderr and proc.stdout == ""


def test_spool_bound_drops_oldest_and_the_next_delivery_says_how_many(
    tmp_path: Path, rec: Recorder, token_file: Path
) -> None:
    rec.down()
    cfg = base_config(tmp_path, rec.url, token_file=token_file, spool_max_reports=2)
    with start(tmp_path, cfg) as d:
        ran = wait_runs(d, 5)
        rec.up()
        first = rec.wait_for(1, timeout=20)[0]
        time.sleep(0.3)
        assert d.stop() == 0
    ran = run_ids(d)
    dropped_log = sum(e["dropped"] for e in d.events("spool full: dropped the oldest reports"))
    assert dropped_log >= 3
    # the oldest were dropped: the first delivery is one of the newest, and says so
    assert first["report_id"] not in ran[:3]
    assert first["dropped_reports"] == dropped_log or first["dropped_reports"] >= 3
    later = rec.accepted[1:]
    assert all("dropped_reports" not in r for r in later)
    assert_valid_report(first)


def test_no_collector_keeps_only_the_last_result(tmp_path: Path) -> None:
    port = free_port()
    with start(tmp_path, base_config(tmp_path, None, status_port=port)) as d:
        ids = wait_runs(d, 3)
        _, text = http_get(port, "/metrics")
        assert d.stop() == 0
    assert spool_rows(tmp_path / "state") == []
    assert "acme_preflight_spool_reports 0" in text
    last = json.loads((tmp_path / "state" / "last.json").read_text())
    assert last["report_id"] in ids[-2:]
    assert not list((tmp_path / "state").glob(".last.*"))  # no temp files left behind


def test_bad_token_file_at_start_is_a_config_error(tmp_path: Path) -> None:
    cfg = base_config(tmp_path, "http://127.0.0.1:9", token_file=tmp_path / "missing")
    write_config(tmp_path / "config.toml", cfg)
    proc = run_cli("--config", tmp_path / "config.toml", "run", timeout=20)
    assert proc.returncode == 78
    assert "token_file" in proc.stderr and "no such file" in proc.stderr


def test_credentials_directory_token_is_used(tmp_path: Path, rec: Recorder) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "collector-token").write_text(TOKEN)
    cfg = base_config(tmp_path, rec.url)
    with start(tmp_path, cfg, {"CREDENTIALS_DIRECTORY": str(creds)}) as d:
        rec.wait_for(1, timeout=10)
        assert d.stop() == 0
    assert rec.attempts[0].status == 202


def test_check_does_not_load_the_daemon_stack(tmp_path: Path) -> None:
    write_config(tmp_path / "config.toml", base_config(tmp_path, None))
    code = (
        "import sys\n"
        "from agent.cli import main\n"
        f"main(['--config', {str(tmp_path / 'config.toml')!r}, 'check', '--json'])\n"
        "heavy = [m for m in ('apscheduler', 'aiohttp.web', 'agent.daemon.service') "
        "if m in sys.modules]\n"
        "sys.stderr.write(repr(heavy))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd="/",
        timeout=30,
        check=False,
    )
    assert proc.stderr.strip().endswith("[]"), proc.stderr


def test_sigterm_with_a_hanging_collector_stops_fast_and_keeps_the_report(
    tmp_path: Path, rec: Recorder, token_file: Path, notify: NotifySocket
) -> None:
    rec.delay = 30  # accepts the connection, never answers in time
    cfg = base_config(tmp_path, rec.url, token_file=token_file)
    cfg["collector"]["timeout"] = "60s"
    with start(tmp_path, cfg, {"NOTIFY_SOCKET": str(notify.path)}) as d:
        wait_runs(d, 1)
        deadline = time.monotonic() + 10
        while rec.requests_started == 0:
            assert time.monotonic() < deadline, "the POST never reached the collector"
            time.sleep(0.05)
        t0 = time.monotonic()
        assert d.stop(timeout=10) == 0
        took = time.monotonic() - t0
    assert took < 3, f"stop took {took:.1f}s"
    notify.wait_for("STOPPING", "1")
    assert rec.accepted == []
    assert [r[0] for r in spool_rows(tmp_path / "state")][:1] == run_ids(d)[:1]


def test_a_second_daemon_on_the_same_state_dir_refuses_to_start(tmp_path: Path) -> None:
    cfg = base_config(tmp_path, None)
    with start(tmp_path, cfg) as d:
        wait_runs(d, 1)
        second = run_cli("--config", tmp_path / "config.toml", "run", timeout=20)
        assert d.stop() == 0
    assert second.returncode == 75
    assert "another acme-preflight daemon" in second.stderr


def test_status_command_says_why_reports_pile_up(
    tmp_path: Path, rec: Recorder, token_file: Path
) -> None:
    port = free_port()
    rec.answer(503, times=1000)
    cfg = base_config(tmp_path, rec.url, status_port=port, token_file=token_file)
    with start(tmp_path, cfg) as d:
        rec.wait_attempts(1)
        wait_runs(d, 2)
        failing = run_cli("--config", tmp_path / "config.toml", "status")
        rec.clear_script()
        rec.wait_for(1, timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            healthy = run_cli("--config", tmp_path / "config.toml", "status")
            if "Delivery OK" in healthy.stdout:
                break
            time.sleep(0.2)
        assert d.stop() == 0
    assert "Delivery FAILING" in failing.stdout and "503" in failing.stdout, failing.stdout
    assert "waiting" in failing.stdout
    assert TOKEN not in failing.stdout + failing.stderr
    assert "Delivery OK" in healthy.stdout and "FAILING" not in healthy.stdout, healthy.stdout


async def test_reload_rereads_the_ca_store(tmp_path: Path) -> None:
    """SIGHUP also drops the checks' shared verifying context: a changed store counts."""
    from agent.config import load
    from agent.daemon.service import Daemon
    from agent.net.tls import verifying_context

    path = write_config(tmp_path / "config.toml", base_config(tmp_path, None))
    d = Daemon(load(path, explicit=True), None, path, explicit_config=True)
    before = verifying_context()
    assert verifying_context() is before
    await d.reload()
    assert d.metrics.reloads["ok"] == 1
    assert verifying_context() is not before
