"""Delivery: every report is committed to the spool, then sent to the collector oldest first.

``Delivery`` owns the spool (``spool.py``) and the task that drains it through a
``Sender`` (``sender.py``). Its surface: ``enqueue`` a report, ``use`` another sender
(and spool bounds) after a reload, ``run`` the drain, ``close``. The policy:

- A report leaves the spool only once the collector acknowledged it.
- A retryable failure (down, timeout, 5xx, 429, 401/403, a 2xx that is not the
  collector's acknowledgement) keeps the report and backs off.
- A report the collector rejects (400/409/413/422) is dead-lettered only when the
  collector accepts another report and then rejects this one again. When it rejects
  every report (a proxy or WAF answering 400, a collector bug), that is the collector's
  problem, not the reports': after ``REJECT_STREAK`` rejections without an acceptance the
  spool is *held* and retried with backoff, and ``/status/daemon`` and
  ``acme_preflight_delivery_held`` say so. Nothing is dead-lettered meanwhile.
- A spool SQLite finds damaged (at open, or in use) is moved aside with a timestamp and a
  fresh spool started; the reports it held are counted as dropped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from agent import compat, log
from agent.daemon.metrics import Metrics
from agent.daemon.sender import Sender, SendResult, Verdict, backoff_delay, retry_delay
from agent.daemon.spool import (
    SPOOL_FILE,
    Depth,
    Spool,
    Spooled,
    count_damaged,
    is_corrupt,
    quarantine,
)

# Reports held in memory while the spool cannot be written; beyond this the oldest go.
UNSPOOLED_MAX = 100
# Reports read from the spool at once, and deleted in one transaction once accepted.
DRAIN_BATCH = 256
DRAIN_BATCH_BYTES = 4 * 1024 * 1024
# A batch at least this long is sent with the sender's window in flight at once.
CONCURRENT_BACKLOG = 64
# Rejections (400/409/413/422) without an acceptance between them that hold the spool.
REJECT_STREAK = 5

_log = log.get("acme_preflight.daemon")
T = TypeVar("T")


class _Replaced(Exception):
    """The spool was damaged and has been replaced by a fresh one."""


@dataclass
class _Pass:
    """One walk over the spool, oldest first."""

    after: int = 0  # reports up to this seq were handled in this pass
    suspects: list[tuple[Spooled, SendResult]] = field(default_factory=list)
    streak: int = 0  # rejections since the last acceptance


class Delivery:
    """The spool in ``state_dir`` and the task that drains it to the collector."""

    def __init__(
        self,
        state_dir: Path,
        max_reports: int,
        max_bytes: int,
        metrics: Metrics,
        sender: Sender | None,
    ) -> None:
        self.path = state_dir / SPOOL_FILE
        self._state_dir = state_dir
        self._bounds = (max_reports, max_bytes)
        self.metrics = metrics
        self._sender = sender  # the one to use; replaced by a reload
        self._current = sender  # the one the drain uses (closed when replaced)
        self._spool: Spool | None = None
        self._opening = asyncio.Lock()
        self._unspooled: collections.deque[tuple[str, bytes]] = collections.deque()
        self._failures = 0  # consecutive failed attempts, for the backoff
        self._lost = 0  # reports in a damaged spool, told to the collector once a fresh one opens
        self._wake = asyncio.Event()  # a report was spooled, or the sender changed
        self._kick = asyncio.Event()  # cut a backoff short (after a reload)

    # ------------------------------------------------------------ public surface

    async def enqueue(self, report_id: str, body: bytes) -> int:
        """Commit a report (JSON without ``dropped_reports``) to the spool, after any an
        earlier run could not; returns how many reports wait for delivery.

        A spool that cannot be written (disk full, read-only state_dir) keeps the reports
        in memory, oldest first and at most UNSPOOLED_MAX, and they are spooled at the next
        enqueue that can: a full disk for a while costs no report unless the daemon stops.
        """
        self._unspooled.append((report_id, body))
        dropped = 0
        while self._unspooled and (self._spool is not None or await self._open()):
            assert self._spool is not None
            rid, pending = self._unspooled[0]
            try:
                dropped += await self._db(Spool.add, rid, pending)
            except _Replaced:
                continue  # a fresh spool takes it
            except sqlite3.Error as e:
                self.metrics.spool_failed(str(e), fs_problem(self._state_dir))
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
        if dropped:
            self.metrics.dropped += dropped
            _log.warning(
                "spool full: dropped the oldest reports",
                dropped=dropped,
                max_reports=self._bounds[0],
                max_bytes=self._bounds[1],
            )
        await self._refresh_depth()
        self._wake.set()
        return self.metrics.spool_reports + len(self._unspooled)

    def use(self, sender: Sender | None, max_reports: int, max_bytes: int) -> None:
        """After a reload: deliver through ``sender`` from now on (the drain closes the old
        one), with these spool bounds; a backoff in progress ends now."""
        self._sender = sender
        self._bounds = (max_reports, max_bytes)
        if self._spool is not None:
            self._spool.set_bounds(max_reports, max_bytes)
        self._wake.set()
        self._kick.set()

    async def run(self) -> None:
        """Open the spool, then deliver whatever is spooled, for ever (until cancelled)."""
        await self._open()
        self._wake.set()  # deliver what an earlier process left in the spool
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._drain()
            except asyncio.CancelledError:
                raise
            except _Replaced:
                self._wake.set()  # a fresh spool: carry on at once
            except Exception as e:
                # e.g. a full disk: the reports stay spooled, delivery carries on later.
                if isinstance(e, sqlite3.Error):
                    self.metrics.spool_failed(str(e), fs_problem(self._state_dir))
                self._failures += 1
                _log.exception("delivery error; will retry")
                self._wake.set()
                await self._pause(backoff_delay(self._failures))

    async def close(self) -> None:
        """Close the senders' connections and the spool (after ``run`` was cancelled)."""
        for sender in {self._sender, self._current}:
            if sender is not None:
                await sender.close()
        if self._spool is not None:
            spool, self._spool = self._spool, None
            await asyncio.to_thread(spool.close)

    # ------------------------------------------------------------------- spool

    async def _open(self) -> bool:
        """Open the spool; a damaged file is moved aside and a fresh one opened. A
        state_dir that cannot be written is reported and tried again at the next run."""
        async with self._opening:
            for _ in range(2):  # the file as it is, then a fresh one if it was damaged
                if self._spool is not None:
                    return True
                try:
                    self._spool = await asyncio.to_thread(Spool, self.path, *self._bounds)
                    if self._lost:
                        # the collector learns of them with the next delivery
                        await asyncio.to_thread(self._spool.add_dropped, self._lost)
                        self._lost = 0
                    self._count(await asyncio.to_thread(self._spool.depth))
                    return True
                except (sqlite3.Error, OSError) as e:
                    if isinstance(e, sqlite3.Error) and is_corrupt(e):
                        if await self._set_aside(e):
                            continue
                        return False
                    if self._spool is not None:
                        with contextlib.suppress(Exception):
                            await asyncio.to_thread(self._spool.close)
                        self._spool = None
                    self.metrics.spool_failed(str(e), fs_problem(self._state_dir))
                    _log.error(
                        "cannot open the spool; checks go on, reports are kept in memory",
                        path=str(self.path),
                        error=str(e),
                    )
                    return False
            return self._spool is not None

    async def _set_aside(self, error: BaseException) -> bool:
        """Move a damaged spool file aside (``_opening`` held); True when a fresh one
        can be created."""
        spool, self._spool = self._spool, None
        if spool is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(spool.close)
        counted = await asyncio.to_thread(count_damaged, self.path)
        try:
            moved = await asyncio.to_thread(quarantine, self.path)
        except OSError as e:
            self.metrics.spool_failed(f"damaged spool, cannot move it aside: {e}")
            _log.error(
                "the spool is damaged and cannot be moved aside; reports are kept in memory",
                path=str(self.path),
                error=str(error),
                move_error=str(e),
            )
            return False
        # what SQLite can still count in it, else what it held when last counted
        lost = counted if counted is not None else self.metrics.spool_reports
        self._lost += lost
        self.metrics.spool_corrupted(str(moved), str(error), lost)
        self._count(Depth(0, 0, 0))
        _log.error(
            "the spool is damaged: moved aside, a fresh spool started",
            error=str(error),
            moved_to=str(moved),
            reports_lost=lost,
        )
        return True

    async def _db(self, op: Callable[..., T], *args: Any) -> T:
        """A spool operation in a thread. A damaged file is moved aside and replaced by a
        fresh spool, and ``_Replaced`` raised: the caller starts over."""
        spool = self._spool
        if spool is None:
            raise _Replaced
        try:
            return await asyncio.to_thread(op, spool, *args)
        except sqlite3.Error as e:
            if not is_corrupt(e):
                raise
            async with self._opening:
                if self._spool is spool:  # not already replaced by a concurrent caller
                    await self._set_aside(e)
            await self._open()
            raise _Replaced from None

    def _count(self, depth: Depth) -> None:
        self.metrics.spool_reports = depth.reports
        self.metrics.spool_bytes = depth.bytes
        self.metrics.dead_letters = depth.dead_letters

    async def _refresh_depth(self) -> None:
        if self._spool is not None:
            self._count(await self._db(Spool.depth))

    # ---------------------------------------------------------------- delivery

    async def _drain(self) -> None:
        """Walk the spool oldest first until it is empty; back off after a failure."""
        while self._spool is not None:
            delay = await self._walk()
            if delay is None:
                return
            await self._pause(delay)

    async def _sender_now(self) -> Sender | None:
        current = self._sender
        if current is not self._current:  # replaced by a reload
            if self._current is not None:
                await self._current.close()
            self._current, self._failures = current, 0
        return current

    async def _walk(self) -> float | None:
        """One pass over the spool; the backoff before the next, or None when done.

        Reports are read (and deleted once accepted) a batch at a time. A batch shorter
        than CONCURRENT_BACKLOG goes one report at a time. In a longer one the oldest
        report goes alone first (it carries ``dropped_reports``, and a collector that is
        down costs one attempt, not a window of them), then up to the sender's window are
        in flight at once, and the newest report in the spool goes alone last, after every
        older one was accepted, so the collector's latest report for this host is the
        newest one.
        """
        walk = _Pass()
        while self._spool is not None:
            current = await self._sender_now()
            if current is None:
                return None
            after = walk.after
            batch = await self._db(Spool.oldest_batch, DRAIN_BATCH, DRAIN_BATCH_BYTES, after)
            if not batch:
                break
            dropped = await self._db(Spool.dropped_since_delivery)
            tail = len(batch) < DRAIN_BATCH
            results = await _send_batch(current, batch, dropped, tail, walk)
            retry = await self._settle(current, batch, results, dropped, walk)
            await self._refresh_depth()
            if retry is not None:
                item, result = retry
                self._failures += 1
                delay = retry_delay(result, self._failures)
                log_ = _log.bind(report_id=item.report_id, collector=current.display_url)
                _log_failure(log_, result, delay, self._failures)
                return delay
            if walk.streak >= REJECT_STREAK:
                break  # held: the rest of the spool is not tried in this pass
            walk.after = batch[-1].seq
        if not walk.suspects:
            return None
        return self._hold(walk)

    def _hold(self, walk: _Pass) -> float:
        """Rejected reports and no acceptance after them: keep them all, back off."""
        item, result = walk.suspects[-1]
        self._failures += 1
        delay = retry_delay(result, self._failures)
        reason = (
            f"the collector rejected {len(walk.suspects)} report(s) in a row and accepted "
            f"none since ({result.error}); the spool is held, nothing is dead-lettered, "
            f"retry in {delay:.0f}s"
        )
        self.metrics.delivery_failed(result.error, result.status)
        self.metrics.delivery_hold(reason)
        assert self._current is not None
        _log.bind(report_id=item.report_id, collector=self._current.display_url).error(
            "collector rejects every report: spool held, reports kept and retried "
            "(a proxy or WAF in front of it, or the collector itself, refuses them)",
            rejected_in_a_row=len(walk.suspects),
            http_status=result.status,
            error=result.error,
            retry_in_s=round(delay, 2),
            attempt=self._failures,
        )
        return delay

    async def _settle(
        self,
        sender: Sender,
        batch: list[Spooled],
        results: dict[int, SendResult | str],
        dropped: int,
        walk: _Pass,
    ) -> tuple[Spooled, SendResult] | None:
        """Record what the collector said about each report; the first retryable failure."""
        accepted: list[int] = []
        carried = 0
        retry: tuple[Spooled, SendResult] | None = None
        rejected: list[tuple[Spooled, SendResult]] = []
        for i, item in enumerate(batch):
            result = results.get(i)
            if result is None:
                continue  # not sent: a failure stopped the batch
            if isinstance(result, str):
                # unreadable here, so no collector can ever take it: a local problem
                await self._dead_letter(sender, item, 0, result)
            elif result.verdict is Verdict.DELIVERED:
                accepted.append(item.seq)
                carried = dropped if i == 0 else carried
            elif result.verdict is Verdict.DEAD:
                rejected.append((item, result))
            else:
                self.metrics.delivery_failures += 1
                self.metrics.delivery_failed(result.error, result.status)
                await self._db(Spool.failed, item.seq, result.error)
                retry = retry or (item, result)
        if accepted:
            await self._db(Spool.delivered_many, accepted, carried)
            self._accepted(len(accepted))
            _log_delivered(sender, batch, accepted, carried)
            # The collector takes reports: those it rejected get one more try each, and
            # one it rejects again is a report problem (dead-lettered), not a collector one.
            suspects, walk.suspects, walk.streak = [*walk.suspects, *rejected], [], 0
            for item, _ in suspects:
                again = await sender.send(item.body, time.time(), item.report_id)
                seq = item.seq
                if again.verdict is Verdict.DELIVERED:
                    await self._db(Spool.delivered_many, [seq], 0)
                    self._accepted(1)
                    _log_delivered(sender, [item], [item.seq], 0)
                elif again.verdict is Verdict.DEAD:
                    await self._dead_letter(sender, item, again.status or 0, again.error)
                else:
                    self.metrics.delivery_failures += 1
                    self.metrics.delivery_failed(again.error, again.status)
                    error = again.error
                    await self._db(Spool.failed, seq, error)
                    retry = retry or (item, again)
        else:
            walk.suspects.extend(rejected)
            walk.streak += len(rejected)
            for item, result in rejected:
                self.metrics.delivery_failures += 1
                seq, error = item.seq, result.error
                await self._db(Spool.failed, seq, error)
        return retry

    def _accepted(self, n: int) -> None:
        self.metrics.delivered += n
        self.metrics.delivery_ok()
        self._failures = 0

    async def _dead_letter(self, sender: Sender, item: Spooled, status: int, why: str) -> None:
        evicted = await self._db(Spool.dead_letter, item.seq, status, why)
        self.metrics.dead_lettered += 1
        self.metrics.dropped_dead_letter += 1
        log_ = _log.bind(report_id=item.report_id, collector=sender.display_url)
        if status:
            log_.error(
                "collector rejected the report for good while accepting others: "
                "moved to the dead-letter table",
                http_status=status,
                error=why,
            )
        else:
            log_.error("spooled report unreadable: dead-lettered", seq=item.seq, error=why)
        if evicted:
            self.metrics.dead_letters_evicted += evicted
            _log.warning(
                "dead-letter table full: deleted the oldest dead letters",
                deleted=evicted,
            )

    async def _pause(self, delay: float) -> None:
        """Sleep for a backoff; a reload (new token, new URL) cuts it short."""
        self._kick.clear()
        with contextlib.suppress(*compat.TIMEOUT_ERRORS):
            await asyncio.wait_for(self._kick.wait(), delay)


async def _send_batch(
    sender: Sender, batch: list[Spooled], dropped: int, tail: bool, walk: _Pass
) -> dict[int, SendResult | str]:
    """Send a batch (see ``Delivery._walk``); by index, a result or why the body is
    unreadable. A send never raises; after a retryable failure, or REJECT_STREAK
    rejections without an acceptance, no further report is started.
    """
    results: dict[int, SendResult | str] = {}
    # A short queue (a collector blip) goes strictly one at a time, oldest first; only a
    # real backlog is worth reports arriving slightly out of order within the window.
    width = sender.connections if len(batch) >= CONCURRENT_BACKLOG else 1
    window = asyncio.Semaphore(max(1, width))
    failed = False
    streak = walk.streak

    def stop() -> bool:
        return failed or streak >= REJECT_STREAK

    async def one(i: int, item: Spooled) -> None:
        nonlocal failed, streak
        try:
            try:
                body = with_dropped(item.body, dropped if i == 0 else 0)
            except ValueError as e:
                results[i] = str(e)
                return
            result = await sender.send(body, time.time(), item.report_id)
            results[i] = result
            if result.verdict is Verdict.DELIVERED:
                streak = 0
            elif result.verdict is Verdict.DEAD:
                streak += 1
            else:
                failed = True
        finally:
            window.release()

    middle = range(1, len(batch) - 1 if tail else len(batch))
    await window.acquire()
    await one(0, batch[0])
    if len(batch) > 1 and not stop():
        async with compat.TaskGroup() as group:
            for i in middle:
                await window.acquire()
                if stop():
                    window.release()
                    break
                group.create_task(one(i, batch[i]))
        if tail and not stop():
            await window.acquire()
            await one(len(batch) - 1, batch[-1])
    return results


def with_dropped(body: bytes, dropped: int) -> bytes:
    """The spooled JSON object carrying ``dropped_reports``: spliced in as its first
    member, without parsing the body (it was serialized without that member)."""
    if not dropped:
        return body
    if not body.startswith(b"{") or not body.rstrip().endswith(b"}"):
        raise ValueError("spooled body is not a JSON object")
    member = b'"dropped_reports":%d' % dropped
    rest = body[1:]
    return b"{" + member + (b"" if rest.lstrip().startswith(b"}") else b",") + rest


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


def _log_failure(log_: Any, result: SendResult, delay: float, failures: int) -> None:
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
            "unexpected answer from the collector (wrong [collector] url, or a proxy or "
            "login page in the way?): reports are kept and retried",
            **fields,
        )
    else:
        log_.warning("delivery failed; will retry", **fields)


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
