"""The ``acme-preflight`` command line.

Heavy modules are imported inside the subcommand that needs them, so a one-shot
``check`` starts fast and never loads the scheduler or the web server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from agent import __version__
from agent.config import EX_CONFIG, Config, ConfigError, load

EX_USAGE = 64


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error, which a Nagios caller reads as "fail": use 64."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="acme-preflight",
        description="Checks that this host meets DigiCert's ACME agent prerequisites.",
    )
    p.add_argument("--version", action="version", version=f"acme-preflight {__version__}")
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="config file (default /etc/acme-preflight/config.toml; missing means defaults)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    check = sub.add_parser("check", help="run the checks once and print the result")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this check (repeatable)",
    )

    account = sub.add_parser(
        "account", help="check the CertCentral account through its API ([certcentral])"
    )
    account.add_argument("--json", action="store_true", help="print the report as JSON")
    account.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="run only this check"
    )
    account.add_argument(
        "--fqdn",
        action="append",
        default=[],
        metavar="NAME",
        help="a web server name to match against the account's domains (repeatable)",
    )

    sub.add_parser("run", help="run as a daemon: check every interval and report to the collector")
    status = sub.add_parser("status", help="show the last result of the running daemon")
    status.add_argument("--json", action="store_true", help="print the report as JSON")

    cfg = sub.add_parser("config", help="validate or show the configuration")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION")
    cfg_sub.add_parser("validate", help="check the config file and exit 0 or 78")
    cfg_sub.add_parser(
        "show", help="print the effective config (defaults filled in, secrets redacted)"
    )
    return p


def _load_config(path: Path | None) -> Config:
    return load(path)


def cmd_check(config: Config, as_json: bool, only: Sequence[str]) -> int:
    from agent.checks import available
    from agent.context import CheckContext
    from agent.output import render_table, use_colour
    from agent.report import build_report, identity, utc_now
    from agent.runner import run_checks

    unknown = [n for n in only if n not in available()]
    if unknown:
        print(
            f"acme-preflight: unknown check {unknown[0]!r} (known: {', '.join(available())})",
            file=sys.stderr,
        )
        return EX_USAGE
    ctx = CheckContext(config)
    started = utc_now()
    results = asyncio.run(run_checks(ctx, only))
    report = build_report(config, identity(config, ctx.paths.machine_id), results, started)
    data = report.to_dict()
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        sys.stdout.write(render_table(data, colour=use_colour(sys.stdout)))
    return report.status.exit_code


def cmd_config(config: Config, action: str | None) -> int:
    if action == "show":
        from agent.config import to_mapping

        print(json.dumps(to_mapping(config), indent=2))
        return 0
    where = str(config.source) if config.source else "no config file; defaults"
    print(f"config OK ({where})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        rc = _main(argv)
        sys.stdout.flush()  # a closed pipe shows up here rather than at interpreter exit
        return rc
    except BrokenPipeError:
        # The reader went away (`check --json | head`): stop quietly like other Unix tools,
        # and keep Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EX_USAGE
    try:
        config = _load_config(args.config)
    except ConfigError as e:
        print(f"acme-preflight: config error: {e}", file=sys.stderr)
        return EX_CONFIG
    if args.command == "check":
        return cmd_check(config, args.json, args.only)
    if args.command == "config":
        return cmd_config(config, args.config_command)
    if args.command == "account":
        from agent.account.cli import cmd_account

        return cmd_account(config, args.json, args.only, args.fqdn)
    if args.command == "run":
        from agent.daemon.service import run

        return run(config, args.config)
    if args.command == "status":
        from agent.daemon.status_cli import cmd_status

        return cmd_status(config, args.json)
    parser.print_help(sys.stderr)
    return EX_USAGE


if __name__ == "__main__":
    sys.exit(main())
