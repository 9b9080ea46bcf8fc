"""Reading the shipped systemd units (tests/test_systemd_units.py, tests/test_package.py)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
UNIT_DIR = REPO / "systemd"
AGENT_UNIT = UNIT_DIR / "acme-preflight.service"
COLLECTOR_UNIT = UNIT_DIR / "acme-preflight-collector.service"
# Where the units' ExecStart= binaries live once the package is installed.
VENV_BIN = "/opt/acme-preflight/bin/"

# Capabilities that sandboxing settings remove from the bounding set by themselves
# (systemd.exec(5), systemd 252).
IMPLIED_DROPS = {
    "PrivateDevices": frozenset({"CAP_MKNOD", "CAP_SYS_RAWIO"}),
    "ProtectClock": frozenset({"CAP_SYS_TIME", "CAP_WAKE_ALARM"}),
    "ProtectKernelModules": frozenset({"CAP_SYS_MODULE"}),
    "ProtectKernelLogs": frozenset({"CAP_SYSLOG"}),
}
_TRUE = {"1", "yes", "true", "on"}


def settings(path: Path) -> list[tuple[str, str, str]]:
    """``(section, key, value)`` in file order; comments skipped, continuations joined."""
    out: list[tuple[str, str, str]] = []
    section = ""
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        out.append((section, key.strip(), value.strip()))
    return out


def values(path: Path, key: str, section: str = "Service") -> list[str]:
    return [v for s, k, v in settings(path) if s == section and k == key]


def is_true(path: Path, key: str) -> bool:
    found = values(path, key)
    return bool(found) and found[-1].lower() in _TRUE


def environment(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in values(path, "Environment"):
        for item in shlex.split(value):
            name, _, val = item.partition("=")
            env[name] = val
    return env


def bounding_set_drops(path: Path, all_caps: frozenset[str]) -> frozenset[str]:
    """What ``CapabilityBoundingSet=`` lines remove, with systemd's merge rules."""
    kept: set[str] | None = None  # None: not restricted yet
    for value in values(path, "CapabilityBoundingSet"):
        if not value:
            kept = set()
            continue
        invert = value.startswith("~")
        caps = set(re.split(r"\s+", value.lstrip("~").strip()))
        if invert:
            kept = (set(all_caps) if kept is None else kept) - caps
        else:
            kept = caps if kept is None else kept | caps
    return frozenset() if kept is None else frozenset(all_caps - kept)


def implied_drops(path: Path) -> frozenset[str]:
    dropped: set[str] = set()
    for key, caps in IMPLIED_DROPS.items():
        if is_true(path, key):
            dropped |= caps
    return frozenset(dropped)


def setpriv_drop(caps: frozenset[str]) -> list[str]:
    """``setpriv`` arguments that remove ``caps`` from the bounding set before exec."""
    spec = ",".join("-" + c.removeprefix("CAP_").lower() for c in sorted(caps))
    return ["setpriv", "--bounding-set", spec, "--"]
