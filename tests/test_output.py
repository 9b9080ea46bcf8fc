"""The human-readable table."""

from __future__ import annotations

from typing import Any

from agent.output import render_table


def report(*checks: dict[str, Any], status: str = "warn") -> dict[str, Any]:
    return {
        "agent": {"version": "0.1.0", "hostname": "web", "host_id": "hid"},
        "finished_at": "2026-11-27T00:00:01.250Z",
        "status": status,
        "checks": list(checks),
    }


def row(name: str, status: str, summary: str, remediation: str = "") -> dict[str, Any]:
    return {"name": name, "status": status, "summary": summary, "remediation": remediation}


def test_header_names_the_host() -> None:
    out = render_table(report(row("privileges", "pass", "ok")), width=100)
    assert out.splitlines()[0] == "acme-preflight 0.1.0 on web (hid) at 2026-11-27T00:00:01.250Z"


def test_columns_line_up() -> None:
    out = render_table(
        report(
            row("privileges", "pass", "real root"),
            row("clock_skew", "error", "could not run"),
            row("fqdn_resolution", "warn", "one name resolves elsewhere"),
        ),
        width=100,
    )
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("CHECK"))
    col = header.index("SUMMARY")
    st = header.index("STATUS")
    for line in lines[lines.index(header) + 1 : lines.index(header) + 4]:
        assert line[st : st + 5].strip() in ("PASS", "ERROR", "WARN")
        assert line[col - 1] == " " and line[col] != " "


def test_remediation_only_for_problems() -> None:
    out = render_table(
        report(
            row("a", "pass", "fine", "never shown for pass"),
            row("b", "skip", "skipped", "never shown for skip"),
            row("c", "warn", "hmm", "fix c"),
            row("d", "fail", "broken", "fix d"),
            row("e", "error", "crashed", "fix e"),
            row("f", "fail", "broken, nothing to suggest"),
        ),
        width=100,
    )
    assert "never shown" not in out
    for name in "cde":
        assert f"-> fix {name}" in out
    assert out.count("->") == 3


def test_long_text_wraps_under_its_column_without_splitting_words() -> None:
    long = "word-with-hyphens " * 20
    out = render_table(report(row("x", "warn", long, long)), width=60)
    lines = out.splitlines()
    assert all(len(line) <= 60 for line in lines[1:])
    body = [line for line in lines if line.startswith(" ")]
    assert len(body) > 4
    indent = len(body[0]) - len(body[0].lstrip())
    assert indent == len("CHECK") + 2 + len("STATUS") + 2
    # every hyphenated word survives whole, in the summary and the remediation
    tokens = [w for line in lines[3:] for w in line.split() if "with" in w]
    assert tokens == ["word-with-hyphens"] * 40


def test_overall_line_and_colour() -> None:
    plain = render_table(report(row("x", "fail", "no"), status="fail"), width=80)
    assert plain.endswith("\nOverall: FAIL\n")
    assert "\x1b" not in plain
    coloured = render_table(report(row("x", "fail", "no"), status="fail"), colour=True, width=80)
    assert "\x1b[31;1mFAIL  \x1b[0m" in coloured
    assert "Overall: \x1b[31;1mFAIL\x1b[0m" in coloured


def test_empty_report() -> None:
    out = render_table(report(status="skip"), width=80)
    assert "CHECK" in out and out.endswith("Overall: SKIP\n")
