"""The CertCentral stand-in: DigiCert's Services API and Automation API over real TLS.

The paths, fields, envelopes and paging are the ones DigiCert documents
(dev.digicert.com, CertCentral Services API): ``/services/v2/user/me``, ``/account``,
``/finance/balance``, ``/organization``, ``/organization/{id}/validation``, ``/domain``
(``offset``/``limit`` paging with ``page{total,limit,offset}``) and the Automation API's
``POST /automationws/v1/agent/list`` (``{"error":…,"data":…}``). The key is read from
``X-DC-DEVKEY`` only; errors are ``{"errors":[{"code","message"}]}`` with 401 for an
unknown key, 403 ``access_denied``, 404 ``not_found`` and 429 ``request_limit_exceeded``
with ``Retry-After`` once a key passes 100 requests per 5 s or 1000 per 3 min.

Start it with ``CertCentralLab(pki)`` (an aiohttp server on 127.0.0.30, a free port);
``accounts`` maps each API key to an :class:`Account` built by :func:`fixture` (``ready``,
``limited_user``, ``sso_only``, ``zero_balance``, ``expired_ov``, ``dcv_expiring`` ...).
``delay`` makes every answer slow; ``page_max`` caps a domain page; ``requests`` records
(arrival time, method, path, query, key) of every request.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import math
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from aiohttp import web

from agent import compat
from tests.lab.base import LabServer
from tests.lab.pki import LabPki, issue

HOST = "127.0.0.30"
CERTCENTRAL_NAMES = ("www.digicert.com", "certcentral.digicert.eu", "caas.digicert.com")
SERVICES = "/services/v2"
AUTOMATION = "/automationws/v1"
LIMITS = ((100, 5.0), (1000, 180.0))  # per key, as DigiCert documents

# Keys of the fixture accounts: 40 upper-case alphanumerics, like CertCentral's.
KEYS = {
    "ready": "LABKEYREADY0000000000000000000000000000A",
    "limited_user": "LABKEYLIMITED00000000000000000000000000B",
    "sso_only": "LABKEYSSOONLY00000000000000000000000000C",
    "zero_balance": "LABKEYZEROBALANCE0000000000000000000000D",
    "expired_ov": "LABKEYEXPIREDOV000000000000000000000000E",
    "dcv_expiring": "LABKEYDCVEXPIRING0000000000000000000000F",
    "inactive_user": "LABKEYINACTIVE0000000000000000000000000G",
    "no_role": "LABKEYNOROLE00000000000000000000000000H",
    "subscription": "LABKEYSUBSCRIPTION000000000000000000000I",
    "unknown_type": "LABKEYUNKNOWNTYPE0000000000000000000000J",
    "low_funds": "LABKEYLOWFUNDS0000000000000000000000000K",
    "no_balance_fields": "LABKEYNOBALANCEFIELDS00000000000000000L",
    "no_orgs": "LABKEYNOORGS00000000000000000000000000M",
    "ov_expiring": "LABKEYOVEXPIRING00000000000000000000000N",
    "dcv_expired": "LABKEYDCVEXPIRED00000000000000000000000O",
    "no_domains": "LABKEYNODOMAINS000000000000000000000000P",
    "no_automation": "LABKEYNOAUTOMATION000000000000000000000Q",
    "no_agents": "LABKEYNOAGENTS0000000000000000000000000R",
    "agent_error": "LABKEYAGENTERROR00000000000000000000000S",
    "finance_denied": "LABKEYFINANCEDENIED00000000000000000000T",
}
UNKNOWN_KEY = "LABKEYNOTKNOWNTOTHELAB0000000000000000ZZ"
# In the ready account: covered names are under example.com (shop.example.com more
# specifically); example.org is not in the account at all.
COVERED = ("www.example.com", "api.shop.example.com")
NOT_COVERED = ("www.example.org",)


def day(offset: int) -> str:
    return (dt.datetime.now(compat.UTC).date() + dt.timedelta(days=offset)).isoformat()


@dataclass
class Account:
    """One API key's view of CertCentral (the JSON bodies, as DigiCert shapes them)."""

    user: dict[str, Any]
    account: dict[str, Any]
    balance: dict[str, Any]
    organizations: list[dict[str, Any]]  # each with its "validations" (served separately)
    domains: list[dict[str, Any]]
    agents: list[dict[str, Any]] | None  # None: the Automation API refuses the account
    denied: set[str] = field(default_factory=set)  # paths answered 403 missing_permission


def domain(i: int, name: str, dcv_days: int | None, org_id: int = 1001) -> dict[str, Any]:
    """A /domain entry; ``dcv_days`` from today to the DCV expiry (None: not validated)."""
    validated = dcv_days is not None
    return {
        "id": 5000 + i,
        "is_active": True,
        "name": name,
        "date_created": "2024-01-15T10:00:00+00:00",
        "organization": {
            "id": org_id,
            "status": "active",
            "name": "Example Corp",
            "is_active": True,
        },
        "validations": [
            {
                "type": t,
                "name": t.upper(),
                "description": f"{t.upper()} domain validation",
                "date_created": "2025-06-01T00:00:00+00:00",
                "validated_until": day(dcv_days) + "T00:00:00+00:00",
                "status": "active",
                "dcv_status": "complete",
            }
            for t in ("ov", "ev")
        ]
        if validated
        else [],
        "dcv_method": "dns-txt-token",
        "dcv_approval_datetime": "2025-06-01T12:00:00+00:00" if validated else None,
        "dcv_expiration": {"ov": day(dcv_days), "ev": day(min(dcv_days, 30))} if validated else {},
    }


def organization(
    org_id: int, name: str, ov_days: int, ev_days: int | None = None, status: str = "completed"
) -> dict[str, Any]:
    vals = [
        {
            "type": "ov",
            "name": "OV",
            "description": "Normal Organization Validation",
            "date_created": "2025-01-10T00:00:00+00:00",
            "validated_until": day(ov_days) + "T00:00:00+00:00",
            "status": status,
            "verified_users": [{"id": 7, "first_name": "Ada", "last_name": "Admin"}],
        },
        {
            "type": "ev",
            "name": "EV",
            "description": "Extended Organization Validation (EV)",
            "date_created": "2025-01-10T00:00:00+00:00",
            "validated_until": day(ov_days if ev_days is None else ev_days) + "T00:00:00+00:00",
            "status": status,
            "verified_users": [],
        },
    ]
    return {
        "id": org_id,
        "status": "active",
        "name": name,
        "display_name": name,
        "is_active": True,
        "address": "1 Example Way",
        "city": "Lehi",
        "state": "ut",
        "country": "us",
        "container": {"id": 11, "parent_id": None, "name": "Example Corp", "is_active": True},
        "validations": vals,
    }


def fixture(kind: str) -> Account:
    """The fixture account ``kind`` (a key of :data:`KEYS`); the ready one changed in one way."""
    acc = Account(
        user={
            "id": 7,
            "username": "ada.admin",
            "account_id": 5137,
            "first_name": "Ada",
            "last_name": "Admin",
            "email": "ada@example.com",
            "status": "active",
            "container": {
                "id": 11,
                "public_id": "c11",
                "name": "Example Corp",
                "parent_id": 0,
                "template_id": 1,
                "ekey": "",
                "has_logo": False,
                "is_active": True,
            },
            "access_roles": [{"id": 1, "name": "Administrator"}],
            "type": "standard",
            "has_container_assignments": False,
            "is_saml_sso_only": False,
            "is_cert_central": True,
        },
        account={
            "id": 5137,
            "make_renewal_calls": True,
            "express_install_enabled": False,
            "cert_central_type": "enterprise",
            "pricing_model": "pricing_model_v2",
            "balance_negative_limit": 0,
            "is_reseller_customer": False,
        },
        balance={
            "balance": "2500.00",
            "currency": "USD",
            "unpaid_invoice_balance": "0.00",
            "negative_balance_limit": "0.00",
            "used_credit_from_other_containers": "0.00",
            "total_available_funds": "2500.00",
            "unlimited_negative_balance": False,
        },
        organizations=[organization(1001, "Example Corp", 300)],
        domains=[
            domain(1, "example.com", 150),
            domain(2, "shop.example.com", 120),
            domain(3, "example.net", 200),
        ],
        agents=[
            {
                "agentId": "a1",
                "agentName": "web-01",
                "status": "Configured",
                "ipAddress": "192.0.2.10",
                "os": "Linux",
            },
            {
                "agentId": "a2",
                "agentName": "web-02",
                "status": "Configured",
                "ipAddress": "192.0.2.11",
                "os": "Linux",
            },
        ],
    )
    if kind == "ready":
        pass
    elif kind == "limited_user":
        acc.user["access_roles"] = [{"id": 2, "name": "Limited User"}]
    elif kind == "sso_only":
        acc.user["is_saml_sso_only"] = True
    elif kind == "zero_balance":
        acc.balance |= {"balance": "0.00", "total_available_funds": "0.00"}
    elif kind == "expired_ov":
        acc.organizations = [organization(1001, "Example Corp", -3, 200)]
    elif kind == "dcv_expiring":
        acc.domains[0] = domain(1, "example.com", 5)
    elif kind == "inactive_user":
        acc.user["status"] = "inactive"
    elif kind == "no_role":
        del acc.user["access_roles"]
    elif kind == "subscription":
        acc.account["pricing_model"] = "subscription"
    elif kind == "unknown_type":
        acc.account["cert_central_type"] = "galactic"
    elif kind == "low_funds":
        acc.balance |= {"balance": "40.00", "total_available_funds": "40.00"}
    elif kind == "no_balance_fields":
        acc.balance = {"currency": "USD"}
    elif kind == "no_orgs":
        acc.organizations = []
    elif kind == "ov_expiring":
        acc.organizations = [organization(1001, "Example Corp", 10)]
    elif kind == "dcv_expired":
        acc.domains[2] = domain(3, "example.net", -2)
    elif kind == "no_domains":
        acc.domains = []
    elif kind == "no_automation":
        acc.agents = None
    elif kind == "no_agents":
        acc.agents = []
    elif kind == "agent_error":
        acc.agents[1]["status"] = "Error"  # type: ignore[index]
    elif kind == "finance_denied":
        acc.denied = {"/finance/balance"}
    else:
        raise KeyError(kind)
    return acc


def fixtures() -> dict[str, Account]:
    """Every fixture account by its API key."""
    return {KEYS[k]: fixture(k) for k in KEYS}


def leaf(pki: LabPki, host: str = HOST) -> trustme.LeafCert:
    return issue(pki.digicert, *CERTCENTRAL_NAMES, host, org="DigiCert, Inc.")


@dataclass(frozen=True)
class LabRequest:
    at: float
    method: str
    path: str
    query: dict[str, str]
    key: str | None


def _errors(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"errors": [{"code": code, "message": message}]}, status=status, headers=headers
    )


class CertCentralLab(LabServer):
    """HTTPS on (host, port) serving both APIs; see the module docstring."""

    def __init__(self, pki: LabPki, host: str = HOST, port: int = 0) -> None:
        super().__init__(host, port)
        self.pki = pki
        self.accounts: dict[str, Account] = fixtures()
        self.delay = 0.0
        # a careless server: error messages quote the key they got (the client must scrub it)
        self.echo_key = False
        self.page_max = 1000
        self.limits = LIMITS
        self.requests: list[LabRequest] = []
        self.ca_bundle: Path | None = None  # set by the certcentral_lab fixture
        self._windows: dict[str, deque[float]] = {}
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"https://{self.host}:{self.port}{SERVICES}"

    @property
    def automation_url(self) -> str:
        return f"https://{self.host}:{self.port}{AUTOMATION}"

    def forget(self) -> None:
        """Clear the recorded requests and every key's rate-limit window."""
        self.requests.clear()
        self._windows.clear()

    def burn(self, key: str, n: int) -> None:
        """Count ``n`` requests for ``key`` now, as if another client had just sent them."""
        window = self._windows.setdefault(key, deque())
        now = time.monotonic()
        window.extend([now] * n)

    def _limited(self, key: str) -> float | None:
        """Seconds until ``key`` may send again, or None when within its limits."""
        now = time.monotonic()
        window = self._windows.setdefault(key, deque())
        longest = max(w for _, w in self.limits)
        while window and window[0] <= now - longest:
            window.popleft()
        wait = 0.0
        for count, span in self.limits:
            recent = [t for t in window if t > now - span]
            if len(recent) >= count:
                wait = max(wait, recent[-count] + span - now)
        if wait > 0:
            return wait
        window.append(now)
        return None

    def _echo(self, key: str | None) -> str:
        return f" (X-DC-DEVKEY: {key})" if self.echo_key else ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        key = request.headers.get("X-DC-DEVKEY")
        self.requests.append(
            LabRequest(time.monotonic(), request.method, request.path, dict(request.query), key)
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        account = self.accounts.get(key or "")
        if account is None:
            return _errors(
                401, "invalid_api_key", "The specified API key is invalid." + self._echo(key)
            )
        wait = self._limited(key or "")
        if wait is not None:
            return _errors(
                429,
                "request_limit_exceeded",
                "Too many requests. Wait before sending more.",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        path = request.path
        if path.startswith(AUTOMATION):
            return self._automation(request, account, path.removeprefix(AUTOMATION))
        if not path.startswith(SERVICES) or request.method != "GET":
            return _errors(404, "not_found", "The requested resource was not found.")
        sub = path.removeprefix(SERVICES)
        if sub in account.denied:
            return _errors(
                403,
                "missing_permission",
                "You do not have permission to perform this action." + self._echo(key),
            )
        if sub == "/user/me":
            return web.json_response(account.user)
        if sub == "/account":
            return web.json_response(account.account)
        if sub == "/finance/balance":
            return web.json_response(account.balance)
        if sub == "/organization":
            orgs = [
                {k: v for k, v in o.items() if k != "validations"} for o in account.organizations
            ]
            return web.json_response(
                {"organizations": orgs, "page": {"total": len(orgs), "limit": 0, "offset": 0}}
            )
        if sub.startswith("/organization/") and sub.endswith("/validation"):
            oid = sub.split("/")[2]
            for o in account.organizations:
                if str(o["id"]) == oid:
                    return web.json_response({"validations": copy.deepcopy(o["validations"])})
            return _errors(404, "not_found", "Organization not found.")
        if sub == "/domain":
            return self._domains(request, account)
        return _errors(404, "not_found", "The requested resource was not found.")

    def _domains(self, request: web.Request, account: Account) -> web.Response:
        try:
            offset = int(request.query.get("offset", "0"))
            limit = int(request.query.get("limit", "1000"))
        except ValueError:
            return _errors(400, "invalid_input", "offset and limit must be integers.")
        limit = max(1, min(limit, self.page_max))
        items = account.domains[offset : offset + limit]
        if request.query.get("include_validation") != "true":
            items = [{k: v for k, v in d.items() if k != "validations"} for d in items]
        if request.query.get("include_dcv_expiration_time") != "true":
            items = [{k: v for k, v in d.items() if k != "dcv_expiration"} for d in items]
        return web.json_response(
            {
                "domains": items,
                "page": {"total": len(account.domains), "limit": limit, "offset": offset},
            }
        )

    def _automation(self, request: web.Request, account: Account, sub: str) -> web.Response:
        if sub != "/agent/list" or request.method != "POST":
            return web.json_response(
                {"error": {"code": "not_found", "message": "Not found"}, "data": None}, status=404
            )
        if account.agents is None:
            return web.json_response(
                {
                    "error": {
                        "code": "access_denied",
                        "message": "Automation is not enabled for this account."
                        + self._echo(request.headers.get("X-DC-DEVKEY")),
                    },
                    "data": None,
                },
                status=403,
            )
        return web.json_response(
            {
                "error": None,
                "data": {"agentList": account.agents, "totalAgents": len(account.agents)},
            }
        )

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        leaf(self.pki, self.host).configure_cert(ctx)
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=ctx)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def config(self, ca_bundle: str, **extra: Any) -> dict[str, Any]:
        """A ``[certcentral]`` table pointed at this lab (add ``api_key_file``)."""
        return {
            "base_url": self.base_url,
            "automation_url": self.automation_url,
            "ca_file": ca_bundle,
            "timeout": "10s",
            **extra,
        }
