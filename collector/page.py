"""The fleet page and the per-host page: server-rendered HTML with inline CSS, no scripts.

Every string that comes from a report goes through :func:`e` (``html.escape``), attribute
values included; URLs are built with :func:`urllib.parse.quote`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from collector.fleet import FILTERS, SORTS, HostView, iso
from collector.store import ReportRow


def e(value: object) -> str:
    return escape(str(value), quote=True)


def host_url(host_id: str) -> str:
    return "/hosts/" + quote(host_id, safe="")


CSS = """
:root{--pass:#1a7f37;--skip:#6e7781;--warn:#9a6700;--error:#8250df;--fail:#cf222e;
--bg:#f6f8fa;--fg:#1f2328;--muted:#59636e;--line:#d1d9e0}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
header{background:#fff;border-bottom:1px solid var(--line);padding:12px 20px}
h1{font-size:20px;margin:0 0 4px}
h2{font-size:17px;margin:24px 0 8px}
main{padding:12px 20px 40px;max-width:1600px}
a{color:#0969da}
.muted{color:var(--muted);font-size:13px}
.counts{display:flex;flex-wrap:wrap;gap:6px;margin:8px 0 0;padding:0;list-style:none}
.counts a{display:inline-block;padding:3px 10px;border:1px solid var(--line);border-radius:999px;
background:#fff;text-decoration:none;color:var(--fg);font-size:13px}
.counts a.on{border-color:var(--fg);font-weight:600}
form.controls{display:flex;flex-wrap:wrap;gap:8px;align-items:end;margin:12px 0}
form.controls label{display:flex;flex-direction:column;font-size:12px;color:var(--muted)}
select,button{font:inherit;padding:4px 8px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid var(--line)}
th,td{padding:6px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:#eef1f4;font-size:13px;white-space:nowrap}
td.host{min-width:220px}
td.host a{font-weight:600}
.v{min-width:0;overflow-wrap:anywhere}
details summary{white-space:nowrap}
.b{display:inline-block;min-width:44px;text-align:center;padding:1px 6px;border-radius:4px;
font-size:12px;font-weight:700;color:#fff;text-transform:uppercase;letter-spacing:.02em;
white-space:nowrap;overflow-wrap:normal}
.b.pass{background:var(--pass)}.b.skip{background:var(--skip)}.b.warn{background:var(--warn)}
.b.error{background:var(--error)}.b.fail{background:var(--fail)}
.b.stale{background:#fff;color:var(--fail);border:1px solid var(--fail)}
.b.none{background:#fff;color:var(--muted);border:1px solid var(--line)}
tr.stale td{background:#fff8f0}
.problems{margin:0;padding:0;list-style:none}
.problems li{margin:0 0 6px}
.problems .fix{color:var(--muted)}
.problems .fix::before{content:"\\2192  "}
td.problems-cell{min-width:260px;max-width:560px}
pre{white-space:pre-wrap;word-break:break-word;background:#f6f8fa;padding:8px;margin:4px 0;
font-size:12px;max-height:320px;overflow:auto}
details summary{cursor:pointer;color:#0969da;font-size:13px}
.empty{padding:24px;background:#fff;border:1px solid var(--line)}
.pager{margin:12px 0}
@media (max-width:760px){
 header,main{padding-left:10px;padding-right:10px}
 table,thead,tbody,tr,td{display:block;width:100%}
 table{border:0;background:none}
 thead{display:none}
 tr{background:#fff;border:1px solid var(--line);border-radius:6px;margin:0 0 10px;padding:6px 8px}
 tr.stale{background:#fff8f0}
 td{border:0;padding:3px 0;display:flex;gap:8px}
 td.empty-cell{display:none}
 .v{flex:1}
 td::before{content:attr(data-label);flex:0 0 118px;color:var(--muted);font-size:12px;
 padding-top:2px;word-break:break-all}
 td.problems-cell{min-width:0;display:block}
 td.problems-cell::before{display:block;margin-bottom:2px}
 td.check-cell{display:inline-flex;width:auto;margin-right:10px}
 td.check-cell .v{flex:0 0 auto}
 td.check-cell::before{flex:0 0 auto}
}
"""


def _td(label: str, content: str, cls: str = "", attrs: str = "") -> str:
    """A cell; the value is wrapped so the phone layout has exactly a label and a value."""
    c = f' class="{cls}"' if cls else ""
    return f'<td{c} data-label="{e(label)}"{attrs}><div class="v">{content}</div></td>'


def _badge(status: str) -> str:
    if status in ("pass", "skip", "warn", "error", "fail"):
        return f'<span class="b {status}">{status}</span>'
    if not status:
        return '<span class="b none" title="not in the latest report">-</span>'
    return f'<span class="b none">{e(status)}</span>'


def _doc(title: str, body: str, refresh: int | None) -> str:
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else ""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{meta}<title>{e(title)}</title><style>{CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def _ago(seconds: float) -> str:
    s = int(seconds)
    if s < 90:
        return f"{s} s ago"
    if s < 5400:
        return f"{s // 60} min ago"
    if s < 172800:
        return f"{s // 3600} h ago"
    return f"{s // 86400} d ago"


def _problems(checks: Iterable[dict[str, Any]]) -> str:
    items = []
    for c in checks:
        fix = c.get("remediation") or ""
        items.append(
            f"<li>{_badge(str(c.get('status', '')))} <strong>{e(c.get('name', ''))}</strong>: "
            f"{e(c.get('summary', ''))}"
            + (f'<div class="fix">{e(fix)}</div>' if fix else "")
            + "</li>"
        )
    return f'<ul class="problems">{"".join(items)}</ul>' if items else ""


def fleet_page(
    views: list[HostView],
    columns: list[str],
    totals: dict[str, int],
    status_filter: str,
    sort: str,
    refresh: int,
    generated: float,
) -> str:
    def link(f: str) -> str:
        q = urlencode({"status": f, "sort": sort})
        on = ' class="on"' if f == status_filter else ""
        n = sum(totals.get(s, 0) for s in ("pass", "skip", "warn", "error", "fail"))
        if f == "problems":
            label = "problems"
        elif f == "all":
            label = f"all {n}"
        else:
            label = f"{f} {totals.get(f, 0)}"
        return f'<li><a href="/?{e(q)}"{on}>{e(label)}</a></li>'

    options_f = "".join(
        f'<option value="{f}"{" selected" if f == status_filter else ""}>{f}</option>'
        for f in FILTERS
    )
    options_s = "".join(
        f'<option value="{s}"{" selected" if s == sort else ""}>{s.replace("_", " ")}</option>'
        for s in SORTS
    )
    head = (
        "<header><h1>acme-preflight fleet</h1>"
        f'<div class="muted">{sum(totals.get(s, 0) for s in ("pass", "skip", "warn", "error", "fail"))} hosts'
        f" &middot; generated {e(iso(generated))} &middot; reloads every {refresh} s</div>"
        f'<ul class="counts">{"".join(link(f) for f in FILTERS)}</ul></header>'
    )
    controls = (
        '<form class="controls" method="get" action="/">'
        f'<label>status<select name="status">{options_f}</select></label>'
        f'<label>sort<select name="sort">{options_s}</select></label>'
        "<button type=submit>Apply</button></form>"
    )
    if not views:
        table = '<div class="empty">No hosts match.</div>'
    else:
        ths = "".join(f"<th>{e(c)}</th>" for c in columns)
        rows = []
        for v in views:
            by_name = {str(c.get("name")): str(c.get("status", "")) for c in v.checks}
            cells = "".join(_td(c, _badge(by_name.get(c, "")), "check-cell") for c in columns)
            stale = ' <span class="b stale">stale</span>' if v.stale else ""
            name = v.hostname or v.host_id
            sub = f'<div class="muted">{e(v.host_id)}</div>' if v.host_id != name else ""
            rows.append(
                f'<tr class="{"stale" if v.stale else ""}" data-host-id="{e(v.host_id)}">'
                + _td("host", f'<a href="{e(host_url(v.host_id))}">{e(name)}</a>{sub}', "host")
                + _td("status", _badge(v.status) + stale)
                + _td("last seen", e(_ago(v.age_s)), attrs=f' title="{e(iso(v.last_seen))}"')
                + cells
                + _td("problems", _problems(v.failing), "problems-cell")
                + "</tr>"
            )
        table = (
            '<table id="hosts"><thead><tr><th>host</th><th>status</th><th>last seen</th>'
            f"{ths}<th>problems and fixes</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    return _doc("acme-preflight fleet", f"{head}<main>{controls}{table}</main>", refresh)


def host_page(
    view: HostView, history: list[ReportRow], next_before: int | None, refresh: int
) -> str:
    name = view.hostname or view.host_id
    stale = ' <span class="b stale">stale</span>' if view.stale else ""
    head = (
        f'<header><div class="muted"><a href="/">&larr; fleet</a></div>'
        f"<h1>{e(name)} {_badge(view.status)}{stale}</h1>"
        f'<div class="muted">host_id {e(view.host_id)} &middot; fqdn {e(view.fqdn)} &middot; '
        f"agent {e(view.version)} &middot; last seen {e(iso(view.last_seen))} "
        f"({e(_ago(view.age_s))})"
        + (f" &middot; interval {view.interval_s:g} s" if view.interval_s else "")
        + "</div></header>"
    )
    rows = []
    for c in view.checks:
        try:
            details = json.dumps(c.get("details", {}), indent=2, sort_keys=True, ensure_ascii=False)
        except (RecursionError, ValueError):  # valid JSON, but nested too deep to re-encode
            details = "(too deeply nested to show; see the API)"
        fix = c.get("remediation") or ""
        reason = c.get("reason")
        summary = e(c.get("summary", "")) + (
            f'<div class="muted">reason {e(reason)}</div>' if reason else ""
        )
        rows.append(
            "<tr>"
            + _td("check", f"<strong>{e(c.get('name', ''))}</strong>")
            + _td("status", _badge(str(c.get("status", ""))))
            + _td("summary", summary)
            + _td("remediation", e(fix), "" if fix else "empty-cell")
            + _td(
                "details",
                f"<details><summary>details</summary><pre>{e(details)}</pre></details>",
            )
            + "</tr>"
        )
    latest = (
        "<h2>Latest report</h2>"
        '<table id="checks"><thead><tr><th>check</th><th>status</th><th>summary</th>'
        f"<th>remediation</th><th>details</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    hist_rows = []
    for r in history:
        try:
            doc = json.loads(r.body)
            checks = " ".join(
                f'<span title="{e(c.get("name", ""))}">{_badge(str(c.get("status", "")))}</span>'
                for c in doc.get("checks", [])
                if isinstance(c, dict)
            )
            rid = str(doc.get("report_id", ""))
        except (ValueError, RecursionError):
            checks, rid = "", ""
        hist_rows.append(
            "<tr>"
            + _td("received", e(iso(r.received_at)))
            + _td("status", _badge(r.status))
            + _td("checks", checks)
            + _td("report_id", e(rid), "muted")
            + "</tr>"
        )
    pager = ""
    if next_before is not None:
        pager = (
            f'<div class="pager"><a href="{e(host_url(view.host_id))}?before={next_before}">'
            "older reports &rarr;</a></div>"
        )
    history_html = (
        "<h2>History</h2>"
        '<table id="history"><thead><tr><th>received</th><th>status</th><th>checks</th>'
        f"<th>report_id</th></tr></thead><tbody>{''.join(hist_rows)}</tbody></table>{pager}"
    )
    return _doc(f"{name} - acme-preflight", f"{head}<main>{latest}{history_html}</main>", refresh)


def not_found_page(what: str) -> str:
    return _doc(
        "not found",
        f'<main><h1>Not found</h1><p>{e(what)}</p><p><a href="/">fleet</a></p></main>',
        None,
    )
