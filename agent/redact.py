"""Scrubbing secrets out of anything that leaves the process."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# user:password@ in any URL-looking text
_USERINFO_RE = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@")
_BEARER_RE = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
MASK = "***"


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove URL passwords, bearer tokens and each known secret from ``text``."""
    text = _USERINFO_RE.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _BEARER_RE.sub(lambda m: f"{m.group(1)}{MASK}", text)
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, MASK)
    return text


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
