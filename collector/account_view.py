"""The fleet page's Account panel and each host's *issuance* verdict.

The verdict answers "can DigiCert automation issue for this host?": the host's own checks
joined with the account's (``api_key``, ``balance``, ``organizations``) and the account's
coverage of the host's web server names (the ``domains`` check lists each name the
collector passed it with the covering domain's DCV state).
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

from collector.account import Stored
from collector.fleet import iso
from collector.page import Column

# Account checks whose failure stops every order, whatever the host.
BLOCKING = ("api_key", "balance")
_SEVERITY = {"pass": 0, "skip": 1, "unknown": 1, "warn": 2, "error": 3, "fail": 4}


def e(value: object) -> str:
    return escape(str(value), quote=True)


@dataclass(frozen=True)
class Verdict:
    status: str  # pass, warn, fail, error, or "unknown" (no account report)
    reasons: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "reasons": list(self.reasons)}


def _checks(report: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if report is None:
        return {}
    return {str(c.get("name")): c for c in report.get("checks", []) if isinstance(c, dict)}


def name_states(report: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The ``domains`` check's per-name join: name -> {domain, state, dcv_until}."""
    dom = _checks(report).get("domains", {})
    details = dom.get("details")
    names = details.get("names") if isinstance(details, dict) else None
    if not isinstance(names, list):
        return {}
    return {str(n.get("name")): n for n in names if isinstance(n, dict)}


def issuance(
    status: str, stale: bool, names: list[str] | None, report: dict[str, Any] | None
) -> Verdict:
    """Worst of: the host's status, the blocking account checks, its names' coverage.

    ``names``: the host's web server names as the last account run saw them (None: the
    host is newer than that run).
    """
    found: list[tuple[str, str]] = []
    if status in ("fail", "error", "warn"):
        found.append((status, f"host checks: {status}"))
    if stale:
        found.append(("warn", "host reports are stale"))
    if report is None:
        found.append(("unknown", "no account report"))
    else:
        checks = _checks(report)
        for name in BLOCKING:
            c = checks.get(name)
            if c is not None and c.get("status") in ("fail", "error", "warn"):
                found.append((str(c["status"]), f"account {name}: {c.get('reason')}"))
        states = name_states(report)
        if names is None:
            found.append(("warn", "host not yet checked against the account"))
        for name in names or ():
            st = states.get(name)
            if st is None:
                found.append(("warn", f"{name}: not yet checked against the account"))
            elif st.get("state") == "expired":
                found.append(("fail", f"{name}: DCV of {st.get('domain')} expired"))
            elif st.get("state") in ("not_covered", "pending"):
                found.append(("warn", f"{name}: not prevalidated (DCV at order time)"))
            elif st.get("state") == "expiring":
                found.append(
                    ("warn", f"{name}: DCV of {st.get('domain')} expires {st.get('dcv_until')}")
                )
    if not found:
        return Verdict("pass", ())
    worst = max((s for s, _ in found), key=lambda s: _SEVERITY.get(s, 0))
    return Verdict(worst, tuple(r for _, r in found))


def for_host(host_id: str, status: str, stale: bool, stored: Stored | None) -> Verdict:
    if stored is None:
        return issuance(status, stale, [], None)
    names = stored.host_names.get(host_id)
    return issuance(status, stale, names if isinstance(names, list) else None, stored.report)


def column(stored: Stored | None) -> Column:
    """The grid's issuance column (collector.page.Column)."""
    return (
        "issuance",
        lambda line: verdict_badge(for_host(line.host_id, line.status, line.stale, stored)),
    )


def verdict_badge(v: Verdict) -> str:
    """The issuance cell: a badge (``ready`` / ``blocked`` / ...) and the reasons."""
    word = {"pass": "ready", "warn": "at risk", "fail": "blocked", "error": "blocked"}.get(
        v.status, "unknown"
    )
    cls = v.status if v.status in ("pass", "warn", "fail", "error") else "none"
    reasons = "".join(f"<li>{e(r)}</li>" for r in v.reasons[:6])
    more = f"<li>and {len(v.reasons) - 6} more</li>" if len(v.reasons) > 6 else ""
    items = f'<ul class="verdict">{reasons}{more}</ul>' if reasons else ""
    return f'<span class="b {cls}" data-issuance="{e(v.status)}">{e(word)}</span>{items}'


def panel(stored: Stored | None) -> str:
    """The Account panel (an escaped HTML fragment)."""
    if stored is None:
        body = '<p class="muted">The first account run has not finished yet.</p>'
        return f'<section id="account"><h2>CertCentral account</h2>{body}</section>'
    report, received_at = stored.report, stored.received_at
    status = str(report.get("status", ""))
    cls = status if status in ("pass", "skip", "warn", "error", "fail") else "none"
    when = f" &middot; checked {e(iso(received_at))}" if received_at else ""
    api = report.get("api") if isinstance(report.get("api"), dict) else {}
    rows = []
    for c in _checks(report).values():
        st = str(c.get("status", ""))
        c_cls = st if st in ("pass", "skip", "warn", "error", "fail") else "none"
        fix = str(c.get("remediation") or "")
        rows.append(
            f'<tr data-check="{e(c.get("name", ""))}">'
            f'<td data-label="check"><div class="v"><strong>{e(c.get("name", ""))}</strong></div></td>'
            f'<td data-label="status"><div class="v"><span class="b {c_cls}">{e(st)}</span></div></td>'
            f'<td data-label="summary"><div class="v">{e(c.get("summary", ""))}'
            f'<div class="muted">reason {e(c.get("reason", ""))}</div>'
            + (
                f'<div class="muted">&rarr; {e(fix)}</div>'
                if fix and st in ("warn", "fail", "error")
                else ""
            )
            + "</div></td></tr>"
        )
    return (
        '<section id="account"><h2>CertCentral account '
        f'<span class="b {cls}">{e(status)}</span></h2>'
        f'<div class="muted">{e(api.get("base_url", "") if isinstance(api, dict) else "")}{when}</div>'
        '<table id="account-checks"><thead><tr><th>check</th><th>status</th><th>summary</th></tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table></section>"
    )
