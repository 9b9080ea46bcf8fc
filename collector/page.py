"""The fleet page and the per-host page: server-rendered HTML with inline CSS, no scripts.

Every string that comes from a report goes through :func:`e` (``html.escape``), attribute
values included; URLs are built with :func:`urllib.parse.quote`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from html import escape
from urllib.parse import quote, urlencode

from collector import fleet, summary
from collector.fleet import FILTERS, SORTS, FleetView, HostView, iso
from collector.store import ReportRow
from collector.summary import Event, HostLine, HostQuery


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
h1{font-size:20px;margin:0 0 4px;overflow-wrap:anywhere}
h2{font-size:17px;margin:20px 0 8px}
main{padding:4px 20px 40px;max-width:1400px}
section{max-width:100%}
a{color:#0969da}
code{font-size:13px;background:#eef1f4;padding:0 4px;border-radius:3px;overflow-wrap:anywhere}
.muted{color:var(--muted);font-size:13px}
.counts{display:flex;flex-wrap:wrap;gap:6px;margin:8px 0 0;padding:0;list-style:none}
.counts a{display:inline-flex;gap:6px;align-items:center;padding:3px 10px;
border:1px solid var(--line);border-radius:999px;background:#fff;text-decoration:none;
color:var(--fg);font-size:13px}
.b{display:inline-block;min-width:40px;text-align:center;padding:1px 5px;border-radius:4px;
font-size:11px;font-weight:700;color:#fff;text-transform:uppercase;letter-spacing:.02em;
white-space:nowrap}
.b.pass{background:var(--pass)}.b.skip{background:var(--skip)}.b.warn{background:var(--warn)}
.b.error{background:var(--error)}.b.fail{background:var(--fail)}
.b.stale{background:#fff;color:var(--fail);border:1px solid var(--fail)}
.b.none{background:#fff;color:var(--muted);border:1px solid var(--line)}
ol.problems{margin:0;padding:0;list-style:none;display:grid;gap:8px}
li.problem{background:#fff;border:1px solid var(--line);border-left:4px solid var(--line);
border-radius:6px;padding:8px 12px;overflow-wrap:anywhere}
li.problem .n{font-weight:700}
li.problem .sum{margin:2px 0}
li.problem .fix{margin:2px 0}
li.problem .fix::before{content:"\\2192  ";color:var(--muted)}
li.problem .who{font-size:13px;color:var(--muted)}
p.ok{background:#fff;border:1px solid var(--line);border-left:4px solid var(--pass);
border-radius:6px;padding:8px 12px}
#chart{display:block;width:100%;height:120px;border:1px solid var(--line);border-radius:4px}
.axis{display:flex;justify-content:space-between}
.legend{display:flex;flex-wrap:wrap;gap:12px;list-style:none;padding:0;margin:4px 0;font-size:13px}
.sw{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
details summary{cursor:pointer;color:#0969da;font-size:13px}
form.controls{display:flex;flex-wrap:wrap;gap:8px;align-items:end;margin:8px 0}
form.controls label{display:flex;flex-direction:column;font-size:12px;color:var(--muted);
max-width:100%}
input,select,button{font:inherit;padding:4px 6px;max-width:100%}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid var(--line)}
th,td{padding:5px 6px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:#eef1f4;font-size:12px}
th.ck{font-weight:600;max-width:96px}
td.host{overflow-wrap:anywhere;min-width:160px}
td.host a{font-weight:600}
td.seen{white-space:nowrap;font-size:13px}
.id{overflow-wrap:anywhere}
.v{min-width:0;overflow-wrap:anywhere}
tr.stale td{background:#fff8f0}
#account{margin:16px 0}
#account h2 .b{vertical-align:middle}
#account table{margin-top:6px}
#account-checks td:first-child{white-space:nowrap}
ul.verdict{margin:4px 0 0;padding:0 0 0 16px;font-size:12px;color:var(--muted)}
td.extra{min-width:150px;max-width:320px}
pre{white-space:pre-wrap;word-break:break-word;background:#f6f8fa;padding:8px;margin:4px 0;
font-size:12px;max-height:320px;overflow:auto}
.empty{padding:24px;background:#fff;border:1px solid var(--line)}
.pager{margin:12px 0;display:flex;gap:16px}
@media (max-width:760px){
 header,main{padding-left:10px;padding-right:10px}
 table,thead,tbody,tr,td{display:block;width:100%}
 table{border:0;background:none}
 thead{display:none}
 tr{background:#fff;border:1px solid var(--line);border-radius:6px;margin:0 0 8px;padding:6px 8px}
 tr.stale{background:#fff8f0}
 tr.stale td{background:none}
 td{border:0;padding:2px 0;display:flex;gap:8px}
 td.host{min-width:0}
 td.empty-cell{display:none}
 .v{flex:1}
 td::before{content:attr(data-label);flex:0 0 110px;color:var(--muted);font-size:12px;
 padding-top:2px;overflow-wrap:anywhere}
 #hosts td.ck{display:inline-flex;width:auto;margin-right:8px;gap:4px}
 #hosts td.ck::before{flex:0 0 auto;max-width:120px}
 #hosts td.ck .v{flex:0 0 auto}
 table.days{display:table}
 table.days thead{display:table-header-group}
 table.days tbody{display:table-row-group}
 table.days tr{display:table-row;border:0;padding:0;margin:0}
 table.days td{display:table-cell;padding:2px 4px}
 table.days td::before{content:none}
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


Column = tuple[str, Callable[[HostLine], str]]
"""An extra grid column: its title and a function giving a host's cell (escaped HTML)."""

_STATE_COLOURS = {
    "ready": "var(--pass)",
    "warn": "var(--warn)",
    "fail": "var(--fail)",
    "stale": "#8c959f",
}


def _label(name: str) -> str:
    """A check name that may wrap after its underscores in a narrow header."""
    return "_<wbr>".join(e(part) for part in name.split("_"))


def _query(q: HostQuery, **over: str) -> str:
    params = {
        "q": q.search,
        "status": q.status,
        "check": q.check,
        "reason": q.reason,
        "sort": q.sort,
        "limit": str(q.limit),
    }
    params.update(over)
    keep = {
        k: v
        for k, v in params.items()
        if v and (k, v) not in (("status", "all"), ("sort", "status"), ("limit", "100"))
    }
    return "/?" + urlencode(keep) if keep else "/"


def _hosts_named(sample: Sequence[tuple[str, str]], total: int, more_url: str) -> str:
    links = ", ".join(f'<a href="{e(host_url(h))}">{e(name)}</a>' for h, name in sample)
    rest = total - len(sample)
    if rest > 0:
        links += f' <a class="more" href="{e(more_url)}">and {rest:,} more &rarr;</a>'
    return links


def _problems_panel(view: FleetView) -> str:
    items = []
    if view.stale:
        more = _query(HostQuery(), status="stale")
        items.append(
            '<li class="problem"><div class="ph"><span class="b stale">stale</span> '
            f'<span class="n">{view.stale:,} host{"s" if view.stale != 1 else ""}</span> '
            "<strong>no recent report</strong></div>"
            '<div class="fix">Check that the acme-preflight service is running on these hosts '
            "and can reach this collector (acme-preflight status).</div>"
            f'<div class="who">{_hosts_named(view.stale_sample, view.stale, more)}</div></li>'
        )
    for p in view.problems:
        more = _query(HostQuery(), check=p.check, reason=p.reason)
        fix = f'<div class="fix">{e(p.remediation)}</div>' if p.remediation else ""
        items.append(
            f'<li class="problem" data-check="{e(p.check)}" data-reason="{e(p.reason)}">'
            f'<div class="ph">{_badge(p.status)} <span class="n">{p.hosts:,} '
            f"host{'s' if p.hosts != 1 else ''}</span> <strong>{e(p.check)}</strong> "
            f'<code>{e(p.reason)}</code> <span class="muted">since {e(iso(p.since))}</span></div>'
            f'<div class="sum">{e(p.summary)}</div>{fix}'
            f'<div class="who">{_hosts_named(p.sample, p.hosts, more)}</div></li>'
        )
    if not items:
        body = '<p class="ok">Nothing blocks automation: every host passes its checks.</p>'
    else:
        body = f'<ol class="problems" id="problem-groups">{"".join(items)}</ol>'
        hidden = view.problem_groups - len(view.problems)
        if hidden > 0:
            body += (
                f'<p class="muted">{hidden:,} smaller problem groups: '
                '<a href="/api/v1/problems">all of them in the API</a></p>'
            )
    return f'<section id="problems"><h2>Problems</h2>{body}</section>'


def _chart(view: FleetView) -> str:
    """Stacked bars of hosts per state for each hour of the last 7 days (inline SVG)."""
    hours = summary.HISTORY_HOURS
    first = int(view.now // 3600) - hours + 1
    top = max([sum(s.values()) for _, s in view.history] + [1])
    w, h = 4, 120
    bars = []
    for hour, states in view.history:
        x = (hour - first) * w
        y = float(h)
        for state in ("ready", "warn", "fail", "stale"):
            n = states.get(state, 0)
            if not n:
                continue
            bh = h * n / top
            y -= bh
            bars.append(
                f'<rect x="{x}" y="{y:.2f}" width="{w - 0.5}" height="{bh:.2f}" '
                f'fill="{_STATE_COLOURS[state]}"/>'
            )
    now = view.states
    text = (
        f"Now: {now['ready']:,} ready, {now['warn']:,} warn, {now['fail']:,} fail, "
        f"{now['stale']:,} stale."
    )
    days = []
    for hour, states in view.history:
        if hour % 24 == 23 or hour == view.history[-1][0]:  # the last sample of each day
            days.append(
                f"<tr><td>{e(iso(hour * 3600)[:10])} {hour % 24:02d}:00</td>"
                + "".join(f"<td>{states.get(s, 0):,}</td>" for s in summary.STATES)
                + "</tr>"
            )
    legend = "".join(
        f'<li><span class="sw" style="background:{_STATE_COLOURS[s]}"></span>{s}</li>'
        for s in summary.STATES
    )
    desc = (
        f"{len(view.history)} hourly samples over the last 7 days; the highest is {top:,} hosts. "
        + text
    )
    return (
        '<section id="readiness"><h2>Readiness, last 7 days</h2>'
        f'<p class="now">{e(text)}</p>'
        f'<svg id="chart" viewBox="0 0 {hours * w} {h}" preserveAspectRatio="none" role="img" '
        'aria-labelledby="chart-title chart-desc">'
        '<title id="chart-title">Hosts ready, warn, fail and stale per hour</title>'
        f'<desc id="chart-desc">{e(desc)}</desc>'
        f'<rect x="0" y="0" width="{hours * w}" height="{h}" fill="#fff"/>{"".join(bars)}</svg>'
        '<div class="axis muted"><span>7 days ago</span><span>now</span></div>'
        f'<ul class="legend">{legend}</ul>'
        "<details><summary>the chart as a table</summary>"
        '<table class="days"><thead><tr><th>sample</th>'
        + "".join(f"<th>{s}</th>" for s in summary.STATES)
        + f"</tr></thead><tbody>{''.join(days)}</tbody></table></details></section>"
    )


def _grid(view: FleetView, checks: Sequence[str], columns: Sequence[Column]) -> str:
    q = view.query
    opt_status = "".join(
        f'<option value="{f}"{" selected" if f == q.status else ""}>{f}</option>' for f in FILTERS
    )
    opt_check = '<option value="">any check</option>' + "".join(
        f'<option value="{e(c)}"{" selected" if c == q.check else ""}>{e(c)}</option>'
        for c in checks
    )
    opt_sort = "".join(
        f'<option value="{s}"{" selected" if s == q.sort else ""}>{s.replace("_", " ")}</option>'
        for s in SORTS
    )
    form = (
        '<form class="controls" method="get" action="/">'
        f'<label>search<input type="search" name="q" value="{e(q.search)}" '
        'placeholder="name or host_id" maxlength="200"></label>'
        f'<label>status<select name="status">{opt_status}</select></label>'
        f'<label>check<select name="check">{opt_check}</select></label>'
        f'<label>reason<input name="reason" value="{e(q.reason)}" size="14" '
        'maxlength="64"></label>'
        f'<label>sort<select name="sort">{opt_sort}</select></label>'
        "<button type=submit>Apply</button></form>"
    )
    if not view.lines:
        table = '<div class="empty">No hosts match.</div>'
    else:
        ths = "".join(f'<th class="ck">{_label(c)}</th>' for c in checks)
        ths += "".join(f"<th>{e(title)}</th>" for title, _ in columns)
        rows = []
        for line in view.lines:
            by_name = {c.name: c for c in line.checks}
            cells = []
            for name in checks:
                c = by_name.get(name)
                badge = _badge(c.status if c else "")
                tip = f' title="{e(name)}: {e(c.reason)}"' if c else ""
                cells.append(
                    f'<td class="ck" data-label="{e(name)}"{tip}><div class="v">{badge}</div></td>'
                )
            extra = "".join(_td(title, cell(line), "extra") for title, cell in columns)
            stale = ' <span class="b stale">stale</span>' if line.stale else ""
            sub = (
                f'<div class="muted id">{e(line.host_id)}</div>'
                if line.host_id != line.name
                else ""
            )
            rows.append(
                f'<tr class="{"stale" if line.stale else ""}" data-host-id="{e(line.host_id)}">'
                + _td(
                    "host", f'<a href="{e(host_url(line.host_id))}">{e(line.name)}</a>{sub}', "host"
                )
                + _td("status", _badge(line.status) + stale, "st")
                + "".join(cells)
                + extra
                + _td(
                    "last seen",
                    e(_ago(max(0.0, view.now - line.last_seen))),
                    "seen",
                    f' title="{e(iso(line.last_seen))}"',
                )
                + "</tr>"
            )
        table = (
            '<table id="hosts"><thead><tr><th>host</th><th>status</th>'
            f"{ths}<th>last seen</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    shown = len(view.lines)
    pager = []
    if q.cursor:
        pager.append(f'<a href="{e(_query(q))}">&larr; first page</a>')
    if view.next_cursor:
        pager.append(
            f'<a id="next" href="{e(_query(q, cursor=view.next_cursor))}">next {q.limit} &rarr;</a>'
        )
    return (
        '<section id="grid"><h2>Hosts</h2>'
        f"{form}"
        f'<p class="muted">{shown:,} shown of {view.matching:,} matching</p>'
        f'{table}<div class="pager">{" ".join(pager)}</div></section>'
    )


def fleet_page(
    view: FleetView,
    refresh: int,
    panels: Sequence[str] = (),
    columns: Sequence[Column] = (),
) -> str:
    """The fleet page. ``panels``: extra sections (escaped HTML) after the problem groups;
    ``columns``: extra per-host grid columns (the account's issuance verdict goes in both)."""
    counts = view.counts
    chips = [f'<li><a href="/">all {view.total:,}</a></li>']
    for status in ("fail", "error", "warn", "skip", "pass"):
        if counts.get(status):
            chips.append(
                f'<li><a href="/?status={status}">{_badge(status)} {counts[status]:,}</a></li>'
            )
    if view.stale:
        chips.append(
            f'<li><a href="/?status=stale"><span class="b stale">stale</span> '
            f"{view.stale:,}</a></li>"
        )
    head = (
        "<header><h1>acme-preflight fleet</h1>"
        f'<div class="muted">{view.total:,} hosts &middot; generated {e(iso(view.now))} '
        f"&middot; reloads every {refresh} s</div>"
        f'<ul class="counts">{"".join(chips)}</ul></header>'
    )
    checks = fleet.check_columns(view.lines)
    slot = "".join(panels)
    body = (
        f"{head}<main>{_problems_panel(view)}"
        f'<div id="panels">{slot}</div>'
        f"{_chart(view)}{_grid(view, checks, columns)}</main>"
    )
    return _doc("acme-preflight fleet", body, refresh)


def _timeline(events: Sequence[Event], now: float) -> str:
    """Each change, newest first, with how long the state it started lasted."""
    if not events:
        return ""
    ended: dict[str, float] = {}  # per check: when the next (newer) change happened
    rows = []
    for ev in events:  # newest first
        until = ended.get(ev.check)
        ended[ev.check] = ev.at
        what = e(ev.check) if ev.check else "<em>overall</em>"
        reason = f" <code>{e(ev.reason)}</code>" if ev.reason and ev.reason != "ok" else ""
        lasted = (
            f"{e(_span(until - ev.at))}, until {e(iso(until))}"
            if until is not None
            else f"ongoing ({e(_span(now - ev.at))})"
        )
        rows.append(
            "<tr>"
            + _td("when", e(iso(ev.at)))
            + _td("what", what)
            + _td("became", _badge(ev.status) + reason)
            + _td("lasted", lasted)
            + "</tr>"
        )
    return (
        "<h2>Timeline</h2>"
        '<table id="timeline"><thead><tr><th>when</th><th>what</th><th>became</th>'
        f"<th>lasted</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _span(seconds: float) -> str:
    return _ago(seconds).removesuffix(" ago")


def host_page(
    view: HostView,
    history: list[ReportRow],
    next_before: int | None,
    refresh: int,
    events: Sequence[Event] = (),
    now: float = 0.0,
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
    timeline = _timeline(events, now or view.last_seen + view.age_s)
    return _doc(
        f"{name} - acme-preflight",
        f"{head}<main>{latest}{timeline}{history_html}</main>",
        refresh,
    )


def not_found_page(what: str) -> str:
    return _doc(
        "not found",
        f'<main><h1>Not found</h1><p>{e(what)}</p><p><a href="/">fleet</a></p></main>',
        None,
    )


def error_page(what: str) -> str:
    return _doc(
        "bad request",
        f'<main><h1>Bad request</h1><p>{e(what)}</p><p><a href="/">fleet</a></p></main>',
        None,
    )
