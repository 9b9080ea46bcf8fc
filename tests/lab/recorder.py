"""A recording collector for delivery tests: ``POST /api/v1/reports``, scriptable failures.

Records every accepted report (once per ``report_id``, like the real collector, and
acknowledged the way it does: ``202 {"status": "accepted", ...}``, a repeat ``200
{"status": "duplicate", ...}``) and every attempt. It can be told to answer the next requests with any status and headers
(500, 503, 429 + Retry-After, 400, 401 ...), to be down (the port closed: connection
refused) and to be slow. It checks what the agent must send: a gzipped JSON body with
a Content-Length (not chunked) and, when a token is set, ``Authorization: Bearer``.

In a test::

    with Recorder(token="s3cret") as rec:        # a background thread and loop
        rec.answer(429, {"Retry-After": "2"})
        ...
        rec.wait_for(3)

As a process: ``python -m tests.lab.recorder --port 8780 --token-file t --out got.jsonl``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from typing import Self  # 3.11+; annotations only, so 3.10 can run the lab

PATH = "/api/v1/reports"


@dataclass(frozen=True)
class Attempt:
    """One POST as received, and what the recorder answered."""

    at: float  # time.monotonic()
    status: int
    report_id: str | None
    headers: dict[str, str]
    report: dict[str, Any] | None


@dataclass
class _Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""


class Recorder:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.ssl_context = ssl_context
        self.host = host
        self.port = port
        self.token = token
        self.delay = 0.0  # seconds before answering (a slow collector)
        self.accepted: list[dict[str, Any]] = []
        self.attempts: list[Attempt] = []
        self.duplicates = 0
        self.requests_started = 0  # POSTs that reached the handler, answered or not yet
        self._ids: set[str] = set()
        self._script: deque[_Answer] = deque()
        self._poison: int | None = None  # the next new report_id is refused with this, always
        self.poisoned: dict[str, int] = {}  # report_id -> the status it always gets
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # --------------------------------------------------------------- control

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def answer(
        self,
        status: int,
        headers: dict[str, str] | None = None,
        times: int = 1,
        body: str | None = None,
    ) -> None:
        """Answer the next ``times`` POSTs with ``status`` (then 202 again)."""
        text = f"scripted {status}" if body is None else body
        with self._lock:
            for _ in range(times):
                self._script.append(_Answer(status, dict(headers or {}), text))

    def poison(self, status: int = 422) -> None:
        """The next new report is one the collector will never take: ``status`` each time
        it is sent, while every other report is accepted."""
        with self._lock:
            self._poison = status

    def clear_script(self) -> None:
        with self._lock:
            self._script.clear()

    def snapshot(self) -> tuple[list[dict[str, Any]], list[Attempt]]:
        with self._lock:
            return list(self.accepted), list(self.attempts)

    def wait_for(self, n: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Block until ``n`` reports were accepted; the accepted list."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.accepted) >= n:
                    return list(self.accepted)
            time.sleep(0.05)
        with self._lock:
            got, tried = len(self.accepted), len(self.attempts)
        raise AssertionError(f"{got} of {n} reports accepted within {timeout}s ({tried} POSTs)")

    def wait_attempts(self, n: int, timeout: float = 15.0) -> list[Attempt]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.attempts) >= n:
                    return list(self.attempts)
            time.sleep(0.05)
        raise AssertionError(f"fewer than {n} POSTs within {timeout}s")

    # ----------------------------------------------------------- the server

    async def _handle(self, request: web.Request) -> web.Response:
        with self._lock:
            self.requests_started += 1
        raw = await request.read()
        headers = {k: v for k, v in request.headers.items()}
        if self.delay:
            await asyncio.sleep(self.delay)
        status, extra, text, report = self._decide(request, raw)
        rid = report.get("report_id") if report else None
        with self._lock:
            self.attempts.append(
                Attempt(
                    time.monotonic(), status, rid if isinstance(rid, str) else None, headers, report
                )
            )
        if any(k.lower() == "content-type" for k in extra):
            return web.Response(status=status, headers=extra, text=text)
        ctype = "application/json" if text.startswith("{") else "text/plain"
        return web.Response(status=status, headers=extra, text=text, content_type=ctype)

    def _decide(
        self, request: web.Request, raw: bytes
    ) -> tuple[int, dict[str, str], str, dict[str, Any] | None]:
        if (
            self.token is not None
            and request.headers.get("Authorization") != f"Bearer {self.token}"
        ):
            return 401, {}, "bad or missing bearer token", None
        if request.headers.get("Content-Encoding") != "gzip":
            return 400, {}, "expected Content-Encoding: gzip", None
        if "Content-Length" not in request.headers or request.headers.get("Transfer-Encoding"):
            return 400, {}, "expected a Content-Length body, not chunked", None
        # aiohttp.web has already gunzipped the body (and answered 400 itself had it not
        # been gzip); a Content-Length smaller than the JSON shows it was compressed.
        try:
            report = json.loads(raw)
        except ValueError:
            return 400, {}, "body is not JSON", None
        if not isinstance(report, dict) or not isinstance(report.get("report_id"), str):
            return 400, {}, "no report_id", None
        with self._lock:
            scripted = self._script.popleft() if self._script else None
            if scripted is not None:
                return scripted.status, scripted.headers, scripted.body, report
            rid = report["report_id"]
            if self._poison is not None and rid not in self._ids:
                self.poisoned[rid], self._poison = self._poison, None
            if rid in self.poisoned:
                return self.poisoned[rid], {}, f"invalid report {rid}", report
            if rid in self._ids:
                self.duplicates += 1
                ack = {"status": "duplicate", "report_id": rid, "duplicate": True}
                return 200, {}, json.dumps(ack), report
            self._ids.add(rid)
            self.accepted.append(report)
        ack = {"status": "accepted", "report_id": rid, "duplicate": False}
        return 202, {}, json.dumps(ack), report

    async def _up(self) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post(PATH, self._handle)
        # A short shutdown_timeout: down() must not wait for a deliberately slow answer.
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.host, self.port, reuse_address=True, ssl_context=self.ssl_context
        )
        await site.start()
        if self.port == 0:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _down(self) -> None:
        if self._runner is not None:
            # cleanup closes the listener and every open connection: the next
            # request is refused, exactly like a collector that is not running.
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------- running in a thread

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None, "recorder not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def start(self) -> Self:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._call(self._up())
        return self

    def down(self) -> None:
        """Close the port: connections are refused until :meth:`up`."""
        self._call(self._down())

    def up(self) -> None:
        self._call(self._up())

    def stop(self) -> None:
        if self._loop is None:
            return
        self._call(self._down())
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8780)
    p.add_argument("--token-file", type=Path)
    p.add_argument("--out", type=Path, help="append each accepted report as a JSON line")
    args = p.parse_args()
    token = args.token_file.read_text().strip() if args.token_file else None
    rec = Recorder(args.host, args.port, token)
    rec.start()
    print(f"recording on {rec.url}{PATH}", flush=True)
    written = 0
    try:
        while True:
            time.sleep(0.2)
            accepted, _ = rec.snapshot()
            if args.out and len(accepted) > written:
                with args.out.open("a") as f:
                    for r in accepted[written:]:
                        f.write(json.dumps(r) + "\n")
                written = len(accepted)
    except KeyboardInterrupt:
        pass
    finally:
        rec.stop()


if __name__ == "__main__":
    main()
