"""The collector's configuration: a small TOML file, overridden by command-line flags.

Validated once at start; every problem raises :class:`agent.config.ConfigError` naming the
key (``retention_days: expected an integer, got a string``) and the CLI exits 78.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.config import ConfigError, is_hostname, split_host_port

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
    retention_days: float = 30.0
    prune_interval_s: float = 3600.0
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
    source: Path | None = None

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = split_host_port(self.listen)
        return host.strip("[]"), port


# ---------------------------------------------------------------- value parsers


def _tname(value: object) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}
    return names.get(type(value), "a list" if isinstance(value, list) else "a table")


def _path(value: object) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty path string, got {_tname(value)}")
    return Path(value.strip())


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_tname(value)}")
    return value


def _positive(lo: float, hi: float) -> Callable[[object], float]:
    def parse(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {_tname(value)}")
        if not lo <= float(value) <= hi:
            raise ValueError(f"{value} is out of range {lo:g}..{hi:g}")
        return float(value)

    return parse


def _int(lo: int, hi: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {_tname(value)}")
        if not lo <= value <= hi:
            raise ValueError(f"{value} is out of range {lo}..{hi}")
        return value

    return parse


def _choice(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return value.lower()

    return parse


def parse_listen(value: object) -> str:
    """``HOST:PORT`` or ``[IPv6]:PORT`` with an IP address or hostname."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected HOST:PORT, got {_tname(value)}")
    text = value.strip()
    host, _ = split_host_port(text)
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if not is_hostname(host):
            raise ValueError(f"{text!r} is not HOST:PORT") from None
    return text


_TOP: dict[str, Callable[[object], Any]] = {
    "listen": parse_listen,
    "db": _path,
    "tokens_file": _path,
    "read_auth": _bool,
    "read_tokens_file": _path,
    "retention_days": _positive(0.001, 36500),
    "prune_interval_s": _positive(1, 86400 * 7),
    "stale_intervals": _positive(1, 1000),
    "default_interval_s": _positive(1, 86400 * 7),
    "max_body_bytes": _int(1024, 64 * MIB),
    "synchronous": _choice("full", "normal"),
    "page_refresh_s": _positive(0, 86400),
    "log_level": _choice("debug", "info", "warning", "error"),
    "workers": _int(1, 64),
}
_TLS: dict[str, Callable[[object], Any]] = {"cert": _path, "key": _path, "client_ca": _path}


def from_mapping(data: Mapping[str, Any], source: Path | None = None) -> Settings:
    """Validate a parsed TOML document (unknown keys are errors: a typo must not be ignored).

    Rules across keys are left to :func:`check`, after command-line flags are applied.
    """
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key == "tls":
            if not isinstance(raw, dict):
                raise ConfigError("[tls]", f"expected a table, got {_tname(raw)}")
            tls: dict[str, Any] = {}
            for tkey, traw in raw.items():
                if tkey not in _TLS:
                    raise ConfigError(f"[tls] {tkey}", f"unknown key (known: {', '.join(_TLS)})")
                try:
                    tls[tkey] = _TLS[tkey](traw)
                except ValueError as e:
                    raise ConfigError(f"[tls] {tkey}", str(e)) from None
            values["tls"] = TlsSettings(**tls)
            continue
        if key not in _TOP:
            raise ConfigError(key, f"unknown key (known: {', '.join([*_TOP, '[tls]'])})")
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
    if s.read_auth and s.read_tokens_file is None:
        raise ConfigError("read_tokens_file", "required when read_auth = true")
    return s


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
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"{path}: invalid TOML: {e}") from None
    return from_mapping(data, source=path)


def with_flags(s: Settings, **flags: Any) -> Settings:
    """Command-line flags override the file; ``None`` means not given."""
    top = {k: v for k, v in flags.items() if v is not None and k in _TOP}
    tls = {k: v for k, v in flags.items() if v is not None and k in _TLS}
    if "workers" in top:
        try:
            top["workers"] = _int(1, 64)(top["workers"])
        except ValueError as e:
            raise ConfigError("--workers", str(e)) from None
    if "listen" in top:
        try:
            top["listen"] = parse_listen(top["listen"])
        except ValueError as e:
            raise ConfigError("--listen", str(e)) from None
    if tls:
        top["tls"] = replace(s.tls, **tls)
    return replace(s, **top)
