"""The local endpoint on ``[status] listen``: ``/healthz``, ``/status``, ``/metrics``."""

from __future__ import annotations

import json
from typing import Any, Protocol

from aiohttp import web

from agent.config import split_host_port

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class StatusSource(Protocol):
    def last_report(self) -> dict[str, Any] | None: ...

    def health(self) -> tuple[bool, str]: ...

    def metrics_text(self) -> str: ...

    def daemon_status(self) -> dict[str, Any]: ...


def make_app(source: StatusSource) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        ok, why = source.health()
        return web.Response(status=200 if ok else 503, text=why + "\n")

    async def status(_: web.Request) -> web.Response:
        report = source.last_report()
        if report is None:
            return web.json_response({"error": "no check run has finished yet"}, status=503)
        return web.Response(
            text=json.dumps(report, indent=2) + "\n", content_type="application/json"
        )

    async def daemon(_: web.Request) -> web.Response:
        # The daemon's own health (delivery, spool); /status stays the report itself.
        return web.Response(
            text=json.dumps(source.daemon_status(), indent=2) + "\n",
            content_type="application/json",
        )

    async def metrics(_: web.Request) -> web.Response:
        resp = web.Response(text=source.metrics_text())
        resp.headers["Content-Type"] = PROMETHEUS_TEXT
        return resp

    app = web.Application(client_max_size=1024)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/status", status)
    app.router.add_get("/status/daemon", daemon)
    app.router.add_get("/metrics", metrics)
    return app


async def start(listen: str, source: StatusSource) -> web.AppRunner:
    """Serve on ``HOST:PORT``; raises OSError when the address cannot be bound."""
    host, port = split_host_port(listen)
    runner = web.AppRunner(
        make_app(source), access_log=None, handle_signals=False, shutdown_timeout=2.0
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host.strip("[]"), port, reuse_address=True)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
