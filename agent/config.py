"""Configuration: TOML into frozen, typed objects, validated once at load.

Every problem raises :class:`ConfigError` naming the key, e.g.
``[sensor] version: "3.8" is not a sensor version like 3.8.47``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from agent import compat
from agent.checks import CHECK_NAMES
from agent.log import LOG_FORMATS
from agent.redact import redact_text
from agent.values import (
    boolean,
    choice,
    int_range,
    nonempty_string,
    number_range,
    path,
    str_list,
    string,
    type_name,
)

DEFAULT_PATH = Path("/etc/acme-preflight/config.toml")
EX_CONFIG = 78

LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """A configuration problem; ``key`` is like ``[sensor] version``."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


@dataclass(frozen=True, order=True)
class SensorVersion:
    """A DigiCert sensor version such as 3.8.47, compared numerically."""

    parts: tuple[int, ...]

    # [0-9], not \d: "\u0663.8.47" (Arabic-Indic digits) is not a sensor version
    _RE = re.compile(r"^[0-9]{1,6}(\.[0-9]{1,6}){2,3}$")

    @classmethod
    def parse(cls, text: str) -> SensorVersion:
        text = text.strip()
        if not cls._RE.match(text):
            raise ValueError(f"{text!r} is not a sensor version like 3.8.47")
        return cls(tuple(int(p) for p in text.split(".")))

    def __str__(self) -> str:
        return ".".join(str(p) for p in self.parts)


# Sensor port rule from DigiCert's prerequisites page.
SENSOR_LAST_OLD_VERSION = SensorVersion((3, 8, 46))
SENSOR_OLD_PORT = 8080
SENSOR_NEW_PORT = 48999


@dataclass(frozen=True)
class TargetsConfig:
    hostnames: tuple[str, ...] = ("acme.digicert.com", "daas.digicert.com")
    ip: str = "216.168.244.42"
    port: int = 443
    acme_directory: str = "https://acme.digicert.com/v2/acme/directory/"


@dataclass(frozen=True)
class DnsConfig:
    """Resolver for the DigiCert hostnames; empty nameservers means /etc/resolv.conf."""

    nameservers: tuple[str, ...] = ()


@dataclass(frozen=True)
class AgentConfig:
    interval: float = 300.0
    timeout: float = 10.0
    # None means 10% of the interval.
    jitter: float | None = None
    host_id: str | None = None
    state_dir: Path = Path("/var/lib/acme-preflight")
    log_level: str = "info"
    # None: logfmt when stdout is the journal, console on a TTY, JSON otherwise.
    log_format: str | None = None
    checks: tuple[str, ...] = CHECK_NAMES

    @property
    def effective_jitter(self) -> float:
        return self.interval * 0.1 if self.jitter is None else self.jitter


@dataclass(frozen=True)
class ProxyConfig:
    url: str | None = None


@dataclass(frozen=True)
class FqdnConfig:
    names: tuple[str, ...] = ()
    discover: bool = True
    nameservers: tuple[str, ...] = ()
    nginx_conf: Path = Path("/etc/nginx/nginx.conf")
    apache_roots: tuple[Path, ...] = (Path("/etc/apache2"), Path("/etc/httpd"))


@dataclass(frozen=True)
class SensorConfig:
    host: str | None = None
    version: SensorVersion | None = None
    port: int | None = None

    @property
    def configured(self) -> bool:
        return self.host is not None

    def port_rule(self) -> tuple[int, str]:
        """The port to test and the rule that chose it."""
        if self.port is not None:
            return self.port, "explicit [sensor] port"
        if self.version is None:
            return SENSOR_NEW_PORT, "no [sensor] version: assuming 3.8.47 or newer, port 48999"
        # Only major.minor.patch counts: a build number (3.8.46.2) is still the 3.8.46 line.
        if self.version.parts[:3] <= SENSOR_LAST_OLD_VERSION.parts:
            return SENSOR_OLD_PORT, f"sensor {self.version} is 3.8.46 or older: port 8080"
        return SENSOR_NEW_PORT, f"sensor {self.version} is 3.8.47 or newer: port 48999"


@dataclass(frozen=True)
class ClockSkewConfig:
    warn: float = 60.0
    fail: float = 300.0


# CAA issuer domains that mean DigiCert: digicert.com and www.digicert.com cover every
# DigiCert brand (DigiCert documents both), the rest are its brands' own values.
DIGICERT_CAA_ISSUERS = (
    "digicert.com",
    "www.digicert.com",
    "thawte.com",
    "geotrust.com",
    "rapidssl.com",
    "symantec.com",
    "digicert.ne.jp",
    "cybertrust.ne.jp",
)


@dataclass(frozen=True)
class CaaConfig:
    enabled: bool = True
    issuers: tuple[str, ...] = DIGICERT_CAA_ISSUERS


@dataclass(frozen=True)
class CollectorConfig:
    url: str | None = None
    token_file: Path | None = None
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    timeout: float = 10.0
    spool_max_reports: int = 10_000
    spool_max_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class StatusConfig:
    listen: str = "127.0.0.1:9775"


@dataclass(frozen=True)
class CertCentralConfig:
    """``[certcentral]``: the CertCentral Services API for the account checks (agent CLI and
    collector share this section and its parser); ``api_key_file`` holds the key itself."""

    api_key_file: Path | None = None
    base_url: str = "https://www.digicert.com/services/v2"
    automation_url: str = "https://caas.digicert.com/automationws/v1"  # "" turns it off
    ca_file: Path | None = None
    timeout: float = 30.0
    interval: float = 3600.0  # collector only
    expiry_warn: float = 30 * 86400.0
    container_id: int | None = None
    min_balance: float = 0.0


@dataclass(frozen=True)
class Config:
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    fqdn: FqdnConfig = field(default_factory=FqdnConfig)
    sensor: SensorConfig = field(default_factory=SensorConfig)
    clock_skew: ClockSkewConfig = field(default_factory=ClockSkewConfig)
    caa: CaaConfig = field(default_factory=CaaConfig)
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    status: StatusConfig = field(default_factory=StatusConfig)
    certcentral: CertCentralConfig = field(default_factory=CertCentralConfig)
    source: Path | None = None

    def secrets(self) -> tuple[str, ...]:
        """Strings that must never appear in logs, reports or messages."""
        found: list[str] = []
        for url in (self.proxy.url, self.collector.url):
            if url:
                parts = urlsplit(url)
                if parts.password:
                    found.append(parts.password)
        return tuple(s for s in found if s)


# ---------------------------------------------------------------- value parsers

PORT = int_range(1, 65535)

_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?\s*$")
# A year: longer ones overflow the scheduler's datetime arithmetic (and mean nothing here).
MAX_DURATION = 365 * 86400.0
HOST_ID_MAX = 255  # the report schema's limit: a longer one gets every report rejected
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?$"
)


def parse_duration(value: object) -> float:
    """``"30s"``, ``"5m"``, ``"1h"``, ``"30d"``, ``"250ms"`` or a number of seconds, > 0."""
    if isinstance(value, bool):
        raise ValueError(f'{value!r} is not a duration like "30s", "5m" or 60')
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError("is longer than a year (8760h)") from None
    elif isinstance(value, str):
        m = _DURATION_RE.match(value)
        if not m:
            raise ValueError(f'{value!r} is not a duration like "30s", "5m", "1h" or 60')
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError(f'expected a duration like "30s" or a number, got {type_name(value)}')
    if not seconds > 0 or seconds != seconds:
        raise ValueError(f"{value!r} must be a positive duration")
    if seconds > MAX_DURATION:
        raise ValueError(f"{value!r} is longer than a year (8760h)")
    return seconds


def is_hostname(text: str) -> bool:
    return bool(_HOSTNAME_RE.match(text))


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``; brackets allowed)."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_id(value: object) -> str:
    text = nonempty_string(value)
    if len(text) > HOST_ID_MAX:
        raise ValueError(f"is {len(text)} characters long; at most {HOST_ID_MAX} are allowed")
    return text


def _hostname(value: object) -> str:
    text = nonempty_string(value)
    if not is_hostname(text):
        raise ValueError(f"{text!r} is not a valid hostname")
    return text.rstrip(".").lower()


def _host(value: object) -> str:
    """A hostname or an IP address (IPv6 without brackets)."""
    text = nonempty_string(value)
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    if not is_hostname(text):
        raise ValueError(f"{text!r} is not a hostname or IP address") from None
    return text.rstrip(".").lower()


def _ip(value: object) -> str:
    text = nonempty_string(value)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


def _nameserver(value: object) -> str:
    """``IP``, ``IP:PORT`` or ``[IPv6]:PORT``."""
    text = nonempty_string(value)
    try:
        split_nameserver(text)
    except ValueError as e:
        raise ValueError(str(e)) from None
    return text


def _digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes "²" and "\u0663", which int() refuses."""
    return text.isascii() and text.isdigit()


def split_nameserver(text: str) -> tuple[str, int]:
    """Parse ``IP``, ``IP:PORT`` or ``[IPv6]:PORT`` into (address, port)."""
    host, port = text, 53
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r} is not a nameserver address")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":") or not _digits(rest[1:]):
                raise ValueError(f"{text!r} is not a nameserver address like [::1]:53")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        if not _digits(p):
            raise ValueError(f"{text!r} is not a nameserver address like 127.0.0.53:53")
        port = int(p)
    try:
        addr = str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f"{text!r} is not a nameserver IP address") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port out of range")
    return addr, port


def split_host_port(text: str, default_port: int | None = None) -> tuple[str, int]:
    """Parse ``HOST:PORT`` or ``[IPv6]:PORT``; the port may be omitted with a default."""
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r} is not HOST:PORT")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r} is not HOST:PORT")
            port_text = rest[1:]
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    if not port_text:
        if default_port is None:
            raise ValueError(f"{text!r} is not HOST:PORT (the port is missing)")
        return host, default_port
    if not _digits(port_text) or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: {port_text!r} is not a port number")
    if not host:
        raise ValueError(f"{text!r}: the host is missing")
    return host, int(port_text)


def _url(schemes: tuple[str, ...]) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = nonempty_string(value)
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as e:
            raise ValueError(f"{redact_url(text)!r} is not a valid URL: {e}") from None
        if parts.scheme not in schemes:
            want = " or ".join(f"{s}://" for s in schemes)
            raise ValueError(f"{redact_url(text)!r} is not a URL starting with {want}")
        if not parts.hostname:
            raise ValueError(f"{redact_url(text)!r} has no host")
        if port == 0:
            raise ValueError(f"{redact_url(text)!r}: port 0 is not allowed")
        return text

    return parse


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages and ``config show``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    # Rewrite the netloc text itself: going through .port would raise on a bad port and
    # lose the whole URL from the error message that is about that port.
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    auth = f"{user}:***@" if colon else f"{user}@"
    return parts._replace(netloc=auth + hostport).geturl()


def _path_list(value: object) -> tuple[Path, ...]:
    return tuple(Path(p) for p in str_list(nonempty_string)(value))


def parse_listen(value: object, allow_empty: bool = True) -> str:
    """``HOST:PORT`` or ``[IPv6]:PORT`` to listen on; empty (when allowed) means off."""
    text = string(value).strip()
    if not text:
        if allow_empty:
            return ""
        raise ValueError("expected HOST:PORT, got an empty string")
    host, _ = split_host_port(text)
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if not is_hostname(host):
            raise ValueError(f"{text!r} is not HOST:PORT") from None
    return text


def _log_level(value: object) -> str:
    text = string(value).lower()
    if text not in LOG_LEVELS:
        raise ValueError(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
    return text


def _check_names(value: object) -> tuple[str, ...]:
    names = str_list(string)(value)
    for n in names:
        if n not in CHECK_NAMES:
            raise ValueError(f"{n!r} is not a check (known: {', '.join(CHECK_NAMES)})")
    return names


def _caa_issuer(value: object) -> str:
    """An issuer domain as CAA records name it (``digicert.com``), compared lowercase."""
    text = nonempty_string(value)
    if not is_hostname(text) or "." not in text.strip("."):
        raise ValueError(f"{text!r} is not an issuer domain like digicert.com")
    return text.rstrip(".").lower()


def _sensor_version(value: object) -> SensorVersion:
    return SensorVersion.parse(string(value))


def _jitter(value: object) -> float:
    """A duration, or 0 to start every run exactly on the interval."""
    # not `value in (0, ...)`: False == 0 would slip through as a jitter of 0
    if not isinstance(value, bool) and value in (0, 0.0, "0", "0s"):
        return 0.0
    return parse_duration(value)


def _positive_int(value: object) -> int:
    return int_range(1, 2**53)(value)


def _optional_url(value: object) -> str:
    """An https:// URL, or an empty string for "off"."""
    if isinstance(value, str) and not value.strip():
        return ""
    return _url(("https",))(value).rstrip("/")


def _base_url(value: object) -> str:
    return _url(("https",))(value).rstrip("/")


def _min_balance(value: object) -> float:
    return number_range(0, 1e12)(value)


# [certcentral]: one parser for the agent's config and the collector's (collector/config.py).
CERTCENTRAL_KEYS: dict[str, Callable[[object], Any]] = {
    "api_key_file": path,
    "base_url": _base_url,
    "automation_url": _optional_url,
    "ca_file": path,
    "timeout": parse_duration,
    "interval": parse_duration,
    "expiry_warn": parse_duration,
    "container_id": int_range(1, 2**53),
    "min_balance": _min_balance,
}


# ------------------------------------------------------------------ the schema

T = TypeVar("T")

# section -> (dataclass, {key: parser}); the parser's result replaces the default.
_SECTIONS: dict[str, tuple[type[Any], dict[str, Callable[[object], Any]]]] = {
    "targets": (
        TargetsConfig,
        {
            "hostnames": str_list(_hostname, allow_empty=False),
            "ip": _ip,
            "port": PORT,
            "acme_directory": _url(("https",)),
        },
    ),
    "dns": (DnsConfig, {"nameservers": str_list(_nameserver)}),
    "agent": (
        AgentConfig,
        {
            "interval": parse_duration,
            "timeout": parse_duration,
            "jitter": _jitter,
            "host_id": _host_id,
            "state_dir": path,
            "log_level": _log_level,
            "log_format": choice(*LOG_FORMATS),
            "checks": _check_names,
        },
    ),
    "proxy": (ProxyConfig, {"url": _url(("http",))}),
    "fqdn": (
        FqdnConfig,
        {
            "names": str_list(_hostname),
            "discover": boolean,
            "nameservers": str_list(_nameserver),
            "nginx_conf": path,
            "apache_roots": _path_list,
        },
    ),
    "sensor": (
        SensorConfig,
        {"host": _host, "version": _sensor_version, "port": PORT},
    ),
    "clock_skew": (ClockSkewConfig, {"warn": parse_duration, "fail": parse_duration}),
    "caa": (
        CaaConfig,
        {"enabled": boolean, "issuers": str_list(_caa_issuer, allow_empty=False)},
    ),
    "collector": (
        CollectorConfig,
        {
            "url": _url(("http", "https")),
            "token_file": path,
            "ca_file": path,
            "client_cert": path,
            "client_key": path,
            "timeout": parse_duration,
            "spool_max_reports": _positive_int,
            "spool_max_bytes": _positive_int,
        },
    ),
    "status": (StatusConfig, {"listen": parse_listen}),
    "certcentral": (CertCentralConfig, CERTCENTRAL_KEYS),
}

# paths, shown; the token and the API key themselves never are
SECRET_KEYS = {("collector", "token_file"), ("certcentral", "api_key_file")}


def _section(name: str, raw: object) -> Any:
    cls, parsers = _SECTIONS[name]
    if not isinstance(raw, dict):
        raise ConfigError(f"[{name}]", f"expected a table, got {type_name(raw)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        parser = parsers.get(key)
        if parser is None:
            known = ", ".join(sorted(parsers))
            raise ConfigError(f"[{name}] {key}", f"unknown key (known keys: {known})")
        try:
            values[key] = parser(value)
        except ValueError as e:
            raise ConfigError(f"[{name}] {key}", str(e)) from None
    return cls(**values)


def parse_section(name: str, raw: object) -> Any:
    """One section by its parsers, e.g. ``[certcentral]`` or ``[proxy]`` for the collector's
    config, which shares them; errors name ``[section] key``."""
    return _section(name, raw)


def from_mapping(data: Mapping[str, Any], source: Path | None = None) -> Config:
    """Build a validated :class:`Config` from parsed TOML."""
    sections: dict[str, Any] = {}
    for name, raw in data.items():
        if name not in _SECTIONS:
            known = ", ".join(f"[{s}]" for s in _SECTIONS)
            if not isinstance(raw, dict):
                raise ConfigError(
                    name, f"unknown top-level key; settings go in a section ({known})"
                )
            raise ConfigError(f"[{name}]", f"unknown section (known sections: {known})")
        sections[name] = _section(name, raw)
    cfg = Config(**sections, source=source)
    _cross_checks(cfg, data)
    return cfg


def _cross_checks(cfg: Config, raw: Mapping[str, Any]) -> None:
    sensor_raw = raw.get("sensor", {})
    if (sensor_raw.get("version") is not None or sensor_raw.get("port") is not None) and not (
        cfg.sensor.host
    ):
        raise ConfigError("[sensor] host", "is required when [sensor] version or port is set")
    if cfg.agent.timeout > cfg.agent.interval:
        raise ConfigError(
            "[agent] timeout",
            f"{cfg.agent.timeout:g}s is longer than [agent] interval ({cfg.agent.interval:g}s)",
        )
    if cfg.agent.effective_jitter >= cfg.agent.interval:
        raise ConfigError("[agent] jitter", "must be shorter than [agent] interval")
    if cfg.clock_skew.warn > cfg.clock_skew.fail:
        raise ConfigError("[clock_skew] warn", "must not be larger than [clock_skew] fail")
    if (cfg.collector.client_cert is None) != (cfg.collector.client_key is None):
        missing = "client_key" if cfg.collector.client_key is None else "client_cert"
        raise ConfigError(
            f"[collector] {missing}", "client_cert and client_key must be set together"
        )


def load(path: Path | None = None, *, explicit: bool | None = None) -> Config:
    """Load and validate a config file.

    ``path=None`` means the default path; a missing default file means defaults,
    a missing explicit file is an error.
    """
    if explicit is None:
        explicit = path is not None
    path = path or DEFAULT_PATH
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if not explicit:
            return Config()
        raise ConfigError("", f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError("", f"{path}: is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError("", f"{path}: permission denied reading the config file") from None
    except OSError as e:
        raise ConfigError("", f"{path}: cannot read the config file: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError("", f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        data = compat.tomllib.loads(text)
    except compat.tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"{path}: invalid TOML: {e}") from None
    return from_mapping(data, source=path)


def to_mapping(cfg: Config) -> dict[str, dict[str, Any]]:
    """The effective config as plain data, secrets redacted (for ``config show``)."""
    out: dict[str, dict[str, Any]] = {}
    for name in _SECTIONS:
        section = getattr(cfg, name)
        values: dict[str, Any] = {}
        for f in fields(section):
            values[f.name] = _plain(getattr(section, f.name))
        out[name] = values
    if cfg.proxy.url:
        out["proxy"]["url"] = redact_url(cfg.proxy.url)
    if cfg.collector.url:
        out["collector"]["url"] = redact_url(cfg.collector.url)
    out["agent"]["jitter"] = cfg.agent.effective_jitter
    return out


def to_toml(cfg: Config) -> str:
    """The effective config as a TOML file that loads back to it (``config show --format
    toml``); secrets redacted, unset keys as comments."""
    lines = [f"# effective acme-preflight config ({cfg.source or 'defaults'}); secrets redacted"]
    for name, values in to_mapping(cfg).items():
        lines += ["", f"[{name}]"]
        for key, value in values.items():
            if (name, key) == ("agent", "jitter") and cfg.agent.jitter is None:
                lines.append(f"# jitter: not set (10% of the interval, {value:g}s)")
            elif value is None:
                lines.append(f"# {key}: not set")
            else:
                lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def toml_value(value: object) -> str:
    """One TOML value: a bool, number, string (or path) or a list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if not isinstance(value, str | Path | SensorVersion):
        raise TypeError(f"cannot write {type(value).__name__} to TOML")
    # A JSON string is a TOML basic string, once DEL (which TOML wants escaped) is escaped.
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


def _plain(value: object) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path | SensorVersion):
        return str(value)
    return value


def with_overrides(cfg: Config, **sections: Any) -> Config:
    """A copy of ``cfg`` with whole sections replaced (for tests and reloads)."""
    return replace(cfg, **sections)


def env_proxy(environ: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """The proxy URL from ``HTTPS_PROXY``/``https_proxy`` and the variable that set it."""
    env = os.environ if environ is None else environ
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        if env.get(var):
            return env[var], var
    return None, ""
