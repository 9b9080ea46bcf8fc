"""``[store] url``: which backend it names, and PostgreSQL URLs without their secrets.

Kept apart from ``store_pg`` so that reading the config never needs the PostgreSQL driver.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit, urlunsplit

SCHEMES = ("postgresql://", "postgres://")


def is_postgres(url: str) -> bool:
    return url.startswith(SCHEMES)


def check_postgres_url(url: str) -> None:
    """ValueError unless ``url`` is a PostgreSQL URL without a password (messages never echo it)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError("not a valid postgresql://user@host:port/database URL") from None
    secret = "use [store] password_file (or ~/.pgpass), never the URL: it is shown in logs"
    if parts.password is not None:
        raise ValueError(f"the URL carries a password: {secret}")
    if "password" in {k.lower() for k in parse_qs(parts.query)}:
        raise ValueError(f"the URL carries a password parameter: {secret}")
    if not parts.path.strip("/"):
        raise ValueError("name the database: postgresql://user@host:port/DATABASE")


def redact(url: str) -> str:
    """The URL without a password, for logs and errors."""
    try:
        parts = urlsplit(url)
        if parts.password is None and "password" not in parts.query.lower():
            return url
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "postgresql://(invalid URL)"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{port}" if port else "")
    return urlunsplit(parts._replace(netloc=netloc, query=""))
