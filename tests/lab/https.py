"""The acme.digicert.com stand-in: an HTTPS server (aiohttp) with SNI and the ACME directory.

Behaviour is mutable at runtime through ``server.behaviour`` (status, body, clock offset,
delay) and ``server.cert`` / ``server.sni_certs`` (what the TLS handshake presents).
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import trustme
from aiohttp import web

from tests.lab.base import LabServer, bind_socket

DIRECTORY_PATH = "/v2/acme/directory/"
NONCE_PATH = "/v2/acme/new-nonce"
DIGICERT_BASE_URL = "https://acme.digicert.com"


def acme_directory(base_url: str = DIGICERT_BASE_URL) -> dict[str, Any]:
    """The JSON DigiCert serves at /v2/acme/directory/ (RFC 8555 section 7.1.1)."""
    acme = f"{base_url}/v2/acme"
    return {
        "keyChange": f"{acme}/key-change",
        "meta": {
            "caaIdentities": ["digicert.com", "www.digicert.com"],
            "externalAccountRequired": True,
            "termsOfService": "https://www.digicert.com/master-services-agreement/",
            "website": "https://www.digicert.com",
        },
        "newAccount": f"{acme}/new-acct",
        "newNonce": f"{acme}/new-nonce",
        "newOrder": f"{acme}/new-order",
        "revokeCert": f"{acme}/revoke-cert",
    }


@dataclass
class HttpsBehaviour:
    """How the server answers; change the fields while it runs.

    ``status``: when not 200, every request gets this status (with a text body).
    ``body``: served at the directory instead of the ACME JSON; a ``str`` is sent as
    text/html (a captive portal), anything else as JSON (e.g. ``{"hello": "world"}``).
    ``clock_offset``: seconds added to the ``Date`` header (+120 = server 2 min ahead).
    ``delay``: seconds to wait before answering (an HTTP-phase timeout).
    """

    status: int = 200
    body: object = None
    clock_offset: float = 0.0
    delay: float = 0.0


@dataclass(frozen=True)
class HttpsRequest:
    method: str
    path: str
    host: str | None
    headers: Mapping[str, str] = field(repr=False, default_factory=dict)


def server_context(leaf: trustme.LeafCert) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(ctx)
    return ctx


class HttpsServer(LabServer):
    """HTTPS on (host, port) presenting ``cert``, or ``sni_certs[name]`` for that SNI name.

    Records the SNI of every handshake in ``sni`` (None when the client sent none) and
    every HTTP request in ``requests``.
    """

    def __init__(
        self,
        cert: trustme.LeafCert,
        host: str = "127.0.0.2",
        port: int = 443,
        *,
        sni_certs: Mapping[str, trustme.LeafCert] | None = None,
        base_url: str = DIGICERT_BASE_URL,
    ) -> None:
        super().__init__(host, port)
        self.cert = cert
        self.sni_certs: dict[str, trustme.LeafCert] = dict(sni_certs or {})
        self.base_url = base_url
        self.behaviour = HttpsBehaviour()
        self.sni: list[str | None] = []
        self.requests: list[HttpsRequest] = []
        self._contexts: dict[int, ssl.SSLContext] = {}
        self._runner: web.AppRunner | None = None

    def url(self, path: str = DIRECTORY_PATH, hostname: str = "acme.digicert.com") -> str:
        """A URL naming ``hostname`` on this server's port (resolve it via the lab DNS)."""
        port = "" if self.port == 443 else f":{self.port}"
        return f"https://{hostname}{port}{path}"

    def _context_for(self, leaf: trustme.LeafCert) -> ssl.SSLContext:
        ctx = self._contexts.get(id(leaf))
        if ctx is None:
            ctx = self._contexts[id(leaf)] = server_context(leaf)
        return ctx

    def _on_sni(self, sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        self.sni.append(name)
        leaf = self.sni_certs.get(name.lower(), self.cert) if name else self.cert
        sslobj.context = self._context_for(leaf)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            HttpsRequest(request.method, request.path, request.host, dict(request.headers))
        )
        b = self.behaviour
        if b.delay:
            await asyncio.sleep(b.delay)
        headers = {"Date": formatdate(time.time() + b.clock_offset, usegmt=True)}
        if b.status != 200:
            try:
                phrase = HTTPStatus(b.status).phrase
            except ValueError:
                phrase = "Error"
            return web.Response(status=b.status, text=f"{b.status} {phrase}\n", headers=headers)
        if request.path == DIRECTORY_PATH:
            if request.method not in ("GET", "HEAD"):
                return web.Response(status=405, headers=headers)
            if isinstance(b.body, str):
                return web.Response(text=b.body, content_type="text/html", headers=headers)
            body = acme_directory(self.base_url) if b.body is None else b.body
            return web.json_response(body, headers=headers)
        if request.path == NONCE_PATH and request.method in ("GET", "HEAD"):
            headers |= {
                "Replay-Nonce": secrets.token_urlsafe(16),
                "Cache-Control": "no-store",
                "Link": f'<{self.base_url}{DIRECTORY_PATH}>;rel="index"',
            }
            return web.Response(status=200 if request.method == "HEAD" else 204, headers=headers)
        return web.json_response(
            {"type": "urn:ietf:params:acme:error:malformed", "detail": "Not Found", "status": 404},
            status=404,
            content_type="application/problem+json",
            headers=headers,
        )

    async def _start(self) -> None:
        ctx = self._context_for(self.cert)
        ctx.sni_callback = self._on_sni
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.2
        )
        await self._runner.setup()
        sock = bind_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        try:
            await web.SockSite(self._runner, sock, ssl_context=ctx).start()
        except BaseException:
            sock.close()
            await self._runner.cleanup()
            raise

    async def _stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
