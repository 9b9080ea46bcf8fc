"""Config loading: defaults, every key, durations, and one fixture per invalid case.

Each ``tests/fixtures/config/invalid-*.toml`` starts with ``# error: <text>``; the real CLI
must exit 78 and print that text (which names the key) on stderr.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import checks, cli, compat
from agent import config as config_mod
from agent.config import (
    EX_CONFIG,
    AgentConfig,
    Config,
    ConfigError,
    SensorConfig,
    SensorVersion,
    from_mapping,
    load,
    parse_duration,
    redact_url,
    split_host_port,
    split_nameserver,
    to_mapping,
)
from tests.clirun import NOBODY, REPO, run_cli

FIXTURES = Path(__file__).parent / "fixtures" / "config"
INVALID = sorted(FIXTURES.glob("invalid-*.toml"))
EXAMPLE = REPO / "config.example.toml"


def expected_error(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    assert first.startswith("# error: "), f"{path.name} must start with '# error: <text>'"
    return first.removeprefix("# error: ")


# ------------------------------------------------------------------ invalid files


def test_there_are_fixtures_for_every_issue_case() -> None:
    names = {p.stem.removeprefix("invalid-") for p in INVALID}
    required = {
        "wrong-type",
        "unknown-key",
        "unknown-section",
        "bad-duration",
        "sensor-version",
        "bad-url",
        "broken-toml",
        "empty-hostnames",
        "bad-port",
        "bad-nameserver",
        "timeout-over-interval",
        "client-cert-without-key",
    }
    assert required <= names
    assert len(INVALID) >= 10


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem.removeprefix("invalid-"))
def test_invalid_file_exits_78_naming_the_key(path: Path) -> None:
    proc = run_cli("--config", path, "config", "validate")
    assert proc.returncode == EX_CONFIG, proc.stderr
    assert proc.stdout == ""
    want = expected_error(path)
    assert want in proc.stderr
    assert proc.stderr.startswith("acme-preflight: config error: ")
    # one clear line, not a traceback
    assert proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr
    assert "hunter2" not in proc.stderr


@pytest.mark.parametrize(
    "name", ["invalid-unknown-key.toml", "invalid-broken-toml.toml", "invalid-proxy-scheme.toml"]
)
def test_every_command_refuses_an_invalid_file(name: str) -> None:
    """Not only `config validate`: `check` and `config show` stop with 78 too."""
    path = FIXTURES / name
    for args in (("check", "--only", "privileges"), ("config", "show")):
        proc = run_cli("--config", path, *args)
        assert proc.returncode == EX_CONFIG, (args, proc.stderr)
        assert expected_error(path) in proc.stderr
        assert proc.stdout == ""


def test_key_errors_name_the_section_and_key() -> None:
    with pytest.raises(ConfigError) as err:
        load(FIXTURES / "invalid-sensor-version.toml")
    assert err.value.key == "[sensor] version"
    assert str(err.value) == "[sensor] version: '3.8' is not a sensor version like 3.8.47"


def test_broken_toml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[agent]\ninterval = "5m"\n\n\n[targets\nport = 443\n')
    proc = run_cli("--config", path, "config", "validate")
    assert proc.returncode == EX_CONFIG
    assert str(path) in proc.stderr
    assert "line 5" in proc.stderr


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    proc = run_cli("--config", path, "config", "validate")
    assert proc.returncode == EX_CONFIG
    assert f"{path}: no such config file" in proc.stderr


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    proc = run_cli("--config", tmp_path, "config", "validate")
    assert proc.returncode == EX_CONFIG
    assert f"{tmp_path}: is a directory, not a config file" in proc.stderr


@pytest.fixture
def private_config() -> Iterator[Path]:
    """A valid config readable only by root, in a directory everyone may enter.

    Tests run as root, where chmod 000 stops nothing, so the reader is uid 65534.
    """
    top = Path(tempfile.mkdtemp(prefix="acme-preflight-perm-"))
    try:
        top.chmod(0o755)
        path = top / "config.toml"
        path.write_text('[agent]\ninterval = "5m"\n')
        path.chmod(0o600)
        yield path
    finally:
        shutil.rmtree(top)


def test_unreadable_file_is_an_error(private_config: Path) -> None:
    # The same file is fine for root: the failure below is the permission, not the content.
    assert run_cli("--config", private_config, "config", "validate").returncode == 0
    assert stat.S_IMODE(private_config.stat().st_mode) == 0o600
    proc = run_cli("--config", private_config, "config", "validate", prefix=NOBODY)
    assert proc.returncode == EX_CONFIG, proc.stderr
    assert f"{private_config}: permission denied reading the config file" in proc.stderr


def test_missing_default_file_means_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(config_mod, "DEFAULT_PATH", tmp_path / "absent.toml")
    assert load() == Config()
    assert cli.main(["config", "validate"]) == 0
    assert "defaults" in capsys.readouterr().out


def test_default_file_is_read_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[agent]\nhost_id = "from-default-path"\n')
    monkeypatch.setattr(config_mod, "DEFAULT_PATH", path)
    cfg = load()
    assert cfg.agent.host_id == "from-default-path"
    assert cfg.source == path
    path.write_text("[agent\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load()


def test_default_path_is_the_documented_one() -> None:
    assert Path("/etc/acme-preflight/config.toml") == config_mod.DEFAULT_PATH


# ------------------------------------------------------------------ valid files


def test_defaults_match_the_design() -> None:
    cfg = Config()
    assert cfg.targets.hostnames == ("acme.digicert.com", "daas.digicert.com")
    assert cfg.targets.ip == "216.168.244.42"
    assert cfg.targets.port == 443
    assert cfg.targets.acme_directory == "https://acme.digicert.com/v2/acme/directory/"
    assert cfg.proxy.url is None
    assert cfg.fqdn.names == ()
    assert cfg.fqdn.discover is True
    assert cfg.sensor == SensorConfig()
    assert not cfg.sensor.configured
    assert (cfg.clock_skew.warn, cfg.clock_skew.fail) == (60.0, 300.0)
    assert cfg.collector.url is None
    assert cfg.agent.checks == checks.CHECK_NAMES
    assert cfg.caa.enabled
    assert cfg.caa.issuers[:2] == ("digicert.com", "www.digicert.com")
    assert cfg.agent.timeout < cfg.agent.interval


def test_empty_file_gives_defaults() -> None:
    path = FIXTURES / "valid-empty.toml"
    assert load(path) == Config(source=path)


def test_every_key_of_the_full_file_is_read() -> None:
    cfg = load(FIXTURES / "valid-full.toml")
    t = cfg.targets
    # hostnames are normalised: lower case, no trailing dot
    assert t.hostnames == ("acme.example.test", "daas.example.test")
    assert (t.ip, t.port) == ("127.0.0.10", 8443)
    assert t.acme_directory == "https://acme.example.test:8443/v2/acme/directory/"
    assert cfg.dns.nameservers == ("127.0.0.53", "127.0.0.54:5353", "[::1]:53")
    a = cfg.agent
    assert (a.interval, a.timeout, a.jitter, a.effective_jitter) == (300.0, 2.5, 0.0, 0.0)
    assert (a.host_id, a.state_dir, a.log_level) == (
        "web-01",
        Path("/tmp/acme-preflight-state"),
        "debug",
    )
    assert a.log_format == "logfmt"
    assert a.checks == ("privileges", "clock_skew")
    assert cfg.proxy.url == "http://ops:pr0xy-pa55@127.0.0.1:3128"
    f = cfg.fqdn
    assert f.names == ("www.example.test", "shop.example.test")
    assert f.discover is False
    assert f.nameservers == ("127.0.0.1",)
    assert f.nginx_conf == Path("/srv/nginx/nginx.conf")
    assert f.apache_roots == (Path("/srv/apache2"),)
    s = cfg.sensor
    assert (s.host, s.version, s.port) == ("sensor.example.test", SensorVersion((3, 8, 46)), 8081)
    assert (cfg.clock_skew.warn, cfg.clock_skew.fail) == (30.0, 120.0)
    assert not cfg.caa.enabled
    assert cfg.caa.issuers == ("digicert.com", "example-ca.test")
    c = cfg.collector
    assert c.url == "https://collector.example.test:8443/"
    assert c.token_file == Path("/etc/acme-preflight/token")
    assert c.ca_file == Path("/etc/acme-preflight/ca.pem")
    assert (c.client_cert, c.client_key) == (
        Path("/etc/acme-preflight/client.crt"),
        Path("/etc/acme-preflight/client.key"),
    )
    assert (c.timeout, c.spool_max_reports, c.spool_max_bytes) == (0.25, 500, 1048576)
    assert cfg.status.listen == "[::1]:9775"
    cc = cfg.certcentral
    assert cc.api_key_file == Path("/etc/acme-preflight/certcentral.key")
    assert cc.base_url == "https://certcentral.digicert.eu/services/v2"
    assert cc.automation_url == "https://caas.example.test/automationws/v1"
    assert cc.ca_file == Path("/etc/acme-preflight/certcentral-ca.pem")
    assert (cc.timeout, cc.interval, cc.expiry_warn) == (20.0, 1800.0, 14 * 86400.0)
    assert (cc.container_id, cc.min_balance) == (77, 500.0)
    # every key of every section really was set (none left at its default)
    raw = compat.tomllib.loads((FIXTURES / "valid-full.toml").read_text())
    for name, (_cls, parsers) in config_mod._SECTIONS.items():
        assert set(raw[name]) == set(parsers), name


def test_validate_checks_the_files_a_valid_file_names() -> None:
    path = FIXTURES / "valid-full.toml"
    proc = run_cli("--config", path, "config", "validate")
    # valid TOML and keys, but `run` would refuse it: the token file it names is not here
    # (tests/test_preflight.py has the cases that pass)
    assert proc.returncode == 78, proc.stderr
    assert proc.stderr == (
        "acme-preflight: config error: [collector] token_file: /etc/acme-preflight/token: "
        "no such file\n"
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("250ms", 0.25),
        ("1.5m", 90.0),
        (" 10 s ", 10.0),
        ("45", 45.0),
        ("30d", 30 * 86400.0),
        (60, 60.0),
        (0.5, 0.5),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "bad", ["", "5 minutes", "-5s", "5w", "1h30m", "0", 0, -1, True, [], float("inf"), float("nan")]
)
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_durations_through_toml() -> None:
    cfg = from_mapping(
        compat.tomllib.loads(
            '[agent]\ninterval = "1h"\ntimeout = 30\njitter = "5m"\n'
            '[clock_skew]\nwarn = 90\nfail = "10m"\n'
        )
    )
    assert (cfg.agent.interval, cfg.agent.timeout, cfg.agent.jitter) == (3600.0, 30.0, 300.0)
    assert (cfg.clock_skew.warn, cfg.clock_skew.fail) == (90.0, 600.0)


def test_jitter_defaults_to_a_tenth_of_the_interval() -> None:
    assert AgentConfig(interval=600.0).effective_jitter == 60.0
    assert from_mapping({"agent": {"jitter": 0}}).agent.effective_jitter == 0.0


@pytest.mark.parametrize(
    ("version", "port"),
    [
        ("3.8.46", 8080),
        ("3.8.9", 8080),
        ("3.7.100", 8080),
        ("3.8.47", 48999),
        ("3.10.0", 48999),
        ("4.0.0.1", 48999),
    ],
)
def test_sensor_port_rule(version: str, port: int) -> None:
    cfg = from_mapping({"sensor": {"host": "10.0.0.5", "version": version}})
    assert cfg.sensor.port_rule()[0] == port


def test_explicit_sensor_port_beats_the_version() -> None:
    cfg = from_mapping({"sensor": {"host": "10.0.0.5", "version": "3.8.46", "port": 9000}})
    assert cfg.sensor.port_rule() == (9000, "explicit [sensor] port")
    # sensor host may be an IP address, IPv6 in brackets or not
    assert from_mapping({"sensor": {"host": "[fd00::5]"}}).sensor.host == "fd00::5"


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("127.0.0.53", ("127.0.0.53", 53)),
        ("127.0.0.53:5353", ("127.0.0.53", 5353)),
        ("[::1]:54", ("::1", 54)),
        ("::1", ("::1", 53)),
    ],
)
def test_split_nameserver(text: str, want: tuple[str, int]) -> None:
    assert split_nameserver(text) == want


def test_split_host_port() -> None:
    assert split_host_port("127.0.0.1:9775") == ("127.0.0.1", 9775)
    assert split_host_port("[::1]:80") == ("::1", 80)
    assert split_host_port("host", 443) == ("host", 443)
    with pytest.raises(ValueError, match="port is missing"):
        split_host_port("host")


# ---------------------------------------------------------------- config show


def test_show_prints_effective_config_with_secrets_redacted(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[proxy]\nurl = "http://ops:pr0xy-pa55@proxy.example.test:3128"\n'
        '[collector]\nurl = "https://agent:c0ll-pa55@collector.example.test/"\n'
    )
    proc = run_cli("--config", path, "config", "show")
    assert proc.returncode == 0, proc.stderr
    assert "pr0xy-pa55" not in proc.stdout
    assert "c0ll-pa55" not in proc.stdout
    shown = json.loads(proc.stdout)
    assert shown["proxy"]["url"] == "http://ops:***@proxy.example.test:3128"
    assert shown["collector"]["url"] == "https://agent:***@collector.example.test/"
    # defaults filled in
    assert shown["targets"]["ip"] == "216.168.244.42"
    assert shown["agent"]["jitter"] == 30.0
    assert set(shown) == set(config_mod._SECTIONS)


def test_show_round_trips_through_the_loader() -> None:
    """What `config show` prints (minus redaction) is itself a valid config."""
    cfg = load(FIXTURES / "valid-full.toml")
    shown = to_mapping(cfg)
    shown["proxy"]["url"] = cfg.proxy.url
    plain = {s: {k: v for k, v in keys.items() if v is not None} for s, keys in shown.items()}
    assert from_mapping(plain) == dataclasses.replace(cfg, source=None)


def test_secrets_lists_url_passwords() -> None:
    cfg = from_mapping(
        {
            "proxy": {"url": "http://u:pr0xy-pa55@127.0.0.1:3128"},
            "collector": {"url": "https://a:c0ll-pa55@127.0.0.1/"},
        }
    )
    assert set(cfg.secrets()) == {"pr0xy-pa55", "c0ll-pa55"}
    assert Config().secrets() == ()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://u:p4ss@h:3128/x", "http://u:***@h:3128/x"),
        ("http://u@h", "http://u@h"),
        ("http://h:3128", "http://h:3128"),
        ("http://u:p4ss@[::1]:80/", "http://u:***@[::1]:80/"),
        ("http://u:p4ss@h:99999", "http://u:***@h:99999"),
        ("http://u:p@4ss@h", "http://u:***@h"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_hostname_validation_rejects_punctuation() -> None:
    for bad in ("a:b.example", "a@b.example", "a[b].example", "-a.example", "a..b"):
        with pytest.raises(ConfigError, match=re.escape("[targets] hostnames")):
            from_mapping({"targets": {"hostnames": [bad]}})
    ok = from_mapping({"targets": {"hostnames": ["_acme.Example.COM."]}})
    assert ok.targets.hostnames == ("_acme.example.com",)


# ------------------------------------------------------------ config.example.toml

_EXAMPLE_KEY = re.compile(r"^# ?([a-z_]+) = (.+)$")


def _example_sections() -> dict[str, dict[str, str]]:
    """section -> {key: the commented-out example line, uncommented}."""
    found: dict[str, dict[str, str]] = {}
    section = ""
    for line in EXAMPLE.read_text().splitlines():
        if m := re.match(r"^\[([a-z_]+)\]\s*$", line):
            section = m.group(1)
            found.setdefault(section, {})
        elif (m := _EXAMPLE_KEY.match(line)) and section:
            found[section][m.group(1)] = f"{m.group(1)} = {m.group(2)}"
    return found


def test_example_config_is_valid_and_means_defaults() -> None:
    """As shipped, every value is commented out: loading it gives the defaults."""
    assert load(EXAMPLE) == Config(source=EXAMPLE)
    assert run_cli("--config", EXAMPLE, "config", "validate").returncode == 0


def test_example_config_documents_every_key() -> None:
    documented = _example_sections()
    for section, (_cls, parsers) in config_mod._SECTIONS.items():
        assert section in documented, f"config.example.toml lacks [{section}]"
        missing = set(parsers) - set(documented[section])
        assert not missing, f"config.example.toml lacks [{section}] {sorted(missing)}"
        extra = set(documented[section]) - set(parsers)
        assert not extra, f"config.example.toml documents unknown [{section}] {sorted(extra)}"


def test_example_config_shows_the_real_defaults() -> None:
    """Uncommenting every example line gives a valid config whose values equal the defaults
    wherever a key has a default (keys without one show an example value)."""
    documented = _example_sections()
    text = "\n".join(
        f"[{section}]\n" + "\n".join(lines.values()) for section, lines in documented.items()
    )
    uncommented = to_mapping(from_mapping(compat.tomllib.loads(text)))
    defaults = to_mapping(Config())
    for section, keys in defaults.items():
        for key, default in keys.items():
            if default is not None:
                assert uncommented[section][key] == default, f"[{section}] {key}"


def test_example_comments_every_key() -> None:
    """Each key line is preceded by at least one comment line explaining it."""
    lines = EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if _EXAMPLE_KEY.match(line):
            before = lines[i - 1] if i else ""
            assert before.startswith("#"), f"no comment above line {i + 1}: {line}"
            assert not _EXAMPLE_KEY.match(before), f"no comment of its own: line {i + 1}"


def test_config_error_exit_code_is_ex_config() -> None:
    assert EX_CONFIG == 78 == os.EX_CONFIG


def test_the_short_interval_docs_daemon_md_describes() -> None:
    """docs/daemon.md: a short interval alone is refused with the quoted message; paired with
    the quoted timeout it is accepted."""
    doc = (REPO / "docs" / "daemon.md").read_text()
    doc = " ".join(doc.split())
    m = re.search(
        r'e\.g\. `interval = "(\w+)"` with `timeout = "(\w+)"` \(`interval = "\1"` alone is '
        r"refused: `([^`]+)`, exit 78\)",
        doc,
    )
    assert m, "docs/daemon.md no longer describes the pairing"
    interval, timeout, message = m.groups()
    with pytest.raises(ConfigError) as e:
        from_mapping({"agent": {"interval": interval}})
    assert str(e.value) == message
    cfg = from_mapping({"agent": {"interval": interval, "timeout": timeout}})
    assert cfg.agent.interval == parse_duration(interval)
