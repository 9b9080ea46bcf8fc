"""Delivery of one spooled report to the collector, and the retry policy around it.

Keep-alive connections from a small pool (agent/daemon/transport.py); the JSON is
gzipped here and every request has a ``Content-Length`` (never chunked). The bearer token
is read from ``[collector] token_file`` or the systemd credential ``collector-token``
and never appears in a log line, a report or an error message.
"""

from __future__ import annotations

import enum
import gzip
import json
import os
import random
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

from agent import __version__, compat
from agent.config import CollectorConfig, ConfigError, redact_url
from agent.daemon.transport import Poster, ProtocolError
from agent.redact import redact_cut, redact_text

CREDENTIAL_NAME = "collector-token"
BACKOFF_MIN = 1.0
BACKOFF_MAX = 300.0
RETRY_AFTER_MAX = BACKOFF_MAX
REPORTS_PATH = "/api/v1/reports"
# The collector will never take this report (409: this host holds another report under
# its report_id). Dead-lettered only while the collector accepts others (delivery.py).
DEAD_LETTER_STATUSES = frozenset({400, 409, 413, 422})
# The collector's acknowledgement (collector/app.py): the status code and the JSON
# ``status`` field that go together. Anything else in a 2xx (a captive portal's login
# page, a proxy's own answer) is not a delivery.
ACKNOWLEDGEMENTS = {202: "accepted", 200: "duplicate"}
AUTH_STATUSES = frozenset({401, 403})
MAX_ERROR_BODY = 300  # characters of a collector's error answer quoted in the log
# Read past that so an echoed secret across the quote's end is redacted whole before the cut.
ERROR_BODY_READ = 4096
# Reports in flight at once while a backlog drains (one connection each); a spool with
# a single report sends it alone.
DELIVERY_WINDOW = 16


class Verdict(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"  # connection error, timeout, 408, 429, 5xx: transient
    AUTH = "auth"  # 401/403: kept and retried; credentials may be rotating
    # 3xx, 404, 501, a 2xx that is not the collector's acknowledgement ...: likely a wrong
    # URL or something in the way; kept and retried
    UNEXPECTED = "unexpected"
    DEAD = "dead"  # 400/409/413/422: the collector will never take this report


@dataclass(frozen=True)
class SendResult:
    verdict: Verdict
    status: int | None = None
    error: str = ""
    retry_after: float | None = None


def load_token(cfg: CollectorConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The bearer token: ``token_file``, else ``$CREDENTIALS_DIRECTORY/collector-token``."""
    env = os.environ if environ is None else environ
    path: Path | None = cfg.token_file
    key = "[collector] token_file"
    if path is None:
        creds = env.get("CREDENTIALS_DIRECTORY", "")
        if not creds or not (Path(creds) / CREDENTIAL_NAME).exists():
            return None
        path = Path(creds) / CREDENTIAL_NAME
        key = f"systemd credential {CREDENTIAL_NAME}"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(key, f"{path}: no such file") from None
    except PermissionError:
        raise ConfigError(key, f"{path}: permission denied") from None
    except OSError as e:
        raise ConfigError(key, f"{path}: cannot read: {e.strerror}") from None
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError(key, f"{path}: the token is not ASCII text") from None
    if not token:
        raise ConfigError(key, f"{path}: the file is empty")
    if any(not 0x21 <= ord(c) <= 0x7E for c in token):
        # Never quote the token: it is a secret even when malformed.
        raise ConfigError(key, f"{path}: the token contains spaces or control characters")
    return token


def ssl_context(cfg: CollectorConfig) -> ssl.SSLContext | None:
    """TLS settings for an https collector: ``ca_file`` and the mTLS client pair."""
    if not cfg.url or not cfg.url.startswith("https://"):
        return None
    try:
        ctx = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError("[collector] ca_file", f"{cfg.ca_file}: cannot load: {e}") from None
    if cfg.client_cert and cfg.client_key:
        try:
            ctx.load_cert_chain(str(cfg.client_cert), str(cfg.client_key))
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(
                "[collector] client_cert",
                f"cannot load {cfg.client_cert} with key {cfg.client_key}: {e}",
            ) from None
    return ctx


def reports_url(base: str) -> str:
    """``[collector] url`` may be the collector's root or the full reports URL."""
    base = base.rstrip("/")
    return base if base.endswith(REPORTS_PATH) else base + REPORTS_PATH


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from ``Retry-After`` (delta-seconds or HTTP-date), capped."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²".isdigit() is true too; float() refuses it
        return min(float(value), RETRY_AFTER_MAX)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(when.timestamp() - now, 0.0), RETRY_AFTER_MAX)


def backoff_delay(failures: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter between 1 s and 5 min; ``failures`` >= 1."""
    ceiling = min(BACKOFF_MAX, BACKOFF_MIN * 2.0 ** min(max(failures, 1), 20))
    return (rng or random).uniform(BACKOFF_MIN, ceiling)


def retry_delay(result: SendResult, failures: int, rng: random.Random | None = None) -> float:
    """How long to wait before the next attempt: at least what Retry-After asked."""
    if result.retry_after is not None:
        return max(result.retry_after, BACKOFF_MIN)
    return backoff_delay(failures, rng)


def classify(status: int) -> Verdict:
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status in DEAD_LETTER_STATUSES:
        return Verdict.DEAD
    if status in AUTH_STATUSES:
        return Verdict.AUTH
    if status in (408, 429) or (500 <= status < 600 and status != 501):
        return Verdict.RETRY
    return Verdict.UNEXPECTED


# OpenSSL verify codes meaning "no trusted CA signed this chain" (X509_V_ERR_*): the
# fix is a trust anchor, i.e. ``[collector] ca_file``.
UNTRUSTED_CODES = frozenset({2, 18, 19, 20, 21})
HOSTNAME_MISMATCH = 62


def untrusted_message(e: ssl.SSLCertVerificationError, cfg: CollectorConfig) -> str:
    """Why the collector's certificate was refused, and the setting that fixes it."""
    why = f"TLS: certificate verify failed ({e.verify_message or e})"
    code = e.verify_code
    if code in UNTRUSTED_CODES:
        if cfg.ca_file is None:
            return (
                f"{why}: the collector's certificate is not signed by a CA in the system store; "
                "set [collector] ca_file to the PEM file of the CA that signed it, then reload"
            )
        return (
            f"{why}: the collector's certificate is not signed by the CA in [collector] "
            f"ca_file ({cfg.ca_file}); "
            "point ca_file at the CA that signed the collector's certificate, then reload"
        )
    if code == HOSTNAME_MISMATCH:
        return f"{why}: [collector] url must use a name the certificate carries"
    return why


def acknowledgement_problem(status: int, body: bytes, report_id: str) -> str | None:
    """None when ``body`` is the collector's acknowledgement of ``report_id`` stored;
    otherwise what is wrong with it."""
    expected = ACKNOWLEDGEMENTS.get(status)
    if expected is None:
        return "not a status the collector acknowledges with"
    try:
        doc = json.loads(body)
    except ValueError:
        return "the body is not the collector's JSON acknowledgement"
    if not isinstance(doc, dict) or doc.get("status") != expected:
        return f'the body is not the collector\'s acknowledgement ({{"status": "{expected}", ...}})'
    if doc.get("report_id") != report_id:
        return "the acknowledgement names another report_id"
    if doc.get("stored") is False:
        return "the collector says the report is not stored"
    return None


def gzip_body(body: bytes) -> bytes:
    return gzip.compress(body, compresslevel=6, mtime=0)


class Sender:
    """POSTs report bodies to ``[collector] url`` over one long-lived session."""

    def __init__(
        self,
        cfg: CollectorConfig,
        token: str | None,
        secrets: tuple[str, ...] = (),
        connections: int = DELIVERY_WINDOW,
    ):
        if not cfg.url:
            raise ValueError("Sender needs [collector] url")
        self.cfg = cfg
        self.url = reports_url(cfg.url)
        self.connections = connections
        self._token = token
        self._secrets = tuple(s for s in (*secrets, token) if s)
        self._ssl = ssl_context(cfg)
        self._poster: Poster | None = None
        headers = {
            "User-Agent": f"acme-preflight/{__version__}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        }
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._headers = headers

    @property
    def display_url(self) -> str:
        return redact_url(self.url)

    def _poster_now(self) -> Poster:
        # Made on first use, inside the event loop that sends. A service has no business
        # with the environment's proxy variables: the poster never uses a proxy.
        if self._poster is None:
            self._poster = Poster(self.url, self._ssl, self.connections)
        return self._poster

    async def close(self) -> None:
        if self._poster is not None:
            await self._poster.close()
            self._poster = None

    async def send(self, body: bytes, now: float, report_id: str) -> SendResult:
        """One attempt; never raises except on cancellation. Delivered means the collector
        acknowledged ``report_id`` (``acknowledgement_problem``), not just any 2xx."""
        data = gzip_body(body)
        try:
            async with compat.timeout(self.cfg.timeout):
                answer = await self._poster_now().post(data, self._headers, ERROR_BODY_READ)
        except compat.TIMEOUT_ERRORS:
            return SendResult(Verdict.RETRY, None, f"timed out after {self.cfg.timeout:g}s")
        except ssl.SSLCertVerificationError as e:
            return SendResult(Verdict.RETRY, None, self._clean(untrusted_message(e, self.cfg)))
        except ProtocolError as e:
            return SendResult(Verdict.RETRY, None, self._clean(f"protocol error: {e}"))
        except (OSError, ValueError) as e:
            return SendResult(Verdict.RETRY, None, self._clean(f"{type(e).__name__}: {e}"))
        verdict = classify(answer.status)
        if verdict is Verdict.DELIVERED:
            problem = acknowledgement_problem(answer.status, answer.body, report_id)
            if problem is None:
                return SendResult(verdict, answer.status)
            verdict = Verdict.UNEXPECTED
            snippet = self._quote(answer.body)
            error = (
                f"HTTP {answer.status} {answer.reason} is not the collector's "
                f"acknowledgement ({problem}; a proxy or login page in the way?)"
            )
            return SendResult(
                verdict,
                answer.status,
                self._clean(f"{error}: {snippet}" if snippet else error),
            )
        snippet = self._quote(answer.body)
        error = f"HTTP {answer.status} {answer.reason}".rstrip()
        if snippet:
            error += f": {snippet}"
        return SendResult(
            verdict,
            answer.status,
            self._clean(error),
            parse_retry_after(answer.headers.get("retry-after"), now),
        )

    def _quote(self, body: bytes) -> str:
        """The start of a peer's answer for a message: redacted first, then cut."""
        text = " ".join(body.decode("utf-8", "replace").split())
        partial = len(body) >= ERROR_BODY_READ  # the body may go on past what was read
        return redact_cut(text, MAX_ERROR_BODY, self._secrets, partial=partial)

    def _clean(self, text: str) -> str:
        return redact_text(text, self._secrets)
