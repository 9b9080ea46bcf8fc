"""/healthz goes 503 when runs stop finishing; /status before the first run."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp

from agent.config import AgentConfig, Config
from agent.daemon import status_server
from agent.daemon.service import Daemon
from agent.daemon.status_cli import status_url
from tests.daemonproc import free_port


def daemon(tmp_path: Path) -> Daemon:
    cfg = Config(agent=AgentConfig(interval=2.0, timeout=1.0, state_dir=tmp_path))
    return Daemon(cfg, None, None, explicit_config=False)


async def test_healthz_tracks_the_age_of_the_last_run(tmp_path: Path) -> None:
    d = daemon(tmp_path)
    port = free_port()
    runner = await status_server.start(f"127.0.0.1:{port}", d)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/healthz") as r:
                assert r.status == 200 and "starting" in await r.text()
            async with http.get(base + "/status") as r:
                assert r.status == 503 and "no check run" in (await r.json())["error"]
            d._last_run_mono = time.monotonic() - 4.9  # within 2 intervals + timeout (5 s)
            async with http.get(base + "/healthz") as r:
                assert r.status == 200
            d._last_run_mono = time.monotonic() - 5.5
            async with http.get(base + "/healthz") as r:
                assert r.status == 503 and "unhealthy" in await r.text()
            d._last_run_mono, d._started = None, time.monotonic() - 60
            async with http.get(base + "/healthz") as r:
                assert r.status == 503
            async with http.get(base + "/nope") as r:
                assert r.status == 404
    finally:
        await runner.cleanup()


def test_status_url_maps_wildcards_to_loopback() -> None:
    assert status_url("127.0.0.1:9775") == "http://127.0.0.1:9775/status"
    assert status_url("0.0.0.0:9775") == "http://127.0.0.1:9775/status"
    assert status_url("[::]:9775") == "http://[::1]:9775/status"
    assert status_url("[::1]:1") == "http://[::1]:1/status"
    assert status_url("") is None
