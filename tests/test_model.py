"""Statuses, their order and exit codes; results and reports as data."""

from __future__ import annotations

import itertools

import pytest

from agent.model import (
    SCHEMA_ID,
    AgentIdentity,
    CheckResult,
    Outcome,
    Report,
    Status,
    worst,
)
from tests.clirun import assert_valid_report

ORDER = [Status.PASS, Status.SKIP, Status.WARN, Status.ERROR, Status.FAIL]


def test_severity_order() -> None:
    assert sorted(Status, key=lambda s: s.severity) == ORDER


@pytest.mark.parametrize(
    ("status", "code"),
    [(Status.PASS, 0), (Status.SKIP, 0), (Status.WARN, 1), (Status.FAIL, 2), (Status.ERROR, 3)],
)
def test_nagios_exit_codes(status: Status, code: int) -> None:
    assert status.exit_code == code


def test_metric_codes_are_distinct() -> None:
    assert len({s.code for s in Status}) == len(Status)
    assert (Status.PASS.code, Status.WARN.code, Status.FAIL.code) == (0, 1, 2)


@pytest.mark.parametrize("size", [1, 2, 3])
def test_worst_is_the_most_severe(size: int) -> None:
    for combo in itertools.product(ORDER, repeat=size):
        assert worst(list(combo)) == max(combo, key=ORDER.index)


def test_worst_examples() -> None:
    assert worst([Status.PASS, Status.SKIP]) is Status.SKIP
    assert worst([Status.WARN, Status.ERROR]) is Status.ERROR
    assert worst([Status.ERROR, Status.FAIL]) is Status.FAIL
    # nothing checked is not a pass
    assert worst([]) is Status.SKIP


def test_statuses_are_their_strings() -> None:
    assert [s.value for s in ORDER] == ["pass", "skip", "warn", "error", "fail"]
    assert Status("warn") is Status.WARN


def result(name: str, status: Status) -> CheckResult:
    return CheckResult.from_outcome(
        name, Outcome(status, f"{name} summary", "ok", "do this", {"n": 1}), 12.34567
    )


def test_result_round_trip() -> None:
    r = result("privileges", Status.WARN)
    assert r.duration_ms == 12.346
    assert CheckResult.from_dict(r.to_dict()) == r
    assert r.to_dict() == {
        "name": "privileges",
        "status": "warn",
        "summary": "privileges summary",
        "reason": "ok",
        "remediation": "do this",
        "duration_ms": 12.346,
        "details": {"n": 1},
    }


def make_report(*statuses: Status, **kwargs: object) -> Report:
    return Report(
        report_id="6f1c2a4e-8b7d-4c3e-9a1b-2c3d4e5f6a7b",
        agent=AgentIdentity("hid", "web", "web.example.test", "0.1.0"),
        started_at="2026-11-27T00:00:00.000Z",
        finished_at="2026-11-27T00:00:01.250Z",
        checks=tuple(result(f"c{i}", s) for i, s in enumerate(statuses)),
        **kwargs,  # type: ignore[arg-type]
    )


def test_report_status_is_the_worst_check() -> None:
    report = make_report(Status.PASS, Status.ERROR, Status.WARN)
    assert report.status is Status.ERROR
    data = report.to_dict()
    assert data["status"] == "error"
    assert data["schema"] == SCHEMA_ID == "acme-preflight.report/1"
    assert_valid_report(data)


def test_report_extras_validate() -> None:
    data = make_report(Status.PASS, interval_s=300.0, extra={"dropped_reports": 3}).to_dict()
    assert (data["interval_s"], data["dropped_reports"]) == (300.0, 3)
    assert_valid_report(data)


def test_an_empty_report_is_valid() -> None:
    data = make_report().to_dict()
    assert data["status"] == "skip"
    assert_valid_report(data)
