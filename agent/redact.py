"""Scrubbing secrets out of anything that leaves the process.

A peer may echo a secret back in any form a URL, a JSON string or an HTML page gives it, so a
known secret is matched with each character literal or percent-encoded (either hex case),
``/`` also as JSON's ``\\/`` and a character also as an HTML entity. Text is redacted
*before* it is cut to length: a secret across the cut is then still whole when it is found.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

# user:password@ in any URL-looking text
_USERINFO_RE = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@")
_BEARER_RE = re.compile(r"(?i)(bearer\s+)([A-Za-z0-9._~+/=-]+)")
# Credentials in a query string: ?token=..., &access_token=..., ;api_key=...
_QUERY_SECRET_RE = re.compile(
    r"(?i)([?&;](?:access_token|id_token|refresh_token|token|api_key|apikey|key|password|passwd"
    r"|pass|pwd|secret|client_secret|auth|signature|sig)=)[^&#\s\"'<>]+"
)
MASK = "***"
MIN_SECRET = 3
# Words that follow "bearer" in prose ("missing or unknown bearer token"): not credentials.
BEARER_PROSE = frozenset(
    {
        "token",
        "tokens",
        "auth",
        "authentication",
        "authorization",
        "scheme",
        "credential",
        "credentials",
        "header",
        "required",
        "missing",
        "invalid",
        "expected",
    }
)


def _bearer(m: re.Match[str]) -> str:
    if m.group(2).lower() in BEARER_PROSE:
        return m.group(0)
    return f"{m.group(1)}{MASK}"


def _hex(n: int, width: int = 0) -> str:
    """``n`` in hex as a pattern accepting either case of its digits."""
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{n:0{width}x}")


def _char_forms(ch: str) -> str:
    forms = [
        re.escape(ch),
        "".join("%" + _hex(b, 2) for b in ch.encode("utf-8")),  # %XX of each UTF-8 byte
        f"&#0*{ord(ch)};",
        f"&#[xX]0*{_hex(ord(ch))};",
    ]
    if ch == "/":
        forms.append(r"\\/")
    elif ch == " ":
        forms.append(r"\+")
    return "(?:" + "|".join(forms) + ")"


@functools.lru_cache(maxsize=64)
def _secret_re(secret: str) -> re.Pattern[str]:
    """The secret in any of its encoded forms (see the module docstring)."""
    return re.compile("".join(_char_forms(ch) for ch in secret))


def encoded_length(secret: str) -> int:
    """The longest text one of ``secret``'s forms can take (each byte as ``%XX``)."""
    return 3 * len(secret.encode("utf-8"))


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove URL passwords, bearer tokens, query-string credentials and each known secret
    (in any encoding) from ``text``."""
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET:
            text = _secret_re(secret).sub(MASK, text)
    text = _USERINFO_RE.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _BEARER_RE.sub(_bearer, text)
    text = _QUERY_SECRET_RE.sub(lambda m: f"{m.group(1)}{MASK}", text)
    return text


def redact_cut(text: str, limit: int, secrets: Iterable[str] = (), *, partial: bool = False) -> str:
    """``text`` redacted, then cut to ``limit`` characters.

    ``partial``: ``text`` is only the start of something longer (a body read up to a bound),
    so its last characters may be the first part of a secret, which no redaction recognises:
    drop as many as the longest form of a known secret could take first.
    """
    secrets = tuple(s for s in secrets if s and len(s) >= MIN_SECRET)
    text = redact_text(text, secrets)
    if partial and secrets:
        # Whole secrets are masked by now; what is left of one cut by the bound sits in the
        # last characters, shorter than that secret's longest form.
        tail = max(encoded_length(s) for s in secrets) - 1
        text = text[: max(len(text) - tail, 0)]
    return text if len(text) <= limit else text[:limit] + "..."


def redact_obj(obj: Any, secrets: Iterable[str] = ()) -> Any:
    """``redact_text`` applied to every string inside JSON-like data."""
    secrets = tuple(secrets)
    if isinstance(obj, str):
        return redact_text(obj, secrets)
    if isinstance(obj, dict):
        return {redact_text(str(k), secrets): redact_obj(v, secrets) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact_obj(v, secrets) for v in obj]
    return obj
