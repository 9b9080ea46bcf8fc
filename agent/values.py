"""Typed value parsers for TOML config files (the agent's and the collector's).

Each takes the raw TOML value and returns the typed value or raises ``ValueError`` with a
message that the loader prefixes with the key, e.g. ``[agent] timeout: expected ...``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "a list",
    dict: "a table",
}


def type_name(value: object) -> str:
    """How a TOML value's type reads in an error message."""
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type_name(value)}")
    return value


def nonempty_string(value: object) -> str:
    text = string(value).strip()
    if not text:
        raise ValueError("must not be empty")
    return text


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {type_name(value)}")
    return value


def path(value: object) -> Path:
    return Path(nonempty_string(value))


def int_range(lo: int, hi: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        # bool is an int subclass: `true` must not read as 1
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {type_name(value)}")
        if not lo <= value <= hi:
            raise ValueError(f"{value} is out of range {lo}..{hi}")
        return value

    return parse


def number_range(lo: float, hi: float) -> Callable[[object], float]:
    def parse(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {type_name(value)}")
        if not lo <= float(value) <= hi:
            raise ValueError(f"{value} is out of range {lo:g}..{hi:g}")
        return float(value)

    return parse


def choice(*choices: str) -> Callable[[object], str]:
    """One of ``choices``, case-insensitive, returned in lower case."""

    def parse(value: object) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return value.lower()

    return parse


def str_list(
    item: Callable[[object], str], allow_empty: bool = True
) -> Callable[[object], tuple[str, ...]]:
    def parse(value: object) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise ValueError(f"expected a list of strings, got {type_name(value)}")
        out = []
        for i, v in enumerate(value):
            try:
                out.append(item(v))
            except ValueError as e:
                raise ValueError(f"item {i + 1}: {e}") from None
        if not allow_empty and not out:
            raise ValueError("must list at least one entry")
        return tuple(out)

    return parse
