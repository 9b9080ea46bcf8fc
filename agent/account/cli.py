"""``acme-preflight account``: the account checks once, as a table or JSON (like ``check``)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence

from agent.account.checks import available
from agent.account.key import load_api_key
from agent.account.report import run_account
from agent.config import EX_CONFIG, Config, ConfigError, is_hostname
from agent.context import SystemPaths
from agent.model import Status
from agent.output import render_table, use_colour
from agent.report import identity

EX_USAGE = 64


def cmd_account(config: Config, as_json: bool, only: Sequence[str], fqdns: Sequence[str]) -> int:
    unknown = [n for n in only if n not in available()]
    if unknown:
        print(
            f"acme-preflight: unknown account check {unknown[0]!r} "
            f"(known: {', '.join(available())})",
            file=sys.stderr,
        )
        return EX_USAGE
    bad = [n for n in fqdns if not is_hostname(n.removeprefix("*."))]
    if bad:
        print(f"acme-preflight: --fqdn {bad[0]!r} is not a hostname", file=sys.stderr)
        return EX_USAGE
    try:
        key = load_api_key(config.certcentral)
    except ConfigError as e:
        print(f"acme-preflight: config error: {e}", file=sys.stderr)
        return EX_CONFIG
    who = identity(config, SystemPaths().machine_id)
    data = asyncio.run(run_account(config, key, who, fqdns, only))
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        sys.stdout.write(render_table(data, colour=use_colour(sys.stdout)))
    return Status(data["status"]).exit_code
