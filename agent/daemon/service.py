"""``acme-preflight run``: schedule the checks, spool and deliver every report, serve status.

One asyncio loop holds everything: APScheduler 3.x (``AsyncIOScheduler``) runs the
checks, a delivery task drains the spool oldest first, a watchdog task pings systemd,
and a small HTTP server (``status_server``) answers ``/healthz``, ``/status`` and
``/metrics``. Blocking work (SQLite with fsync, writing ``last.json``, looking up the
FQDN) runs in threads.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import json
import os
import signal
import sqlite3
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from agent import __version__, log
from agent.config import EX_CONFIG, Config, ConfigError, load
from agent.context import CheckContext
from agent.daemon import memory, status_server
from agent.daemon.metrics import Metrics
from agent.daemon.notify import Notifier
from agent.daemon.sender import (
    Sender,
    SendResult,
    Verdict,
    backoff_delay,
    load_token,
    retry_delay,
)
from agent.daemon.spool import SPOOL_FILE, Spool, Spooled
from agent.daemon.state import write_last
from agent.model import Status
from agent.net import tls
from agent.redact import redact_obj
from agent.report import build_report, identity, utc_now
from agent.runner import run_checks

EX_CANTCREAT = 73
EX_TEMPFAIL = 75
LOCK_FILE = "daemon.lock"
JOB_ID = "checks"
# How long a run in flight may take to finish after SIGTERM before it is cancelled;
# well inside systemd's default TimeoutStopSec=90s.
STOP_GRACE_MAX = 30.0
# Reports held in memory while the spool cannot be written; beyond this the oldest go.
UNSPOOLED_MAX = 100
# Reports read from the spool at once, and deleted in one transaction once accepted.
DRAIN_BATCH = 256
DRAIN_BATCH_BYTES = 4 * 1024 * 1024
# A batch at least this long is sent with the sender's window in flight at once.
CONCURRENT_BACKLOG = 64

_log = log.get("acme_preflight.daemon")


def stop_grace(config: Config) -> float:
    return min(config.agent.timeout + 2.0, STOP_GRACE_MAX)


def trigger(config: Config) -> IntervalTrigger:
    jitter = config.agent.effective_jitter
    return IntervalTrigger(
        seconds=config.agent.interval, jitter=jitter if jitter > 0 else None, timezone=UTC
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
    ) -> None:
        self.config = config
        self._token = token
        self._config_path = config_path
        self._explicit = explicit_config
        self.notifier = notifier or Notifier()
        self.metrics = Metrics(__version__)
        self._sender: Sender | None = self._make_sender(config, token)
        self._current: Sender | None = self._sender  # the one the delivery task uses
        self._failures = 0  # consecutive failed attempts, for the backoff
        self._spool: Spool | None = None
        self._last: dict[str, Any] | None = None
        self._started = time.monotonic()
        self._last_run_mono: float | None = None
        self._inflight: asyncio.Task[Any] | None = None
        self._unspooled: collections.deque[tuple[str, bytes]] = collections.deque()
        self._tasks: list[asyncio.Task[Any]] = []
        self._reload_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()  # a report was spooled, or the config changed
        self._kick = asyncio.Event()  # cut a backoff short (after a reload)
        self._scheduler: AsyncIOScheduler | None = None
        self._status: status_server.StatusServer | None = None

    # ------------------------------------------------------------------ lifecycle

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)

        cfg = self.config
        await self._open_spool()
        await self._start_status(cfg.status.listen)

        self._scheduler = AsyncIOScheduler(event_loop=loop, timezone=UTC)
        self._scheduler.add_job(
            self._run_job,
            trigger=trigger(cfg),
            id=JOB_ID,
            name="acme-preflight checks",
            next_run_time=datetime.now(UTC),  # the first run at start
            max_instances=1,
            coalesce=True,
            misfire_grace_time=misfire_grace(cfg),
        )
        self._scheduler.start()
        self._tasks.append(asyncio.create_task(self._deliver_loop(), name="deliver"))
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
        if self._sender:
            self._wake.set()  # deliver what an earlier process left in the spool
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
        for sender in {self._sender, self._current}:
            if sender is not None:
                await sender.close()
        if self._status is not None:
            await self._status.close()
        if self._spool is not None:
            await asyncio.to_thread(self._spool.close)
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
        self._last = data
        self._last_run_mono = time.monotonic()
        self.metrics.runs += 1
        self.metrics.last_report = data
        self.metrics.last_run_ts = time.time()
        queued = 0
        if self._sender is not None:
            # The spool first: it is what must not lose the report.
            body = json.dumps(data, separators=(",", ":")).encode()
            dropped = await self._spool_reports(data["report_id"], body)
            if dropped:
                self.metrics.dropped += dropped
                _log.warning(
                    "spool full: dropped the oldest reports",
                    dropped=dropped,
                    max_reports=cfg.collector.spool_max_reports,
                    max_bytes=cfg.collector.spool_max_bytes,
                )
            await self._refresh_depth()
            queued = self.metrics.spool_reports
            self._wake.set()
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

    async def _open_spool(self) -> bool:
        """Open the spool; a state_dir that cannot be written (read-only, full) is reported
        and the daemon runs on, trying again at the next run."""
        cfg = self.config
        try:
            self._spool = await asyncio.to_thread(
                Spool,
                cfg.agent.state_dir / SPOOL_FILE,
                cfg.collector.spool_max_reports,
                cfg.collector.spool_max_bytes,
            )
        except (sqlite3.Error, OSError) as e:
            self.metrics.spool_failed(str(e), fs_problem(cfg.agent.state_dir))
            _log.error(
                "cannot open the spool; checks go on, reports are kept in memory",
                path=str(cfg.agent.state_dir / SPOOL_FILE),
                error=str(e),
            )
            return False
        await self._refresh_depth()
        if self._sender is not None:
            self._wake.set()
        return True

    async def _spool_reports(self, report_id: str, body: bytes) -> int:
        """Spool this report after any an earlier run could not; how many the bounds dropped.

        A spool that cannot be written (disk full, read-only state_dir) keeps the reports
        in memory, oldest first and at most UNSPOOLED_MAX of them, and they are spooled at
        the next run that can: a full disk for a while costs no report unless the daemon
        stops meanwhile.
        """
        self._unspooled.append((report_id, body))
        dropped = 0
        while self._unspooled and (self._spool is not None or await self._open_spool()):
            assert self._spool is not None
            rid, pending = self._unspooled[0]
            try:
                dropped += await asyncio.to_thread(self._spool.add, rid, pending)
            except sqlite3.Error as e:
                self.metrics.spool_failed(str(e), fs_problem(self.config.agent.state_dir))
                _log.error(
                    "cannot spool the report; kept in memory and retried at the next run",
                    error=str(e),
                    held_in_memory=len(self._unspooled),
                )
                break
            self._unspooled.popleft()
            self.metrics.spool_ok()
        if len(self._unspooled) > UNSPOOLED_MAX:
            lost = len(self._unspooled) - UNSPOOLED_MAX
            for _ in range(lost):
                self._unspooled.popleft()
            dropped += lost
        return dropped

    # ------------------------------------------------------------------ delivery

    async def _deliver_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._drain()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                # e.g. a full disk: the reports stay spooled, delivery carries on later.
                if isinstance(e, sqlite3.Error):
                    self.metrics.spool_failed(str(e))
                self._failures += 1
                _log.exception("delivery error; will retry")
                self._wake.set()
                await self._pause(backoff_delay(self._failures))

    async def _drain(self) -> None:
        """Send the spool oldest first until it is empty, backing off after a failure.

        Reports are read (and deleted once accepted) a batch at a time. A batch shorter
        than CONCURRENT_BACKLOG goes one report at a time. In a longer one the oldest
        report goes alone first (it carries ``dropped_reports``, and a collector that is
        down costs one attempt, not a window of them), then up to the sender's window are
        in flight at once, and the newest report in the spool goes alone last, after every
        older one was accepted, so the collector's latest report for this host is the
        newest one.
        """
        while self._spool is not None:
            current = self._sender
            if current is not self._current:  # replaced by a reload
                if self._current is not None:
                    await self._current.close()
                self._current, self._failures = current, 0
            if current is None:
                break
            batch = await asyncio.to_thread(
                self._spool.oldest_batch, DRAIN_BATCH, DRAIN_BATCH_BYTES
            )
            if not batch:
                break
            dropped = await asyncio.to_thread(self._spool.dropped_since_delivery)
            results = await _send_batch(current, batch, dropped, tail=len(batch) < DRAIN_BATCH)
            retry = await self._settle(current, batch, results, dropped)
            await self._refresh_depth()
            if retry is not None:
                item, result = retry
                self._failures += 1
                delay = retry_delay(result, self._failures)
                log_ = _log.bind(report_id=item.report_id, collector=current.display_url)
                _log_failure(log_, result, delay, self._failures)
                await self._pause(delay)

    async def _settle(
        self,
        sender: Sender,
        batch: list[Spooled],
        results: dict[int, SendResult | str],
        dropped: int,
    ) -> tuple[Spooled, SendResult] | None:
        """Record what the collector said about each report; the first retryable failure."""
        assert self._spool is not None
        accepted: list[int] = []
        carried = 0
        retry: tuple[Spooled, SendResult] | None = None
        for i, item in enumerate(batch):
            result = results.get(i)
            if result is None:
                continue  # not sent: a failure stopped the batch
            if isinstance(result, str):
                await asyncio.to_thread(self._spool.dead_letter, item.seq, 0, result)
                self.metrics.dead_lettered += 1
                _log.bind(report_id=item.report_id, collector=sender.display_url).error(
                    "spooled report unreadable: dead-lettered", seq=item.seq
                )
            elif result.verdict is Verdict.DELIVERED:
                accepted.append(item.seq)
                carried = dropped if i == 0 else carried
                self.metrics.delivered += 1
                self.metrics.delivery_ok()
            elif result.verdict is Verdict.DEAD:
                await asyncio.to_thread(
                    self._spool.dead_letter, item.seq, result.status or 0, result.error
                )
                self.metrics.dead_lettered += 1
                _log.bind(report_id=item.report_id, collector=sender.display_url).error(
                    "collector rejected the report for good: moved to the dead-letter table",
                    http_status=result.status,
                    error=result.error,
                )
            else:
                self.metrics.delivery_failures += 1
                self.metrics.delivery_failed(result.error, result.status)
                await asyncio.to_thread(self._spool.failed, item.seq, result.error)
                retry = retry or (item, result)
        if accepted:
            await asyncio.to_thread(self._spool.delivered_many, accepted, carried)
            _log_delivered(sender, batch, accepted, carried)
            self._failures = 0
        return retry

    async def _pause(self, delay: float) -> None:
        """Sleep for a backoff; a reload (new token, new URL) cuts it short."""
        self._kick.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._kick.wait(), delay)

    async def _refresh_depth(self) -> None:
        if self._spool is None:
            return
        depth = await asyncio.to_thread(self._spool.depth)
        self.metrics.spool_reports = depth.reports
        self.metrics.spool_bytes = depth.bytes
        self.metrics.dead_letters = depth.dead_letters

    # -------------------------------------------------------------------- reload

    def _on_hup(self) -> None:
        if self._reload_task is not None and not self._reload_task.done():
            _log.info("reload already in progress")
            return
        self._reload_task = asyncio.create_task(self._reload(), name="reload")

    async def _reload(self) -> None:
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
        if (new.agent.log_level, new.agent.log_format) != (
            old.agent.log_level,
            old.agent.log_format,
        ):
            log.configure(new.agent.log_level, fmt=new.agent.log_format)
        if self._spool is not None:
            self._spool.set_bounds(new.collector.spool_max_reports, new.collector.spool_max_bytes)
        if self._scheduler is not None and (
            new.agent.interval != old.agent.interval
            or new.agent.effective_jitter != old.agent.effective_jitter
        ):
            self._scheduler.modify_job(JOB_ID, misfire_grace_time=misfire_grace(new))
            # The next run is one new interval from now.
            self._scheduler.reschedule_job(JOB_ID, trigger=trigger(new))
        self.config = new
        self._sender = sender  # the delivery task closes the old session
        self.metrics.reloads["ok"] += 1
        self._wake.set()
        self._kick.set()
        _log.info(
            "config reloaded",
            interval_s=new.agent.interval,
            jitter_s=new.agent.effective_jitter,
            collector=sender.display_url if sender else None,
        )
        self.notifier.ready("config reloaded")

    # --------------------------------------------------------------- status API

    def last_report(self) -> dict[str, Any] | None:
        return self._last

    def health(self) -> tuple[bool, str]:
        cfg = self.config.agent
        bound = 2 * cfg.interval + cfg.timeout
        if self._last_run_mono is None:
            age = time.monotonic() - self._started
            if age <= bound:
                return True, "ok: starting, first run in progress"
            return False, f"unhealthy: no check run finished in {age:.0f}s"
        age = time.monotonic() - self._last_run_mono
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


async def _send_batch(
    sender: Sender, batch: list[Spooled], dropped: int, tail: bool
) -> dict[int, SendResult | str]:
    """Send a batch (see ``Daemon._drain``); by index, a result or why the body is unreadable.

    A send never raises; after a retryable failure no further report is started.
    """
    results: dict[int, SendResult | str] = {}
    # A short queue (a collector blip) goes strictly one at a time, oldest first; only a
    # real backlog is worth reports arriving slightly out of order within the window.
    width = sender.connections if len(batch) >= CONCURRENT_BACKLOG else 1
    window = asyncio.Semaphore(max(1, width))
    failed = False

    async def one(i: int, item: Spooled) -> None:
        nonlocal failed
        try:
            try:
                body = _with_dropped(item.body, dropped if i == 0 else 0)
            except ValueError as e:
                results[i] = str(e)
                return
            result = await sender.send(body, time.time())
            results[i] = result
            if result.verdict not in (Verdict.DELIVERED, Verdict.DEAD):
                failed = True
        finally:
            window.release()

    middle = range(1, len(batch) - 1 if tail else len(batch))
    await window.acquire()
    await one(0, batch[0])
    if len(batch) > 1 and not failed:
        async with asyncio.TaskGroup() as group:
            for i in middle:
                await window.acquire()
                if failed:
                    window.release()
                    break
                group.create_task(one(i, batch[i]))
        if tail and not failed:
            await window.acquire()
            await one(len(batch) - 1, batch[-1])
    return results


def _with_dropped(body: bytes, dropped: int) -> bytes:
    """The spooled JSON, carrying how many reports the spool dropped since the last delivery."""
    if not dropped:
        return body
    try:
        data = json.loads(body)
    except ValueError as e:
        raise ValueError(f"spooled body is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError("spooled body is not a JSON object")
    data["dropped_reports"] = dropped
    return json.dumps(data, separators=(",", ":")).encode()


def _log_delivered(sender: Sender, batch: list[Spooled], accepted: list[int], dropped: int) -> None:
    # A line per report in steady state; a backlog batch gets one line, not hundreds.
    done = set(accepted)
    ids = [item.report_id for item in batch if item.seq in done]
    if len(ids) == 1:
        _log.info(
            "report delivered",
            report_id=ids[0],
            collector=sender.display_url,
            dropped_reports=dropped,
        )
    else:
        _log.info(
            "reports delivered",
            count=len(ids),
            first_report_id=ids[0],
            last_report_id=ids[-1],
            collector=sender.display_url,
            dropped_reports=dropped,
        )


def _log_failure(log_: Any, result: Any, delay: float, failures: int) -> None:
    fields = {
        "http_status": result.status,
        "error": result.error,
        "retry_in_s": round(delay, 2),
        "attempt": failures,
    }
    if result.verdict is Verdict.AUTH:
        log_.error(
            "COLLECTOR REFUSED THE TOKEN: reports are kept and retried; check "
            "[collector] token_file (or the collector-token credential) and reload",
            **fields,
        )
    elif "[collector] ca_file" in result.error:
        # the error says which setting fixes it; the event says the same at a glance
        log_.error(
            "COLLECTOR'S TLS CERTIFICATE NOT TRUSTED: reports are kept and retried; "
            "set [collector] ca_file to the CA that signed it and reload",
            **fields,
        )
    elif result.verdict is Verdict.UNEXPECTED:
        log_.error(
            "unexpected answer from the collector (wrong [collector] url?): "
            "reports are kept and retried",
            **fields,
        )
    else:
        log_.warning("delivery failed; will retry", **fields)


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
        token = load_token(config.collector) if config.collector.url else None
        Daemon._make_sender(config, token)  # validates ca_file and the client pair
    except ConfigError as e:
        print(f"acme-preflight: config error: {e}", file=sys.stderr)
        return EX_CONFIG
    log.set_secrets((*config.secrets(), *((token,) if token else ())))
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


def fs_problem(path: Path) -> str | None:
    """``read_only`` or ``disk_full`` when the filesystem of ``path`` is so (SQLite's own
    messages, e.g. "unable to open database file", do not say which)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return "read_only"
    if st.f_bavail == 0:
        return "disk_full"
    return None


def _lock_state_dir(state_dir: Path) -> int | None:
    """An exclusive lock for this process's lifetime: two daemons must not share a spool."""
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
