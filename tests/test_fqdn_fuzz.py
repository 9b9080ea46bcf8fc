"""Fuzzing the three parsers: no input crashes them, whatever the bytes.

Examples are kept modest for CI; ``pytest -m slow`` runs the long variant.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.fqdn import apache, hosts, nginx
from agent.fqdn.names import Discovery

FAST = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SLOW = settings(max_examples=3000, deadline=None)

# Text built from the characters that matter to the parsers, plus anything at all.
SYNTAX = st.sampled_from(
    [
        *" \t\r\n;{}#\"'\\$<>/*?.:[]_~",
        *("server", "server_name", "include", "listen", "default_server", "http"),
        *("ServerName", "ServerAlias", "Include", "IncludeOptional", "ServerRoot"),
        *("<VirtualHost *:80>", "</VirtualHost>", "<IfModule x>", "</IfModule>", "_default_:443"),
        *("a.example.com", "*.example.com", "localhost", "127.0.0.1", "::1", "x.conf", "*.conf"),
    ]
)
CONFIG_TEXT = st.one_of(
    st.lists(SYNTAX, max_size=60).map("".join),
    st.lists(st.one_of(SYNTAX, st.text(max_size=8)), max_size=40).map(" ".join),
    st.text(max_size=300),
)
RAW_BYTES = st.one_of(
    st.binary(max_size=400),
    st.lists(
        st.sampled_from(
            [
                *(b"127.0.0.1", b"::1", b"fe80::1%lo", b"10.0.0.1", b" ", b"\t", b"\n", b"#"),
                *(b"a.example.com", b"A.EXAMPLE.COM", b"\xff", b"\x00", b"\x0b", b"multi", b"on"),
            ]
        ),
        max_size=60,
    ).map(b"".join),
)


def _assert_well_formed(d: Discovery) -> None:
    for f in d.found:
        assert f.name == f.name.lower() and "." in f.name
    json.dumps([s.to_dict() for s in d.skipped] + [p.to_dict() for p in d.problems])


def _confined(text: str) -> str:
    # Keep includes inside the temp dir: no absolute paths, no way up.
    return text.replace("/", "_").replace("..", "._")


@contextmanager
def _tree(main_file: str, include: str, main: str, included: str) -> Iterator[Path]:
    """A temp dir with ``main_file`` (``main`` plus an include of x.conf) and x.conf."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        text = _confined(main) + "\n" + include + "\n"
        (root / main_file).write_text(text, errors="surrogatepass")
        (root / "x.conf").write_text(_confined(included), errors="surrogatepass")
        yield root


def _nginx(main: str, included: str) -> None:
    with _tree("nginx.conf", "include x.conf;", main, included) as root:
        _assert_well_formed(nginx.discover(root / "nginx.conf"))


def _apache(main: str, included: str) -> None:
    with _tree("apache2.conf", "Include x.conf", main, included) as root:
        _assert_well_formed(apache.discover([root]))


def _hosts(data: bytes, name: str) -> None:
    parsed = hosts.HostsFile("h", hosts.parse_hosts(data), hosts.parse_multi(data))
    answer = parsed.lookup(name)
    assert len(answer.addresses) <= len(answer.lines)


@FAST
@given(CONFIG_TEXT, CONFIG_TEXT)
def test_nginx_never_crashes(main: str, included: str) -> None:
    _nginx(main, included)


@FAST
@given(CONFIG_TEXT)
def test_nginx_tokens_never_crash(text: str) -> None:
    try:
        for _ in nginx.tokens(text):
            pass
    except nginx.SyntaxProblem:
        pass


@FAST
@given(CONFIG_TEXT, CONFIG_TEXT)
def test_apache_never_crashes(main: str, included: str) -> None:
    _apache(main, included)


@FAST
@given(RAW_BYTES, st.one_of(st.text(max_size=20), st.sampled_from(["a.example.com", ""])))
def test_hosts_never_crashes(data: bytes, name: str) -> None:
    _hosts(data, name)


@pytest.mark.slow
@SLOW
@given(CONFIG_TEXT, CONFIG_TEXT, RAW_BYTES, st.text(max_size=20))
def test_all_parsers_long(main: str, included: str, data: bytes, name: str) -> None:
    _nginx(main, included)
    _apache(main, included)
    _hosts(data, name)
