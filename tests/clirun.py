"""Running the real ``acme-preflight`` CLI as a subprocess, and checking its reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from agent.schema import report_schema

REPO = Path(__file__).resolve().parent.parent
# Run as another user (setpriv) from a directory everyone can enter.
NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment minus anything that would change the CLI's behaviour."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NO_COLOR", "ACME_PREFLIGHT_SANDBOX", "COLUMNS", "PYTHONWARNINGS")
    }
    env["PYTHONPATH"] = str(REPO)
    env.update(extra or {})
    return env


def run_cli(
    *args: str | os.PathLike[str],
    prefix: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    module: str = "agent",
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """``[prefix...] python -m agent ARGS`` with captured text output."""
    cmd = [*prefix, sys.executable, "-m", module, *map(str, args)]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=cli_env(env),
        cwd="/",
        timeout=timeout,
        check=False,
    )


def validator() -> Draft202012Validator:
    schema = report_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def assert_valid_report(data: Any) -> None:
    """Fail with every schema violation listed, not just the first."""
    errors = sorted(validator().iter_errors(data), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def report_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON report a ``check --json`` run printed, validated against the schema."""
    assert proc.stdout, f"no report on stdout; stderr: {proc.stderr}"
    data: dict[str, Any] = json.loads(proc.stdout)
    assert_valid_report(data)
    return data
