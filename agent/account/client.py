"""A small CertCentral Services API client: paced, bounded, and careful with the key.

The key goes in the ``X-DC-DEVKEY`` header and nowhere else (never a URL, so no error or
log line that names a URL can carry it). Every answer is bounded in size
(:data:`MAX_ANSWER`) and time (the caller's deadline); a 429 is honoured with its
``Retry-After`` and the request retried while the deadline allows. ``[proxy] url`` (or the
environment, like the host checks) is used as an HTTP CONNECT proxy.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from base64 import b64encode
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp

from agent import __version__, compat
from agent.account.pacing import Pacer, RateLimited
from agent.config import CertCentralConfig
from agent.net.proxy import ProxyChoice, select_proxy
from agent.net.tls import verifying_context
from agent.redact import redact_text

MAX_ANSWER = 4 * 1024 * 1024  # bytes of one answer: 8 KiB a domain on a full page
PAGE_LIMIT = 500  # domains asked for per page (the server may send fewer); the lab's are ~0.8 KiB
MAX_PAGES = 200  # bound on one listing (100,000 domains): past it the list is reported as cut
MAX_ATTEMPTS = 4  # a request answered 429 is sent again at most this many times in all
DEFAULT_RETRY_AFTER = 5.0  # a 429 without a usable Retry-After waits one short window
MAX_RETRY_AFTER = 300.0
MAX_MESSAGE = 200  # characters of a server's error message kept


class ApiError(Exception):
    """A request that did not give a usable answer.

    ``kind``: ``rejected`` (401), ``denied`` (403), ``rate_limited`` (429 past the
    deadline, or no room in the pace), ``timeout``, ``unreachable`` (DNS, TCP, TLS, proxy),
    ``bad_answer`` (not JSON, too large, an unexpected status).
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "status": self.status,
            "code": self.code,
            "retry_after_s": self.retry_after,
        }


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), bounded; None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return min(max(when - (time.time() if now is None else now), 0.0), MAX_RETRY_AFTER)


def _printable(text: str, limit: int = MAX_MESSAGE) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)[:limit]


def error_of(data: object) -> tuple[str | None, str]:
    """The first ``{"errors":[{"code","message"}]}`` entry of an error answer."""
    if isinstance(data, dict):
        errors = data.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            code, message = errors[0].get("code"), errors[0].get("message")
            return (
                _printable(str(code), 64) if code is not None else None,
                _printable(str(message)) if message is not None else "",
            )
    return None, ""


def ssl_context(cfg: CertCentralConfig) -> ssl.SSLContext:
    """``[certcentral] ca_file`` alone when set, else the system store."""
    if cfg.ca_file is None:
        return verifying_context()
    return ssl.create_default_context(cafile=str(cfg.ca_file))


@dataclass
class Stats:
    requests: int = 0
    rate_limited: int = 0  # 429 answers seen


class CertCentral:
    """Requests to ``[certcentral] base_url`` and ``automation_url`` with one key.

    GETs are memoised for the client's life (one run), so checks that run at once and
    need the same answer (``/user/me``, ``/account``) share one request.
    """

    def __init__(
        self,
        cfg: CertCentralConfig,
        api_key: str,
        proxy_url: str | None = None,
        pacer: Pacer | None = None,
        *,
        max_answer: int = MAX_ANSWER,
        max_pages: int = MAX_PAGES,
    ) -> None:
        self.cfg = cfg
        self.api_key = api_key  # only ever sent as X-DC-DEVKEY
        self._proxy_url = proxy_url
        self.pacer = pacer or Pacer()
        self.max_answer = max_answer
        self.max_pages = max_pages
        self.stats = Stats()
        self._session: aiohttp.ClientSession | None = None
        self._cache: dict[str, asyncio.Task[dict[str, Any]]] = {}

    def _proxy(self, url: str) -> ProxyChoice:
        parts = urlsplit(url)
        return select_proxy(self._proxy_url, parts.hostname or "", parts.port or 443)

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl_context(self.cfg), limit=4),
                trust_env=False,  # the proxy is chosen by select_proxy, like the host checks
                headers={
                    "X-DC-DEVKEY": self.api_key,
                    "Accept": "application/json",
                    "User-Agent": f"acme-preflight/{__version__}",
                },
            )
        return self._session

    async def close(self) -> None:
        for task in self._cache.values():
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                # retrieve it: an unretrieved error is logged by asyncio, unscrubbed
                task.exception()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, path: str, budget: float, **params: str | int) -> dict[str, Any]:
        """``GET base_url + path`` (memoised per path and parameters)."""
        query = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
        url = f"{self.cfg.base_url}{path}" + (f"?{query}" if query else "")
        task = self._cache.get(url)
        if task is None or (task.done() and not task.cancelled() and task.exception()):
            task = asyncio.ensure_future(self.request("GET", url, budget))
            self._cache[url] = task
        return await asyncio.shield(task)

    async def domains(self, budget: float) -> tuple[list[dict[str, Any]], bool]:
        """Every domain with its validations, page by page; True when cut at max_pages."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        out: list[dict[str, Any]] = []
        offset = 0
        for _ in range(self.max_pages):
            # not memoised: only the domains check reads the pages, and holding them would
            # double its memory on a large account
            page = await self.request(
                "GET",
                f"{self.cfg.base_url}/domain?include_validation=true"
                f"&include_dcv_expiration_time=true&limit={PAGE_LIMIT}&offset={offset}",
                deadline - loop.time(),
            )
            items = page.get("domains")
            if not isinstance(items, list):
                raise ApiError("bad_answer", "GET /domain answered without a domains list")
            out.extend(d for d in items if isinstance(d, dict))
            meta = page.get("page") if isinstance(page.get("page"), dict) else {}
            total = meta.get("total") if isinstance(meta, dict) else None
            offset += len(items)
            if not items or not isinstance(total, int) or offset >= total:
                return out, False
        return out, True

    async def automation(self, path: str, body: dict[str, Any], budget: float) -> dict[str, Any]:
        """``POST automation_url + path`` with a JSON body."""
        return await self.request("POST", f"{self.cfg.automation_url}{path}", budget, body)

    async def request(
        self, method: str, url: str, budget: float, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One request within ``budget`` seconds, retried after a 429 while time allows."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        shown = urlsplit(url).path
        proxy = self._proxy(url)
        if proxy.problem:
            raise ApiError("unreachable", f"{method} {shown}: {proxy.problem}")
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                await self.pacer.acquire(deadline - loop.time())
            except RateLimited as e:
                raise ApiError(
                    "rate_limited",
                    f"{method} {shown}: {e} (CertCentral allows 100 requests per 5 s and "
                    "1000 per 3 min per key)",
                    retry_after=round(e.wait, 1),
                ) from None
            self.stats.requests += 1
            status, headers, data = await self._exchange(
                method, url, shown, proxy, body, deadline - loop.time()
            )
            if status != 429:
                return self._judge(method, shown, status, data)
            self.stats.rate_limited += 1
            wait = retry_after(headers.get("Retry-After")) or DEFAULT_RETRY_AFTER
            self.pacer.block(wait)
            if attempt == MAX_ATTEMPTS or loop.time() + wait > deadline:
                code, message = error_of(data)
                raise ApiError(
                    "rate_limited",
                    f"{method} {shown} answered 429 {code or 'request_limit_exceeded'}"
                    f"{': ' + message if message else ''}; retry after {wait:g}s",
                    status=429,
                    code=code,
                    retry_after=wait,
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def _judge(self, method: str, shown: str, status: int, data: object) -> dict[str, Any]:
        code, message = error_of(data)
        detail = f"{code or status}{': ' + message if message else ''}"
        if status == 401:
            raise ApiError(
                "rejected", f"{method} {shown} answered 401 ({detail})", status=401, code=code
            )
        if status == 403:
            raise ApiError(
                "denied", f"{method} {shown} answered 403 ({detail})", status=403, code=code
            )
        if not 200 <= status < 300:
            raise ApiError(
                "bad_answer", f"{method} {shown} answered {status} ({detail})", status=status
            )
        if not isinstance(data, dict):
            raise ApiError(
                "bad_answer", f"{method} {shown} answered {status} without a JSON object"
            )
        return data

    async def _exchange(
        self,
        method: str,
        url: str,
        shown: str,
        proxy: ProxyChoice,
        body: dict[str, Any] | None,
        budget: float,
    ) -> tuple[int, dict[str, str], object]:
        session = self._open()
        proxy_url, proxy_headers = None, None
        if proxy.url:
            parts = urlsplit(proxy.url)
            proxy_url = f"http://{parts.hostname}:{parts.port or 80}"
            if parts.username is not None:
                cred = f"{unquote(parts.username)}:{proxy.password or ''}".encode()
                proxy_headers = {"Proxy-Authorization": "Basic " + b64encode(cred).decode()}
        try:
            async with (
                compat.timeout(max(budget, 0.0)),
                session.request(
                    method,
                    url,
                    json=body,
                    proxy=proxy_url,
                    proxy_headers=proxy_headers,
                    allow_redirects=False,
                ) as resp,
            ):
                raw = bytearray()
                while len(raw) <= self.max_answer:  # read(n) gives at most n bytes
                    chunk = await resp.content.read(self.max_answer + 1 - len(raw))
                    if not chunk:
                        break
                    raw += chunk
                status, headers = resp.status, dict(resp.headers)
        except compat.TIMEOUT_ERRORS:
            raise ApiError(
                "timeout", f"{method} {shown}: no complete answer within {budget:.1f}s"
            ) from None
        except aiohttp.ClientConnectorCertificateError as e:
            raise ApiError(
                "unreachable",
                f"{method} {shown}: TLS verification failed ({e.certificate_error})",
            ) from None
        except aiohttp.ClientHttpProxyError as e:
            raise ApiError(
                "unreachable", f"{method} {shown}: the proxy refused the tunnel ({e.status})"
            ) from None
        except (aiohttp.ClientError, OSError, ValueError) as e:
            why = redact_text(str(e) or type(e).__name__, proxy.secrets)
            raise ApiError("unreachable", f"{method} {shown}: {_printable(why)}") from None
        if len(raw) > self.max_answer:
            raise ApiError(
                "bad_answer",
                f"{method} {shown} answered more than {self.max_answer} bytes",
                status=status,
            )
        try:
            data: object = json.loads(bytes(raw)) if raw else None
        except (ValueError, RecursionError):
            data = None
            if 200 <= status < 300:
                raise ApiError(
                    "bad_answer",
                    f"{method} {shown} answered {status} with something not JSON",
                    status=status,
                ) from None
        return status, headers, data
