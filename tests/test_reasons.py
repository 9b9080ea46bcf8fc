"""One table of reason codes (agent.checks.reason_table), and the docs held to it.

Each docs/checks-*.md reason table must list exactly the reasons its check can give, and
the README's reason table only codes that exist (all of them where it claims no more).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent import checks
from agent.checks import outbound_https
from agent.net.diagnosis import REMEDIATIONS, reason_of
from agent.net.probe import HttpsProbe
from agent.net.proxy import ProxyChoice

REPO = Path(__file__).resolve().parent.parent
DOCS = sorted((REPO / "docs").glob("checks-*.md"))
CODE = re.compile(r"`([a-z][a-z0-9_]*)`")
TABLE = checks.reason_table()


def _check_named(line: str) -> str | None:
    found = [c for c in CODE.findall(line) if c in checks.CHECK_NAMES]
    return found[0] if len(found) == 1 else None


def documented() -> dict[str, set[str]]:
    """check -> the reason codes of its docs table(s): rows of tables headed
    ``| status | reason |``, attributed to the nearest heading naming one check."""
    out: dict[str, set[str]] = {}
    for page in DOCS:
        lines = page.read_text().splitlines()
        current: str | None = None
        in_table = False
        for line in lines:
            if line.startswith("#"):
                current = _check_named(line) or current
            if re.match(r"^\| status \| reason \|", line):
                in_table = True
                assert current is not None, f"{page.name}: a reason table under no check"
                out.setdefault(current, set())
                continue
            if in_table and not line.startswith("|"):
                in_table = False
            if in_table and not line.startswith("|---"):
                cells = [c.strip() for c in line.strip("|").split("|")]
                assert current is not None
                out[current].update(c for c in CODE.findall(cells[1]) if "*" not in c)
    return out


def test_every_check_has_reasons_and_a_docs_table() -> None:
    assert set(TABLE) == set(checks.CHECK_NAMES)
    docs = documented()
    assert set(docs) == set(checks.CHECK_NAMES), "a check without a reason table in docs/"
    for name, reasons in TABLE.items():
        assert "ok" in reasons, name
        assert all(re.fullmatch(r"[a-z][a-z0-9_]*", r) for r in reasons), name


@pytest.mark.parametrize("name", checks.CHECK_NAMES)
def test_docs_table_matches_the_code(name: str) -> None:
    listed = documented()[name] - set(checks.RUNNER_REASONS)
    code = set(TABLE[name])
    assert listed - code == set(), f"docs list reasons {name} never gives"
    assert code - listed == set(), f"reasons of {name} missing from its docs table"


def test_readme_reason_table() -> None:
    text = (REPO / "README.md").read_text()
    section = text.split("### Reason codes", 1)[1].split("\n### ", 1)[0]
    rows = [
        line for line in section.splitlines() if line.startswith("| `") or line.startswith("| any")
    ]
    seen: set[str] = set()
    for row in rows:
        head, rest = row.strip("|").split("|", 1)
        codes = {c for c in CODE.findall(rest) if "*" not in c}
        if head.strip() == "any":
            assert codes == set(checks.RUNNER_REASONS)
            continue
        [name] = CODE.findall(head)
        seen.add(name)
        known = set(TABLE[name])
        assert codes <= known, f"README lists {sorted(codes - known)} for {name}"
        if "and more" not in rest:
            assert codes == known - {"ok"}, (
                f"README misses {sorted(known - codes - {'ok'})} of {name}"
            )
    assert seen == set(checks.CHECK_NAMES)


def test_readme_check_table_lists_every_check_in_order() -> None:
    text = (REPO / "README.md").read_text()
    section = text.split("## What it checks", 1)[1].split("\n## ", 1)[0].split("###", 1)[0]
    names = [CODE.findall(line)[0] for line in section.splitlines() if line.startswith("| `")]
    assert tuple(names) == checks.CHECK_NAMES


# Error words of each primitive (agent/net/*.py): every <phase>_<word> a probe can end in
# must have a remediation.
WORDS = {
    "dns": ("nxdomain", "no_answer", "servfail", "timeout", "unreachable", "no_resolver", "error"),
    "connect": ("timeout", "refused", "unreachable", "error"),
    "proxy": (
        "dns",
        "refused",
        "unreachable",
        "timeout",
        "auth_required",
        "connect_failed",
        "unsupported",
    ),
    "tls": ("untrusted", "hostname_mismatch", "expired", "not_yet_valid", "handshake", "timeout"),
    "http": ("timeout", "protocol"),
}


def test_every_probe_failure_has_a_remediation() -> None:
    for phase, words in WORDS.items():
        for word in words:
            probe = HttpsProbe("acme.digicert.com", 443, None, ProxyChoice(None, "none"))
            probe.phase, probe.error = phase, word
            reason = reason_of(probe)
            assert reason in outbound_https.REASONS, reason
            assert REMEDIATIONS[reason].strip()


def test_remediations_are_sentences() -> None:
    for name, reasons in TABLE.items():
        for reason, text in reasons.items():
            if reason in ("ok", "disabled"):
                continue
            assert text and (text[0].isupper() or text[0] in "{"), (name, reason, text)
            assert text.rstrip().endswith("."), (name, reason, text)
