"""The report's JSON Schema, shipped inside the package."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

REPORT_SCHEMA_FILE = "report.schema.json"
ACCOUNT_SCHEMA_FILE = "account.schema.json"


def report_schema(name: str = REPORT_SCHEMA_FILE) -> dict[str, Any]:
    """Load the report JSON Schema (draft 2020-12); ``ACCOUNT_SCHEMA_FILE`` for account reports."""
    text = resources.files(__package__).joinpath(name).read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data
