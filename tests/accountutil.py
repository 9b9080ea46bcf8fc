"""Helpers for the account tests: configs pointed at the CertCentral lab, and runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.lab.certcentral import KEYS, CertCentralLab
from tests.lab.config import to_toml

# What each fixture account makes the checks say: {kind: {check: (status, reason)}}, with
# the --fqdn names and [certcentral] settings the run needs. Every reason code of the
# account checks appears here from a real lab condition.
CASES: dict[str, tuple[tuple[str, ...], dict[str, Any], dict[str, tuple[str, str]]]] = {
    "ready": (
        ("www.example.com", "api.shop.example.com"),
        {},
        {
            "api_key": ("pass", "ok"),
            "account_type": ("pass", "ok"),
            "balance": ("pass", "ok"),
            "organizations": ("pass", "ok"),
            "domains": ("pass", "ok"),
            "automation": ("pass", "ok"),
        },
    ),
    "not_covered": (("www.example.org",), {}, {"domains": ("warn", "fqdn_not_prevalidated")}),
    "limited_user": ((), {}, {"api_key": ("fail", "role_insufficient")}),
    "sso_only": ((), {}, {"api_key": ("warn", "sso_only_user")}),
    "inactive_user": ((), {}, {"api_key": ("fail", "user_inactive")}),
    "no_role": ((), {}, {"api_key": ("warn", "role_unknown")}),
    "zero_balance": ((), {}, {"balance": ("fail", "no_funds")}),
    "low_funds": ((), {"min_balance": 100}, {"balance": ("warn", "low_funds")}),
    "no_balance_fields": ((), {}, {"balance": ("warn", "balance_unknown")}),
    "finance_denied": ((), {}, {"balance": ("warn", "api_permission_denied")}),
    "subscription": (
        (),
        {},
        {"balance": ("skip", "subscription_account"), "account_type": ("pass", "ok")},
    ),
    "unknown_type": ((), {}, {"account_type": ("warn", "account_type_unknown")}),
    "expired_ov": ((), {}, {"organizations": ("fail", "org_validation_incomplete")}),
    "ov_expiring": ((), {}, {"organizations": ("warn", "org_validation_expiring")}),
    "no_orgs": ((), {}, {"organizations": ("warn", "no_organizations")}),
    "dcv_expiring": (("www.example.com",), {}, {"domains": ("warn", "dcv_expiring")}),
    "dcv_expired": ((), {}, {"domains": ("fail", "dcv_expired")}),
    "fqdn_dcv_expired": (("www.example.net",), {}, {"domains": ("fail", "fqdn_dcv_expired")}),
    "no_domains": ((), {}, {"domains": ("warn", "no_domains")}),
    "no_automation": ((), {}, {"automation": ("skip", "automation_unavailable")}),
    "no_agents": ((), {}, {"automation": ("warn", "no_agents")}),
    "agent_error": ((), {}, {"automation": ("warn", "agents_unhealthy")}),
    "automation_off": (
        (),
        {"automation_url": ""},
        {"automation": ("skip", "automation_not_configured")},
    ),
    "bad_key": (
        (),
        {},
        {
            "api_key": ("fail", "api_key_rejected"),
            "balance": ("skip", "api_key_rejected"),
            "domains": ("skip", "api_key_rejected"),
            "automation": ("skip", "api_key_rejected"),
        },
    ),
}
# Fixture account behind each case (the same account for cases that differ by settings).
ACCOUNT = {"not_covered": "ready", "fqdn_dcv_expired": "dcv_expired", "automation_off": "ready"}


def key_for(case: str) -> str:
    if case == "bad_key":
        return "LABKEYNOTKNOWNTOTHELAB0000000000000000ZZ"
    return KEYS[ACCOUNT.get(case, case)]


def write_key(tmp: Path, key: str) -> Path:
    path = tmp / "certcentral.key"
    path.write_text(key + "\n")
    path.chmod(0o600)
    return path


def certcentral_table(lab: CertCentralLab, key_file: Path, **extra: Any) -> dict[str, Any]:
    assert lab.ca_bundle is not None
    table = lab.config(str(lab.ca_bundle), api_key_file=str(key_file), **extra)
    return {k: v for k, v in table.items() if v is not None}


def write_agent_config(tmp: Path, lab: CertCentralLab, key: str, **extra: Any) -> Path:
    """An agent config whose [certcentral] points at the lab with ``key``."""
    key_file = write_key(tmp, key)
    path = tmp / "config.toml"
    path.write_text(
        to_toml(
            {
                "agent": {"host_id": "admin-box", "state_dir": str(tmp / "state")},
                "certcentral": certcentral_table(lab, key_file, **extra),
            }
        )
    )
    return path


def by_name(report: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["name"]: (c["status"], c["reason"]) for c in report["checks"]}


def loads(text: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(text)
    return data


def _slow(lab: CertCentralLab) -> dict[str, Any]:
    lab.delay = 2.0
    return {"timeout": "0.6s"}


def _refused(lab: CertCentralLab) -> dict[str, Any]:
    url = f"https://{lab.host}:1"  # nothing listens there: connection refused
    return {"base_url": url + "/services/v2", "automation_url": url + "/automationws/v1"}


def _wrong_path(lab: CertCentralLab) -> dict[str, Any]:
    return {"base_url": lab.base_url.replace("/services/v2", "/services/v9")}


def _exhausted(lab: CertCentralLab) -> dict[str, Any]:
    lab.burn(KEYS["ready"], 1000)  # another client spent the key's 1000 per 3 minutes
    return {"timeout": "2s"}


# Failures of the API path itself, with the ready account: a lab condition sets them up and
# returns the [certcentral] settings the run needs.
ERROR_CASES: dict[
    str, tuple[Callable[[CertCentralLab], dict[str, Any]], dict[str, tuple[str, str]]]
] = {
    "slow": (
        _slow,
        {"api_key": ("error", "api_timeout"), "automation": ("skip", "automation_unreachable")},
    ),
    "refused": (
        _refused,
        {
            "api_key": ("error", "api_unreachable"),
            "domains": ("error", "api_unreachable"),
            "automation": ("skip", "automation_unreachable"),
        },
    ),
    "wrong_path": (_wrong_path, {"account_type": ("error", "api_bad_answer")}),
    "exhausted": (_exhausted, {"api_key": ("error", "api_rate_limited")}),
}
