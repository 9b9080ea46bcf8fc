"""The human-readable table for ``check`` and ``status``."""

from __future__ import annotations

import os
import re
import shutil
import textwrap
from collections.abc import Mapping
from typing import Any, TextIO

_COLOURS = {
    "pass": "\033[32m",
    "skip": "\033[2m",
    "warn": "\033[33m",
    "error": "\033[35m",
    "fail": "\033[31;1m",
}
_RESET = "\033[0m"


# Terminal escape sequences (CSI, OSC, other ESC sequences), then single control characters:
# C0, DEL, C1, and the bidi overrides that reorder what a reader sees.
_ESCAPE_RE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: escape sequences removed, whitespace controls made
    spaces, any other control character shown as U+FFFD (it came from a peer)."""
    text = _ESCAPE_RE.sub("", text)
    return _CONTROL_RE.sub(lambda m: " " if m.group() in "\t\n\r" else "\ufffd", text)


def use_colour(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Colour only on a terminal that is not ``TERM=dumb``, and never when NO_COLOR is set
    (no-color.org)."""
    env = os.environ if environ is None else environ
    if "NO_COLOR" in env and env["NO_COLOR"] != "":
        return False
    if env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def render_table(report: Mapping[str, Any], colour: bool = False, width: int | None = None) -> str:
    """Check, status and summary per row; the remediation under each warn/fail/error."""
    width = width or min(shutil.get_terminal_size((100, 24)).columns, 120)
    # Everything here may come from a peer (a daemon's /status, a collector's answer).
    checks = [
        {k: printable(v) if isinstance(v, str) else v for k, v in c.items()}
        for c in report.get("checks", [])
    ]
    name_w = max([len("CHECK")] + [len(str(c["name"])) for c in checks])
    status_w = len("STATUS")  # wider than any status word, so the header lines up
    indent = " " * (name_w + status_w + 4)
    summary_w = max(width - len(indent), 30)

    def paint(status: str, text: str) -> str:
        return f"{_COLOURS.get(status, '')}{text}{_RESET}" if colour else text

    agent = report.get("agent")
    agent = agent if isinstance(agent, dict) else {}
    title = (
        f"acme-preflight {agent.get('version', '')} on {agent.get('hostname', '?')} "
        f"({agent.get('host_id', '?')}) at {report.get('finished_at', '')}"
    )
    # wrapped at spaces only: the timestamp stays in one piece on a narrow terminal
    lines = textwrap.wrap(printable(title), width, break_on_hyphens=False, break_long_words=False)
    lines += ["", f"{'CHECK':<{name_w}}  {'STATUS':<{status_w}}  SUMMARY"]
    for c in checks:
        status = str(c["status"])
        summary = textwrap.wrap(
            str(c["summary"]), summary_w, break_on_hyphens=False, break_long_words=False
        ) or [""]
        lines.append(
            f"{c['name']:<{name_w}}  {paint(status, status.upper()):<{status_w}}  {summary[0]}"
            if not colour
            else f"{c['name']:<{name_w}}  {paint(status, f'{status.upper():<{status_w}}')}"
            f"  {summary[0]}"
        )
        lines.extend(indent + s for s in summary[1:])
        remediation = str(c.get("remediation") or "")
        if status in ("warn", "fail", "error") and remediation:
            wrapped = textwrap.wrap(
                "-> " + remediation,
                summary_w,
                subsequent_indent="   ",
                break_on_hyphens=False,
                break_long_words=False,
            )
            lines.extend(indent + s for s in wrapped)
    overall = printable(str(report.get("status", "")))
    lines += ["", f"Overall: {paint(overall, overall.upper())}"]
    return "\n".join(lines) + "\n"
