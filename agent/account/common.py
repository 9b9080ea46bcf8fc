"""What the account checks share: turning API failures into results, and dates."""

from __future__ import annotations

from datetime import date, datetime

from agent import compat
from agent.account.client import ApiError
from agent.model import Outcome, Status

DAY = 86400.0

_FAILURES: dict[str, tuple[Status, str, str]] = {
    "rejected": (
        Status.SKIP,
        "api_key_rejected",
        "CertCentral rejected the API key (see the api_key check); fix the key first.",
    ),
    "denied": (
        Status.WARN,
        "api_permission_denied",
        "The API key's user may not read this; use a key of an Administrator or Manager "
        "(Integrations > API Keys), without an API key restriction that hides it.",
    ),
    "rate_limited": (
        Status.ERROR,
        "api_rate_limited",
        "Another client is using this API key's rate limit (100 requests per 5 s, 1000 per "
        "3 min); run again later or give acme-preflight a key of its own.",
    ),
    "timeout": (
        Status.ERROR,
        "api_timeout",
        "CertCentral did not answer in time; raise [certcentral] timeout or check the path "
        "to it (proxy, firewall).",
    ),
    "unreachable": (
        Status.ERROR,
        "api_unreachable",
        "Check [certcentral] base_url, [proxy] url and that outbound HTTPS to CertCentral "
        "is allowed; a TLS failure can mean an intercepting proxy ([certcentral] ca_file).",
    ),
    "bad_answer": (
        Status.ERROR,
        "api_bad_answer",
        "The answer is not what CertCentral's API documents; check [certcentral] base_url "
        "(US https://www.digicert.com/services/v2, EU "
        "https://certcentral.digicert.eu/services/v2).",
    ),
}


def api_failure(err: ApiError, what: str) -> Outcome:
    """The result of a check whose API request failed (``what``: what it wanted to read)."""
    status, reason, remediation = _FAILURES.get(err.kind, _FAILURES["bad_answer"])
    return Outcome(
        status,
        f"Could not read {what}: {err.message}",
        reason,
        remediation,
        {"error": err.to_dict()},
    )


def parse_date(value: object) -> date | None:
    """A CertCentral date (``2027-01-31`` or ``2027-01-31T12:00:00+00:00``); None if unusable."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is not None:
        when = when.astimezone(compat.UTC)
    return when.date()


def today(now: float) -> date:
    return datetime.fromtimestamp(now, compat.UTC).date()


def days_left(until: date, now: float) -> int:
    return (until - today(now)).days


def text(value: object, limit: int = 120) -> str:
    """A peer's string made safe to show: printable, bounded."""
    s = "" if value is None else str(value)
    return "".join(c if c.isprintable() else "?" for c in s)[:limit]
