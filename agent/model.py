"""Result and report types shared by the checks, the runner, the CLI and the daemon."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent import compat


class Status(compat.StrEnum):
    PASS = "pass"
    SKIP = "skip"
    WARN = "warn"
    ERROR = "error"
    FAIL = "fail"

    @property
    def severity(self) -> int:
        """Order used for a report's status: pass < skip < warn < error < fail."""
        return _SEVERITY[self]

    @property
    def exit_code(self) -> int:
        """Nagios-style plugin exit code for this status."""
        return _EXIT_CODES[self]

    @property
    def code(self) -> int:
        """Numeric code for metrics: 0 pass, 1 warn, 2 fail, 3 error, 4 skip (Nagios-like)."""
        return _METRIC_CODES[self]


_SEVERITY = {Status.PASS: 0, Status.SKIP: 1, Status.WARN: 2, Status.ERROR: 3, Status.FAIL: 4}
_EXIT_CODES = {Status.PASS: 0, Status.SKIP: 0, Status.WARN: 1, Status.FAIL: 2, Status.ERROR: 3}
_METRIC_CODES = {Status.PASS: 0, Status.WARN: 1, Status.FAIL: 2, Status.ERROR: 3, Status.SKIP: 4}


def worst(statuses: list[Status]) -> Status:
    """The most severe status; an empty list is a skip (nothing was checked)."""
    return max(statuses, key=lambda s: s.severity, default=Status.SKIP)


@dataclass(frozen=True)
class Outcome:
    """What a check function returns; the runner adds the name and timing."""

    status: Status
    summary: str
    reason: str
    remediation: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    summary: str
    reason: str
    remediation: str
    duration_ms: float
    details: dict[str, Any]

    @classmethod
    def from_outcome(cls, name: str, outcome: Outcome, duration_ms: float) -> CheckResult:
        return cls(
            name=name,
            status=outcome.status,
            summary=outcome.summary,
            reason=outcome.reason,
            remediation=outcome.remediation,
            duration_ms=round(duration_ms, 3),
            details=outcome.details,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "summary": self.summary,
            "reason": self.reason,
            "remediation": self.remediation,
            "duration_ms": self.duration_ms,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        return cls(
            name=str(data["name"]),
            status=Status(data["status"]),
            summary=str(data["summary"]),
            reason=str(data["reason"]),
            remediation=str(data.get("remediation", "")),
            duration_ms=float(data["duration_ms"]),
            details=dict(data.get("details", {})),
        )


@dataclass(frozen=True)
class AgentIdentity:
    host_id: str
    hostname: str
    fqdn: str
    version: str

    def to_dict(self) -> dict[str, str]:
        return {
            "host_id": self.host_id,
            "hostname": self.hostname,
            "fqdn": self.fqdn,
            "version": self.version,
        }


SCHEMA_ID = "acme-preflight.report/1"


@dataclass(frozen=True)
class Report:
    report_id: str
    agent: AgentIdentity
    started_at: str
    finished_at: str
    checks: tuple[CheckResult, ...]
    interval_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> Status:
        return worst([c.status for c in self.checks])

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema": SCHEMA_ID,
            "report_id": self.report_id,
            "agent": self.agent.to_dict(),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "status": self.status.value,
            "checks": [c.to_dict() for c in self.checks],
        }
        if self.interval_s is not None:
            data["interval_s"] = self.interval_s
        data.update(self.extra)
        return data
