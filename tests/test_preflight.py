"""What ``run`` refuses or warns about at start, and ``config validate`` saying the same.

Both commands run for real as subprocesses; the daemon only inside the test's network
namespace (it looks up its FQDN, and a collector URL here is never reachable off the machine).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.clirun import run_cli
from tests.daemonproc import TOKEN, DaemonProc, base_config, free_port, write_config

pytestmark = pytest.mark.usefixtures("netns_isolated")

EX_CONFIG = 78
EX_CANTCREAT = 73


def _token(tmp: Path, mode: int = 0o600) -> Path:
    path = tmp / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(mode)
    return path


def _config(tmp: Path, url: str | None = "http://127.0.0.1:9/", **collector: Any) -> Path:
    data = base_config(tmp, url, **collector)
    return write_config(tmp / "config.toml", data)


def _validate(cfg: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("config", "validate", "--config", cfg)


def _run(cfg: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("run", "--config", cfg, timeout=30)


def _missing_token(tmp: Path) -> Path:
    return _config(tmp, token_file=tmp / "no-such-token")


def _empty_token(tmp: Path) -> Path:
    (tmp / "empty").write_text("")
    return _config(tmp, token_file=tmp / "empty")


def _bad_ca(tmp: Path) -> Path:
    (tmp / "ca.pem").write_text("not a certificate\n")
    return _config(tmp, "https://127.0.0.1:9/", token_file=_token(tmp), ca_file=tmp / "ca.pem")


def _state_symlink(tmp: Path) -> Path:
    (tmp / "real").mkdir(mode=0o700)
    (tmp / "state").symlink_to(tmp / "real")
    return _config(tmp, token_file=_token(tmp))


def _state_dangling(tmp: Path) -> Path:
    (tmp / "state").symlink_to(tmp / "gone")
    return _config(tmp, token_file=_token(tmp))


def _state_mode(mode: int) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / "state").mkdir()
        (tmp / "state").chmod(mode)
        return _config(tmp, token_file=_token(tmp))

    return make


def _state_not_dir(tmp: Path) -> Path:
    (tmp / "state").write_text("")
    return _config(tmp, token_file=_token(tmp))


@pytest.mark.parametrize(
    ("make", "code", "message"),
    [
        (_missing_token, EX_CONFIG, "[collector] token_file: {tmp}/no-such-token: no such file"),
        (_empty_token, EX_CONFIG, "[collector] token_file: {tmp}/empty: the file is empty"),
        (_bad_ca, EX_CONFIG, "[collector] ca_file: {tmp}/ca.pem: cannot load"),
        (
            _state_symlink,
            EX_CANTCREAT,
            "[agent] state_dir: {tmp}/state is a symbolic link (to {tmp}/real)",
        ),
        (
            _state_dangling,
            EX_CANTCREAT,
            "[agent] state_dir: {tmp}/state is a dangling symbolic link (to {tmp}/gone, which does not exist)",
        ),
        (_state_mode(0o770), EX_CANTCREAT, "{tmp}/state is writable by its group (mode 0770)"),
        (_state_mode(0o703), EX_CANTCREAT, "{tmp}/state is writable by others (mode 0703)"),
        (_state_mode(0o1777), EX_CANTCREAT, "writable by its group and others (mode 1777)"),
        (_state_not_dir, EX_CANTCREAT, "{tmp}/state exists and is not a directory"),
    ],
    ids=[
        "missing-token",
        "empty-token",
        "bad-ca",
        "state-symlink",
        "state-dangling",
        "state-group-writable",
        "state-world-writable",
        "state-sticky-1777",
        "state-not-a-dir",
    ],
)
def test_validate_refuses_what_run_refuses(
    tmp_path: Path, make: Callable[[Path], Path], code: int, message: str
) -> None:
    cfg = make(tmp_path)
    expected = message.format(tmp=tmp_path)
    validate, run = _validate(cfg), _run(cfg)
    assert (validate.returncode, run.returncode) == (code, code), (validate.stderr, run.stderr)
    assert expected in validate.stderr
    assert expected in run.stderr
    assert validate.stdout == ""
    assert "Traceback" not in validate.stderr + run.stderr
    assert TOKEN not in validate.stderr + run.stderr
    # nothing was created or changed by either command
    if (tmp_path / "state").is_symlink():
        assert not (tmp_path / "real" / "daemon.lock").exists()


def test_validate_accepts_what_run_starts_with_and_changes_nothing(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    leaf = ca.issue_cert("agent.test")
    leaf.cert_chain_pems[0].write_to_path(tmp_path / "client.pem")
    leaf.private_key_pem.write_to_path(tmp_path / "client.key")
    cfg = _config(
        tmp_path,
        "https://127.0.0.1:9/",
        token_file=_token(tmp_path),
        ca_file=tmp_path / "ca.pem",
        client_cert=tmp_path / "client.pem",
        client_key=tmp_path / "client.key",
    )
    proc = _validate(cfg)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"config OK ({cfg})\n"
    assert proc.stderr == ""
    # state_dir is created by run, not by validate
    assert not (tmp_path / "state").exists()


def test_validate_refuses_a_state_dir_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    data = base_config(tmp_path, None)
    data["agent"]["state_dir"] = tmp_path / "file" / "state"
    cfg = write_config(tmp_path / "config.toml", data)
    for proc in (_validate(cfg), _run(cfg)):
        assert proc.returncode == EX_CANTCREAT, proc.stderr
        assert (
            f"cannot create {tmp_path}/file/state: {tmp_path}/file is not a directory"
            in proc.stderr
        )


@pytest.mark.parametrize(
    ("mode", "who"), [(0o644, "its group and others"), (0o640, "its group"), (0o604, "others")]
)
def test_token_file_others_can_read_is_a_warning(tmp_path: Path, mode: int, who: str) -> None:
    token = _token(tmp_path, mode)
    cfg = _config(tmp_path, token_file=token)
    proc = _validate(cfg)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"config OK ({cfg}), 1 warning(s)\n"
    assert (
        f"acme-preflight: warning: [collector] token_file: {token} is readable by {who} "
        f"(mode {mode:04o})"
    ) in proc.stderr
    assert f"chmod 600 {token}" in proc.stderr
    assert TOKEN not in proc.stderr + proc.stdout


def test_run_warns_at_start_about_a_readable_token_file(tmp_path: Path) -> None:
    token = _token(tmp_path, 0o644)
    port = free_port()
    data = base_config(tmp_path, "http://127.0.0.1:9/", status_port=port, token_file=token)
    cfg = write_config(tmp_path / "config.toml", data)
    with DaemonProc(cfg, tmp_path / "daemon.log") as daemon:
        line = daemon.wait_log(lambda e: "is readable by" in str(e.get("event")))
        assert line["level"] == "warning"
        assert str(token) in line["event"]
        assert daemon.stop() == 0
    assert TOKEN not in daemon.log_text()


def test_plain_http_to_another_host_is_warned_once(tmp_path: Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1; in this namespace it has no route, so nothing is sent
    url = "http://192.0.2.10:8475/"
    cfg = _config(tmp_path, url, token_file=_token(tmp_path))
    proc = _validate(cfg)
    assert proc.returncode == 0, proc.stderr
    assert f"[collector] url: {url} is plain http:// to another host" in proc.stderr
    with DaemonProc(cfg, tmp_path / "daemon.log") as daemon:
        # two delivery attempts (the first report, then its retry): still one warning
        daemon.wait_log(lambda e: e.get("event") == "delivery failed; will retry")
        daemon.wait_log(lambda e: e.get("attempt") == 2, timeout=15)
        assert daemon.stop() == 0
    warned = [e for e in daemon.logs() if "plain http://" in str(e.get("event"))]
    assert len(warned) == 1, daemon.log_text()


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/", "http://localhost:9/", "http://[::1]:9/", "https://192.0.2.10:8475/"],
)
def test_no_plain_http_warning_for_loopback_or_https(tmp_path: Path, url: str) -> None:
    cfg = _config(tmp_path, url, token_file=_token(tmp_path))
    proc = _validate(cfg)
    assert (proc.returncode, proc.stderr) == (0, "")


def test_no_plain_http_warning_without_a_token(tmp_path: Path) -> None:
    proc = _validate(_config(tmp_path, "http://192.0.2.10:8475/"))
    assert (proc.returncode, proc.stderr) == (0, "")


def test_a_symlinked_state_dir_is_refused_not_followed(tmp_path: Path) -> None:
    """The attack: a local user points state_dir at a directory of their choosing."""
    victim = tmp_path / "elsewhere"
    victim.mkdir(mode=0o700)
    os.symlink(victim, tmp_path / "state")
    cfg = _config(tmp_path, None)
    proc = _run(cfg)
    assert proc.returncode == EX_CANTCREAT
    assert list(victim.iterdir()) == []  # no lock, no spool, no last.json written there


def test_a_certcentral_key_file_others_can_read_is_a_warning(tmp_path: Path) -> None:
    key = tmp_path / "api.key"
    key.write_text("K" * 40 + "\n")
    key.chmod(0o644)
    data = base_config(tmp_path, None)
    data["certcentral"] = {"api_key_file": key}
    cfg = write_config(tmp_path / "config.toml", data)
    proc = _validate(cfg)
    assert proc.returncode == 0, proc.stderr
    assert (
        f"[certcentral] api_key_file: {key} is readable by its group and others (mode 0644)"
    ) in proc.stderr
    assert "K" * 40 not in proc.stderr
    key.chmod(0o600)
    assert _validate(cfg).stderr == ""
