"""Lab config files for the agent: the real keys (agent/config.py) pointed at the lab."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.config import toml_value

LAB_IP = "127.0.0.2"  # plays 216.168.244.42
LAB_NAMESERVER = "127.0.0.53"
LAB_HOST_ID = "lab-host"


def lab_config_data(
    state_dir: Path,
    *,
    ip: str = LAB_IP,
    port: int = 443,
    nameserver: str = LAB_NAMESERVER,
    overrides: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> dict[str, dict[str, Any]]:
    """The lab config as data; ``overrides`` merge per section.

    A value of None deletes that key (back to the agent's default); a section set to
    None is dropped entirely.
    """
    netloc = "acme.digicert.com" if port == 443 else f"acme.digicert.com:{port}"
    data: dict[str, dict[str, Any]] = {
        "targets": {
            "ip": ip,
            "port": port,
            "acme_directory": f"https://{netloc}/v2/acme/directory/",
        },
        "dns": {"nameservers": [nameserver]},
        "agent": {
            "timeout": "1s",
            "interval": "1m",
            "host_id": LAB_HOST_ID,
            "state_dir": str(state_dir),
            "log_level": "warning",
        },
        "fqdn": {"discover": False, "nameservers": [nameserver]},
    }
    for section, values in (overrides or {}).items():
        if values is None:
            data.pop(section, None)
            continue
        merged = data.setdefault(section, {})
        for key, value in values.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
    return data


def to_toml(data: Mapping[str, Mapping[str, Any]]) -> str:
    out = []
    for section, values in data.items():
        out.append(f"[{section}]")
        out += [f"{key} = {toml_value(value)}" for key, value in values.items()]
        out.append("")
    return "\n".join(out)


def write_lab_config(
    path: Path,
    *,
    state_dir: Path | None = None,
    ip: str = LAB_IP,
    port: int = 443,
    nameserver: str = LAB_NAMESERVER,
    **overrides: Mapping[str, Any] | None,
) -> Path:
    """Write a lab config TOML to ``path`` and return it.

    ``write_lab_config(p, agent={"timeout": "0.5s"}, sensor={"host": "127.0.0.4"})``
    """
    data = lab_config_data(
        state_dir or path.parent / "state",
        ip=ip,
        port=port,
        nameserver=nameserver,
        overrides=overrides,
    )
    path.write_text(to_toml(data), encoding="utf-8")
    return path
