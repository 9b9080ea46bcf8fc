"""``clock_skew``: this host's clock against the ``Date`` of the ACME endpoint.

ACME requests, nonces and certificate validity all depend on time; a clock minutes
off breaks them in confusing ways. The ``Date`` header of the ACME directory response
is compared with the local clock at the midpoint of the request. ``Date`` has one-second
resolution, so the estimate is Date + 0.5 s, give or take half a second plus half the
round trip. Warn beyond ``[clock_skew] warn`` (60 s), fail beyond ``[clock_skew] fail``
(300 s); skip when the endpoint cannot be reached (outbound_https says why).

Gather (:func:`gather`) → judge (:func:`judge`, pure, tested on facts alone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

from agent.checks.outbound_https import directory_target
from agent.config import ClockSkewConfig
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


OK = "ok"
CLOCK_AHEAD = "clock_ahead"
CLOCK_BEHIND = "clock_behind"
ENDPOINT_UNREACHABLE = "endpoint_unreachable"
NO_DATE_HEADER = "no_date_header"
NTP_FIX = (
    "Synchronise this host's clock with NTP (timedatectl set-ntp true, then check chronyc "
    "tracking or timedatectl timesync-status); ACME requests and certificate validity "
    "checks fail when the clock is off."
)

# Every reason this check gives, with its remediation (see agent.checks.reason_table).
REASONS: dict[str, str] = {
    OK: "",
    CLOCK_AHEAD: NTP_FIX,
    CLOCK_BEHIND: NTP_FIX,
    ENDPOINT_UNREACHABLE: (
        "Fix outbound_https first; the clock is compared with the Date header of the ACME endpoint."
    ),
    NO_DATE_HEADER: "Nothing to do on this host; a proxy or filter may strip the Date header.",
}


@dataclass(frozen=True)
class Facts:
    """One request to the ACME endpoint: when it went out and came back, and its Date."""

    url: str
    host: str
    proxy: dict[str, Any]
    answered: bool  # an HTTP status was read, with both wall-clock times
    date: str | None = None
    sent_at: float = 0.0
    answered_at: float = 0.0
    failure: str = ""  # why not answered: the probe's message and reason code
    probe: dict[str, Any] = field(default_factory=dict)


async def gather(ctx: CheckContext) -> Facts:
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
    if http is None or http.status is None or http.sent_at is None or http.answered_at is None:
        failure = f"{probe.message} ({reason_of(probe)})"
        return Facts(url, host, proxy.to_dict(), False, failure=failure, probe=probe.to_dict())
    date = http.headers.get("date")
    return Facts(url, host, proxy.to_dict(), True, date, http.sent_at, http.answered_at)


def judge(facts: Facts, limits: ClockSkewConfig) -> Outcome:
    """Pass / warn / fail / skip from the facts alone (pure)."""
    url, host = facts.url, facts.host
    details: dict[str, Any] = {
        "url": url,
        "proxy": facts.proxy,
        "warn_s": limits.warn,
        "fail_s": limits.fail,
    }
    if not facts.answered:
        details["probe"] = facts.probe
        return Outcome(
            Status.SKIP,
            f"Could not read the clock of {url}: {facts.failure}",
            ENDPOINT_UNREACHABLE,
            REASONS[ENDPOINT_UNREACHABLE],
            details,
        )
    date = facts.date
    server = parse_date(date)
    details["date_header"] = date
    if server is None:
        return Outcome(
            Status.SKIP,
            f"{url} sent no usable Date header ({date!r}), so the clock cannot be compared",
            NO_DATE_HEADER,
            REASONS[NO_DATE_HEADER],
            details,
        )
    rtt = facts.answered_at - facts.sent_at
    local = facts.sent_at + rtt / 2
    skew = local - (server + 0.5)  # positive: this host is ahead
    details |= {
        "skew_s": round(skew, 3),
        "uncertainty_s": round(0.5 + rtt / 2, 3),
        "rtt_ms": round(rtt * 1000, 1),
    }
    direction = "ahead of" if skew > 0 else "behind"
    summary = f"This host's clock is {describe(skew)} {direction} {host} (Date: {date})"
    if abs(skew) <= limits.warn:
        return Outcome(Status.PASS, summary, OK, "", details)
    status = Status.FAIL if abs(skew) > limits.fail else Status.WARN
    limit = limits.fail if status is Status.FAIL else limits.warn
    reason = CLOCK_AHEAD if skew > 0 else CLOCK_BEHIND
    return Outcome(status, f"{summary}: more than {limit:g} s", reason, REASONS[reason], details)


async def run(ctx: CheckContext) -> Outcome:
    return judge(await gather(ctx), ctx.config.clock_skew)
