"""The account checks on a large account: 10,000 domains, 1,000 fleet names, and pacing.

    .venv/bin/python bench/account_scan.py [--domains 10000] [--names 1000] [--paced-pages 200]

Against the CertCentral lab (tests/lab/certcentral.py) on loopback. Figures: the whole
account run (six checks, the domain listing paged 500 at a time, each name joined to its
covering domain) against a baseline measured in the same run, a bare aiohttp fetch of the
same pages without any checks; then a listing of ``--paced-pages`` small pages, which must
stay within CertCentral's 100 requests per 5 s without a single 429.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path

from common import ensure_isolated, header

from agent.account.client import CertCentral
from agent.account.report import run_account
from agent.config import CertCentralConfig, Config, parse_section
from agent.model import AgentIdentity
from tests.lab.base import LabThread
from tests.lab.certcentral import KEYS, CertCentralLab, domain
from tests.lab.pki import make_pki

KEY = KEYS["ready"]


def max_in_window(times: list[float], span: float) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - span:
            j += 1
        best = max(best, i - j + 1)
    return best


async def bare_fetch(cc: CertCentralConfig, pages: int) -> float:
    import aiohttp

    from agent.account.client import ssl_context

    t0 = time.perf_counter()
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ssl_context(cc)), headers={"X-DC-DEVKEY": KEY}
    ) as s:
        for p in range(pages):
            url = f"{cc.base_url}/domain?include_validation=true&include_dcv_expiration_time=true&limit=500&offset={p * 500}"
            async with s.get(url) as r:
                await r.read()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domains", type=int, default=10_000)
    ap.add_argument("--names", type=int, default=1_000)
    ap.add_argument("--paced-pages", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    ensure_isolated()
    header("account checks on a large CertCentral account")
    with tempfile.TemporaryDirectory() as tmp, LabThread() as lab_thread:
        pki = make_pki()
        lab = lab_thread.start(CertCentralLab(pki))
        bundle = pki.write_bundle(Path(tmp) / "ca.pem")
        lab.accounts[KEY].domains = [
            domain(i, f"d{i}.example.com", 100 + i % 200) for i in range(args.domains)
        ]
        cc: CertCentralConfig = parse_section(
            "certcentral", lab.config(str(bundle), timeout="120s")
        )
        cfg = Config(certcentral=cc)
        who = AgentIdentity("bench", "bench", "bench", "0")
        names = [f"www.d{i * 7 % args.domains}.example.com" for i in range(args.names)]
        pages = -(-args.domains // 500)
        full, bare = [], []
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for _ in range(args.runs):
            bare.append(asyncio.run(bare_fetch(cc, pages)))
            t0 = time.perf_counter()
            report = asyncio.run(run_account(cfg, KEY, who, names))
            full.append(time.perf_counter() - t0)
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        domains_check = next(c for c in report["checks"] if c["name"] == "domains")
        assert domains_check["status"] == "pass", domains_check
        best_full, best_bare = min(full), min(bare)
        print(
            f"account run, {args.domains:,} domains ({pages} pages), {args.names:,} names: "
            f"best {best_full * 1000:.0f} ms of {args.runs}; bare fetch of the pages "
            f"{best_bare * 1000:.0f} ms; ratio {best_full / best_bare:.2f}x"
        )
        print(
            f"  requests per run {report['api']['requests']}, peak RSS growth "
            f"{(rss1 - rss0) / 1024:.1f} MiB (max RSS {rss1 / 1024:.1f} MiB)"
        )

        lab.page_max = 5
        lab.accounts[KEY].domains = lab.accounts[KEY].domains[: args.paced_pages * 5]
        lab.forget()  # the runs above count against the key's windows
        client = CertCentral(cc, KEY)

        async def listing() -> tuple[int, bool]:
            try:
                items, cut = await client.domains(120)
                return len(items), cut
            finally:
                await client.close()

        t0 = time.perf_counter()
        n, _ = asyncio.run(listing())
        took = time.perf_counter() - t0
        arrivals = [r.at for r in lab.requests]
        worst = max_in_window(arrivals, 5.0)
        print(
            f"paced listing: {len(arrivals)} requests ({n:,} domains) in {took:.2f} s; "
            f"most in any 5 s window {worst} (limit 100); 429s {client.stats.rate_limited}; "
            f"paced {client.pacer.waited_s:.2f} s"
        )
        if worst > 100 or client.stats.rate_limited:
            sys.exit("the rate limit was not kept")


if __name__ == "__main__":
    main()
