"""The shipped systemd units: they verify, meet their exposure bounds, and keep checks truthful.

``systemd-analyze verify`` insists that ExecStart= binaries exist and are executable, and the
venv at /opt/acme-preflight only exists once the package is installed (tests/test_package.py
verifies the installed units with the real binaries). Here the units are verified as copies
whose /opt/acme-preflight/bin/ paths point at stand-in executables in a temp directory;
everything else is the shipped text. (``--root=`` does not help on systemd 252: it then wants
the whole unit tree, sysinit.target and /bin/kill included, under that root.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.checks.privileges import CAP_NAMES, SANDBOX_DROPPED, SANDBOX_ENV
from tests import unitfile
from tests.unitfile import AGENT_UNIT, COLLECTOR_UNIT, VENV_BIN

EXPOSURE_BOUNDS = {AGENT_UNIT.name: 4.5, COLLECTOR_UNIT.name: 2.0}
REPO = unitfile.REPO


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def verifiable_units(tmp_path: Path) -> list[Path]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    out = []
    for unit in (AGENT_UNIT, COLLECTOR_UNIT):
        text = unit.read_text()
        for binary in re.findall(re.escape(VENV_BIN) + r"([\w.-]+)", text):
            stub = bindir / binary
            stub.write_text("#!/bin/sh\nexit 0\n")
            stub.chmod(0o755)
        copy = tmp_path / unit.name
        copy.write_text(text.replace(VENV_BIN, f"{bindir}/"))
        out.append(copy)
    return out


def test_units_verify_cleanly(verifiable_units: list[Path]) -> None:
    proc = _analyze("verify", *map(str, verifiable_units))
    # verify exits 0 on unknown keys and bad values too; those only show in its output.
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_verify_catches_a_broken_unit(verifiable_units: list[Path]) -> None:
    """The verification above can fail: a typo in a setting is reported."""
    unit = verifiable_units[0]
    unit.write_text(unit.read_text().replace("ProtectClock=yes", "ProtectClok=yes"))
    proc = _analyze("verify", str(unit))
    assert "ProtectClok" in proc.stdout + proc.stderr


def _exposure(unit: Path) -> float:
    proc = _analyze("security", "--offline=true", "--no-pager", str(unit))
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert m, proc.stdout[-500:]
    return float(m.group(1))


@pytest.mark.parametrize("unit", [AGENT_UNIT, COLLECTOR_UNIT], ids=lambda u: u.name)
def test_exposure_within_bound(unit: Path) -> None:
    score = _exposure(unit)
    bound = EXPOSURE_BOUNDS[unit.name]
    print(f"\n{unit.name}: systemd-analyze security exposure {score} (bound {bound})")
    assert score <= bound
    # systemd's own verdict agrees: --threshold fails the command above the bound.
    proc = _analyze("security", "--offline=true", f"--threshold={round(bound * 10)}", str(unit))
    assert proc.returncode == 0


def _security_items(unit: Path) -> dict[str, dict[str, object]]:
    proc = _analyze("security", "--offline=true", "--json=short", str(unit))
    assert proc.returncode == 0, proc.stderr
    return {item["name"]: item for item in json.loads(proc.stdout)}


def test_agent_sandbox_keeps_the_checks_truthful() -> None:
    """No setting that would make a check report the sandbox instead of the host."""
    forbidden = {
        "PrivateNetwork": "the network checks must use the host's network",
        "MemoryDenyWriteExecute": "cffi/ctypes callbacks need W+X memory",
        "PrivateUsers": "privileges must see the initial user namespace",
        "User": "privileges must see real root",
        "DynamicUser": "privileges must see real root",
        "IPAddressDeny": "outbound_https must reach whatever address DNS returns",
        "ProtectHostname": "hostname changes must reach the reports",
    }
    for key, why in forbidden.items():
        assert not unitfile.values(AGENT_UNIT, key), f"{key}=: {why}"
    assert unitfile.values(AGENT_UNIT, "ProtectProc") in ([], ["default"])
    assert unitfile.values(AGENT_UNIT, "ProcSubset") in ([], ["all"])
    # systemd's own reading of the unit says the same.
    items = _security_items(AGENT_UNIT)
    for name in ("PrivateNetwork=", "MemoryDenyWriteExecute=", "PrivateUsers=", "ProtectProc=",
                 "ProcSubset=", "User=/DynamicUser="):  # fmt: skip
        assert items[name]["set"] is False, name
    # What the sandbox does restrict is in force.
    for name in ("ProtectSystem=", "PrivateTmp=", "PrivateDevices=", "ProtectKernelModules=",
                 "ProtectClock=", "RestrictNamespaces=~user", "SystemCallArchitectures=",
                 "RestrictSUIDSGID=", "LockPersonality=", "RestrictRealtime="):  # fmt: skip
        assert items[name]["set"] is True, name


def test_agent_unit_interfaces() -> None:
    """The daemon's contract with systemd, as the agent implements it."""
    v = unitfile.values
    assert v(AGENT_UNIT, "Type") == ["notify"]
    assert v(AGENT_UNIT, "WatchdogSec") and v(AGENT_UNIT, "Restart") == ["on-failure"]
    assert v(AGENT_UNIT, "ExecReload") == ["/bin/kill -HUP $MAINPID"]
    assert v(AGENT_UNIT, "ExecStart")[0].split()[0] == f"{VENV_BIN}acme-preflight"
    assert v(AGENT_UNIT, "ExecStart")[0].split()[-1] == "run"
    assert v(AGENT_UNIT, "StateDirectory") == ["acme-preflight"]
    # It would make /etc/acme-preflight writable under ProtectSystem=strict.
    assert v(AGENT_UNIT, "ConfigurationDirectory") == []
    # The credential id is the one agent/daemon/sender.py reads from $CREDENTIALS_DIRECTORY.
    from agent.daemon.sender import CREDENTIAL_NAME

    creds = [c.split(":", 1)[0] for c in v(AGENT_UNIT, "LoadCredential")]
    assert creds == [CREDENTIAL_NAME]
    assert unitfile.environment(AGENT_UNIT)[SANDBOX_ENV] == "1"


def test_collector_unit_runs_unprivileged() -> None:
    v = unitfile.values
    assert unitfile.is_true(COLLECTOR_UNIT, "DynamicUser")
    assert v(COLLECTOR_UNIT, "CapabilityBoundingSet") == [""]
    assert v(COLLECTOR_UNIT, "StateDirectory") == ["acme-preflight-collector"]
    exec_start = v(COLLECTOR_UNIT, "ExecStart")[0].split()
    assert exec_start[:2] == [f"{VENV_BIN}acme-preflight-collector", "serve"]
    assert exec_start[exec_start.index("--db") + 1].startswith("/var/lib/acme-preflight-collector/")


def _kernel_caps() -> frozenset[str]:
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    return frozenset(CAP_NAMES[: last + 1])


def test_unit_drops_exactly_what_the_privileges_check_tolerates() -> None:
    """SANDBOX_DROPPED in agent/checks/privileges.py names the unit's drops, no more, no less."""
    all_caps = frozenset(CAP_NAMES)
    explicit = unitfile.bounding_set_drops(AGENT_UNIT, all_caps)
    implied = unitfile.implied_drops(AGENT_UNIT)
    assert implied, "the unit's Protect*/PrivateDevices settings drop capabilities"
    # The explicit list repeats the implied drops, so it alone names all the unit removes.
    assert implied <= explicit
    assert explicit == SANDBOX_DROPPED


def _host_missing_caps() -> frozenset[str]:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            eff = int(line.split()[1], 16)
    return frozenset(
        c for bit, c in enumerate(CAP_NAMES) if c in _kernel_caps() and not eff >> bit & 1
    )


def _privileges_under_unit_caps(env: dict[str, str]) -> dict[str, object]:
    dropped = unitfile.bounding_set_drops(AGENT_UNIT, _kernel_caps()) | unitfile.implied_drops(
        AGENT_UNIT
    )
    cmd = [*unitfile.setpriv_drop(dropped), sys.executable, "-m", "agent"]
    cmd += ["check", "--json", "--only", "privileges"]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
        env={**os.environ, **env},
    )
    assert proc.stdout, proc.stderr
    check: dict[str, object] = json.loads(proc.stdout)["checks"][0]
    return check


def test_privileges_passes_under_the_units_capability_bounding_set() -> None:
    """Run the check with the capabilities the unit drops gone and the unit's environment."""
    env = {SANDBOX_ENV: unitfile.environment(AGENT_UNIT)[SANDBOX_ENV]}
    check = _privileges_under_unit_caps(env)
    details = check["details"]
    assert isinstance(details, dict)
    lacking = sorted(_host_missing_caps() - SANDBOX_DROPPED)
    assert details["missing_capabilities"] == [c for c in CAP_NAMES if c in lacking]
    assert set(details["sandbox_dropped_capabilities"]) == SANDBOX_DROPPED & _kernel_caps()
    if not lacking and not Path("/sys/fs/selinux/enforce").exists():
        assert (check["status"], check["reason"]) == ("pass", "ok")


def test_without_the_units_environment_the_drops_warn() -> None:
    """The tolerance comes from ACME_PREFLIGHT_SANDBOX=1 alone, not from the check."""
    check = _privileges_under_unit_caps({SANDBOX_ENV: ""})
    assert (check["status"], check["reason"]) == ("warn", "reduced_capabilities")
    details = check["details"]
    assert isinstance(details, dict)
    assert SANDBOX_DROPPED & _kernel_caps() <= set(details["missing_capabilities"])
