"""Fuzzing the agent's input parsers: the config loader and the small parsers under it.

Whatever the file or the value, the loader raises :class:`ConfigError` or returns a
config the daemon can actually run with (a schedulable interval, a report the collector
takes). The small parsers raise ``ValueError`` or return something well-formed.
CI runs modest example counts; ``make test PYTEST_ARGS="-m slow"`` runs the long variant.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import __version__
from agent.checks.clock_skew import parse_date
from agent.config import (
    _SECTIONS,
    Config,
    ConfigError,
    SensorVersion,
    from_mapping,
    load,
    redact_url,
    split_host_port,
    split_nameserver,
    to_mapping,
)
from agent.daemon.sender import RETRY_AFTER_MAX, parse_retry_after
from agent.daemon.service import trigger
from agent.model import AgentIdentity, CheckResult, Status
from agent.net.dns import parse_resolv_conf
from agent.net.proxy import no_proxy_match
from agent.redact import BEARER_PROSE, MASK, redact_obj, redact_text
from agent.report import build_report, host_id
from collector.validate import validate
from tests.clirun import assert_valid_report

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck))

# Characters and words that matter to the parsers, plus anything at all.
DIGITS = st.sampled_from([*"0123456789", "\u0663", "\u00b2", "\uff11", "\u0966"])
TRICKY_TEXT = st.one_of(
    st.text(max_size=40),
    st.lists(
        st.one_of(
            DIGITS,
            st.sampled_from(
                [
                    *":.[]%@/ -_#;\t\n\x00\x7f",
                    "s",
                    "ms",
                    "m",
                    "h",
                    "0",
                    "1e400",
                    "9" * 30,
                    "::1",
                    "127.0.0.1",
                    "3.8.47",
                    "http://",
                    "https://",
                    "u:p@",
                    "a.example.com",
                    "localhost",
                    "nan",
                    "inf",
                ]
            ),
        ),
        max_size=20,
    ).map("".join),
)
SCALARS = st.one_of(
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=10**18, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    TRICKY_TEXT,
    st.datetimes(),
    st.dates(),
    st.times(),
    st.datetimes(timezones=st.just(dt.UTC)),
)
TOML_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
KNOWN_KEYS = [(section, key) for section, (_, keys) in _SECTIONS.items() for key in keys]


def _documents() -> st.SearchStrategy[dict[str, Any]]:
    section_names = st.one_of(st.sampled_from(list(_SECTIONS)), st.text(max_size=6))
    key_value = st.one_of(
        st.sampled_from(KNOWN_KEYS).flatmap(lambda sk: st.tuples(st.just(sk[1]), TOML_VALUES)),
        st.tuples(st.text(max_size=8), TOML_VALUES),
    )
    section = st.one_of(
        st.lists(key_value, max_size=5).map(dict),
        TOML_VALUES,  # a section that is not a table
    )
    return st.dictionaries(section_names, section, max_size=5)


TOML_SYNTAX = st.sampled_from(
    [
        *[
            "[agent]",
            "[collector]",
            "[sensor]",
            "[dns]",
            "[[agent]]",
            "[agent.x]",
            "\n",
            " = ",
            "=",
        ],
        *['interval = "5m"', "timeout = 1e999", "port = 99999999999999999999999", 'x = """'],
        *['"', "'", "[", "]", "{", "}", ",", "#", "\\u0000", "\\", "true", "nan", "-inf", "0x1F"],
        *["1979-05-27T07:32:00Z", "state_dir", "host_id", "url", "version", "nameservers"],
    ]
)
TOML_TEXT = st.one_of(
    st.lists(st.one_of(TOML_SYNTAX, st.text(max_size=6)), max_size=40).map("".join),
    st.text(max_size=300),
)


def _check_usable(cfg: Config) -> None:
    """What the daemon, ``config show`` and the collector do with an accepted config."""
    json.dumps(to_mapping(cfg))
    # the daemon schedules with it: the next fire time must be computable
    now = dt.datetime.now(dt.UTC)
    assert trigger(cfg).get_next_fire_time(None, now) is not None
    # every report it produces must be one the collector takes
    result = CheckResult("privileges", Status.PASS, "ok", "ok", "", 1.0, {})
    agent = AgentIdentity(host_id(cfg, Path("/nonexistent")), "h", "h.example", __version__)
    report = build_report(cfg, agent, [result], "2026-01-01T00:00:00.000Z").to_dict()
    assert_valid_report(report)
    validate(json.loads(json.dumps(report)))


def _from_mapping(doc: dict[str, Any]) -> None:
    try:
        cfg = from_mapping(doc)
    except ConfigError as e:
        assert str(e)
        return
    _check_usable(cfg)


def _load_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_bytes(data)
        try:
            cfg = load(path)
        except ConfigError as e:
            assert str(e)
            return
    _check_usable(cfg)


@FAST
@given(_documents())
def test_config_documents_only_raise_config_error(doc: dict[str, Any]) -> None:
    _from_mapping(doc)


@FAST
@given(st.sampled_from(KNOWN_KEYS), TOML_VALUES)
def test_every_key_with_any_value_only_raises_config_error(
    section_key: tuple[str, str], value: Any
) -> None:
    section, key = section_key
    doc: dict[str, Any] = {section: {key: value}}
    if section == "sensor" and key != "host":
        doc["sensor"]["host"] = "sensor.example.com"
    _from_mapping(doc)


@FAST
@given(st.one_of(TOML_TEXT, st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_config_files_only_raise_config_error(text: str) -> None:
    _load_bytes(text.encode("utf-8", "surrogatepass"))


@FAST
@given(st.binary(max_size=300))
def test_config_bytes_only_raise_config_error(data: bytes) -> None:
    _load_bytes(data)


@pytest.mark.parametrize(
    "doc",
    [
        # found by the fuzzer: an integer too large for a float escaped as OverflowError
        "[agent]\ninterval = 1" + "0" * 400 + "\n",
        # accepted, then the daemon could not schedule it (datetime overflow)
        "[agent]\ninterval = 1e300\n",
        "[agent]\ninterval = 1e11\ntimeout = 1\n",
        # accepted, then every report was rejected by the collector (host_id > 255)
        '[agent]\nhost_id = "' + "h" * 256 + '"\n',
    ],
)
def test_regressions_found_by_fuzzing(doc: str) -> None:
    with pytest.raises(ConfigError):
        from_mapping(tomllib.loads(doc))


@pytest.mark.parametrize("text", ["\u0663.8.47", "3.8.4\u0667", "\u00b2.8.47"])
def test_sensor_version_is_ascii_digits_only(text: str) -> None:
    with pytest.raises(ValueError, match="not a sensor version"):
        SensorVersion.parse(text)


@pytest.mark.parametrize("value", ["\u0663s", "\uff11m", "\u00b2"])
def test_durations_are_ascii_digits_only(value: str) -> None:
    with pytest.raises(ConfigError, match="not a duration"):
        from_mapping({"agent": {"interval": value}})


# ------------------------------------------------------------------ small parsers


@FAST
@given(TRICKY_TEXT)
def test_sensor_version_parser(text: str) -> None:
    try:
        v = SensorVersion.parse(text)
    except ValueError:
        return
    assert 3 <= len(v.parts) <= 4
    assert SensorVersion.parse(str(v)) == v


@FAST
@given(TRICKY_TEXT)
def test_nameserver_parser(text: str) -> None:
    try:
        ip, port = split_nameserver(text)
    except ValueError as e:
        assert str(e)
        return
    assert 1 <= port <= 65535
    assert ip and ip.isascii()


@FAST
@given(TRICKY_TEXT, st.one_of(st.none(), st.integers(1, 65535)))
def test_host_port_parser(text: str, default: int | None) -> None:
    try:
        host, port = split_host_port(text, default)
    except ValueError as e:
        assert str(e)
        return
    assert 0 <= port <= 65535
    assert isinstance(host, str)


@FAST
@given(TRICKY_TEXT, st.integers(0, 65535), TRICKY_TEXT)
def test_no_proxy_parser(host: str, port: int, value: str) -> None:
    found = no_proxy_match(host, port, value)
    assert found is None or found in value


@FAST
@given(st.one_of(st.none(), TRICKY_TEXT, st.sampled_from(["Wed, 21 Oct 2015 07:28:00 GMT"])))
def test_retry_after_and_date_parsers(value: str | None) -> None:
    delay = parse_retry_after(value, 1_700_000_000.0)
    assert delay is None or 0 <= delay <= RETRY_AFTER_MAX
    stamp = parse_date(value)
    assert stamp is None or stamp == stamp


@FAST
@given(st.lists(st.one_of(TRICKY_TEXT, st.just("nameserver ")), max_size=8))
def test_resolv_conf_parser(lines: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resolv.conf"
        path.write_text("\n".join(lines), errors="surrogatepass")
        for ip, port in parse_resolv_conf(path):
            assert 1 <= port <= 65535 and ip


# ------------------------------------------------------------------ redaction

# "*" is the mask itself: a secret made of it could be "found" in the masked text.
SECRETS = st.text(min_size=3, max_size=12).filter(lambda s: "*" not in s and s.isprintable())


@FAST
@given(TRICKY_TEXT, SECRETS, TRICKY_TEXT)
def test_redact_text_removes_the_secret(before: str, secret: str, after: str) -> None:
    assert secret not in redact_text(before + secret + after, [secret])


@FAST
@given(
    # any token but the few words that follow "bearer" in prose ("unknown bearer token")
    st.from_regex(r"[A-Za-z0-9._~+/=-]{1,40}", fullmatch=True).filter(
        lambda t: t.lower() not in BEARER_PROSE
    ),
    TRICKY_TEXT,
)
def test_redact_text_removes_bearer_tokens(token: str, around: str) -> None:
    out = redact_text(f"{around} Authorization: Bearer {token}\n{around}")
    assert f"Bearer {token}\n" not in out


@FAST
@given(
    # (a user name with whitespace or control characters is not matched by the URL pattern;
    # such passwords are still masked through Config.secrets(), which parses the URL)
    st.text(
        alphabet=st.characters(
            blacklist_categories=["Cc", "Cs", "Zs", "Zl", "Zp"], blacklist_characters="@/:\\?#[]"
        ),
        min_size=1,
        max_size=8,
    ),
    SECRETS.filter(lambda s: not any(c in s for c in "@/ \\?#[]%")),
    st.sampled_from(["http", "https", "socks5"]),
)
def test_url_passwords_never_survive(user: str, password: str, scheme: str) -> None:
    url = f"{scheme}://{user}:{password}@proxy.example:3128/x"
    assert redact_url(url) == f"{scheme}://{user}:{MASK}@proxy.example:3128/x"
    masked = f"{scheme}://{user}:{MASK}@proxy.example:3128/x"
    assert redact_text(f"via {url} failed") == f"via {masked} failed"


@FAST
@given(TOML_VALUES.filter(lambda v: not isinstance(v, dt.date | dt.time)), SECRETS)
def test_redact_obj_keeps_the_shape_and_hides_the_secret(value: Any, secret: str) -> None:
    doc = {"k": [value, f"x{secret}y"], secret: 1}
    out = redact_obj(doc, [secret])
    assert set(map(type, out)) <= {str}
    assert not any(secret in text for text in _strings(out))


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


# ------------------------------------------------------------------ the long variant


@pytest.mark.slow
@SLOW
@given(_documents(), st.sampled_from(KNOWN_KEYS), TOML_VALUES, TOML_TEXT, st.binary(max_size=500))
def test_config_long(
    doc: dict[str, Any], section_key: tuple[str, str], value: Any, text: str, data: bytes
) -> None:
    _from_mapping(doc)
    _from_mapping({section_key[0]: {section_key[1]: value}})
    _load_bytes(text.encode("utf-8", "surrogatepass"))
    _load_bytes(data)


def test_non_ascii_digits_in_ports_and_retry_after() -> None:
    # str.isdigit() accepts "²", int()/float() refuse it: these raised ValueError before
    assert no_proxy_match("a.example.com", 443, "a.example.com:\u00b2") is None
    no_proxy_match("::1", 443, "[::1]:\u00b2")  # a bad port in brackets is ignored
    assert parse_retry_after("\u00b2", 0.0) is None
    with pytest.raises(ValueError, match="not a nameserver address"):
        split_nameserver("127.0.0.1:\u00b2")
    with pytest.raises(ValueError, match="not a port number"):
        split_host_port("h:\u00b2")
