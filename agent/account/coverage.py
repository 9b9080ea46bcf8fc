"""Which account domain covers a web server name, and whether its DCV is current.

A name is covered by the most specific active account domain equal to it or a parent of
it (``www.shop.example.com`` by ``shop.example.com`` before ``example.com``). The domains
check and the collector's issuance verdict both use this.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from agent.account.common import DAY, days_left, parse_date, text


@dataclass(frozen=True)
class Domain:
    name: str
    dcv_until: date | None  # when the domain's validation expires; None: not validated
    dcv_method: str | None = None

    def state(self, now: float, warn_s: float) -> str:
        """``valid``, ``expiring``, ``expired`` or ``pending`` (no completed DCV)."""
        if self.dcv_until is None:
            return "pending"
        left = days_left(self.dcv_until, now)
        if left < 0:
            return "expired"
        return "expiring" if left <= warn_s / DAY else "valid"

    def to_dict(self, now: float, warn_s: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "dcv_until": self.dcv_until.isoformat() if self.dcv_until else None,
            "dcv_method": self.dcv_method,
            "state": self.state(now, warn_s),
        }


def _dcv_until(item: Mapping[str, Any]) -> date | None:
    """The DCV expiry: ``dcv_expiration`` (ov, else the latest of the others), else the
    latest ``validated_until`` of a completed validation."""
    exp = item.get("dcv_expiration")
    if isinstance(exp, dict):
        ov = parse_date(exp.get("ov"))
        if ov is not None:
            return ov
        dates = [d for d in (parse_date(v) for v in exp.values()) if d is not None]
        if dates:
            return max(dates)
    vals = item.get("validations")
    if isinstance(vals, list):
        dates = [
            d
            for v in vals
            if isinstance(v, dict) and str(v.get("status", "")).lower() in ("active", "completed")
            for d in [parse_date(v.get("validated_until"))]
            if d is not None
        ]
        if dates:
            return max(dates)
    return None


def account_domains(items: Iterable[Mapping[str, Any]]) -> dict[str, Domain]:
    """The active domains of a ``GET /domain`` listing by lower-case name."""
    out: dict[str, Domain] = {}
    for item in items:
        name = item.get("name")
        if not isinstance(name, str) or item.get("is_active", True) is False:
            continue
        key = name.strip().rstrip(".").lower().removeprefix("*.")
        if not key:
            continue
        method = item.get("dcv_method")
        out[key] = Domain(text(key, 253), _dcv_until(item), text(method, 40) if method else None)
    return out


def covering(name: str, domains: Mapping[str, Domain]) -> Domain | None:
    """The most specific account domain equal to ``name`` or one of its parents."""
    labels = name.strip().rstrip(".").lower().split(".")
    for i in range(len(labels)):
        found = domains.get(".".join(labels[i:]))
        if found is not None:
            return found
    return None
