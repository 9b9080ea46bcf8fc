"""The collector's web application: ingest, JSON API, fleet page, metrics, retention."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web, web_response

from agent import compat
from collector import account_view, fleet, limits, page, store, summary
from collector.account import AccountMonitor, metrics_lines
from collector.account import parse as parse_account
from collector.clientlog import ClientMistakes, HttpErrorLog
from collector.config import Settings
from collector.health import StoreHealth
from collector.metrics import Metrics
from collector.readcache import ReadCache
from collector.tokens import Tokens, from_header
from collector.validate import MAX_INT, ParamError, ReportError, int_param, parse_json, validate

log = logging.getLogger("acme_preflight.collector")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JSON = "application/json"
SERVER = "acme-preflight-collector"  # the Server header: no versions to look up exploits for
# The pages load nothing and run no script: anything injected into one would not run either.
# Inline styles only (the <style> element and style attributes of the status chart).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
MAX_PAGE = 500
DEFAULT_PAGE = 50


SAMPLE_INTERVAL_S = 60.0  # the readiness chart keeps the last sample of each hour
T = TypeVar("T")


def _in_transaction(conn: store.Conn, fn: Callable[..., Any], *args: Any) -> None:
    """``fn(conn, *args)`` in one write transaction on the writer's connection."""
    conn.begin()
    fn(conn, *args)
    conn.commit()


class TooLarge(Exception):
    pass


class BadEncoding(Exception):
    pass


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress one gzip member, refusing to produce more than ``limit`` bytes."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as e:
        raise BadEncoding(f"invalid gzip data: {e}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise TooLarge
    if not d.eof:
        raise BadEncoding("truncated gzip data")
    if d.unused_data:
        raise BadEncoding("trailing data after the gzip stream")
    return out


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, never buffering more than ``limit`` bytes."""
    length = request.content_length
    if length is not None:
        if length > limit:
            raise TooLarge
        # the HTTP parser enforces Content-Length framing, so this is bounded by it
        return await request.content.read()
    buf = bytearray()
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise TooLarge


def _json(status: int, data: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(data).encode(), content_type=JSON, headers=headers
    )


def _error(
    status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    return _json(status, {"error": message, **extra}, headers)


def _reason(resp: web.StreamResponse) -> str:
    """The ``error`` of a JSON error answer, else the status's reason phrase."""
    body = getattr(resp, "body", None)
    if isinstance(body, bytes) and resp.content_type == JSON:
        with contextlib.suppress(ValueError, AttributeError):
            return str(json.loads(body)["error"])
    return resp.reason


class Collector:
    """Everything one running collector holds; built from validated settings."""

    def __init__(
        self,
        settings: Settings,
        tokens: Tokens | None,
        read_tokens: Tokens | None = None,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        worker: int = 0,
        account_key: str | None = None,
    ) -> None:
        """``worker``: this process's index when ``settings.workers > 1`` (worker 0 prunes
        and runs the account checks, with ``account_key``, when [certcentral] is set)."""
        self.settings = settings
        self.tokens = tokens
        self.read_tokens = read_tokens
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.worker = worker
        self.limiter = limits.ConnectionLimiter(settings.limits)
        self.mistakes = ClientMistakes()
        self.health = StoreHealth(self._probe_commit)
        self._writer: store.Writer | None = None
        self._reader: store.Reader | None = None
        self._backend: store.Backend | None = None
        self._prune_task: asyncio.Task[None] | None = None
        self._sample_task: asyncio.Task[None] | None = None
        # bumped by every group this process commits: cached reads older than it are stale
        self.generation = 0
        self.read_cache = ReadCache()
        # Extra fleet-page sections and per-host grid columns (collector.page.Column), for
        # modules such as the account panel: fragments of escaped HTML.
        self.page_panels: list[str] = []
        self.page_columns: list[page.Column] = []
        self._account_key = account_key
        self.account: AccountMonitor | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open (create, migrate) the database and start the writer; raises StoreError."""
        loop = asyncio.get_running_loop()
        s = self.settings
        backend = store.open_backend(
            s.postgres_url or str(s.db),
            synchronous=s.synchronous,
            password_file=s.store_password_file,
            shared=s.workers > 1,
        )
        # create and migrate (with several workers the supervisor did, and this is a no-op)
        await loop.run_in_executor(None, store.prepare, backend)
        self._backend = backend
        self._writer = store.Writer(
            backend,
            loop,
            self._on_batch,
            clock=self.clock,
            new_hosts_per_hour=s.new_hosts_per_hour,
        )
        self._writer.start()
        self._reader = store.Reader(backend)
        # one worker of a machine prunes (and samples the chart); across machines the
        # database's advisory lock lets one collector at a time prune
        if self.worker == 0:
            self._prune_task = asyncio.create_task(self._prune_loop())
            self._sample_task = asyncio.create_task(self._sample_loop())
        if self.worker == 0 and self.settings.certcentral and self._account_key:
            self.account = AccountMonitor(
                self.settings, self._account_key, self._writer, self._reader, self.clock
            )
            self.account.start()

    async def stop(self) -> None:
        if self.account is not None:
            await self.account.stop()
        for task in (self._prune_task, self._sample_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._writer is not None:
            await self._writer.stop()
        if self._reader is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._reader.close)
        if self._backend is not None:
            self._backend.close()

    @property
    def writer(self) -> store.Writer:
        assert self._writer is not None, "Collector.start() was not awaited"
        return self._writer

    @property
    def backend(self) -> store.Backend:
        assert self._backend is not None, "Collector.start() was not awaited"
        return self._backend

    @property
    def reader(self) -> store.Reader:
        assert self._reader is not None, "Collector.start() was not awaited"
        return self._reader

    def _on_batch(self, stats: store.BatchStats) -> None:
        self.health.committed()
        self.generation += 1
        self.metrics.batch_size.observe(stats.reports)
        self.metrics.commit_seconds.observe(stats.seconds)

    # ------------------------------------------------------------ retention

    async def prune(self) -> int:
        """Delete reports older than retention_days, chunk by chunk, keeping each host's latest;
        first retire hosts not seen for ``[retention] host_days``. Returns the reports deleted.

        Each chunk is its own short transaction on the writer thread, queued behind the
        ingest groups, so ingest never waits for more than one chunk. With several collectors
        on one PostgreSQL database, one of them at a time does it (an advisory lock).
        """
        s = self.settings
        now = self.clock()
        backend = self.backend
        if not await self.writer.call(lambda conn: backend.try_job(conn, "retention")):
            return 0  # another collector is pruning this database now
        try:
            if s.host_retention_days > 0:
                host_cutoff = now - s.host_retention_days * 86400
                while n := await self.writer.call(
                    lambda conn: store.retire_hosts(conn, host_cutoff)
                ):
                    self.metrics.add_retired(n)
                    log.info(
                        "retention retired %d hosts not seen for %g days", n, s.host_retention_days
                    )
            cutoff = now - s.retention_days * 86400
            await self.writer.call(lambda conn: _in_transaction(conn, summary.prune_events, cutoff))
            total = 0
            while True:
                n = await self.writer.call(lambda conn: store.prune_chunk(conn, cutoff))
                total += n
                self.metrics.add_pruned(n)
                if n == 0:
                    return total
                await asyncio.sleep(0)
        finally:
            await self.writer.call(lambda conn: backend.end_job(conn, "retention"))

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.prune_interval_s)
            try:
                n = await self.prune()
                if n:
                    log.info("retention pruned %d reports", n)
            except Exception:
                log.exception("retention pruning failed; will retry")

    async def sample(self) -> dict[str, int]:
        """Record the fleet's hosts per state for this hour's point of the readiness chart."""
        st = self._staleness()
        states = await self.reader.run(lambda conn: summary.current_states(conn, st))
        hour = int(st.now // 3600)
        await self.writer.call(
            lambda conn: _in_transaction(conn, summary.record_sample, hour, states)
        )
        return states

    async def _sample_loop(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception:
                log.exception("sampling the readiness chart failed; will retry")
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    # ------------------------------------------------------------ auth

    def _read_denied(self, request: web.Request, html: bool = False) -> web.Response | None:
        if not self.settings.read_auth:
            return None
        token = from_header(request.headers.get("Authorization"))
        if token and self.read_tokens is not None and self.read_tokens.lookup(token):
            return None
        challenge = (
            'Basic realm="acme-preflight-collector", charset="UTF-8"'
            if html
            else 'Bearer realm="acme-preflight-collector"'
        )
        return _error(401, "a read token is required", {"WWW-Authenticate": challenge})

    # ------------------------------------------------------------ ingest

    async def post_report(self, request: web.Request) -> web.StreamResponse:
        # timed here rather than by _timed(): one coroutine frame less on the hot path
        t0 = time.perf_counter()
        try:
            m = self.metrics
            bound: str | None = None
            creator: str | None = None
            if self.tokens is not None:
                token = from_header(request.headers.get("Authorization"))
                entry = self.tokens.lookup(token) if token else None
                if entry is None:
                    m.count("unauthorized")
                    resp = _error(
                        401,
                        "missing or unknown bearer token",
                        {"WWW-Authenticate": 'Bearer realm="acme-preflight-collector"'},
                    )
                    if request.content_length is None or request.content_length > 65536:
                        resp.force_close()  # don't read a large body we will not use
                    return resp
                bound = entry.host_id
                creator = entry.key if bound is None else None
            encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
            limit = self.settings.max_body_bytes
            try:
                if encoding not in ("identity", "gzip", "x-gzip"):
                    raise BadEncoding(f"unsupported Content-Encoding {encoding!r} (use gzip)")
                async with limits.body_deadline(self.settings.limits):
                    body = await read_body(request, limit)
                if encoding != "identity":
                    body = gunzip(body, limit)
            except compat.TIMEOUT_ERRORS:
                m.count("too_slow")
                seconds = self.settings.limits.body_timeout_s
                resp = _error(408, f"the body did not arrive within {seconds:g} s")
                resp.force_close()
                return resp
            except TooLarge:
                m.count("too_large")
                resp = _error(413, f"the report is larger than {limit} bytes", limit=limit)
                resp.force_close()  # the rest of the body is never read
                return resp
            except BadEncoding as e:
                m.count("bad_encoding")
                return _error(415 if "unsupported" in str(e) else 400, str(e))
            try:
                doc = parse_json(body)
            except ReportError as e:  # a number out of range
                m.count("invalid_report")
                return _error(400, f"invalid report: {e}", field=e.field, problem=e.problem)
            except (ValueError, UnicodeDecodeError) as e:
                m.count("invalid_json")
                return _error(400, f"the body is not valid JSON: {e}")
            try:
                validate(doc)
            except ReportError as e:
                m.count("invalid_report")
                return _error(400, f"invalid report: {e}", field=e.field, problem=e.problem)
            host_id: str = doc["agent"]["host_id"]
            if bound is not None and bound != host_id:
                m.count("forbidden")
                return _error(403, "this token is bound to another host_id", field="agent.host_id")
            interval = doc.get("interval_s")
            record = store.Record(
                doc["report_id"],
                host_id,
                doc["status"],
                float(interval) if interval is not None else None,
                body,
                summary.HostSummary.from_report(doc),
                creator,
            )
            try:
                outcome = await self.writer.submit(record)
            except store.StoreError as e:
                m.count("unavailable")
                self.health.failed(str(e))
                log.error("storing a report failed: %s", e)
                return _error(
                    503, "the report could not be stored; retry later", {"Retry-After": "5"}
                )
            return self._ack(record, outcome)
        finally:
            self.metrics.observe_request("ingest", time.perf_counter() - t0)

    def _ack(self, record: store.Record, outcome: store.Outcome) -> web.Response:
        """What the agent learns: whether *its* report (this host, this id, this body) is stored.

        ``stored`` is true for 202 (stored now) and 200 (the same report was stored before);
        409: this host_id holds a different report under this report_id; 429: a new host_id
        over its token's new-host cap.
        """
        m = self.metrics
        # validated UUID and host_id: json.dumps quotes the host_id, the UUID needs no escaping
        ids = b'"report_id":"%s","host_id":%s' % (
            record.report_id.encode(),
            json.dumps(record.host_id).encode(),
        )
        if outcome is store.Outcome.STORED:
            m.count("accepted")
            return web.Response(
                status=202,
                body=b'{"status":"accepted",%s,"duplicate":false,"stored":true}' % ids,
                content_type=JSON,
            )
        if outcome is store.Outcome.DUPLICATE:
            m.count("duplicate")
            return web.Response(
                status=200,
                body=b'{"status":"duplicate",%s,"duplicate":true,"stored":true}' % ids,
                content_type=JSON,
            )
        if outcome is store.Outcome.CONFLICT:
            m.count("conflict")
            return web.Response(
                status=409,
                body=b'{"status":"conflict",%s,"duplicate":true,"stored":false,"error":"%s"}'
                % (ids, b"this host_id already has a different report with this report_id"),
                content_type=JSON,
            )
        m.count("host_limit")
        limit = self.settings.new_hosts_per_hour
        error = (
            f"this token created {limit} new host_ids in the last hour (new_hosts_per_hour); "
            "retry later"
        )
        data = {"status": "host_limit", "stored": False, "error": error, "limit": limit}
        return _json(429, data, {"Retry-After": "300"})

    # ------------------------------------------------------------ reads

    def _staleness(self) -> summary.Staleness:
        s = self.settings
        return summary.Staleness(self.clock(), s.stale_intervals, s.default_interval_s)

    async def _cached(
        self, request: web.Request, key: str, produce: Callable[[Any], bytes], content_type: str
    ) -> web.Response:
        """``produce(conn)`` on a reader thread, gzipped there too, shared by identical
        requests (collector.readcache says when); gzip when the client accepts it."""

        def both(conn: Any) -> tuple[bytes, bytes]:
            raw = produce(conn)
            return raw, gzip.compress(raw, 6, mtime=0)

        # the clock's second is part of the key: staleness and "5 min ago" follow the clock
        raw, packed = await self.read_cache.get(
            f"{key}@{int(self.clock())}",
            lambda: self.generation,
            lambda: self.reader.run(both),
        )
        if "gzip" in request.headers.get("Accept-Encoding", "").lower():
            resp = web.Response(body=packed, content_type=content_type, charset="utf-8")
            resp.headers["Content-Encoding"] = "gzip"
        else:
            resp = web.Response(body=raw, content_type=content_type, charset="utf-8")
        resp.headers["Vary"] = "Accept-Encoding"
        return resp

    async def get_hosts(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._read_denied(request)) is not None:
            return denied
        try:
            q = fleet.parse_query(request.query)
        except summary.QueryError as e:
            return _error(400, str(e), field=e.field)
        st = self._staleness()

        def produce(conn: Any) -> bytes:
            lines, nxt, matching = summary.list_hosts(conn, q, st)
            counts, stale = summary.counts(conn, st)
            doc = {
                "generated_at": fleet.iso(st.now),
                "counts": {**counts, "stale": stale},
                "matching": matching,
                "hosts": [fleet.line_json(line, st.now) for line in lines],
                "next_cursor": nxt,
            }
            return json.dumps(doc, ensure_ascii=False).encode()

        return await self._cached(request, "hosts?" + request.query_string, produce, JSON)

    async def get_problems(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._read_denied(request)) is not None:
            return denied
        raw = request.query.get("limit", "100")
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 6):
            return _error(400, f"limit: expected an integer 1..{fleet.MAX_PROBLEMS}", field="limit")
        limit = int(raw)
        if not 1 <= limit <= fleet.MAX_PROBLEMS:
            return _error(400, f"limit: expected an integer 1..{fleet.MAX_PROBLEMS}", field="limit")
        st = self._staleness()

        def produce(conn: Any) -> bytes:
            groups, total = summary.problems(conn, limit)
            _, stale = summary.counts(conn, st)
            doc = {
                "generated_at": fleet.iso(st.now),
                "groups": total,
                "problems": [fleet.problem_json(p) for p in groups],
                "stale": {
                    "hosts": stale,
                    "sample": [
                        {"host_id": h, "name": n} for h, n in summary.stale_sample(conn, st)
                    ],
                },
            }
            return json.dumps(doc, ensure_ascii=False).encode()

        return await self._cached(request, f"problems?{limit}", produce, JSON)

    def _paging(self, request: web.Request) -> tuple[int, int | None] | web.Response:
        try:
            limit = int_param(request.query, "limit", 1, MAX_PAGE, DEFAULT_PAGE)
            before = int_param(request.query, "before", 1, MAX_INT, 0) or None
        except ParamError as e:
            return _error(400, str(e), field=e.field)
        return limit, before

    async def get_host_reports(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._read_denied(request)) is not None:
            return denied
        host_id = request.match_info["host_id"]
        paging = self._paging(request)
        if isinstance(paging, web.Response):
            return paging
        limit, before = paging
        rows, known = await self.reader.run(
            lambda conn: (
                store.host_reports(conn, host_id, limit + 1, before),
                store.host(conn, host_id) is not None,
            )
        )
        if not known:
            return _error(404, "no reports from this host_id", host_id=host_id)
        more = len(rows) > limit
        rows = rows[:limit]
        next_before = rows[-1].id if more else None
        parts = [
            b'{"received_at":%s,"cursor":%d,"report":%s}'
            % (json.dumps(fleet.iso(r.received_at)).encode(), r.id, r.body)
            for r in rows
        ]
        body = b'{"host_id":%s,"reports":[%s],"next_before":%s}' % (
            json.dumps(host_id).encode(),
            b",".join(parts),
            b"null" if next_before is None else str(next_before).encode(),
        )
        return web.Response(body=body, content_type=JSON)

    def _refresh(self, min_interval: float | None) -> int:
        if self.settings.page_refresh_s:
            return max(1, round(self.settings.page_refresh_s))
        interval = min_interval or self.settings.default_interval_s
        return int(min(300, max(10, interval)))

    async def get_page(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._read_denied(request, html=True)) is not None:
            return denied
        try:
            q = fleet.parse_query(request.query)
        except summary.QueryError as e:
            return web.Response(status=400, text=page.error_page(str(e)), content_type="text/html")
        st = self._staleness()
        panels, columns = await self._page_extras()

        def produce(conn: Any) -> bytes:
            view = fleet.fleet_view(conn, q, st)
            html = page.fleet_page(view, self._refresh(view.min_interval), panels, columns)
            return html.encode()

        return await self._cached(request, "page?" + request.query_string, produce, "text/html")

    async def _page_extras(self) -> tuple[list[str], list[page.Column]]:
        """The page's extra panels and columns, with the Account panel and the issuance
        column when [certcentral] is set."""
        if self.settings.certcentral is None:
            return self.page_panels, self.page_columns
        stored = parse_account(await self.reader.run(store.account))
        return (
            [account_view.panel(stored), *self.page_panels],
            [account_view.column(stored), *self.page_columns],
        )

    async def get_account(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._read_denied(request)) is not None:
            return denied
        if self.settings.certcentral is None:
            return _error(404, "account checks are not configured ([certcentral] is not set)")
        s = self.settings
        now = self.clock()
        stored, views = await self.reader.run(
            lambda conn: (
                parse_account(store.account(conn)),
                [
                    fleet.host_view(r, now, s.stale_intervals, s.default_interval_s)
                    for r in store.hosts(conn)
                ],
            )
        )
        if stored is None:
            return _error(404, "no account report yet: the first run has not finished")
        verdicts = [
            {
                "host_id": v.host_id,
                **account_view.for_host(v.host_id, v.status, v.stale, stored).to_json(),
            }
            for v in views
        ]
        return _json(
            200,
            {
                "received_at": fleet.iso(stored.received_at),
                "report": stored.report,
                "issuance": verdicts,
            },
        )

    async def get_host_page(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._read_denied(request, html=True)) is not None:
            return denied
        host_id = request.match_info["host_id"]
        paging = self._paging(request)
        if isinstance(paging, web.Response):
            return paging
        limit, before = paging
        row, rows, events = await self.reader.run(
            lambda conn: (
                store.host(conn, host_id),
                store.host_reports(conn, host_id, limit + 1, before),
                summary.timeline(conn, host_id),
            )
        )
        if row is None:
            return web.Response(
                status=404, text=page.not_found_page(f"no host {host_id}"), content_type="text/html"
            )
        s = self.settings
        view = fleet.host_view(row, self.clock(), s.stale_intervals, s.default_interval_s)
        more = len(rows) > limit
        rows = rows[:limit]
        html = page.host_page(
            view,
            rows,
            rows[-1].id if more else None,
            self._refresh(view.interval_s),
            events,
            self.clock(),
        )
        return web.Response(text=html, content_type="text/html")

    async def get_metrics(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._read_denied(request)) is not None:
            return denied
        st = self._staleness()
        (counts, stale), groups = await self.reader.run(
            lambda conn: (summary.counts(conn, st), summary.problem_counts(conn))
        )
        account = parse_account(await self.reader.run(store.account))
        return web.Response(
            text=self.metrics.render(counts, stale, [g[:4] for g in groups])
            + metrics_lines(account),
            content_type="text/plain",
            headers={"X-Content-Type-Options": "nosniff"},
            charset="utf-8",
        )

    async def get_healthz(self, request: web.Request) -> web.StreamResponse:
        try:
            await self.reader.run(lambda conn: conn.execute("SELECT 1").fetchone())
        except Exception as e:
            return _error(503, f"database unavailable: {e}")
        problem = await self.health.check()
        if problem is not None:
            return _error(503, f"the store cannot commit: {problem}", {"Retry-After": "5"})
        return _json(200, {"status": "ok"})

    async def _probe_commit(self) -> None:
        def probe(conn: store.Conn) -> None:
            conn.begin()
            store.add_counter(conn, "health_probes", 1)
            conn.commit()

        await self.writer.call(probe)

    # ------------------------------------------------------------ wiring

    def _timed(self, name: str, handler: Handler) -> Handler:
        observe = self.metrics.observe_request
        clock = time.perf_counter

        async def wrapper(request: web.Request) -> web.StreamResponse:
            t0 = clock()
            try:
                return await handler(request)
            finally:
                observe(name, clock() - t0)

        return wrapper

    @web.middleware
    async def _edge(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Client mistakes into the (rate-limited) log; the pages' security headers."""
        try:
            resp = await handler(request)
        except web.HTTPException as e:  # the router's 404 and 405
            reason = e.reason
            self.mistakes.note(e.status, lambda: reason, request.remote, request.path)
            raise
        if 400 <= resp.status < 500:
            self.mistakes.note(resp.status, lambda: _reason(resp), request.remote, request.path)
        if resp.content_type == "text/html":
            resp.headers.update(PAGE_HEADERS)
        return resp

    def app(self) -> web.Application:
        """The aiohttp application; serve it with ``auto_decompress=False`` (see runner())."""
        app = web.Application(
            client_max_size=self.settings.max_body_bytes,
            middlewares=[self.limiter.middleware, self._edge],
        )
        t = self._timed
        app.router.add_post("/api/v1/reports", self.post_report)
        app.router.add_get("/api/v1/hosts", t("hosts", self.get_hosts))
        app.router.add_get("/api/v1/account", t("account", self.get_account))
        app.router.add_get("/api/v1/problems", t("problems", self.get_problems))
        app.router.add_get(
            r"/api/v1/hosts/{host_id:[^/]+}/reports", t("host_reports", self.get_host_reports)
        )
        app.router.add_get("/", t("page", self.get_page))
        app.router.add_get(r"/hosts/{host_id:[^/]+}", t("host_page", self.get_host_page))
        app.router.add_get("/metrics", t("metrics", self.get_metrics))
        app.router.add_get("/healthz", t("healthz", self.get_healthz))
        return app

    def runner(self) -> web.AppRunner:
        """Serve it with :class:`limits.GuardedSite` (connection cap and timeouts)."""
        # The body is decompressed by post_report itself, with a size limit. aiohttp's own
        # keep-alive timer (3630 s by default) matches the guard's idle timeout. aiohttp writes
        # its and Python's versions into every Server header, its own error pages included,
        # from this module constant, and has no setting for it.
        web_response.SERVER_SOFTWARE = SERVER  # type: ignore[attr-defined]
        return web.AppRunner(
            self.app(),
            access_log=None,
            auto_decompress=False,
            keepalive_timeout=self.settings.limits.idle_timeout_s,
            logger=HttpErrorLog(self.mistakes),
        )
