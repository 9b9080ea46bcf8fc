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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Command:
    """One subcommand: its arguments and what it runs (the table below is the CLI)."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Config], int]
    epilog: Callable[[], str] | None = None  # built with the parser: the checks may vary


def _add_globals(p: argparse.ArgumentParser, *, top: bool) -> None:
    """The options every command takes, before or after the command's name.

    Only the top level has a default: below it SUPPRESS leaves a value given earlier alone.
    """
    p.add_argument(
        "--config",
        type=Path,
        default=None if top else argparse.SUPPRESS,
        help="config file (default /etc/acme-preflight/config.toml; missing means defaults)",
    )


def _only(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _report_arguments(p: argparse.ArgumentParser, only_help: str) -> None:
    """--json and --only, as `check` and `account` both take them."""
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--only",
        action="append",
        type=_only,
        default=[],
        metavar="NAME[,NAME...]",
        help=only_help,
    )


def _check_arguments(p: argparse.ArgumentParser) -> None:
    _report_arguments(p, "run only these checks (repeatable; names are case-insensitive)")


def _check_epilog() -> str:
    from agent.checks import available

    return (
        f"checks: {', '.join(available())}\n\n"
        "exit codes (like a Nagios plugin; the worst check decides):\n"
        "  0  pass or skip\n  1  warn\n  2  fail\n  3  error (a check could not run)\n"
        f"  {EX_USAGE} usage error\n  {EX_CONFIG} config error"
    )


def _status_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _config_arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="config_command", metavar="ACTION", parser_class=_Parser)
    validate = actions.add_parser(
        "validate",
        help=f"check the config as `run` would at start; exit 0, {EX_CONFIG} or 73",
    )
    _add_globals(validate, top=False)
    show = actions.add_parser(
        "show", help="print the effective config (defaults filled in, secrets redacted)"
    )
    _add_globals(show, top=False)
    show.add_argument(
        "--format",
        choices=("json", "toml"),
        default="json",
        help="toml: a config file to paste back (secrets redacted)",
    )


def _run_check(args: argparse.Namespace, config: Config) -> int:
    return cmd_check(config, args.json, [n for names in args.only for n in names])


def _account_arguments(p: argparse.ArgumentParser) -> None:
    _report_arguments(p, "run only these account checks (repeatable)")
    p.add_argument(
        "--fqdn",
        action="append",
        default=[],
        metavar="NAME",
        help="a web server name to match against the account's domains (repeatable)",
    )


def _run_account(args: argparse.Namespace, config: Config) -> int:
    from agent.account.cli import cmd_account

    return cmd_account(config, args.json, [n for names in args.only for n in names], args.fqdn)


def _run_daemon(args: argparse.Namespace, config: Config) -> int:
    from agent.daemon.service import run

    return run(config, args.config)


def _run_status(args: argparse.Namespace, config: Config) -> int:
    from agent.daemon.status_cli import cmd_status

    return cmd_status(config, args.json)


def _run_config(args: argparse.Namespace, config: Config) -> int:
    return cmd_config(config, args.config_command, getattr(args, "format", "json"))


COMMANDS: tuple[Command, ...] = (
    Command(
        "check",
        "run the checks once and print the result",
        _check_arguments,
        _run_check,
        epilog=_check_epilog,
    ),
    Command(
        "account",
        "check the CertCentral account through its API ([certcentral])",
        _account_arguments,
        _run_account,
    ),
    Command(
        "run",
        "run as a daemon: check every interval and report to the collector",
        lambda p: None,
        _run_daemon,
    ),
    Command("status", "show the last result of the running daemon", _status_arguments, _run_status),
    Command("config", "validate or show the configuration", _config_arguments, _run_config),
)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="acme-preflight",
        description="Checks that this host meets DigiCert's ACME agent prerequisites.",
    )
    p.add_argument("--version", action="version", version=f"acme-preflight {__version__}")
    _add_globals(p, top=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS:
        cp = sub.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            epilog=command.epilog() if command.epilog else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_globals(cp, top=False)
        command.arguments(cp)
    return p


def _load_config(path: Path | None) -> Config:
    return load(path)


def cmd_check(config: Config, as_json: bool, only: Sequence[str]) -> int:
    from agent.checks import available
    from agent.context import CheckContext
    from agent.output import render_table, use_colour
    from agent.report import build_report, identity, utc_now
    from agent.runner import run_checks

    known = {name.lower(): name for name in available()}
    unknown = [n for n in only if n.lower() not in known]
    if unknown:
        print(
            f"acme-preflight: unknown check {unknown[0]!r} (known: {', '.join(available())})",
            file=sys.stderr,
        )
        return EX_USAGE
    names = list(dict.fromkeys(known[n.lower()] for n in only))
    ctx = CheckContext(config)
    started = utc_now()
    results = asyncio.run(run_checks(ctx, names))
    report = build_report(config, identity(config, ctx.paths.machine_id), results, started)
    data = report.to_dict()
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        sys.stdout.write(render_table(data, colour=use_colour(sys.stdout)))
    return report.status.exit_code


def cmd_config(config: Config, action: str | None, fmt: str = "json") -> int:
    if action == "show":
        from agent.config import to_mapping, to_toml

        if fmt == "toml":
            sys.stdout.write(to_toml(config))
        else:
            print(json.dumps(to_mapping(config), indent=2))
        return 0
    from agent.preflight import StartupError, startup

    try:
        ready = startup(config)
    except ConfigError as e:
        print(f"acme-preflight: config error: {e}", file=sys.stderr)
        return EX_CONFIG
    except StartupError as e:
        print(f"acme-preflight: {e}", file=sys.stderr)
        return e.exit_code
    for warning in ready.warnings:
        print(f"acme-preflight: warning: {warning}", file=sys.stderr)
    where = str(config.source) if config.source else "no config file; defaults"
    print(
        f"config OK ({where})" + (f", {len(ready.warnings)} warning(s)" if ready.warnings else "")
    )
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
    for command in COMMANDS:
        if command.name == args.command:
            return command.run(args, config)
    parser.print_help(sys.stderr)
    return EX_USAGE


if __name__ == "__main__":
    sys.exit(main())
