"""Disk faults under the real daemon: its state_dir is a tiny tmpfs in the daemon's own
mount namespace (``unshare --mount``), which the test fills or remounts read-only with
``nsenter``. The daemon keeps checking, ``/metrics`` and ``/status/daemon`` name the spool
error, and once space (or write access) returns every report reaches the collector.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clirun import run_cli
from tests.daemonproc import TOKEN, DaemonProc, base_config, fill_spool, free_port, write_config
from tests.lab.recorder import Recorder
from tests.test_faults_collector import (
    accepted_ids,
    daemon_status,
    m_value,
    metrics,
    run_ids,
    wait_until,
)

TMPFS_SIZE = "1m"


@pytest.fixture
def rec() -> Iterator[Recorder]:
    with Recorder(token=TOKEN) as r:
        yield r


def start_in_tmpfs(tmp: Path, cfg: dict[str, Any], options: str = "") -> DaemonProc:
    """The daemon with ``state_dir`` on a TMPFS_SIZE tmpfs only its mount namespace sees."""
    state = Path(cfg["agent"]["state_dir"])
    state.mkdir(parents=True, exist_ok=True)
    opts = f"size={TMPFS_SIZE},mode=0700{options}"
    mount = f"mount -t tmpfs -o {opts} acme-state {shlex.quote(str(state))}"
    prefix = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c"]
    prefix += [f'{mount} && exec "$@"', "sh"]
    return DaemonProc(write_config(tmp / "config.toml", cfg), tmp / "daemon.log", prefix=prefix)


def in_ns(d: DaemonProc, script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in the daemon's mount namespace."""
    return subprocess.run(
        ["nsenter", "-t", str(d.proc.pid), "-m", "--", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def runs_after(d: DaemonProc, n: int) -> None:
    have = len(run_ids(d))
    wait_until(lambda: len(run_ids(d)) >= have + n, 15, f"{n} more runs", d)


def spool_error(port: int, kind: str) -> dict[str, Any]:
    def seen() -> dict[str, Any] | None:
        spool: dict[str, Any] = daemon_status(port)["spool"]
        return spool if spool["failing"] and spool["error_kind"] == kind else None

    return seen()  # type: ignore[return-value]


def check_error_shown(d: DaemonProc, port: int, kind: str) -> dict[str, Any]:
    spool = wait_until(lambda: spool_error(port, kind), 20, f"spool error {kind}", d)
    assert m_value(port, "acme_preflight_spool_failing") == 1
    info = metrics(port)["acme_preflight_last_spool_error_info"]
    assert info == [({"kind": kind}, 1.0)]
    assert spool["errors_total"] >= 1
    return spool


def recovered(d: DaemonProc, port: int, rec: Recorder) -> None:
    def done() -> bool:
        spool = daemon_status(port)["spool"]
        return not spool["failing"] and set(run_ids(d)) <= accepted_ids(rec)

    wait_until(done, 25, "recovery: spool writable and every report delivered", d)
    assert m_value(port, "acme_preflight_spool_failing") == 0


def test_state_dir_full_then_space_returns(tmp_path: Path, rec: Recorder) -> None:
    port = free_port()
    token = tmp_path / "token"
    token.write_text(TOKEN)
    cfg = base_config(tmp_path, rec.url, token_file=token, status_port=port)
    with start_in_tmpfs(tmp_path, cfg) as d:
        wait_until(lambda: accepted_ids(rec), 15, "a first delivery", d)
        rec.down()  # reports pile up in the spool, which then cannot grow
        fill = in_ns(d, f"cat /dev/zero > {shlex.quote(cfg['agent']['state_dir'].as_posix())}/fill")
        assert "No space left" in fill.stderr, fill
        spool = check_error_shown(d, port, "disk_full")
        assert "full" in spool["error"]
        runs_after(d, 2)  # still checking
        assert d.events("cannot write last.json")
        in_ns(d, f"rm -f {shlex.quote(cfg['agent']['state_dir'].as_posix())}/fill")
        rec.up()
        recovered(d, port, rec)
        assert d.stop() == 0
    # nothing generated while the disk was full was lost
    assert set(run_ids(d)) <= accepted_ids(rec)
    assert "Traceback" not in d.log_text()


def test_state_dir_read_only_then_writable(tmp_path: Path, rec: Recorder) -> None:
    # Read-only from the start: a tmpfs cannot be remounted read-only under SQLite's open
    # files (EBUSY), and a start on a read-only state_dir used to be a traceback, exit 1.
    port = free_port()
    token = tmp_path / "token"
    token.write_text(TOKEN)
    cfg = base_config(tmp_path, rec.url, token_file=token, status_port=port)
    state = shlex.quote(cfg["agent"]["state_dir"].as_posix())
    with start_in_tmpfs(tmp_path, cfg, ",ro") as d:
        spool = check_error_shown(d, port, "read_only")
        assert spool["reports"] == 0
        runs_after(d, 3)  # still checking, /status serves the last report
        assert daemon_status(port)["runs_total"] >= 3
        assert not accepted_ids(rec)
        assert in_ns(d, f"mount -o remount,rw {state}").returncode == 0
        recovered(d, port, rec)
        assert in_ns(d, f"test -s {state}/spool.sqlite3").returncode == 0
        assert d.stop() == 0
    # the reports made while nothing could be written were held in memory, then delivered
    assert set(run_ids(d)) <= accepted_ids(rec)
    assert len(accepted_ids(rec)) >= 4
    assert "Traceback" not in d.log_text()
    assert "running without the lock" in d.log_text()


def set_aside(state: Path) -> list[Path]:
    """The damaged spool files moved aside (without their -wal/-shm companions)."""
    found = state.glob("spool.sqlite3.corrupt-*")
    return sorted(p for p in found if not p.name.endswith(("-wal", "-shm")))


def damage(spool: Path, how: str) -> None:
    """Break the spool file as a failing disk or a stray write would."""
    size = spool.stat().st_size
    if how == "page":
        # b-tree pages in the middle; the 100-byte header (and page 1) stay intact
        with spool.open("r+b") as f:
            f.seek(4 * 4096)
            f.write(bytes(range(256)) * 16 * 4)
    elif how == "zeroed":
        spool.write_bytes(b"\0" * size)
    else:  # garbage
        spool.write_bytes(b"this is not a database\n" * (size // 23 + 1))


@pytest.mark.parametrize("how", ["page", "zeroed", "garbage"])
def test_a_damaged_spool_is_moved_aside_and_a_fresh_one_delivers(
    tmp_path: Path, rec: Recorder, how: str
) -> None:
    """Issue 14 item 9. Before: a damaged page with an intact header was a traceback and
    exit 1 at every start (a restart loop with no checks); a zeroed or garbage file left
    the daemon running but never delivering. Now the file is moved aside with a
    timestamp, a fresh spool starts, and the log, /status/daemon and /metrics say so."""
    state = tmp_path / "state"
    fill_spool(state, 300, pad=2000)  # ~170 pages
    spool = state / "spool.sqlite3"
    assert not (state / "spool.sqlite3-wal").exists()  # checkpointed: all in the main file
    damage(spool, how)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    port = free_port()
    cfg = base_config(tmp_path, rec.url, token_file=token_file, status_port=port)
    with DaemonProc(write_config(tmp_path / "config.toml", cfg), tmp_path / "daemon.log") as d:
        line = d.wait_log(lambda e: e.get("event", "").startswith("the spool is damaged"))
        assert line["level"] == "error" and ".corrupt-" in line["moved_to"]
        wait_until(lambda: set(run_ids(d)[:2]) <= accepted_ids(rec), 20, "delivery", d)
        spool_status = daemon_status(port)["spool"]
        assert spool_status["corruptions_total"] == 1
        assert spool_status["corrupt_moved_to"] == line["moved_to"]
        assert m_value(port, "acme_preflight_spool_corruptions") == 1
        shown = run_cli("--config", tmp_path / "config.toml", "status")
        assert "Spool was damaged" in shown.stdout and line["moved_to"] in shown.stdout
        lost = line["reports_lost"]
        assert 0 <= lost <= 300
        assert daemon_status(port)["spool"]["dropped"]["spool_corrupt"] == lost
        assert d.proc.poll() is None
        assert d.stop() == 0
    assert [str(p) for p in set_aside(state)] == [line["moved_to"]]
    assert not [e for e in d.logs() if e.get("unparsed") and "Traceback" in e["event"]]
    # the next start finds a sound spool: nothing more is moved aside
    before = len(run_ids(d))
    with DaemonProc(write_config(tmp_path / "config.toml", cfg), tmp_path / "daemon.log") as d2:
        wait_until(lambda: len(run_ids(d2)) > before, 15, "a run", d2)
        assert d2.stop() == 0
    assert len(set_aside(state)) == 1
