"""``clock_skew``: this host's clock against the ``Date`` of the ACME endpoint.

ACME requests, nonces and certificate validity all depend on time; a clock minutes
off breaks them in confusing ways. The ``Date`` header of the ACME directory response
is compared with the local clock at the midpoint of the request. ``Date`` has one-second
resolution, so the estimate is Date + 0.5 s, give or take half a second plus half the
round trip. Warn beyond ``[clock_skew] warn`` (60 s), fail beyond ``[clock_skew] fail``
(300 s); skip when the endpoint cannot be reached (outbound_https says why).
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Any

from agent.checks.outbound_https import directory_target
from agent.context import CheckContext
from agent.model import Outcome, Status
from agent.net.diagnosis import reason_of
from agent.net.dns import nameservers_for
from agent.net.probe import probe_https
from agent.net.proxy import select_proxy


def parse_date(value: str | None) -> float | None:
    """An HTTP ``Date`` as a POSIX timestamp; None when absent or unparseable."""
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None  # RFC 9110 dates are GMT; a zone-less one cannot be trusted
    return when.timestamp()


def describe(seconds: float) -> str:
    s = abs(seconds)
    if s >= 120:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s"


async def run(ctx: CheckContext) -> Outcome:
    cfg = ctx.config
    url = cfg.targets.acme_directory
    host, port, path = directory_target(url)
    proxy = select_proxy(cfg.proxy.url, host, port)
    probe = await probe_https(
        host,
        port,
        nameservers=nameservers_for(cfg.dns.nameservers, ctx.paths.resolv_conf),
        proxy=proxy,
        budget=ctx.budget,
        path=path,
    )
    http = probe.http
    details: dict[str, Any] = {
        "url": url,
        "proxy": proxy.to_dict(),
        "warn_s": cfg.clock_skew.warn,
        "fail_s": cfg.clock_skew.fail,
    }
    if http is None or http.status is None or http.sent_at is None or http.answered_at is None:
        details["probe"] = probe.to_dict()
        return Outcome(
            Status.SKIP,
            f"Could not read the clock of {url}: {probe.message} ({reason_of(probe)})",
            "endpoint_unreachable",
            "Fix outbound_https first; the clock is compared with the Date header of the "
            "ACME endpoint.",
            details,
        )
    date = http.headers.get("date")
    server = parse_date(date)
    details["date_header"] = date
    if server is None:
        return Outcome(
            Status.SKIP,
            f"{url} sent no usable Date header ({date!r}), so the clock cannot be compared",
            "no_date_header",
            "Nothing to do on this host; a proxy or filter may strip the Date header.",
            details,
        )
    rtt = http.answered_at - http.sent_at
    local = http.sent_at + rtt / 2
    skew = local - (server + 0.5)  # positive: this host is ahead
    details |= {
        "skew_s": round(skew, 3),
        "uncertainty_s": round(0.5 + rtt / 2, 3),
        "rtt_ms": round(rtt * 1000, 1),
    }
    direction = "ahead of" if skew > 0 else "behind"
    summary = f"This host's clock is {describe(skew)} {direction} {host} (Date: {date})"
    limits = cfg.clock_skew
    if abs(skew) <= limits.warn:
        return Outcome(Status.PASS, summary, "ok", "", details)
    status = Status.FAIL if abs(skew) > limits.fail else Status.WARN
    limit = limits.fail if status is Status.FAIL else limits.warn
    return Outcome(
        status,
        f"{summary}: more than {limit:g} s",
        "clock_ahead" if skew > 0 else "clock_behind",
        "Synchronise this host's clock with NTP (timedatectl set-ntp true, then check "
        "chronyc tracking or timedatectl timesync-status); ACME requests and certificate "
        "validity checks fail when the clock is off.",
        details,
    )
