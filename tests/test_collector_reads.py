"""Reads do not starve ingest (issue 14 item 4): eight clients reloading the fleet page of a
2,000-host fleet as fast as they get answers, while agents post at a steady rate to the real
collector process. Before the fix every reload re-parsed every host's report on the reader
thread and rendered on the loop: report latency went from 2 ms to 1.5 s."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from asyncio.subprocess import PIPE
from pathlib import Path

import aiohttp

from tests import fleetdb
from tests.collectorutil import TOKEN, TOKENS_TEXT, report, server_process

RATE = 100  # reports/s, steady
SECONDS = 3.0


async def agents(url: str) -> list[float]:
    lat: list[float] = []

    async def one(http: aiohttp.ClientSession, i: int) -> None:
        body = report(f"agent-{i % 50}", report_id=str(uuid.uuid4()))
        t0 = time.perf_counter()
        async with http.post(
            f"{url}/api/v1/reports", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as resp:
            assert resp.status == 202, await resp.text()
        lat.append(time.perf_counter() - t0)

    async with aiohttp.ClientSession() as http:
        start = time.perf_counter()
        tasks = []
        for i in range(int(RATE * SECONDS)):
            await asyncio.sleep(max(0.0, start + i / RATE - time.perf_counter()))
            tasks.append(asyncio.create_task(one(http, i)))
        await asyncio.gather(*tasks)
    return sorted(lat)


# The readers run in a process of their own, as browsers would: in this process their client
# work would delay the agents' requests and be counted as ingest latency.
READERS = r"""
import asyncio, sys, time
import aiohttp

async def main(url, seconds):
    views = 0
    end = time.monotonic() + seconds

    async def one(http):
        nonlocal views
        while time.monotonic() < end:
            async with http.get(url + "/") as resp:
                assert resp.status == 200, resp.status
                await resp.read()
            views += 1

    # gzipped answers (as browsers take them) not unpacked here: the readers' own CPU on a
    # 2-core machine would otherwise be taken from the collector under test
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        await asyncio.gather(*(one(http) for _ in range(8)))
    print(views)

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""


def median(values: list[float]) -> float:
    # the median, not a tail: on a shared 2-core CI machine the tail is the machine's own
    # stalls (100-500 ms at load 10, with or without readers); before the fix most reports
    # waited behind the renders, the median with them
    return values[len(values) // 2]


async def test_eight_readers_reloading_do_not_starve_ingest(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    await fleetdb.fill(db, 2000)
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS_TEXT)
    with server_process("--tokens-file", tokens, "--db", db) as srv:
        alone = await agents(srv.url)
        reading = await asyncio.create_subprocess_exec(
            sys.executable, "-c", READERS, srv.url, str(SECONDS + 1.5), stdout=PIPE
        )
        await asyncio.sleep(0.5)
        busy = await agents(srv.url)
        out, _ = await reading.communicate()
        assert reading.returncode == 0
        views = int(out)
    assert views > 8  # the readers really read meanwhile
    # ingest keeps its latency beside the readers, within what a loaded 2-core machine adds
    # (the target, p99 under 50 ms, is measured by bench/fleet_scale.py); the code
    # before the fix fails both bounds by far (p99 5.4 s beside the readers, 70 ms alone)
    assert median(busy) < max(0.05, 5 * median(alone)), (median(alone), median(busy), views)
    assert median(busy) < 1.0, (median(alone), median(busy), views)
