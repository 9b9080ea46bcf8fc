"""``acme-preflight status``: the running daemon's last result, or ``last.json`` when it is down.

Standard library only (urllib), so it starts fast and loads neither aiohttp nor the scheduler.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any

from agent.config import Config, split_host_port
from agent.daemon.state import LAST_FILE, read_last
from agent.output import printable, render_table, use_colour

EX_UNKNOWN = 3  # Nagios UNKNOWN: no result to show
FETCH_TIMEOUT = 3.0
_EXIT = {"pass": 0, "skip": 0, "warn": 1, "fail": 2, "error": 3}


def status_url(listen: str) -> str | None:
    """``http://HOST:PORT/status`` for ``[status] listen``; a wildcard becomes loopback."""
    if not listen:
        return None
    host, port = split_host_port(listen)
    host = host.strip("[]")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/status"


def _get_json(url: str, timeout: float) -> Any:
    # No proxy: the endpoint is local, and *_proxy variables must not divert it.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as resp:
        return json.loads(resp.read(8 * 1024 * 1024))


def fetch(url: str, timeout: float = FETCH_TIMEOUT) -> dict[str, Any]:
    data = _get_json(url, timeout)
    if not isinstance(data, dict) or "checks" not in data:
        raise ValueError("the answer is not an acme-preflight report")
    return data


def daemon_health(url: str, timeout: float = FETCH_TIMEOUT) -> list[str]:
    """Lines about delivery and the spool from ``/status/daemon`` (empty when unavailable)."""
    try:
        data = _get_json(url + "/daemon", timeout)
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict):
        return []
    lines: list[str] = []
    delivery = data.get("delivery") or {}
    spool = data.get("spool") or {}
    if isinstance(delivery, dict):
        if delivery.get("held"):
            lines.append(
                f"Delivery HELD since {delivery.get('held_since') or '?'}: "
                f"{delivery.get('held_reason')}"
            )
        if delivery.get("failing"):
            lines.append(
                f"Delivery FAILING ({delivery.get('consecutive_failures', 0)} attempts in a row "
                f"since {delivery.get('error_at') or '?'}): {delivery.get('error')}"
            )
        elif delivery.get("last_delivered_at"):
            lines.append(f"Delivery OK, last report accepted at {delivery['last_delivered_at']}")
    if isinstance(spool, dict):
        if spool.get("failing"):
            lines.append(
                f"Spool FAILING since {spool.get('error_at') or '?'}: {spool.get('error')}"
            )
        if spool.get("corruptions_total"):
            lines.append(
                f"Spool was damaged at {spool.get('corrupt_at') or '?'} "
                f"({spool.get('corrupt_error')}): moved to {spool.get('corrupt_moved_to')}, "
                "a fresh spool started"
            )
        queued = spool.get("reports") or 0
        dead = spool.get("dead_letters") or 0
        dropped = spool.get("dropped_total") or 0
        if queued or dead or dropped:
            lines.append(
                f"Spool: {queued} report(s) waiting, {dead} dead-lettered, {dropped} dropped"
            )
    return lines


def load_report(config: Config) -> tuple[dict[str, Any] | None, str, list[str]]:
    """The report, where it came from (or why there is none) and the daemon's health lines."""
    url = status_url(config.status.listen)
    problem = "[status] listen is empty"
    if url:
        try:
            report = fetch(url)
            return report, f"from the running daemon at {url}", daemon_health(url)
        except urllib.error.HTTPError as e:
            problem = f"{url} answered HTTP {e.code}"
        except (OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            problem = f"daemon not reachable at {url}: {reason}"
    path = config.agent.state_dir / LAST_FILE
    try:
        return read_last(config.agent.state_dir), f"{problem}; showing {path}", []
    except FileNotFoundError:
        return None, f"{problem}, and {path} does not exist (has the daemon ever run?)", []
    except (OSError, ValueError) as e:
        return None, f"{problem}, and {path} cannot be read: {e}", []


def cmd_status(config: Config, as_json: bool) -> int:
    report, source, health = load_report(config)
    if report is None:
        print(f"acme-preflight: no result: {source}", file=sys.stderr)
        return EX_UNKNOWN
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(render_table(report, colour=use_colour(sys.stdout)))
        for line in health:
            # the collector's error text, relayed by the daemon: no escape codes reach the tty
            sys.stdout.write(printable(line) + "\n")
    print(f"({source})", file=sys.stderr)
    return _EXIT.get(str(report.get("status")), EX_UNKNOWN)
