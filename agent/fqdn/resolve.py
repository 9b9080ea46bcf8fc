"""The DNS view (dnspython, A and AAAA) and the system view (getaddrinfo) of a name.

Both are bounded by a time budget. The DNS view (built on :mod:`agent.net.dns`)
tells NXDOMAIN, no answer, SERVFAIL (or another error rcode), an unreachable
server and a timeout apart. The system view is what the ACME agent itself gets
through nsswitch: hosts file, DNS, anything else configured there.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import compat
from agent.config import split_nameserver
from agent.fqdn.locality import normalize
from agent.net.dns import Nameservers, nameservers_for, resolve_host

OK = "ok"
TIMEOUT = "timeout"


@dataclass(frozen=True)
class ViewAnswer:
    """One view's answer for a name: ``status`` is ``ok`` when ``addresses`` is not empty."""

    status: str
    addresses: tuple[str, ...] = ()
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.addresses)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"status": self.status, "addresses": list(self.addresses)}
        if self.detail:
            data["detail"] = self.detail
        data.update(self.extra)
        return data


# ------------------------------------------------------------------ DNS view


def dns_nameservers(fqdn_nameservers: Sequence[str], resolv_conf: Path) -> Nameservers:
    """``[fqdn] nameservers``, else the nameservers of ``resolv_conf``.

    ``[dns] nameservers`` is not used: it picks the resolver for the DigiCert
    hostnames, while the web server's names are checked with this host's own.
    """
    if fqdn_nameservers:
        servers = tuple(split_nameserver(s) for s in fqdn_nameservers)
        return Nameservers(servers, "[fqdn] nameservers")
    return nameservers_for((), resolv_conf)


async def dns_view(name: str, servers: Nameservers, budget: float) -> ViewAnswer:
    """A and AAAA for ``name`` at once (dnspython: never the hosts file).

    The status is ``ok`` or the most telling failure of the two queries:
    nxdomain, timeout, servfail (an error rcode), unreachable, no_resolver,
    error, no_answer.
    """
    result = await resolve_host(name, servers, budget)
    found = (normalize(a) for a in result.addresses)
    addresses = tuple(dict.fromkeys(a for a in found if a is not None))
    queries = {a.rdtype.lower(): a.error or OK for a in result.answers}
    if addresses:
        return ViewAnswer(OK, addresses, extra=queries)
    return ViewAnswer(result.error or "no_answer", detail=result.message, extra=queries)


# --------------------------------------------------------------- system view

_GAI_STATUS = {
    socket.EAI_NONAME: "not_found",
    socket.EAI_AGAIN: "temporary_failure",
    socket.EAI_FAIL: "failure",
}
if hasattr(socket, "EAI_NODATA"):
    _GAI_STATUS[socket.EAI_NODATA] = "no_address"

_AddrInfo = list[tuple[Any, Any, int, str, tuple[Any, ...]]]


def _getaddrinfo_thread(name: str) -> asyncio.Future[_AddrInfo]:
    """getaddrinfo in a daemon thread.

    Not the loop's default executor: a getaddrinfo stuck in the resolver cannot be
    cancelled, and ``asyncio.run`` waits for executor threads at exit, so a one-shot
    ``check`` would outlive its timeout. A daemon thread is abandoned instead.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_AddrInfo] = loop.create_future()

    def deliver(result: _AddrInfo | None, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result or [])

    def work() -> None:
        result: _AddrInfo | None = None
        exc: BaseException | None = None
        try:
            result = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except Exception as e:
            exc = e
        with contextlib.suppress(RuntimeError):  # the loop may be closed by now
            loop.call_soon_threadsafe(deliver, result, exc)

    threading.Thread(target=work, name="getaddrinfo", daemon=True).start()
    return future


async def system_view(name: str, budget: float) -> ViewAnswer:
    """What getaddrinfo (nsswitch: hosts file, DNS, ...) answers for ``name``."""
    try:
        infos = await asyncio.wait_for(_getaddrinfo_thread(name), budget)
    except compat.TIMEOUT_ERRORS:
        return ViewAnswer(TIMEOUT, detail=f"getaddrinfo did not answer within {budget:.2g}s")
    except socket.gaierror as e:
        status = _GAI_STATUS.get(e.errno or 0, "error")
        return ViewAnswer(status, detail=f"getaddrinfo: {e.strerror or e}")
    except (OSError, UnicodeError) as e:
        return ViewAnswer("error", detail=f"getaddrinfo: {type(e).__name__}: {e}")
    found = (normalize(str(info[4][0])) for info in infos)
    return ViewAnswer(OK, tuple(dict.fromkeys(a for a in found if a is not None)))
