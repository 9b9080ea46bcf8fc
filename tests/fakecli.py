"""``python -m tests.fakecli ARGS``: the real CLI with fake checks registered beside the real ones.

``fake_<status>`` returns that status (``fake_error`` raises, so the runner makes the error),
each with a remediation, so CLI tests can drive every outcome and exit code.
"""

from __future__ import annotations

import sys

from agent import checks
from agent.cli import main
from agent.context import CheckContext
from agent.model import Outcome, Status

SUMMARIES = {
    Status.PASS: "everything as it should be",
    Status.SKIP: "nothing to check here",
    Status.WARN: "works, but something looks off and a long summary has to wrap over lines "
    "in a narrow terminal without losing a word of it",
    Status.FAIL: "does not work",
}


def _fake(status: Status) -> checks.CheckFn:
    async def run(ctx: CheckContext) -> Outcome:
        if status is Status.ERROR:
            raise RuntimeError("fake check blew up")
        return Outcome(
            status,
            SUMMARIES[status],
            "ok" if status is Status.PASS else f"fake_{status.value}",
            f"Remediation for the {status.value} check.",
            {"fake": True},
        )

    return run


FAKES = {f"fake_{s.value}": _fake(s) for s in Status}
_real_load = checks.load


def _load(name: str) -> checks.CheckFn:
    return FAKES[name] if name in FAKES else _real_load(name)


checks.MODULES.update({name: __name__ for name in FAKES})
checks.load = _load

if __name__ == "__main__":
    sys.exit(main())
