"""A fast hand-written validator for ``agent/schema/report.schema.json``.

The JSON Schema stays the contract; this code mirrors it because a generic validator costs
more per report than the whole rest of the ingest path. tests/test_collector_validate.py
checks the two agree on generated documents. Patterns follow ECMA-262 (``$`` is the end of
the text, not "before a final newline" as in Python's ``re``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

SCHEMA_ID = "acme-preflight.report/1"
STATUSES = frozenset(("pass", "skip", "warn", "error", "fail"))
MAX_CHECKS = 64

_REPORT_KEYS = frozenset(
    (
        "schema",
        "report_id",
        "agent",
        "started_at",
        "finished_at",
        "status",
        "interval_s",
        "dropped_reports",
        "checks",
    )
)
_REPORT_REQUIRED = ("schema", "report_id", "agent", "started_at", "finished_at", "status", "checks")
_AGENT_KEYS = frozenset(("host_id", "hostname", "fqdn", "version"))
_CHECK_KEYS = ("name", "status", "summary", "reason", "remediation", "duration_ms", "details")
_CHECK_KEYSET = frozenset(_CHECK_KEYS)

_UUID4 = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
).fullmatch
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|\+00:00)"
).fullmatch
_IDENT = re.compile(r"[a-z][a-z0-9_]{0,63}").fullmatch

# Numbers: JSON sets no range, but everything downstream does. A float must be a finite IEEE
# double (``1e999`` parses as inf, which json.dumps then writes as ``Infinity``: not JSON), an
# integer must fit SQLite's signed 64 bits. Only a body holding a run of 19 digits or a
# 3-digit exponent can break either bound, so only such a body takes the slower checked parse.
MAX_INT = 2**63 - 1
MIN_INT = -(2**63)
_LONG_NUMBER = re.compile(rb"[0-9]{19}|[eE][-+]?[0-9]{3}").search
_MAX_FIELD = 200  # characters of a field path quoted back in an error


class ReportError(ValueError):
    """A report that breaks the schema; ``field`` is a path like ``checks[2].status``."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every report: json.loads(..., parse_constant=...) builds a new decoder and
# scanner on each call.
_DECODE = json.JSONDecoder(parse_constant=_reject_constant).decode


class _OutOfRange:
    """Stands in for a number that breaks the bounds, until its path is known."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _checked_float(text: str) -> float | _OutOfRange:
    v = float(text)
    return v if math.isfinite(v) else _OutOfRange("number too large (not a finite double)")


def _checked_int(text: str) -> int | _OutOfRange:
    # length first: int() of more than 4300 digits raises, and costs quadratic time before
    if len(text) <= 20 and MIN_INT <= (v := int(text)) <= MAX_INT:
        return v
    return _OutOfRange(f"integer out of range {MIN_INT}..{MAX_INT}")


_DECODE_CHECKED = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_checked_float, parse_int=_checked_int
).decode


def _first_out_of_range(doc: Any) -> tuple[str, _OutOfRange] | None:
    """The path (``checks[0].details.n``) of the first out-of-range number, depth first."""
    stack: list[tuple[str, Any]] = [("", doc)]
    while stack:
        path, v = stack.pop()
        if type(v) is _OutOfRange:
            return path, v
        if type(v) is dict:
            items = [(f"{path}.{k}" if path else k, x) for k, x in v.items()]
        elif type(v) is list:
            items = [(f"{path}[{i}]", x) for i, x in enumerate(v)]
        else:
            continue
        stack.extend(reversed(items))
    return None


def parse_json(body: bytes) -> Any:
    """Strict JSON (no NaN/Infinity, numbers in range); raises ValueError.

    A number out of range raises :class:`ReportError` (a ValueError) naming its field.
    """
    try:
        # as json.loads does for bytes: UTF-8, or UTF-16/32 recognised by their zero bytes
        text = body.decode(json.detect_encoding(body), "surrogatepass")
        if _LONG_NUMBER(body) is None:
            doc = _DECODE(text)
        else:
            doc = _DECODE_CHECKED(text)
            if (bad := _first_out_of_range(doc)) is not None:
                field, number = bad
                if len(field) > _MAX_FIELD:
                    field = field[:_MAX_FIELD] + "..."
                raise ReportError(field, number.problem)
    except RecursionError:
        # '[[[[...' a few thousand deep: json's C scanner gives up with RecursionError,
        # which is not a ValueError and would have been a 500.
        raise ValueError("nested too deeply") from None
    if b"\\ud" in body or b"\\uD" in body:
        # A lone surrogate escape ("\\udcff") decodes to a str that SQLite and the HTML
        # page cannot encode: it was a 503 the agent retried forever. Pairs are fine.
        try:
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a string holds a lone UTF-16 surrogate (not Unicode text)") from None
        except RecursionError:
            raise ValueError("nested too deeply") from None
    return doc


class ParamError(ValueError):
    """A query parameter that is not what the endpoint takes; ``field`` is its name."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


_DIGITS = re.compile(r"[0-9]{1,19}").fullmatch


def int_param(query: Mapping[str, str], name: str, lo: int, hi: int, default: int) -> int:
    """``?name=`` as an integer in ``lo..hi`` (ASCII digits only: no sign, space, ``_``)."""
    raw = query.get(name)
    if raw is None:
        return default
    if not _DIGITS(raw) or not lo <= (v := int(raw)) <= hi:
        raise ParamError(name, f"expected an integer {lo}..{hi}")
    return v


def _is_number(v: object) -> bool:
    return (type(v) is int or type(v) is float) and v == v  # v == v: not NaN


def _is_integer(v: object) -> bool:
    # JSON Schema: 1.0 is an integer too
    return type(v) is int or (type(v) is float and v.is_integer())


def _string(obj: dict[str, Any], key: str, path: str, lo: int, hi: int) -> str:
    v = obj[key]
    if type(v) is not str:
        raise ReportError(path, "must be a string")
    n = len(v)
    if n < lo:
        raise ReportError(path, "must not be empty" if lo == 1 else f"shorter than {lo}")
    if n > hi:
        raise ReportError(path, f"longer than {hi} characters")
    return v


def _unknown(obj: dict[str, Any], known: frozenset[str], path: str) -> None:
    for k in obj:
        if k not in known:
            raise ReportError(f"{path}{k}", "unknown field (not allowed by the schema)")


def validate(doc: Any) -> dict[str, Any]:
    """Return ``doc`` if it is a valid report, else raise :class:`ReportError`."""
    if type(doc) is not dict:
        raise ReportError("", "the report must be a JSON object")
    for k in _REPORT_REQUIRED:
        if k not in doc:
            raise ReportError(k, "required field is missing")
    # all required keys are present, so only a longer object can hold an unknown key
    if len(doc) > len(_REPORT_REQUIRED):
        _unknown(doc, _REPORT_KEYS, "")
    if type(doc["schema"]) is not str or doc["schema"] != SCHEMA_ID:
        raise ReportError("schema", f"must be {SCHEMA_ID!r}")
    rid = doc["report_id"]
    if type(rid) is not str or not _UUID4(rid):
        raise ReportError("report_id", "must be a lowercase UUID4 string")

    agent = doc["agent"]
    if type(agent) is not dict:
        raise ReportError("agent", "must be an object")
    for k in ("host_id", "hostname", "fqdn", "version"):
        if k not in agent:
            raise ReportError(f"agent.{k}", "required field is missing")
    if len(agent) > 4:
        _unknown(agent, _AGENT_KEYS, "agent.")
    _string(agent, "host_id", "agent.host_id", 1, 255)
    _string(agent, "hostname", "agent.hostname", 0, 255)
    _string(agent, "fqdn", "agent.fqdn", 0, 255)
    _string(agent, "version", "agent.version", 1, 64)

    for k in ("started_at", "finished_at"):
        v = doc[k]
        if type(v) is not str or not _TIMESTAMP(v):
            raise ReportError(k, "must be an RFC 3339 UTC timestamp like 2026-01-31T12:00:00Z")
    st = doc["status"]
    if type(st) is not str or st not in STATUSES:
        raise ReportError("status", "must be one of pass, skip, warn, error, fail")
    if "interval_s" in doc:
        v = doc["interval_s"]
        if not _is_number(v):
            raise ReportError("interval_s", "must be a number")
        if not v > 0:
            raise ReportError("interval_s", "must be greater than 0")
    if "dropped_reports" in doc:
        v = doc["dropped_reports"]
        if not _is_integer(v):
            raise ReportError("dropped_reports", "must be an integer")
        if v < 0:
            raise ReportError("dropped_reports", "must be 0 or more")

    checks = doc["checks"]
    if type(checks) is not list:
        raise ReportError("checks", "must be an array")
    if len(checks) > MAX_CHECKS:
        raise ReportError("checks", f"more than {MAX_CHECKS} checks")
    for i, c in enumerate(checks):
        if not _check_ok(c):
            _check(c, i)  # raises, naming the field
    return doc


def _check_ok(c: Any) -> bool:
    """The common case in one expression, without building field paths; never more lenient
    than :func:`_check`, which runs (and names the problem) whenever this says no."""
    if type(c) is not dict or len(c) != 7 or c.keys() != _CHECK_KEYSET:
        return False
    name, reason, status = c["name"], c["reason"], c["status"]
    summary, remediation, duration = c["summary"], c["remediation"], c["duration_ms"]
    return (
        type(name) is str
        and _IDENT(name) is not None
        and type(reason) is str
        and _IDENT(reason) is not None
        and type(status) is str
        and status in STATUSES
        and type(summary) is str
        and len(summary) <= 2000
        and type(remediation) is str
        and len(remediation) <= 4000
        and (type(duration) is int or type(duration) is float)
        and duration >= 0  # False for NaN too
        and type(c["details"]) is dict
    )


def _check(c: Any, i: int) -> None:
    p = f"checks[{i}]"
    if type(c) is not dict:
        raise ReportError(p, "must be an object")
    for k in _CHECK_KEYS:
        if k not in c:
            raise ReportError(f"{p}.{k}", "required field is missing")
    if len(c) > 7:
        _unknown(c, _CHECK_KEYSET, f"{p}.")
    for k in ("name", "reason"):
        v = c[k]
        if type(v) is not str or not _IDENT(v):
            raise ReportError(f"{p}.{k}", "must match ^[a-z][a-z0-9_]{0,63}$")
    v = c["status"]
    if type(v) is not str or v not in STATUSES:
        raise ReportError(f"{p}.status", "must be one of pass, skip, warn, error, fail")
    _string(c, "summary", f"{p}.summary", 0, 2000)
    _string(c, "remediation", f"{p}.remediation", 0, 4000)
    v = c["duration_ms"]
    if not _is_number(v):
        raise ReportError(f"{p}.duration_ms", "must be a number")
    if v < 0:
        raise ReportError(f"{p}.duration_ms", "must be 0 or more")
    if type(c["details"]) is not dict:
        raise ReportError(f"{p}.details", "must be an object")
