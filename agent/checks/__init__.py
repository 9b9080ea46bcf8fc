"""The checks: one module each, with one signature ``async def run(ctx) -> Outcome``.

Modules are imported only when their check runs, so ``check --only privileges``
does not pay for aiohttp or dnspython.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable

from agent.context import CheckContext
from agent.model import Outcome

CheckFn = Callable[[CheckContext], Awaitable[Outcome]]

# Order is the order of the table and the report.
MODULES: dict[str, str] = {
    "privileges": "agent.checks.privileges",
    "outbound_https": "agent.checks.outbound_https",
    "digicert_ip": "agent.checks.digicert_ip",
    "fqdn_resolution": "agent.checks.fqdn_resolution",
    "sensor_port": "agent.checks.sensor_port",
    "clock_skew": "agent.checks.clock_skew",
}


def available() -> tuple[str, ...]:
    return tuple(MODULES)


def load(name: str) -> CheckFn:
    module = importlib.import_module(MODULES[name])
    fn: CheckFn = module.run
    return fn
