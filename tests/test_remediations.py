"""Every remediation is a sentence: it starts with a capital letter (or a symbol), never lowercase.

Three views cover them: the one reason table (``agent.checks.reason_table()``, every check's
``REASONS``), where a template may open with a field only if it is a sentence-start field
(``{Resolver}``, ``{Proxy}``); the shared network sentences as the checks fill them in, for
every reason, with and without a proxy and resolver details; and each check's literal
remediations found in its source (those built outside the table).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from agent.checks import fqdn_resolution, reason_table
from agent.net import diagnosis
from agent.net.dns import DnsResult, Nameservers
from agent.net.probe import HttpsProbe
from agent.net.proxy import ProxyChoice

CHECKS = Path(fqdn_resolution.__file__).parent


def _starts_as_a_sentence(text: str) -> bool:
    return bool(text) and not text[0].islower()


def test_every_remediation_in_the_reason_table_starts_a_sentence() -> None:
    table = reason_table()
    entries = [(c, r, text) for c, reasons in table.items() for r, text in reasons.items()]
    assert len(entries) >= 40
    bad = []
    for check, reason, text in entries:
        if not text:
            continue  # "ok" and the like: no remediation
        field = re.match(r"\{(\w+)\}", text)
        if field is not None:
            if not field.group(1)[0].isupper():
                bad.append((check, reason, text[:60]))
        elif not _starts_as_a_sentence(text):
            bad.append((check, reason, text[:60]))
    assert bad == []


def _probes() -> list[HttpsProbe]:
    servers = Nameservers((("127.0.0.53", 53),), "/etc/resolv.conf")
    dns = DnsResult("acme.digicert.com", (), servers, 1.0)
    return [
        HttpsProbe("acme.digicert.com", 443, "/", ProxyChoice(None, "none")),
        HttpsProbe(
            "acme.digicert.com",
            443,
            "/",
            ProxyChoice("http://user:pw@proxy.example:3128", "config"),
            dns=dns,
        ),
    ]


@pytest.mark.parametrize("reason", diagnosis.reasons())
def test_network_remediations_are_sentences_once_filled_in(reason: str) -> None:
    for probe in _probes():
        text = diagnosis.remediation(reason, probe)
        assert _starts_as_a_sentence(text), (reason, text)
        assert "pw@" not in text


def _literal_remediations() -> list[tuple[str, int, str]]:
    """(file, line, text) of each remediation written as a literal in an ``Outcome(...)``."""
    found = []
    for path in sorted(CHECKS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Outcome"):
                continue
            arg = node.args[3] if len(node.args) > 3 else None
            for kw in node.keywords:
                if kw.arg == "remediation":
                    arg = kw.value
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value:
                found.append((path.name, node.lineno, arg.value))
            elif isinstance(arg, ast.JoinedStr) and arg.values:
                first = arg.values[0]
                # an f-string must open with literal text: a value may start lowercase
                text = first.value if isinstance(first, ast.Constant) else "{" + ast.unparse(first)
                found.append((path.name, node.lineno, str(text)))
    return found


def test_check_literal_remediations_are_sentences() -> None:
    found = _literal_remediations()
    assert found  # the scan still sees the checks' Outcome(...) calls
    bad = [(f, line, text) for f, line, text in found if not _starts_as_a_sentence(text)]
    assert bad == []
