"""What every check receives: the config and the system paths it reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agent.config import Config

# Share of [agent] timeout a check spends on I/O (see CheckContext.budget).
BUDGET_SHARE = 0.85


@dataclass(frozen=True)
class SystemPaths:
    """Files a check reads; tests point these at fixture trees."""

    proc: Path = Path("/proc")
    sys: Path = Path("/sys")
    hosts: Path = Path("/etc/hosts")
    host_conf: Path = Path("/etc/host.conf")
    resolv_conf: Path = Path("/etc/resolv.conf")
    machine_id: Path = Path("/etc/machine-id")


@dataclass(frozen=True)
class CheckContext:
    """The uniform argument of every check: ``async def run(ctx) -> Outcome``.

    ``timeout`` is the check's whole budget; the runner enforces it, and checks
    that talk to several targets split it so one hung target cannot hide the rest.
    """

    config: Config
    paths: SystemPaths = field(default_factory=SystemPaths)

    @property
    def timeout(self) -> float:
        return self.config.agent.timeout

    @property
    def timeout_key(self) -> str:
        """The setting ``timeout`` comes from, for the runner's check_timeout remediation."""
        return "[agent] timeout"

    def secrets(self) -> tuple[str, ...]:
        """Strings the runner scrubs from every result."""
        return self.config.secrets()

    @property
    def budget(self) -> float:
        """Seconds a check may spend waiting on the network.

        The rest of the timeout covers closing what is still open and assembling the
        result, so a hung target shows as that target's timeout, not ``check_timeout``.
        """
        return self.config.agent.timeout * BUDGET_SHARE
