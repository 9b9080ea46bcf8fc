"""The hand-written report validator against the real JSON Schema."""

from __future__ import annotations

import copy
import json
import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, ValidationError, validators

from agent.schema import report_schema
from collector.validate import ReportError, parse_json, validate
from tests.collectorutil import report


def _ecma_pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    # JSON Schema patterns are ECMA-262: "$" is the end of the text. Python's re (which
    # jsonschema uses) also lets "$" match before a final newline; the collector is strict.
    if validator.is_type(instance, "string") and not re.search(
        pattern.replace("$", r"\Z"), instance
    ):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


Strict = validators.extend(Draft202012Validator, {"pattern": _ecma_pattern})
SCHEMA = report_schema()
REFERENCE = Strict(SCHEMA)


def schema_ok(doc: Any) -> bool:
    return REFERENCE.is_valid(doc)


def ours_ok(doc: Any) -> bool:
    try:
        validate(doc)
    except ReportError:
        return False
    return True


# ---------------------------------------------------------------- generated documents

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
any_json = st.recursive(
    json_leaf,
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3)
    ),
    max_leaves=6,
)
STATUS = st.sampled_from(["pass", "skip", "warn", "error", "fail"])
IDENT = st.from_regex(r"\A[a-z][a-z0-9_]{0,63}\Z") | st.sampled_from(
    ["", "A", "a" * 64, "a" * 65, "1x", "ok\n", "ok-no"]
)
GOOD_TIMESTAMP = st.from_regex(
    r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,4})?(Z|\+00:00)\Z"
)
TIMESTAMP = GOOD_TIMESTAMP | st.sampled_from(
    ["2026-01-01T00:00:00Z\n", "2026-01-01 00:00:00Z", "2026-01-01T00:00:00+01:00"]
)
UUID4 = st.uuids(version=4).map(str) | st.sampled_from(
    ["", "0" * 36, "00000000-0000-4000-8000-000000000000\n", "00000000-0000-1000-8000-000000000000"]
)
NUMBER = (
    st.integers(-5, 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0, 0.0, -0.0, 1.0, True, False, "1"])
)


def bounded_text(lo: int, hi: int) -> st.SearchStrategy[str]:
    """Text around a length limit: just inside and just outside it."""
    return st.text(max_size=4).filter(lambda t: len(t) >= lo) | st.sampled_from(
        ["x" * hi, "x" * (hi + 1)] + ([""] if lo else [])
    )


GOOD_IDENT = st.from_regex(r"\A[a-z][a-z0-9_]{0,63}\Z")
GOOD_NUMBER = st.integers(0, 10**20) | st.floats(0, 1e300)


def reports(edge: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Valid reports; with ``edge`` the limits are also crossed (length max+1, min-1, ...)."""

    def text(lo: int, hi: int) -> st.SearchStrategy[str]:
        inside = st.text(min_size=lo, max_size=6) | st.just("y" * hi)
        outside = st.just("y" * (hi + 1)) | (st.just("") if lo else st.nothing())
        return inside | outside if edge else inside

    def ident() -> st.SearchStrategy[str]:
        return GOOD_IDENT | (IDENT if edge else st.nothing())

    def number(strict_positive: bool) -> st.SearchStrategy[Any]:
        good: st.SearchStrategy[Any] = (
            st.integers(1, 10**6) | st.floats(1e-9, 1e9) if strict_positive else GOOD_NUMBER
        )
        return good | (NUMBER if edge else st.nothing())

    check = st.fixed_dictionaries(
        {
            "name": ident(),
            "status": STATUS,
            "summary": text(0, 2000),
            "reason": ident(),
            "remediation": text(0, 4000),
            "duration_ms": number(False),
            "details": st.dictionaries(st.text(max_size=4), any_json, max_size=3),
        }
    )
    return st.fixed_dictionaries(
        {
            "schema": st.just("acme-preflight.report/1"),
            "report_id": st.uuids(version=4).map(str) | (UUID4 if edge else st.nothing()),
            "agent": st.fixed_dictionaries(
                {
                    "host_id": text(1, 255),
                    "hostname": text(0, 255),
                    "fqdn": text(0, 255),
                    "version": text(1, 64),
                }
            ),
            "started_at": GOOD_TIMESTAMP | (TIMESTAMP if edge else st.nothing()),
            "finished_at": st.just("2026-11-27T00:43:14.456Z"),
            "status": STATUS,
            "checks": st.lists(check, max_size=4),
        },
        optional={
            "interval_s": number(True),
            "dropped_reports": st.integers(0, 10**9)
            | st.just(2.0)
            | (NUMBER if edge else st.nothing()),
        },
    )


GOOD_REPORT = reports(edge=False)
EDGE_REPORT = reports(edge=True)
# Values a broken or hostile agent could put anywhere.
BAD_VALUE = (
    any_json
    | IDENT
    | TIMESTAMP
    | UUID4
    | NUMBER
    | bounded_text(1, 64)
    | bounded_text(0, 255)
    | st.just("x" * 2001)
    | st.just("x" * 4001)
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k)) if k != "details" else [(*prefix, k)]
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def near_valid(draw: st.DrawFn) -> Any:
    """A report at or across the limits with 0-2 mutations: a value replaced, a key removed
    or added."""
    doc = draw(GOOD_REPORT | EDGE_REPORT)
    for _ in range(draw(st.integers(0, 2))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = doc
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(BAD_VALUE)
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(json_leaf)
    if draw(st.integers(0, 30)) == 0:
        return draw(any_json)  # not even an object
    return doc


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(near_valid())
def test_agrees_with_the_json_schema(doc: Any) -> None:
    doc = json.loads(json.dumps(doc))  # as the collector sees it
    expected = schema_ok(doc)
    event("valid" if expected else "invalid")
    assert ours_ok(doc) == expected, (
        "both should accept it" if expected else next(REFERENCE.iter_errors(doc)).message
    )


@settings(max_examples=150, deadline=None)
@given(GOOD_REPORT)
def test_generated_valid_reports_are_valid(doc: Any) -> None:
    doc = json.loads(json.dumps(doc))
    assert schema_ok(doc)
    assert ours_ok(doc)


def test_the_too_many_checks_limit_agrees() -> None:
    r = report()
    r["checks"] = [r["checks"][0]] * 64
    assert ours_ok(r) and schema_ok(r)
    r["checks"].append(r["checks"][0])
    assert not ours_ok(r) and not schema_ok(r)


def test_the_test_report_is_valid() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert schema_ok(report()) and ours_ok(report())


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("agent",), "x", "agent"),
        (("agent", "version"), "", "agent.version"),
        (("agent", "hostname"), 5, "agent.hostname"),
        (("checks",), {}, "checks"),
        (("checks", 1), [], "checks[1]"),
        (("checks", 3, "duration_ms"), -1, "checks[3].duration_ms"),
        (("checks", 3, "duration_ms"), True, "checks[3].duration_ms"),
        (("checks", 0, "details"), [], "checks[0].details"),
        (("checks", 0, "reason"), "Bad Reason", "checks[0].reason"),
        # each way out of the validator's fast path for checks
        (("checks", 2, "name"), "", "checks[2].name"),
        (("checks", 2, "status"), "ok", "checks[2].status"),
        (("checks", 2, "summary"), "s" * 2001, "checks[2].summary"),
        (("checks", 2, "summary"), None, "checks[2].summary"),
        (("checks", 2, "remediation"), "r" * 4001, "checks[2].remediation"),
        (("checks", 2, "duration_ms"), "1", "checks[2].duration_ms"),
        (("checks", 2, "extra"), 1, "checks[2].extra"),
        (("dropped_reports",), 1.5, "dropped_reports"),
        (("dropped_reports",), -1, "dropped_reports"),
        (("status",), "PASS", "status"),
        (("finished_at",), "2026-01-01T00:00:00Z\n", "finished_at"),
    ],
)
def test_error_names_the_field(path: tuple[Any, ...], value: Any, field: str) -> None:
    r = copy.deepcopy(report())
    target: Any = r
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    with pytest.raises(ReportError) as info:
        validate(r)
    assert info.value.field == field
    assert str(info.value).startswith(field + ": ")
    assert not schema_ok(r)


def test_check_fields_at_their_limits_are_valid() -> None:
    r = report()
    c = r["checks"][2]
    c.update(summary="s" * 2000, remediation="r" * 4000, duration_ms=0, name="a" * 64)
    r["checks"][3]["duration_ms"] = 0.0
    assert ours_ok(r) and schema_ok(r)
    c["duration_ms"] = float("nan")  # never from parse_json, but not a number either
    with pytest.raises(ReportError) as info:
        validate(r)
    assert info.value.field == "checks[2].duration_ms"
    c["duration_ms"] = 1
    del c["details"]
    with pytest.raises(ReportError) as info:
        validate(r)
    assert info.value.field == "checks[2].details"


def test_integral_float_counts_as_integer_like_json_schema() -> None:
    r = report()
    r["dropped_reports"] = 3.0
    assert ours_ok(r) and schema_ok(r)


@pytest.mark.parametrize("body", [b"NaN", b'{"a": -Infinity}', b"[1,", b"\xff"])
def test_parse_json_is_strict(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_json(body)


# ---------------------------------------------------------------- numbers out of range


def _with(path: str, raw: str) -> bytes:
    """A valid report with the JSON number text ``raw`` at ``path`` (a placeholder swapped)."""
    r = report()
    target: Any = r
    *parents, last = path.split(".")
    for p in parents:
        target = target["checks"][int(p[7:-1])] if p.startswith("checks[") else target[p]
    target[last] = "@NUMBER@"
    return json.dumps(r).replace('"@NUMBER@"', raw).encode()


@pytest.mark.parametrize(
    ("path", "raw", "problem"),
    [
        ("interval_s", "1e999", "finite"),
        ("interval_s", "-1E+400", "finite"),
        ("interval_s", "1" * 400 + ".5", "finite"),
        ("dropped_reports", "9" * 400, "integer out of range"),
        ("dropped_reports", "9" * 5000, "integer out of range"),  # past int()'s 4300 digits
        ("dropped_reports", str(2**63), "integer out of range"),
        ("checks[0].duration_ms", "1e309", "finite"),
        ("checks[3].details.n", str(-(2**63) - 1), "integer out of range"),
    ],
)
def test_out_of_range_numbers_are_rejected_naming_the_field(
    path: str, raw: str, problem: str
) -> None:
    with pytest.raises(ReportError) as e:
        parse_json(_with(path, raw))
    assert e.value.field == path
    assert problem in e.value.problem
    assert len(str(e.value)) < 120  # a 5000-digit number is not quoted back


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (str(2**63 - 1), 2**63 - 1),
        (str(-(2**63)), -(2**63)),
        ("1.7976931348623157e308", 1.7976931348623157e308),
        ("1e-999", 0.0),  # underflow is a finite zero
        ("0.000000000000000000001", 1e-21),
        ("123456789012345678", 123456789012345678),
    ],
)
def test_numbers_at_the_bounds_are_kept(raw: str, value: float) -> None:
    doc = parse_json(_with("checks[1].details.n", raw))
    assert doc["checks"][1]["details"]["n"] == value
    assert validate(doc) is doc


def test_long_digit_runs_in_strings_are_not_numbers() -> None:
    r = report()
    r["checks"][0]["details"] = {"fingerprint": "1" * 64, "e": "1e999"}
    assert parse_json(json.dumps(r).encode()) == r


def test_a_long_key_is_cut_in_the_field_name() -> None:
    body = b'{"details": {"%s": 1e999}}' % (b"k" * 10_000)
    with pytest.raises(ReportError) as e:
        parse_json(body)
    assert e.value.field.startswith("details.kkk") and len(e.value.field) <= 203


NUMBER_TEXT = (
    st.integers().map(str)
    | st.floats(allow_nan=False, allow_infinity=False).map(repr)
    | st.from_regex(r"-?[1-9][0-9]{0,30}(\.[0-9]{1,30})?[eE][-+]?[0-9]{1,4}", fullmatch=True)
)


@given(NUMBER_TEXT, st.sampled_from(["interval_s", "n"]))
@settings(max_examples=300)
def test_every_parsed_number_round_trips_as_strict_json(raw: str, key: str) -> None:
    try:
        doc = parse_json(b'{"%s": %s}' % (key.encode(), raw.encode()))
    except ReportError as e:
        assert e.field == key
        big = abs(float(raw)) >= 2**63 if "e" not in raw.lower() and "." not in raw else True
        assert big  # only an integer past 64 bits or a float past the double's range
        return
    # what is accepted can be written back as strict JSON (no Infinity) and bound by SQLite
    json.dumps(doc, allow_nan=False)
    sqlite3.connect(":memory:").execute("SELECT ?", (doc[key],))
