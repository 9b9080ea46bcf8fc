"""The report's JSON Schema, shipped inside the package."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

REPORT_SCHEMA_FILE = "report.schema.json"


def report_schema() -> dict[str, Any]:
    """Load the report JSON Schema (draft 2020-12)."""
    text = resources.files(__package__).joinpath(REPORT_SCHEMA_FILE).read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data
