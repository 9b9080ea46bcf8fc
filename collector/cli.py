"""``acme-preflight-collector``: the reference collector's command line."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent import __version__
from agent.account.key import load_api_key
from agent.config import EX_CONFIG, ConfigError
from collector import config, limits, tokens, workers
from collector.config import Settings
from collector.workers import Worker

EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_CANTCREAT = 73


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="acme-preflight-collector",
        description="Reference collector for acme-preflight reports: ingest, API, fleet page.",
    )
    p.add_argument("--version", action="version", version=f"acme-preflight-collector {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the collector")
    serve.add_argument("--config", type=Path, help="TOML config file (flags override it)")
    serve.add_argument("--listen", metavar="HOST:PORT", help=f"default {config.DEFAULT_LISTEN}")
    serve.add_argument("--db", type=Path, metavar="PATH", help=f"default {config.DEFAULT_DB}")
    serve.add_argument(
        "--tokens-file", type=Path, metavar="PATH", help="lines of `token [host_id]`"
    )
    serve.add_argument("--tls-cert", type=Path, metavar="PATH", help="PEM certificate chain")
    serve.add_argument("--tls-key", type=Path, metavar="PATH", help="PEM private key")
    serve.add_argument(
        "--client-ca", type=Path, metavar="PATH", help="require client certificates from this CA"
    )
    serve.add_argument("--workers", type=int, metavar="N", help="HTTP worker processes (default 1)")
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    s = config.load(args.config)
    s = config.with_flags(
        s,
        listen=args.listen,
        db=args.db,
        tokens_file=args.tokens_file,
        cert=args.tls_cert,
        key=args.tls_key,
        client_ca=args.client_ca,
        workers=args.workers,
    )
    return config.check(s)


def ssl_context(s: Settings) -> ssl.SSLContext | None:
    if not s.tls.enabled:
        return None
    assert s.tls.cert is not None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(s.tls.cert, s.tls.key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError("[tls] cert", f"cannot load {s.tls.cert} / {s.tls.key}: {e}") from None
    if s.tls.client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=s.tls.client_ca)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError("[tls] client_ca", f"cannot load {s.tls.client_ca}: {e}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def tune_gc() -> None:
    """Make the cyclic GC cheap on the ingest path.

    Each report parses into ~150 dicts and lists that die with the request (freed by reference
    counting), yet their allocation drives generation-0 collections every few requests and a
    full collection, which walks every object of aiohttp and the modules, every hundred. Freeze
    what start-up built (it lives as long as the process) and collect generation 0 every
    20,000 net allocations instead of 700.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, *gc.get_threshold()[1:])


def listening_line(bound: tuple[Any, ...], tls: bool) -> str:
    shown = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
    # tests and scripts read this line to find a port chosen with :0
    return (
        f"acme-preflight-collector: listening on {'https' if tls else 'http'}://{shown}:{bound[1]}"
    )


async def serve(s: Settings, ctx: ssl.SSLContext | None, worker: Worker | None = None) -> int:
    """Run one collector process: the only one, or ``worker`` of several (see workers.py)."""
    from aiohttp import web

    from agent.log import configure, get
    from collector.app import Collector
    from collector.metrics import Metrics
    from collector.store import StoreError

    configure(s.log_level, stream=sys.stderr)
    log = get("acme_preflight.collector")
    toks = tokens.load(s.tokens_file) if s.tokens_file else None
    read_toks = tokens.load(s.read_tokens_file, "read_tokens_file") if s.read_tokens_file else None
    key = load_api_key(s.certcentral) if s.certcentral is not None else None
    if worker is None:
        collector = Collector(s, toks, read_toks, account_key=key)
    else:
        metrics = Metrics(worker.metrics_rows, worker.index)
        collector = Collector(
            s, toks, read_toks, metrics=metrics, worker=worker.index, account_key=key
        )
    try:
        await collector.start()
    except StoreError as e:
        print(f"acme-preflight-collector: database error: {e}", file=sys.stderr)
        return EX_CANTCREAT
    tune_gc()
    limits.quiet_accept_errors(asyncio.get_running_loop())
    wanted = s.limits.max_connections
    cap, nofile = limits.fd_budget(wanted)
    collector.limiter.cap = cap
    if cap < wanted:
        log.warning(
            "[limits] max_connections lowered to fit the open files limit",
            max_connections=cap,
            configured=wanted,
            nofile=nofile,
            hint="raise LimitNOFILE= in the unit",
        )
    runner = collector.runner()
    await runner.setup()
    host, port = s.host_port
    sites: list[web.BaseSite]
    if worker is None:
        sites = [
            limits.GuardedSite(runner, collector.limiter, host=host, port=port, ssl_context=ctx)
        ]
    else:  # sockets bound and listening in the supervisor, one set per worker
        sites = [
            limits.GuardedSite(runner, collector.limiter, sock=sock, ssl_context=ctx)
            for sock in worker.sockets
        ]
    try:
        for site in sites:
            await site.start()
    except OSError as e:
        print(f"acme-preflight-collector: cannot listen on {s.listen}: {e}", file=sys.stderr)
        await runner.cleanup()
        await collector.stop()
        return EX_UNAVAILABLE
    # before the line that tells a supervisor it may stop us
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    bound = runner.addresses[0]
    if worker is None:
        print(listening_line(bound, bool(ctx)), flush=True)
    else:
        worker.ready()  # the supervisor prints the line once every worker serves
    log.info(
        "collector started",
        listen=listening_line(bound, bool(ctx)).rpartition("//")[2],
        store=s.store_url,
        tls=bool(ctx),
        worker=collector.worker,
        max_connections=cap,
    )

    def reload_tokens() -> None:
        # SIGHUP: re-read the tokens files (rotation without a restart); a bad file keeps the old
        try:
            if s.tokens_file:
                collector.tokens = tokens.load(s.tokens_file)
            if s.read_tokens_file:
                collector.read_tokens = tokens.load(s.read_tokens_file, "read_tokens_file")
            log.info("tokens reloaded")
        except ConfigError as e:
            log.error("tokens not reloaded, keeping the previous ones", error=str(e))

    loop.add_signal_handler(signal.SIGHUP, reload_tokens)
    await stop.wait()
    log.info("collector stopping")
    await runner.cleanup()
    await collector.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command != "serve":
        parser.print_help(sys.stderr)
        return EX_USAGE
    try:
        s = settings_from_args(args)
        ctx = ssl_context(s)
        if s.tokens_file:
            tokens.load(s.tokens_file)  # fail before binding anything
        if s.read_tokens_file:
            tokens.load(s.read_tokens_file, "read_tokens_file")
        if s.certcentral is not None:
            load_api_key(s.certcentral)  # a missing or bad key file: exit 78 before serving
    except ConfigError as e:
        print(f"acme-preflight-collector: config error: {e}", file=sys.stderr)
        return EX_CONFIG
    for warning in config.start_warnings(s):
        print(f"acme-preflight-collector: warning: {warning}", file=sys.stderr)
    if s.workers > 1:
        return workers.supervise(s, ctx, lambda w: asyncio.run(serve(s, ctx, w)), listening_line)
    return asyncio.run(serve(s, ctx))


if __name__ == "__main__":
    sys.exit(main())
