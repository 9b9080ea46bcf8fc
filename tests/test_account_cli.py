"""``acme-preflight account`` against the CertCentral lab: every reason code, exit codes,
the JSON Schema, errors of the API path (timeout, unreachable, bad answers, 429)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from agent.cli import main
from agent.schema import ACCOUNT_SCHEMA_FILE, report_schema
from tests.accountutil import CASES, ERROR_CASES, by_name, key_for, loads, write_agent_config
from tests.lab.certcentral import KEYS, CertCentralLab

SCHEMA = report_schema(ACCOUNT_SCHEMA_FILE)


def run_cli(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    rc = main(["--config", str(config), "account", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_reason_from_the_lab(
    case: str, certcentral_lab: CertCentralLab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fqdns, settings, expected = CASES[case]
    cfg = write_agent_config(tmp_path, certcentral_lab, key_for(case), **settings)
    args = ["--json"] + [a for n in fqdns for a in ("--fqdn", n)]
    rc, out, err = run_cli(capsys, cfg, *args)
    report = loads(out)
    jsonschema.validate(report, SCHEMA)
    got = by_name(report)
    for name, want in expected.items():
        assert got[name] == want, (name, report)
    worst = {"pass": 0, "skip": 0, "warn": 1, "fail": 2, "error": 3}
    assert rc == max(worst[s] for s, _ in got.values()) or (report["status"] == "fail" and rc == 2)
    assert key_for(case) not in out + err


def test_table_and_exit_code_through_a_subprocess(
    certcentral_lab: CertCentralLab, tmp_path: Path
) -> None:
    cfg = write_agent_config(tmp_path, certcentral_lab, KEYS["limited_user"])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "--config",
            str(cfg),
            "account",
            "--fqdn",
            "www.example.com",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "api_key" in proc.stdout and "FAIL" in proc.stdout
    words = " ".join(proc.stdout.split())
    assert "Limited User" in words and "Administrator or Manager" in words
    assert KEYS["limited_user"] not in proc.stdout + proc.stderr
    # the key went only in the header, never in a URL
    seen = [r for r in certcentral_lab.requests if r.key == KEYS["limited_user"]]
    assert seen and all(KEYS["limited_user"] not in r.path + str(r.query) for r in seen)


def test_only_runs_the_named_check(
    certcentral_lab: CertCentralLab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_agent_config(tmp_path, certcentral_lab, KEYS["ready"])
    rc, out, _ = run_cli(capsys, cfg, "--json", "--only", "balance")
    assert rc == 0
    assert [c["name"] for c in loads(out)["checks"]] == ["balance"]
    rc, _, err = run_cli(capsys, cfg, "--only", "nonsense")
    assert rc == 64 and "unknown account check" in err


def test_missing_key_file_exits_78_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[certcentral]\napi_key_file = "{tmp_path / "nope"}"\n')
    rc, _, err = run_cli(capsys, cfg)
    assert rc == 78 and "[certcentral] api_key_file" in err and "no such file" in err
    cfg.write_text("[agent]\ninterval = '1m'\n")
    rc, _, err = run_cli(capsys, cfg)
    assert rc == 78 and "[certcentral] api_key_file: is required" in err


def test_key_from_a_systemd_credential(
    certcentral_lab: CertCentralLab,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = write_agent_config(tmp_path, certcentral_lab, KEYS["ready"])
    text = cfg.read_text().replace(f'api_key_file = "{tmp_path / "certcentral.key"}"\n', "")
    cfg.write_text(text)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "certcentral-api-key").write_text(KEYS["sso_only"])
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    rc, out, _ = run_cli(capsys, cfg, "--json", "--only", "api_key")
    assert by_name(loads(out))["api_key"] == ("warn", "sso_only_user")
    assert rc == 1


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "the file is empty"),
        (b"short", "shorter than 16"),
        (b"AAAA BBBB CCCC DDDD EEEE", "spaces"),
        (b"\xff" * 20, "not ASCII"),
        (b"A" * 5000, "larger than 4096"),
    ],
)
def test_bad_key_files_exit_78_without_quoting_them(
    content: bytes, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "k"
    key.write_bytes(content)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[certcentral]\napi_key_file = "{key}"\n')
    rc, _, err = run_cli(capsys, cfg)
    assert rc == 78 and "[certcentral] api_key_file" in err and problem in err
    if len(content) > 8:
        assert content.decode("latin-1")[:8] not in err


def test_untrusted_certificate_is_unreachable(
    certcentral_lab: CertCentralLab,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    lab_pki: object,
) -> None:
    other = tmp_path / "other-ca.pem"
    other.write_bytes(lab_pki.inspection.cert_pem.bytes())  # type: ignore[attr-defined]
    cfg = write_agent_config(tmp_path, certcentral_lab, KEYS["ready"], ca_file=str(other))
    _, out, _ = run_cli(capsys, cfg, "--json", "--only", "api_key")
    check = loads(out)["checks"][0]
    assert (check["status"], check["reason"]) == ("error", "api_unreachable")
    assert "TLS verification failed" in check["summary"]


def test_rate_limit_exhausted_by_another_client(
    certcentral_lab: CertCentralLab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Someone else spent the key's 1000 per 3 minutes: 429 with Retry-After well past the
    timeout, so the check reports it instead of hammering the API."""
    certcentral_lab.burn(KEYS["ready"], 1000)
    cfg = write_agent_config(tmp_path, certcentral_lab, KEYS["ready"], timeout="2s")
    _, out, _ = run_cli(capsys, cfg, "--json", "--only", "api_key")
    check = loads(out)["checks"][0]
    assert (check["status"], check["reason"]) == ("error", "api_rate_limited")
    assert check["details"]["error"]["retry_after_s"] >= 170
    assert len([r for r in certcentral_lab.requests if r.key == KEYS["ready"]]) == 1


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_failures_of_the_api_path(
    case: str, certcentral_lab: CertCentralLab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup, expected = ERROR_CASES[case]
    cfg = write_agent_config(tmp_path, certcentral_lab, KEYS["ready"], **setup(certcentral_lab))
    rc, out, _ = run_cli(capsys, cfg, "--json")
    report = loads(out)
    jsonschema.validate(report, SCHEMA)
    got = by_name(report)
    for name, want in expected.items():
        assert got[name] == want, (name, report)
    assert rc == 3
