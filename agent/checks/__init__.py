"""The checks: one module each, with one signature ``async def run(ctx) -> Outcome``.

The modules of this package are the registry: every public module here is a check named
after its file (helpers would take a leading underscore), so ``CHECK_NAMES`` is found on
disk, not kept as a copy. Modules are imported only when their check runs, so
``check --only privileges`` does not pay for aiohttp or dnspython.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # agent.context imports agent.config, which imports CHECK_NAMES from here
    from agent.context import CheckContext
    from agent.model import Outcome

CheckFn = Callable[["CheckContext"], Awaitable["Outcome"]]

# The order of the table and the report; a check module not listed here goes last.
REPORT_ORDER = (
    "privileges",
    "outbound_https",
    "digicert_ip",
    "fqdn_resolution",
    "caa",
    "sensor_port",
    "clock_skew",
)


def _discover() -> tuple[str, ...]:
    found = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    listed = tuple(n for n in REPORT_ORDER if n in found)
    return listed + tuple(sorted(found - set(listed)))


CHECK_NAMES: tuple[str, ...] = _discover()

# name -> module; tests register extra (fake) checks here.
MODULES: dict[str, str] = {name: f"{__name__}.{name}" for name in CHECK_NAMES}


def available() -> tuple[str, ...]:
    return tuple(MODULES)


# Reasons the runner gives any check that could not run (agent/runner.py); {timeout_key}
# is the setting that bounds the check (CheckContext.timeout_key).
RUNNER_REASONS: dict[str, str] = {
    "check_timeout": (
        "Something the check waits on is hanging; raise {timeout_key} or look at the "
        "details of the other checks for the endpoint that does not answer."
    ),
    "check_crashed": (
        "This is a bug in acme-preflight or an unexpected host condition; please report it "
        "with the output of 'acme-preflight check --json'."
    ),
}


def reason_table() -> dict[str, dict[str, str]]:
    """check -> reason code -> remediation, from each check module's ``REASONS``.

    The one table of reason codes: the docs' reason tables are tested against it.
    Imports every check module, so it is for tests, docs and tools, not for a run.
    """
    table: dict[str, dict[str, str]] = {}
    for name in CHECK_NAMES:
        reasons: dict[str, str] = importlib.import_module(MODULES[name]).REASONS
        table[name] = dict(reasons)
    return table


def load(name: str) -> CheckFn:
    module = importlib.import_module(MODULES[name])
    fn: CheckFn = module.run
    return fn
