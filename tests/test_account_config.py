"""``[certcentral]``: one parser for the agent's and the collector's config; bad values
exit 78 naming the key; ``config show`` shows the key's path, never the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent import config
from agent.cli import main


def write(tmp: Path, body: str) -> Path:
    p = tmp / "c.toml"
    p.write_text(body)
    return p


def test_defaults_are_digicerts_endpoints() -> None:
    cc = config.Config().certcentral
    assert cc.base_url == "https://www.digicert.com/services/v2"
    assert cc.automation_url == "https://caas.digicert.com/automationws/v1"
    assert cc.interval == 3600 and cc.expiry_warn == 30 * 86400
    assert cc.min_balance == 0 and cc.container_id is None and cc.api_key_file is None


def test_values_parse(tmp_path: Path) -> None:
    cfg = config.load(
        write(
            tmp_path,
            '[certcentral]\nbase_url = "https://certcentral.digicert.eu/services/v2/"\n'
            'automation_url = ""\ntimeout = "45s"\ninterval = "15m"\nexpiry_warn = "14d"\n'
            "container_id = 42\nmin_balance = 250.5\n",
        )
    )
    cc = cfg.certcentral
    assert cc.base_url == "https://certcentral.digicert.eu/services/v2"
    assert cc.automation_url == "" and cc.timeout == 45 and cc.interval == 900
    assert cc.expiry_warn == 14 * 86400 and cc.container_id == 42 and cc.min_balance == 250.5


@pytest.mark.parametrize(
    ("line", "key", "problem"),
    [
        ('base_url = "http://www.digicert.com/services/v2"', "base_url", "https://"),
        ("timeout = 0", "timeout", "positive"),
        ('expiry_warn = "soon"', "expiry_warn", "duration"),
        ("container_id = -1", "container_id", "out of range"),
        ('min_balance = "lots"', "min_balance", "number"),
        ('api_key = "ABC"', "api_key", "unknown key"),
        ('api_key_file = ""', "api_key_file", "empty"),
    ],
)
def test_bad_values_exit_78_naming_the_key(
    line: str, key: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, f"[certcentral]\n{line}\n")
    assert main(["--config", str(path), "config", "validate"]) == 78
    err = capsys.readouterr().err
    assert f"[certcentral] {key}" in err and problem in err


def test_config_show_has_the_path_not_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "k"
    key.write_text("SECRETKEY0123456789ABCDEFGHIJ")
    path = write(tmp_path, f'[certcentral]\napi_key_file = "{key}"\n')
    assert main(["--config", str(path), "config", "show"]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)["certcentral"]
    assert shown["api_key_file"] == str(key)
    assert "SECRETKEY" not in out
