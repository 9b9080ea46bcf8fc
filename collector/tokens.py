"""Bearer tokens: the tokens file and a constant-time check.

File format, one token a line::

    # comment
    s3cr3t-fleet-token-0123456789           # any host may post with it
    s3cr3t-web1-token-abcdefghij web-01     # only for reports whose agent.host_id is web-01

Tokens are kept as SHA-256 digests; a presented token is hashed and looked up by digest (the
attacker cannot steer a SHA-256 digest, so lookup timing reveals nothing of a token), then
confirmed with :func:`hmac.compare_digest`. Error messages name the file and line, never a token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

from agent.config import ConfigError

MIN_TOKEN_LENGTH = 16
# RFC 6750 b64token
_TOKEN_RE = re.compile(r"^[A-Za-z0-9._~+/-]+=*$")


@dataclass(frozen=True)
class TokenEntry:
    digest: bytes
    host_id: str | None  # None: any host

    @property
    def key(self) -> str:
        """A stable name for this token in the database (the new-host cap): not the token.

        A hash of its digest, so neither the token nor its digest is stored.
        """
        return hashlib.sha256(b"acme-preflight token key\0" + self.digest).hexdigest()[:24]


class Tokens:
    """The set of valid tokens, each optionally bound to one host."""

    def __init__(self, entries: dict[bytes, TokenEntry]) -> None:
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, token: str) -> TokenEntry | None:
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        entry = self._entries.get(digest)
        if entry is None or not hmac.compare_digest(entry.digest, digest):
            return None
        return entry


def parse(text: str, source: str) -> Tokens:
    """Parse a tokens file's text; ``source`` names it in errors."""
    entries: dict[bytes, TokenEntry] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        parts = content.split()
        where = f"{source} line {lineno}"
        if len(parts) > 2:
            raise ConfigError(where, "expected `token [host_id]`, found more than two fields")
        token = parts[0]
        if not _TOKEN_RE.match(token):
            raise ConfigError(
                where, "the token has characters outside A-Z a-z 0-9 . _ ~ + / - (and trailing =)"
            )
        if len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                where, f"the token is shorter than {MIN_TOKEN_LENGTH} characters: too guessable"
            )
        host_id = parts[1] if len(parts) == 2 else None
        if host_id is not None and len(host_id) > 255:
            raise ConfigError(where, "the host_id is longer than 255 characters")
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        previous = entries.get(digest)
        if previous is not None and previous.host_id != host_id:
            raise ConfigError(where, "this token is listed earlier for a different host")
        entries[digest] = TokenEntry(digest, host_id)
    if not entries:
        raise ConfigError(source, "no tokens in the file (every line is empty or a comment)")
    return Tokens(entries)


def load(path: Path, key: str = "tokens_file") -> Tokens:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise ConfigError(key, f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise ConfigError(key, f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise ConfigError(key, f"{path}: cannot read: {e.strerror}") from None
    return parse(text, str(path))


def from_header(value: str | None) -> str | None:
    """The token from ``Authorization: Bearer T`` or ``Basic base64(user:T)`` (for browsers)."""
    if not value:
        return None
    scheme, _, rest = value.strip().partition(" ")
    scheme = scheme.lower()
    rest = rest.strip()
    if scheme == "bearer" and rest:
        return rest
    if scheme == "basic" and rest:
        try:
            decoded = base64.b64decode(rest, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, sep, password = decoded.partition(":")
        return password if sep and password else None
    return None
