"""The ``acme-preflight`` command line, run for real as a subprocess."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from jsonschema import ValidationError

import agent
from agent import compat
from agent.cli import EX_USAGE
from agent.output import use_colour
from tests.clirun import REPO, cli_env, report_of, run_cli, validator

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def fake(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI with the fake checks of tests/fakecli.py available."""
    return run_cli(*args, module="tests.fakecli", env=env)


def only(*statuses: str) -> list[str]:
    return [a for s in statuses for a in ("--only", f"fake_{s}")]


# ------------------------------------------------------------------------ JSON


def test_check_json_is_a_valid_report() -> None:
    proc = run_cli("check", "--json", "--only", "privileges")
    report = report_of(proc)
    assert report["schema"] == "acme-preflight.report/1"
    assert uuid.UUID(report["report_id"]).version == 4
    agent_id = report["agent"]
    assert agent_id["version"] == agent.__version__
    machine_id = Path("/etc/machine-id")
    if machine_id.is_file() and machine_id.read_text().strip():
        assert agent_id["host_id"] == machine_id.read_text().strip()
    assert agent_id["hostname"] == os.uname().nodename
    started = datetime.fromisoformat(report["started_at"])
    finished = datetime.fromisoformat(report["finished_at"])
    assert started.utcoffset() is not None and started.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert started <= finished
    assert report["interval_s"] == 300.0


def test_host_id_from_config(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[agent]\nhost_id = "web-01"\n')
    report = report_of(run_cli("--config", cfg, "check", "--json", "--only", "privileges"))
    assert report["agent"]["host_id"] == "web-01"


@pytest.mark.parametrize("status", ["pass", "skip", "warn", "error", "fail"])
def test_every_outcome_makes_a_valid_report(status: str) -> None:
    report = report_of(fake("check", "--json", *only(status)))
    [check] = report["checks"]
    assert (check["name"], check["status"], report["status"]) == (f"fake_{status}", status, status)
    if status == "error":
        assert check["reason"] == "check_crashed"
        assert "RuntimeError: fake check blew up" in check["summary"]


def test_schema_format_checking_is_active() -> None:
    """The validator the tests use really checks formats, not only patterns."""
    report = report_of(run_cli("check", "--json", "--only", "privileges"))
    bad_date = dict(report, started_at="2026-13-45T25:61:00Z")  # fits the pattern
    with pytest.raises(ValidationError, match="date-time"):
        validator().validate(bad_date)
    with pytest.raises(ValidationError):
        validator().validate(dict(report, status="ok"))
    with pytest.raises(ValidationError):
        validator().validate(dict(report, unexpected=1))


# ------------------------------------------------------------------ exit codes


@pytest.mark.parametrize(
    ("statuses", "worst", "rc"),
    [
        (["pass"], "pass", 0),
        (["skip"], "skip", 0),
        (["pass", "skip"], "skip", 0),
        (["pass", "warn"], "warn", 1),
        (["skip", "warn"], "warn", 1),
        (["warn", "error"], "error", 3),
        (["pass", "error"], "error", 3),
        (["fail"], "fail", 2),
        (["error", "fail"], "fail", 2),
        (["pass", "skip", "warn", "error", "fail"], "fail", 2),
    ],
)
def test_exit_code_follows_the_worst_status(statuses: list[str], worst: str, rc: int) -> None:
    proc = fake("check", "--json", *only(*statuses))
    assert proc.returncode == rc, proc.stderr
    report = report_of(proc)
    assert report["status"] == worst
    assert [c["name"] for c in report["checks"]] == [f"fake_{s}" for s in statuses]
    # the table gives the same exit code
    assert fake("check", *only(*statuses)).returncode == rc


def test_unknown_only_is_a_usage_error() -> None:
    proc = run_cli("check", "--only", "privileges", "--only", "privilegs")
    assert proc.returncode == EX_USAGE == 64
    assert "unknown check 'privilegs'" in proc.stderr
    assert "privileges" in proc.stderr  # lists the known ones
    assert proc.stdout == ""


@pytest.mark.parametrize(
    "args", [[], ["check", "--bogus"], ["frobnicate"], ["config", "explode"], ["--config"]]
)
def test_usage_errors_exit_64_not_a_nagios_status(args: list[str]) -> None:
    proc = run_cli(*args)
    assert proc.returncode == EX_USAGE
    assert "usage: acme-preflight" in proc.stderr
    assert proc.stdout == ""


def test_closed_stdout_is_not_a_traceback() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "config", "show"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
        cwd="/",
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the CLI gets to write
    err = proc.stderr.read()
    assert proc.wait(timeout=30) == 141
    assert err == b""


# --------------------------------------------------------------------- version


def test_version() -> None:
    proc = run_cli("--version")
    assert (proc.returncode, proc.stdout) == (0, f"acme-preflight {agent.__version__}\n")


def test_console_script() -> None:
    script = Path(sys.executable).parent / "acme-preflight"
    proc = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, env=cli_env(), check=False
    )
    assert (proc.returncode, proc.stdout) == (0, f"acme-preflight {agent.__version__}\n")


def test_python_dash_m_agent_runs_a_check() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "check", "--only", "privileges"],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=REPO,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    assert "privileges" in proc.stdout


# ----------------------------------------------------------------------- table


def table_rows(text: str) -> tuple[str, list[str]]:
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("CHECK"))
    return header, lines[lines.index(header) + 1 :]


def test_table_is_plain_and_aligned_when_not_a_tty() -> None:
    proc = fake("check", *only("pass", "skip", "warn", "fail", "error"), env={"COLUMNS": "80"})
    assert proc.returncode == 2
    out = proc.stdout
    assert "\x1b" not in out
    header, rows = table_rows(out)
    assert re.fullmatch(r"CHECK +STATUS +SUMMARY", header)
    column = header.index("SUMMARY")
    status_col = header.index("STATUS")
    for status in ("pass", "skip", "warn", "fail", "error"):
        row = next(r for r in rows if r.startswith(f"fake_{status} "))
        assert row[status_col:].startswith(status.upper())
        assert row[column - 2 : column] == "  " and row[column] != " ", row
    # remediation under warn, fail and error only
    assert "-> Remediation for the warn check." in out
    assert "-> Remediation for the fail check." in out
    assert "-> Remediation for the pass check." not in out
    assert "-> Remediation for the skip check." not in out
    assert "RuntimeError: fake check blew up" in out
    # long summaries wrap within the width, continuation lines under the summary column
    assert all(len(line) <= 80 for line in out.splitlines()[1:])
    assert "without losing a word of it" in re.sub(r"\s+", " ", out)
    assert out.rstrip().endswith("Overall: FAIL")


def run_on_pty(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run the CLI with stdout on a real pseudo-terminal; return (exit code, output)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakecli", *args],
        stdout=slave,
        stderr=subprocess.PIPE,
        env=cli_env(env),
        cwd="/",
    )
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        assert ready, "no output from the CLI within 30 s"
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    rc = proc.wait(timeout=30)
    return rc, b"".join(chunks).decode()


def test_table_is_coloured_on_a_tty() -> None:
    rc, out = run_on_pty("check", *only("pass", "warn", "fail"))
    assert rc == 2
    assert "\x1b[32mPASS" in out
    assert "\x1b[33mWARN" in out
    assert "\x1b[31;1mFAIL" in out
    # the colour codes do not break the alignment
    plain = ANSI.sub("", out.replace("\r\n", "\n"))
    header, rows = table_rows(plain)
    column = header.index("SUMMARY")
    assert rows[0][column:].startswith("everything as it should be")


def test_no_color_is_honoured_on_a_tty() -> None:
    rc, out = run_on_pty("check", *only("pass", "warn"), env={"NO_COLOR": "1"})
    assert rc == 1
    assert "\x1b[" not in out
    assert "WARN" in out


def test_use_colour() -> None:
    assert not use_colour(io.StringIO(), environ={})
    master, slave = pty.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            assert use_colour(tty, environ={})
            assert not use_colour(tty, environ={"NO_COLOR": "1"})
            # no-color.org: an empty NO_COLOR does not count
            assert use_colour(tty, environ={"NO_COLOR": ""})
    finally:
        os.close(master)
        os.close(slave)


# ------------------------------------------------------------- global options


def _broken_config(tmp_path: Path) -> Path:
    path = tmp_path / "broken.toml"
    path.write_text("[agent]\ninterval = 'soon'\n")
    return path


def _invocations() -> list[list[str]]:
    """Every command of the command table (and each config action), as typed."""
    from agent.cli import COMMANDS

    out = []
    for command in COMMANDS:
        if command.name == "config":
            out += [["config", "validate"], ["config", "show"]]
        else:
            out.append([command.name])
    return out


@pytest.mark.parametrize("words", _invocations(), ids=" ".join)
@pytest.mark.parametrize("where", ["before", "after"])
def test_global_options_go_before_or_after_the_command(
    tmp_path: Path, words: list[str], where: str
) -> None:
    cfg = _broken_config(tmp_path)
    args = ["--config", str(cfg), *words] if where == "before" else [*words, "--config", str(cfg)]
    proc = run_cli(*args)
    # the file was read (78 naming its key), not rejected as an unknown argument (64)
    assert proc.returncode == 78, proc.stderr
    assert "[agent] interval" in proc.stderr


def test_global_option_between_config_and_its_action(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[agent]\nhost_id = "between"\n')
    proc = run_cli("config", "--config", cfg, "show")
    assert proc.returncode == 0, proc.stderr
    assert '"host_id": "between"' in proc.stdout


def test_the_option_after_the_command_wins_over_the_one_before(tmp_path: Path) -> None:
    first, second = tmp_path / "a.toml", tmp_path / "b.toml"
    first.write_text('[agent]\nhost_id = "first"\n')
    second.write_text('[agent]\nhost_id = "second"\n')
    report = report_of(
        run_cli("--config", first, "check", "--only", "privileges", "--json", "--config", second)
    )
    assert report["agent"]["host_id"] == "second"


# ------------------------------------------------------------------- --only


def test_only_takes_a_comma_list_and_any_case() -> None:
    proc = fake("check", "--json", "--only", "FAKE_PASS,fake_Warn", "--only", "fake_pass")
    assert proc.returncode == 1, proc.stderr
    assert [c["name"] for c in report_of(proc)["checks"]] == ["fake_pass", "fake_warn"]


def test_only_with_an_unknown_name_in_a_list_is_a_usage_error() -> None:
    proc = run_cli("check", "--only", "privileges,nope")
    assert proc.returncode == EX_USAGE
    assert "unknown check 'nope'" in proc.stderr


def test_check_help_lists_the_checks_and_the_exit_codes() -> None:
    from agent.checks import available

    proc = run_cli("check", "--help")
    assert proc.returncode == 0
    for name in available():
        assert name in proc.stdout
    for line in (
        "0  pass or skip",
        "1  warn",
        "2  fail",
        "3  error",
        "64 usage error",
        "78 config error",
    ):
        assert line in proc.stdout


# ------------------------------------------------------------ terminal output


def test_no_colour_on_a_dumb_terminal() -> None:
    rc, out = run_on_pty("check", *only("pass", "warn"), env={"TERM": "dumb"})
    assert rc == 1
    assert "\x1b[" not in out
    assert "WARN" in out
    assert not use_colour(io.StringIO(), environ={"TERM": "dumb"})


def test_header_keeps_the_timestamp_whole_at_70_columns() -> None:
    proc = fake("check", *only("pass"), env={"COLUMNS": "70"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
    assert any(stamp.search(line) for line in lines[:3]), proc.stdout
    assert all(len(line) <= 70 for line in lines), proc.stdout


# ------------------------------------------------------- config show --format


def test_config_show_toml_loads_back_to_the_same_config(tmp_path: Path) -> None:
    import dataclasses

    from agent.config import load, redact_url

    source = REPO / "tests" / "fixtures" / "config" / "valid-full.toml"
    proc = run_cli("config", "show", "--format", "toml", "--config", source)
    assert proc.returncode == 0, proc.stderr
    shown = tmp_path / "shown.toml"
    shown.write_text(proc.stdout)
    again = run_cli("config", "show", "--format", "toml", "--config", shown)
    assert again.stdout.splitlines()[1:] == proc.stdout.splitlines()[1:]  # line 0 names the file
    original = load(source)
    assert original.proxy.url and "pr0xy-pa55" in original.proxy.url
    assert "pr0xy-pa55" not in proc.stdout
    # the same config, but for the password, which is shown redacted
    redacted = dataclasses.replace(
        original,
        proxy=dataclasses.replace(original.proxy, url=redact_url(original.proxy.url)),
        source=None,
    )
    assert dataclasses.replace(load(shown), source=None) == redacted


def test_config_show_toml_of_the_defaults_and_its_secrets(tmp_path: Path) -> None:
    import dataclasses

    from agent.config import Config, load

    proc = run_cli("config", "show", "--format", "toml", "--config", "/dev/null")
    assert proc.returncode == 0, proc.stderr
    shown = tmp_path / "defaults.toml"
    shown.write_text(proc.stdout)
    assert dataclasses.replace(load(shown), source=None) == Config()
    cfg = tmp_path / "secret.toml"
    cfg.write_text(
        '[proxy]\nurl = "http://u:hunter2pw@proxy.test:3128"\n'
        '[collector]\nurl = "https://c:s3cretpw@collector.test/"\n'
        '[agent]\nhost_id = "q\\"uote\\\\ \\u007f"\n'
    )
    out = run_cli("config", "show", "--format", "toml", "--config", cfg).stdout
    assert "hunter2pw" not in out and "s3cretpw" not in out
    data = compat.tomllib.loads(out)
    assert data["proxy"]["url"] == "http://u:***@proxy.test:3128"
    assert data["agent"]["host_id"] == 'q"uote\\ \x7f'
