"""``acme-preflight run``: schedule the checks, spool and deliver every report, serve status.

One asyncio loop holds everything: APScheduler 3.x (``AsyncIOScheduler``) runs the
checks, a delivery task (``delivery.py``) drains the spool oldest first, a watchdog task
pings systemd,
and a small HTTP server (``status_server``) answers ``/healthz``, ``/status`` and
``/metrics``. Blocking work (SQLite with fsync, writing ``last.json``, looking up the
FQDN) runs in threads.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from agent import __version__, compat, log
from agent.config import EX_CONFIG, Config, ConfigError, load
from agent.context import CheckContext
from agent.daemon import memory, status_server
from agent.daemon.delivery import Delivery
from agent.daemon.metrics import Metrics
from agent.daemon.notify import Notifier
from agent.daemon.sender import Sender, load_token
from agent.daemon.state import write_last
from agent.model import Status
from agent.net import tls
from agent.preflight import EX_CANTCREAT, StartupError, startup, startup_warnings
from agent.redact import redact_obj
from agent.report import build_report, identity, utc_now
from agent.runner import run_checks

EX_TEMPFAIL = 75
LOCK_FILE = "daemon.lock"
JOB_ID = "checks"
# How long a run in flight may take to finish after SIGTERM before it is cancelled;
# well inside systemd's default TimeoutStopSec=90s.
STOP_GRACE_MAX = 30.0

_log = log.get("acme_preflight.daemon")


def stop_grace(config: Config) -> float:
    return min(config.agent.timeout + 2.0, STOP_GRACE_MAX)


def trigger(config: Config) -> IntervalTrigger:
    jitter = config.agent.effective_jitter
    return IntervalTrigger(
        seconds=config.agent.interval, jitter=jitter if jitter > 0 else None, timezone=compat.UTC
    )


def misfire_grace(config: Config) -> int:
    """A run late by less than an interval still happens; later ones coalesce."""
    return max(1, int(config.agent.interval))


class Daemon:
    def __init__(
        self,
        config: Config,
        token: str | None,
        config_path: Path | None,
        explicit_config: bool,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._clock = clock  # monotonic seconds, for the health bound
        self._token = token
        self._config_path = config_path
        self._explicit = explicit_config
        self.notifier = notifier or Notifier()
        self.metrics = Metrics(__version__)
        self._sender: Sender | None = self._make_sender(config, token)
        self.delivery = Delivery(
            config.agent.state_dir,
            config.collector.spool_max_reports,
            config.collector.spool_max_bytes,
            self.metrics,
            self._sender,
        )
        self._started = clock()
        self._last_run_mono: float | None = None
        self._inflight: asyncio.Task[Any] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._reload_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._scheduler: AsyncIOScheduler | None = None
        self._status: status_server.StatusServer | None = None

    # ------------------------------------------------------------------ lifecycle

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)

        cfg = self.config
        self._tasks.append(asyncio.create_task(self.delivery.run(), name="deliver"))
        await self._start_status(cfg.status.listen)

        self._scheduler = AsyncIOScheduler(event_loop=loop, timezone=compat.UTC)
        self._scheduler.add_job(
            self._run_job,
            trigger=trigger(cfg),
            id=JOB_ID,
            name="acme-preflight checks",
            next_run_time=datetime.now(compat.UTC),  # the first run at start
            max_instances=1,
            coalesce=True,
            misfire_grace_time=misfire_grace(cfg),
        )
        self._scheduler.start()
        if self.notifier.watchdog_interval:
            self._tasks.append(
                asyncio.create_task(
                    self._watchdog_loop(self.notifier.watchdog_interval), name="watchdog"
                )
            )
        _log.info(
            "daemon started",
            version=__version__,
            interval_s=cfg.agent.interval,
            jitter_s=cfg.agent.effective_jitter,
            checks=list(cfg.agent.checks),
            collector=self._sender.display_url if self._sender else None,
            state_dir=str(cfg.agent.state_dir),
            status_listen=cfg.status.listen or None,
        )
        self.notifier.ready("started, first check run in progress")
        await self._stop.wait()
        await self._shutdown()
        return 0

    def _on_stop(self, sig: signal.Signals) -> None:
        if not self._stop.is_set():
            _log.info("stopping", signal=sig.name)
            self.notifier.stopping()
        self._stop.set()

    async def _shutdown(self) -> None:
        grace = stop_grace(self.config)
        if self._scheduler is not None:
            self._scheduler.pause()  # no new runs
        inflight = self._inflight
        if inflight is not None and not inflight.done():
            _log.info("waiting for the run in flight", bound_s=grace)
            _, pending = await asyncio.wait({inflight}, timeout=grace)
            if pending:
                _log.warning("run in flight cancelled at shutdown", bound_s=grace)
                inflight.cancel()
                await asyncio.wait({inflight}, timeout=2)
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        tasks = [*self._tasks, *([self._reload_task] if self._reload_task else [])]
        for task in tasks:
            task.cancel()
        # A POST cut off here leaves its report in the spool: it is sent again next start.
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.delivery.close()
        if self._status is not None:
            await self._status.close()
        _log.info("stopped")

    async def _start_status(self, listen: str) -> None:
        if not listen:
            return
        try:
            self._status = await status_server.start(listen, self)
        except OSError as e:
            # The checks and the delivery matter more than the local endpoint: keep going.
            _log.error("cannot serve the status endpoint", listen=listen, error=str(e))

    async def _watchdog_loop(self, interval: float) -> None:
        # Pinged from the event loop itself: a stalled loop stops the pings and
        # systemd restarts the service.
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    # -------------------------------------------------------------------- checks

    async def _run_job(self) -> None:
        self._inflight = asyncio.current_task()
        try:
            await self._run_once()
        except asyncio.CancelledError:
            raise
        except Exception:  # a failed run is logged; the next one is scheduled anyway
            _log.exception("check run failed")
        finally:
            self._inflight = None
            # What the run allocated for a moment goes back to the OS, so RSS stays
            # flat over months of runs (docs/performance.md, "Daemon footprint").
            memory.trim()

    async def _run_once(self) -> None:
        cfg = self.config
        ctx = CheckContext(cfg)
        started = utc_now()
        results = await run_checks(ctx)
        agent = await asyncio.to_thread(identity, cfg, ctx.paths.machine_id)
        report = build_report(cfg, agent, results, started)
        data: dict[str, Any] = redact_obj(report.to_dict(), self._secrets())
        self.run_finished(data)
        queued = 0
        if self._sender is not None:
            # The spool first: it is what must not lose the report. Serialized once, here,
            # without dropped_reports (the delivery splices that in when it sends).
            body = json.dumps(data, separators=(",", ":")).encode()
            queued = await self.delivery.enqueue(data["report_id"], body)
        try:
            await asyncio.to_thread(write_last, cfg.agent.state_dir, data)
        except OSError as e:
            _log.error("cannot write last.json", error=str(e))
        counts = {s.value: sum(1 for c in results if c.status is s) for s in Status}
        _log.info(
            "check run finished",
            status=report.status.value,
            report_id=report.report_id,
            **{k: v for k, v in counts.items() if v},
        )
        self.notifier.status(_status_line(report.status, counts, queued, self._sender))

    # -------------------------------------------------------------------- reload

    def _on_hup(self) -> None:
        if self._reload_task is not None and not self._reload_task.done():
            _log.info("reload already in progress")
            return
        self._reload_task = asyncio.create_task(self.reload(), name="reload")

    async def reload(self) -> None:
        """Re-read the config and the token (SIGHUP); a bad one is logged and ignored."""
        self.notifier.reloading()
        # Re-read the CA store too (the checks share one verifying context): SIGHUP is
        # how an administrator says "the system changed".
        tls.forget_contexts()
        _log.info("reloading the config", path=str(self._config_path or "(default)"))
        try:
            new = await asyncio.to_thread(load, self._config_path, explicit=self._explicit)
            token = (
                await asyncio.to_thread(load_token, new.collector) if new.collector.url else None
            )
            sender = self._make_sender(new, token)
        except ConfigError as e:
            self.metrics.reloads["failed"] += 1
            _log.error("config reload failed; keeping the running config", error=str(e))
            self.notifier.ready("config reload failed; running config kept")
            return
        old = self.config
        if new.agent.state_dir != old.agent.state_dir:
            _log.warning("[agent] state_dir changes take effect at restart")
            new = replace(new, agent=replace(new.agent, state_dir=old.agent.state_dir))
        if new.status.listen != old.status.listen:
            _log.warning("[status] listen changes take effect at restart")
        self._token = token
        log.set_secrets((*new.secrets(), *((token,) if token else ())))
        for warning in startup_warnings(new, token):
            _log.warning(warning)
        if (new.agent.log_level, new.agent.log_format) != (
            old.agent.log_level,
            old.agent.log_format,
        ):
            log.configure(new.agent.log_level, fmt=new.agent.log_format)
        if self._scheduler is not None and (
            new.agent.interval != old.agent.interval
            or new.agent.effective_jitter != old.agent.effective_jitter
        ):
            self._scheduler.modify_job(JOB_ID, misfire_grace_time=misfire_grace(new))
            # The next run is one new interval from now.
            self._scheduler.reschedule_job(JOB_ID, trigger=trigger(new))
        self.config = new
        self._sender = sender
        # the delivery closes the old session and ends a backoff in progress
        self.delivery.use(sender, new.collector.spool_max_reports, new.collector.spool_max_bytes)
        self.metrics.reloads["ok"] += 1
        _log.info(
            "config reloaded",
            interval_s=new.agent.interval,
            jitter_s=new.agent.effective_jitter,
            collector=sender.display_url if sender else None,
        )
        self.notifier.ready("config reloaded")

    # --------------------------------------------------------------- status API

    def run_finished(self, report: dict[str, Any]) -> None:
        """A run finished with ``report``: what /status, /healthz and /metrics show."""
        self._last_run_mono = self._clock()
        self.metrics.runs += 1
        self.metrics.last_report = report
        self.metrics.last_run_ts = time.time()

    def last_report(self) -> dict[str, Any] | None:
        return self.metrics.last_report

    def health(self) -> tuple[bool, str]:
        cfg = self.config.agent
        bound = 2 * cfg.interval + cfg.timeout
        if self._last_run_mono is None:
            age = self._clock() - self._started
            if age <= bound:
                return True, "ok: starting, first run in progress"
            return False, f"unhealthy: no check run finished in {age:.0f}s"
        age = self._clock() - self._last_run_mono
        if age <= bound:
            return True, f"ok: last run finished {age:.1f}s ago"
        return False, f"unhealthy: last run finished {age:.0f}s ago (limit {bound:g}s)"

    def metrics_text(self) -> str:
        return self.metrics.render()

    def daemon_status(self) -> dict[str, Any]:
        return self.metrics.daemon_status()

    # ------------------------------------------------------------------- helpers

    def _secrets(self) -> tuple[str, ...]:
        return (*self.config.secrets(), *((self._token,) if self._token else ()))

    @staticmethod
    def _make_sender(config: Config, token: str | None) -> Sender | None:
        if not config.collector.url:
            return None
        return Sender(config.collector, token, config.secrets())


def _status_line(status: Status, counts: dict[str, int], queued: int, sender: Any) -> str:
    parts = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    line = f"last run {status.value.upper()} ({parts or 'no checks'})"
    if sender is not None:
        line += f"; {queued} queued for the collector"
    return line


def run(config: Config, config_path: Path | None) -> int:
    """Entry point of ``acme-preflight run``; returns the exit code."""
    log.configure(config.agent.log_level, fmt=config.agent.log_format)
    log.set_secrets(config.secrets())
    try:
        ready = startup(config)  # the same checks as `config validate`
    except ConfigError as e:
        print(f"acme-preflight: config error: {e}", file=sys.stderr)
        return EX_CONFIG
    except StartupError as e:
        print(f"acme-preflight: {e}", file=sys.stderr)
        return e.exit_code
    token = ready.token
    log.set_secrets((*config.secrets(), *((token,) if token else ())))
    for warning in ready.warnings:
        _log.warning(warning)
    try:
        config.agent.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        print(
            f"acme-preflight: [agent] state_dir: cannot create {config.agent.state_dir}: "
            f"{e.strerror}",
            file=sys.stderr,
        )
        return EX_CANTCREAT
    try:
        lock: int | None = _lock_state_dir(config.agent.state_dir)
    except OSError as e:
        # A read-only state_dir: nothing can be spooled, so two daemons cannot corrupt it,
        # and checking (and /status, /metrics saying what is wrong) beats exiting.
        print(
            f"acme-preflight: [agent] state_dir: cannot create {config.agent.state_dir / LOCK_FILE}"
            f": {e.strerror}; running without the lock and without a spool until it can",
            file=sys.stderr,
        )
        lock = -1
    if lock is None:
        print(
            f"acme-preflight: another acme-preflight daemon is running with state_dir "
            f"{config.agent.state_dir} (it holds {config.agent.state_dir / LOCK_FILE})",
            file=sys.stderr,
        )
        return EX_TEMPFAIL
    try:
        daemon = Daemon(config, token, config_path, explicit_config=config_path is not None)
        return asyncio.run(daemon.serve())
    finally:
        if lock >= 0:
            os.close(lock)


def _lock_state_dir(state_dir: Path) -> int | None:
    """An exclusive lock for this process's lifetime: two daemons must not share a spool."""
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
