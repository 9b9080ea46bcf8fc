"""The agent and collector on the other supported interpreters: Ubuntu 22.04's Python 3.10
and Ubuntu 24.04's 3.12 (issue 15). ``make pyvenvs`` builds a venv per interpreter from the
image's pyenv builds; here a part of the real suite runs in each, as a subprocess."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / ".pyvenvs"
# Config, model, runner, TLS handshakes (start_tls, and a server pausing reads for it on
# 3.10), the spool (SQLite damage codes), the
# collector's validation: what differs between 3.10 and 3.11 is used on these paths.
SUBSET = [
    "tests/test_config.py",
    "tests/test_model.py",
    "tests/test_runner.py",
    "tests/test_net_tls.py",
    "tests/test_net_tcp.py",
    "tests/test_outbound_https.py",
    "tests/test_daemon_spool.py",
    "tests/test_collector_validate.py",
]
# Runs the interpreter as uid 65534, which cannot read /root/.pyenv's libpython.
DESELECT = ["tests/test_config.py::test_unreadable_file_is_an_error"]


@pytest.mark.parametrize("minor", ["3.10", "3.12"])
def test_suite_subset_passes_under(minor: str) -> None:
    python = VENVS / minor / "bin" / "python"
    assert python.exists(), f"{python} missing: run `make pyvenvs` (the Makefile's test does)"
    version = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version == minor
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VIRTUAL_ENV"))}
    args = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUBSET]
    args += [f"--deselect={d}" for d in DESELECT]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    tail = "\n".join(proc.stdout.splitlines()[-30:])
    assert proc.returncode == 0, (
        f"{minor}: pytest exit {proc.returncode}\n{tail}\n{proc.stderr[-2000:]}"
    )
    assert " passed" in tail and "skipped" not in tail.splitlines()[-1], tail
