"""The collector's configuration: a small TOML file, overridden by command-line flags.

Validated once at start; every problem raises :class:`agent.config.ConfigError` naming the
key (``retention_days: expected an integer, got a string``) and the CLI exits 78.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent import compat
from agent.config import (
    CertCentralConfig,
    ConfigError,
    ProxyConfig,
    is_loopback_host,
    parse_listen,
    parse_section,
    split_host_port,
)
from agent.files import ACTS_ON_ACCOUNT, POSTS_AS_HOST, secret_file_warning
from agent.values import boolean, choice, int_range, number_range, path, type_name
from collector.limits import Limits

DEFAULT_LISTEN = "127.0.0.1:8475"
DEFAULT_DB = Path("/var/lib/acme-preflight-collector/collector.db")
MIB = 1024 * 1024


@dataclass(frozen=True)
class TlsSettings:
    cert: Path | None = None
    key: Path | None = None
    # CA bundle that client certificates must chain to; set means mutual TLS is required.
    client_ca: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.cert is not None


@dataclass(frozen=True)
class Settings:
    listen: str = DEFAULT_LISTEN
    db: Path = DEFAULT_DB
    tokens_file: Path | None = None
    # Read endpoints (/, /hosts/..., /api/v1/hosts..., /metrics) are open unless this is true;
    # the default listen address is loopback only.
    read_auth: bool = False
    read_tokens_file: Path | None = None
    # `[store] url` when it names PostgreSQL (then ``db`` is unused); None: SQLite at ``db``.
    postgres_url: str | None = None
    # PostgreSQL password: read from this file (a systemd credential works), never in the URL.
    store_password_file: Path | None = None
    retention_days: float = 30.0
    prune_interval_s: float = 3600.0
    # Hosts not seen for this long leave the fleet (listing, page, counts); 0: kept forever.
    host_retention_days: float = 90.0
    # New host_ids one fleet-wide token may create per hour (0: no cap); host-bound tokens
    # only ever post for their one host.
    new_hosts_per_hour: int = 1000
    stale_intervals: float = 3.0
    # Used for stale detection when a report carries no interval_s.
    default_interval_s: float = 300.0
    max_body_bytes: int = MIB
    # "full": the WAL is fsynced at every (group) commit; "normal": only at checkpoints.
    synchronous: str = "full"
    # 0: the shortest reporting interval among the shown hosts (10 s .. 300 s).
    page_refresh_s: float = 0.0
    log_level: str = "info"
    # HTTP worker processes sharing the listening port (SO_REUSEPORT) and the database.
    workers: int = 1
    tls: TlsSettings = field(default_factory=TlsSettings)
    # [certcentral] (the account checks; None: off) and [proxy], parsed as in the agent
    certcentral: CertCentralConfig | None = None
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    limits: Limits = field(default_factory=Limits)
    source: Path | None = None

    @property
    def store_url(self) -> str:
        """``[store] url`` as shown to users: the SQLite path, or PostgreSQL without password."""
        if self.postgres_url is None:
            return str(self.db)
        from collector.store_url import redact

        return redact(self.postgres_url)

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = split_host_port(self.listen)
        return host.strip("[]"), port


# ---------------------------------------------------------------- value parsers


def _listen(value: object) -> str:
    return parse_listen(value, allow_empty=False)


_TOP: dict[str, Callable[[object], Any]] = {
    "listen": _listen,
    "db": path,
    "tokens_file": path,
    "read_auth": boolean,
    "read_tokens_file": path,
    "retention_days": number_range(0.001, 36500),
    "prune_interval_s": number_range(1, 86400 * 7),
    "stale_intervals": number_range(1, 1000),
    "default_interval_s": number_range(1, 86400 * 7),
    "max_body_bytes": int_range(1024, 64 * MIB),
    "synchronous": choice("full", "normal"),
    "page_refresh_s": number_range(0, 86400),
    "log_level": choice("debug", "info", "warning", "error"),
    "workers": int_range(1, 64),
    "new_hosts_per_hour": int_range(0, 10_000_000),
}
_TLS: dict[str, Callable[[object], Any]] = {"cert": path, "key": path, "client_ca": path}
_LIMITS: dict[str, Callable[[object], Any]] = {
    "max_connections": int_range(1, 1_000_000),
    "header_timeout_s": number_range(0.1, 3600),
    "body_timeout_s": number_range(0.1, 3600),
    "idle_timeout_s": number_range(0.1, 86400),
}
_TABLES: dict[str, tuple[dict[str, Callable[[object], Any]], type[Any]]] = {
    "tls": (_TLS, TlsSettings),
    "limits": (_LIMITS, Limits),
}


def _store_url(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a SQLite path or a postgresql:// URL, got {type_name(value)}")
    from collector.store_url import check_postgres_url, is_postgres

    value = value.strip()
    if is_postgres(value):
        check_postgres_url(value)
    return value


_STORE: dict[str, Callable[[object], Any]] = {"url": _store_url, "password_file": path}
_RETENTION: dict[str, Callable[[object], Any]] = {
    "days": number_range(0.001, 36500),
    "host_days": number_range(0, 36500),
    "prune_interval_s": number_range(1, 86400 * 7),
}
# [table] key -> Settings field
_TABLE_FIELDS = {
    ("store", "password_file"): "store_password_file",
    ("retention", "days"): "retention_days",
    ("retention", "host_days"): "host_retention_days",
    ("retention", "prune_interval_s"): "prune_interval_s",
}


def _table(name: str, raw: object, parsers: dict[str, Callable[[object], Any]]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"[{name}]", f"expected a table, got {type_name(raw)}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in parsers:
            raise ConfigError(f"[{name}] {key}", f"unknown key (known: {', '.join(parsers)})")
        try:
            out[key] = parsers[key](value)
        except ValueError as e:
            raise ConfigError(f"[{name}] {key}", str(e)) from None
    return out


def from_mapping(data: Mapping[str, Any], source: Path | None = None) -> Settings:
    """Validate a parsed TOML document (unknown keys are errors: a typo must not be ignored).

    Rules across keys are left to :func:`check`, after command-line flags are applied.
    """
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key in ("certcentral", "proxy"):
            values[key] = parse_section(key, raw)
            continue
        if key in ("store", "retention"):
            table = _table(key, raw, _STORE if key == "store" else _RETENTION)
            for tkey, value in table.items():
                name = _TABLE_FIELDS.get((key, tkey))
                if name is None:  # [store] url: a PostgreSQL URL or a SQLite path
                    if key == "store" and "db" in data:
                        raise ConfigError("[store] url", "set either db or [store] url, not both")
                    from collector.store_url import is_postgres

                    name, value = (
                        ("postgres_url", value) if is_postgres(value) else ("db", Path(value))
                    )
                elif name in data:
                    raise ConfigError(f"[{key}] {tkey}", f"set either {name} or [{key}] {tkey}")
                values[name] = value
            continue
        if key in _TABLES:
            parsers, cls = _TABLES[key]
            values[key] = cls(**_table(key, raw, parsers))
            continue
        if key not in _TOP:
            known = ", ".join(
                [*_TOP, "[tls]", "[store]", "[retention]", "[certcentral]", "[proxy]", "[limits]"]
            )
            raise ConfigError(key, f"unknown key (known: {known})")
        try:
            values[key] = _TOP[key](raw)
        except ValueError as e:
            raise ConfigError(key, str(e)) from None
    return Settings(**values, source=source)


def check(s: Settings) -> Settings:
    """Rules across keys; run again after command-line overrides."""
    if s.tls.key is not None and s.tls.cert is None:
        raise ConfigError("[tls] cert", "required when [tls] key is set")
    if s.tls.client_ca is not None and s.tls.cert is None:
        raise ConfigError(
            "[tls] client_ca", "client certificates need TLS: set [tls] cert and key too"
        )
    if s.tokens_file is None and s.tls.client_ca is None:
        raise ConfigError(
            "tokens_file",
            "required: agents authenticate with a token "
            "(or set [tls] client_ca for certificate-only authentication)",
        )
    if s.store_password_file is not None and s.postgres_url is None:
        raise ConfigError("[store] password_file", "only for a postgresql:// [store] url")
    if s.read_auth and s.read_tokens_file is None:
        raise ConfigError("read_tokens_file", "required when read_auth = true")
    return s


def start_warnings(s: Settings) -> list[str]:
    """What the collector starts with but an operator should fix, printed at start."""
    found: list[str] = []
    host, _ = s.host_port
    if not s.read_auth and not is_loopback_host(host):
        found.append(
            f"listen {s.listen}: reachable beyond this host while the read endpoints (/, "
            "/api/v1/hosts, /api/v1/problems, /metrics) are open: anyone who can connect reads "
            "the fleet; set read_auth = true and read_tokens_file, or listen on 127.0.0.1"
        )
    key_file = s.certcentral.api_key_file if s.certcentral else None
    files = (
        ("tokens_file", s.tokens_file, POSTS_AS_HOST),
        ("read_tokens_file", s.read_tokens_file, "anyone who can read it can read the fleet"),
        ("[certcentral] api_key_file", key_file, ACTS_ON_ACCOUNT),
    )
    for key, file, consequence in files:
        if file is not None:
            w = secret_file_warning(file, key, consequence)
            if w:
                found.append(w)
    return found


def load(path: Path | None) -> Settings:
    """Read a TOML file (``None``: defaults only)."""
    if path is None:
        return Settings()
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise ConfigError("", f"{path}: no such config file") from None
    except UnicodeDecodeError as e:
        raise ConfigError("", f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ConfigError("", f"{path}: cannot read the config file: {e.strerror}") from None
    try:
        data = compat.tomllib.loads(text)
    except compat.tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"{path}: invalid TOML: {e}") from None
    return from_mapping(data, source=path)


def with_flags(s: Settings, **flags: Any) -> Settings:
    """Command-line flags override the file; ``None`` means not given."""
    top = {k: v for k, v in flags.items() if v is not None and k in _TOP}
    tls = {k: v for k, v in flags.items() if v is not None and k in _TLS}
    if "workers" in top:
        try:
            top["workers"] = int_range(1, 64)(top["workers"])
        except ValueError as e:
            raise ConfigError("--workers", str(e)) from None
    if "listen" in top:
        try:
            top["listen"] = _listen(top["listen"])
        except ValueError as e:
            raise ConfigError("--listen", str(e)) from None
    if tls:
        top["tls"] = replace(s.tls, **tls)
    return replace(s, **top)
