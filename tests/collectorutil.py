"""Helpers for the collector tests: valid reports, an in-process server, a subprocess server."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.checks import CHECK_NAMES
from collector import store
from collector.app import Collector
from collector.config import Settings
from collector.limits import GuardedSite
from collector.tokens import Tokens, parse
from tests.lab.plugin import StoreTarget

REPO = Path(__file__).resolve().parent.parent
TOKEN = "fleet-token-0123456789abcdef"
WEB01_TOKEN = "web01-token-0123456789abcdef"
READ_TOKEN = "reader-token-0123456789abcdef"
TOKENS_TEXT = f"# test tokens\n{TOKEN}\n{WEB01_TOKEN} web-01  # bound\n"

CHECKS = CHECK_NAMES


def check(name: str, status: str = "pass", **over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "status": status,
        "summary": f"{name} is {status}",
        "reason": "ok" if status == "pass" else f"{name}_{status}",
        "remediation": "" if status in ("pass", "skip") else f"Fix {name} on this host.",
        "duration_ms": 1.5,
        "details": {"n": 1},
    }
    data.update(over)
    return data


def report(
    host_id: str = "web-01",
    statuses: dict[str, str] | None = None,
    *,
    hostname: str | None = None,
    interval_s: float | None = 60,
    report_id: str | None = None,
    checks: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A schema-valid report; ``statuses`` overrides single checks (default all pass)."""
    statuses = statuses or {}
    if checks is None:
        checks = [check(n, statuses.get(n, "pass")) for n in CHECKS]
    order = ("pass", "skip", "warn", "error", "fail")
    worst = max((c["status"] for c in checks), key=order.index, default="skip")
    data: dict[str, Any] = {
        "schema": "acme-preflight.report/1",
        "report_id": report_id or str(uuid.uuid4()),
        "agent": {
            "host_id": host_id,
            "hostname": hostname if hostname is not None else host_id,
            "fqdn": f"{host_id}.example.com",
            "version": "0.1.0",
        },
        "started_at": "2026-11-27T00:43:13.123Z",
        "finished_at": "2026-11-27T00:43:14.456Z",
        "status": worst,
        "checks": list(checks),
    }
    if interval_s is not None:
        data["interval_s"] = interval_s
    return data


@dataclass
class Clock:
    """A settable wall clock for stale detection and retention."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Running:
    url: str
    collector: Collector
    clock: Clock
    db: Path

    async def count(self, host_id: str | None = None) -> int:
        """Reports stored (by one host), read on a connection of its own."""
        return await self.collector.reader.run(lambda c: store.report_count(c, host_id))

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Portable SQL (``?`` placeholders) on a reader connection."""
        return await self.collector.reader.run(lambda c: c.execute(sql, params).fetchall())

    async def set_read_only(self, on: bool) -> None:
        """Make the writer's connection refuse writes (a full disk, a read-only replica)."""
        sql = {
            "sqlite": f"PRAGMA query_only={int(on)}",
            "postgresql": f"SET default_transaction_read_only = {'on' if on else 'off'}",
        }
        await self.collector.writer.call(lambda c: c.execute(sql[c.dialect]))


def store_settings(target: StoreTarget | None) -> dict[str, Any]:
    """Settings fields that point a collector at ``target`` (None: SQLite under tmp_path)."""
    if target is None:
        return {}
    if target.kind == "sqlite":
        return {"db": Path(target.url)}
    return {"postgres_url": target.url, "store_password_file": target.password_file}


def settings(tmp_path: Path, store: StoreTarget | None = None, **over: Any) -> Settings:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(TOKENS_TEXT)
    values: dict[str, Any] = {"db": tmp_path / "db" / "collector.db", "tokens_file": tokens_file}
    values.update(store_settings(store))
    values.update(over)
    return Settings(**values)


@contextlib.asynccontextmanager
async def serve(
    s: Settings,
    tokens: Tokens | None = None,
    read_tokens: Tokens | None = None,
    account_key: str | None = None,
) -> AsyncIterator[Running]:
    """The real application on 127.0.0.1 (an ephemeral port) with a real SQLite file
    (``account_key``: the CertCentral key, when ``s.certcentral`` is set)."""
    clock = Clock()
    if tokens is None:
        tokens = parse(TOKENS_TEXT, "tokens")
    collector = Collector(s, tokens, read_tokens, clock=clock, account_key=account_key)
    await collector.start()
    runner = collector.runner()
    await runner.setup()
    site = GuardedSite(runner, collector.limiter, host="127.0.0.1", port=0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield Running(f"http://{host}:{port}", collector, clock, s.db)
    finally:
        await runner.cleanup()
        await collector.stop()


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---------------------------------------------------------------- the CLI as a subprocess


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    url: str

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)


def collector_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    for k in ("SSL_CERT_FILE", "SSL_CERT_DIR", "HTTPS_PROXY", "HTTP_PROXY", "https_proxy"):
        env.pop(k, None)
    return env


@contextlib.contextmanager
def server_process(
    *args: str | os.PathLike[str],
    timeout: float = 20,
    nofile: int | None = None,
    prefix: Sequence[str] = (),
) -> Iterator[ServerProcess]:
    """``python -m collector serve ARGS --listen 127.0.0.1:0``; yields once it listens.

    ``nofile``: the process's RLIMIT_NOFILE (soft and hard), e.g. systemd's default soft 1024.
    ``prefix``: a command that ends by exec-ing its arguments (``unshare --mount ...``).
    """

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    cmd = [sys.executable, "-m", "collector", "serve", *map(str, args)]
    if "--listen" not in cmd:
        cmd += ["--listen", "127.0.0.1:0"]
    cmd = [*prefix, *cmd]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=collector_env(),
        cwd="/",
        preexec_fn=limit if nofile is not None else None,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.search(r"listening on (\S+)", line)
            if m:
                yield ServerProcess(proc, m.group(1))
                return
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"collector did not start (rc {proc.returncode}): {err}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
