"""The acme.digicert.com stand-in: an HTTPS server with SNI and the ACME directory.

Behaviour is mutable at runtime through ``server.behaviour`` (status, body, clock offset,
delay) and ``server.cert`` / ``server.sni_certs`` (what the TLS handshake presents).

HTTP/1.1 (keep-alive, HEAD, Content-Length bodies) is served by hand on a tracked TCP
server with ``start_tls``, so ``stop()`` also closes connections stuck mid-handshake
(aiohttp's server does not see a connection until its handshake completes).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import trustme

from agent import compat
from agent.log import quiet_tls_eof_noise
from tests.lab.base import StreamServer

# A client that closes right after the handshake is normal here (agent/log.py says why).
quiet_tls_eof_noise()

DIRECTORY_PATH = "/v2/acme/directory/"
NONCE_PATH = "/v2/acme/new-nonce"
DIGICERT_BASE_URL = "https://acme.digicert.com"
MAX_HEAD = 16 * 1024
Response = tuple[int, dict[str, str], bytes]


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
    ``nonce``: how newNonce answers: ``ok`` (HEAD 200 / GET 204 with ``Replay-Nonce``, as
    DigiCert does), ``no_header`` (200 without ``Replay-Nonce``: a proxy stripping it),
    ``not_found`` (404 problem document: a filter allowing only the directory URL),
    ``close`` (as ``ok``, but the directory's answer closes the connection).
    """

    status: int = 200
    body: object = None
    clock_offset: float = 0.0
    delay: float = 0.0
    nonce: str = "ok"


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


class HttpsServer(StreamServer):
    """HTTPS on (host, port) presenting ``cert``, or ``sni_certs[name]`` for that SNI name.

    Records the SNI of every handshake in ``sni`` (None when the client sent none) and
    every HTTP request in ``requests``.
    """

    pause_on_accept = True  # start_tls resumes reading

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
        self._handshake_ctx: ssl.SSLContext | None = None

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
        # Called for every ClientHello, with None when the client sent no SNI.
        self.sni.append(name)
        leaf = self.sni_certs.get(name.lower(), self.cert) if name else self.cert
        sslobj.context = self._context_for(leaf)

    async def _start(self) -> None:
        # A context of its own (no cert needed: the SNI callback always picks one).
        self._handshake_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._handshake_ctx.sni_callback = self._on_sni
        await super()._start()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._handshake_ctx is not None
        await compat.start_tls(writer, self._handshake_ctx)
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_HEAD:
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                await self._write(writer, "GET", (400, {}, b"400 Bad Request\n"), False)
                return
            method, target, version = parts
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().title()] = value.strip()
            length = headers.get("Content-Length", "0")
            if not length.isdigit():
                await self._write(writer, method, (400, {}, b"400 Bad Request\n"), False)
                return
            await reader.readexactly(int(length))  # request bodies are not needed
            path = target.split("?", 1)[0]
            self.requests.append(HttpsRequest(method, path, headers.get("Host"), headers))
            if self.behaviour.delay:
                await asyncio.sleep(self.behaviour.delay)
            connection = headers.get("Connection", "").lower()
            keep = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
            if path == DIRECTORY_PATH and self.behaviour.nonce == "close":
                keep = False
            await self._write(writer, method, self.respond(method, path), keep)
            if not keep:
                return

    async def _write(
        self, writer: asyncio.StreamWriter, method: str, response: Response, keep: bool
    ) -> None:
        status, headers, body = response
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        date = formatdate(time.time() + self.behaviour.clock_offset, usegmt=True)
        fields = {"Date": date, "Server": "acme-preflight-lab"} | headers
        if status != 204:
            fields["Content-Length"] = str(len(body))
        if not keep:
            fields["Connection"] = "close"
        head = f"HTTP/1.1 {status} {phrase}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
        send_body = method != "HEAD" and status not in (204, 304)
        writer.write(head.encode("latin-1") + (body if send_body else b""))
        await writer.drain()

    def respond(self, method: str, path: str) -> Response:
        """Status, headers and body for one request (without Date/Content-Length)."""
        b = self.behaviour
        if b.status != 200:
            try:
                phrase = HTTPStatus(b.status).phrase
            except ValueError:
                phrase = "Error"
            text = f"{b.status} {phrase}\n".encode()
            return b.status, {"Content-Type": "text/plain; charset=utf-8"}, text
        if path == DIRECTORY_PATH:
            if method not in ("GET", "HEAD"):
                return 405, {"Allow": "GET, HEAD"}, b""
            if isinstance(b.body, str):
                return 200, {"Content-Type": "text/html; charset=utf-8"}, b.body.encode()
            data = acme_directory(self.base_url) if b.body is None else b.body
            return 200, {"Content-Type": "application/json"}, json.dumps(data).encode()
        if path == NONCE_PATH and method in ("GET", "HEAD") and b.nonce != "not_found":
            headers = {
                "Replay-Nonce": secrets.token_urlsafe(16),
                "Cache-Control": "no-store",
                "Link": f'<{self.base_url}{DIRECTORY_PATH}>;rel="index"',
            }
            if b.nonce == "no_header":
                del headers["Replay-Nonce"]
            return (200 if method == "HEAD" else 204), headers, b""
        problem = {"type": "urn:ietf:params:acme:error:malformed", "detail": "Not Found"}
        return 404, {"Content-Type": "application/problem+json"}, json.dumps(problem).encode()
