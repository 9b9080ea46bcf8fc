"""Building reports: identity, ids and timestamps around the check results."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from agent import __version__, compat
from agent.config import Config
from agent.model import AgentIdentity, CheckResult, Report


def utc_now() -> str:
    """RFC 3339 compat.UTC with millisecond precision, e.g. ``2026-11-27T00:43:13.123Z``."""
    return datetime.now(compat.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def host_id(config: Config, machine_id: Path = Path("/etc/machine-id")) -> str:
    """``[agent] host_id``, else /etc/machine-id, else the hostname."""
    if config.agent.host_id:
        return config.agent.host_id
    try:
        text = machine_id.read_text("ascii").strip()
        if text and len(text) <= 255:
            return text
    except (OSError, UnicodeDecodeError):
        pass
    return socket.gethostname() or "unknown"


def identity(config: Config, machine_id: Path = Path("/etc/machine-id")) -> AgentIdentity:
    hostname = socket.gethostname()
    try:
        fqdn = socket.getfqdn()
    except OSError:
        fqdn = hostname
    return AgentIdentity(
        host_id=host_id(config, machine_id),
        hostname=hostname,
        fqdn=fqdn,
        version=__version__,
    )


def build_report(
    config: Config,
    agent: AgentIdentity,
    results: Sequence[CheckResult],
    started_at: str,
    finished_at: str | None = None,
) -> Report:
    return Report(
        report_id=str(uuid.uuid4()),
        agent=agent,
        started_at=started_at,
        finished_at=finished_at or utc_now(),
        checks=tuple(results),
        interval_s=config.agent.interval,
    )
