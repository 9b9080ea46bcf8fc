"""``automation``: the Automation API answers and lists the ACME agents with their status.

DigiCert enables automation per account ("If automation menus do not appear ... contact
your DigiCert sales representative"). ``POST {automation_url}/agent/list`` answers
``{"error": ..., "data": ...}``; a refusal means automation may not be enabled. Agents in
Error, Suspended or Void state warn. Skipped when ``[certcentral] automation_url`` is
empty or the API cannot be reached (with the reason).
"""

from __future__ import annotations

from typing import Any

from agent.account.client import ApiError
from agent.account.common import api_failure, text
from agent.account.context import AccountContext
from agent.model import Outcome, Status
from agent.net.stream import Deadline

UNHEALTHY = frozenset({"error", "suspended", "void"})
MAX_AGENTS = 200  # agents listed in the details


def agents_of(data: object) -> list[dict[str, Any]] | None:
    """The agent list of an ``agent/list`` answer's ``data``; None when there is none."""
    if isinstance(data, dict):
        for key in ("agentList", "agents", "list", "items"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
    if not isinstance(data, list):
        return None
    out = []
    for a in data:
        if not isinstance(a, dict):
            continue
        out.append(
            {
                "name": text(a.get("agentName") or a.get("name") or a.get("agentId"), 80),
                "status": text(a.get("status") or a.get("agentStatus"), 40) or "unknown",
                "host": text(a.get("hostname") or a.get("ipAddress") or a.get("ip"), 80) or None,
            }
        )
    return out


def judge(answer: dict[str, Any]) -> Outcome:
    error = answer.get("error")
    if error:
        message = text(error.get("message") if isinstance(error, dict) else error, 200)
        return _unavailable(
            f"the Automation API refused agent/list ({message})", {"error": message}
        )
    agents = agents_of(answer.get("data"))
    if agents is None:
        return Outcome(
            Status.SKIP,
            "The Automation API answered without an agent list",
            "automation_unreachable",
            "Check [certcentral] automation_url (default https://caas.digicert.com/automationws/v1).",
            {},
        )
    details: dict[str, Any] = {"agents": agents[:MAX_AGENTS], "count": len(agents)}
    if not agents:
        return Outcome(
            Status.WARN,
            "Automation is enabled but no ACME agents are registered",
            "no_agents",
            "Install and register DigiCert's ACME agent on each host (CertCentral > "
            "Automation > Automation agents), after acme-preflight's host checks pass.",
            details,
        )
    bad = [f"{a['name']} ({a['status']})" for a in agents if a["status"].lower() in UNHEALTHY]
    if bad:
        return Outcome(
            Status.WARN,
            f"ACME agents need attention: {', '.join(bad[:5])}"
            + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""),
            "agents_unhealthy",
            "Open the agents in CertCentral (Automation > Automation agents) for the error; "
            "run acme-preflight check on those hosts.",
            details,
        )
    counts: dict[str, int] = {}
    for a in agents:
        counts[a["status"]] = counts.get(a["status"], 0) + 1
    shown = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return Outcome(Status.PASS, f"{len(agents)} ACME agents: {shown}", "ok", "", details)


def _unavailable(why: str, details: dict[str, Any]) -> Outcome:
    return Outcome(
        Status.SKIP,
        f"Automation may not be enabled for the account: {why}",
        "automation_unavailable",
        "DigiCert enables automation per account: if the Automation menu is missing in "
        "CertCentral, ask your DigiCert account manager to enable it.",
        details,
    )


async def run(ctx: AccountContext) -> Outcome:
    if not ctx.config.certcentral.automation_url:
        return Outcome(
            Status.SKIP,
            "The Automation API is not configured ([certcentral] automation_url is empty)",
            "automation_not_configured",
            "",
            {},
        )
    body: dict[str, Any] = {}
    deadline = Deadline(ctx.budget)
    try:
        # at most half the budget: the account id is optional in the request
        me = await ctx.client.get("/user/me", ctx.budget / 2)
        if isinstance(me.get("account_id"), int):
            body["accountId"] = me["account_id"]
    except ApiError as e:
        if e.kind == "rejected":
            return api_failure(e, "the key's user (GET /user/me)")
        # otherwise the api_key check reports it; the Automation API may still answer
    try:
        answer = await ctx.client.automation("/agent/list", body, deadline.remaining())
    except ApiError as e:
        if e.kind in ("rejected", "denied") or (e.status is not None and e.status < 500):
            return _unavailable(e.message, {"error": e.to_dict()})
        return Outcome(
            Status.SKIP,
            f"The Automation API could not be reached: {e.message}",
            "automation_unreachable",
            "Check [certcentral] automation_url and that outbound HTTPS to it is allowed.",
            {"error": e.to_dict()},
        )
    return judge(answer)
