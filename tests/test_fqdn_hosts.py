"""The hosts file parser: glibc semantics, checked against glibc itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.fqdn import hosts
from tests.fqdn_sysview import getaddrinfo_with_etc, write_etc

HOSTS = b"""\
# comment line with 10.9.9.9 commented.example.com
127.0.0.1\tlocalhost
127.0.1.1   web.example.com web   # trailing comment
10.0.0.1    Multi.Example.COM  m-alias
10.0.0.2    multi.example.com
fd00::1     multi.example.com
fd00::6     v6first.example.com
10.0.0.6    v6first.example.com
10.0.0.7#glued.example.com
127.1       short.example.com
127.000.000.001 zeros.example.com
fe80::1%eth0 scoped.example.com
::ffff:10.9.9.9 mapped.example.com
10.0.0.8
not-an-ip   bogus.example.com
10.0.0.9\x0bvtab.example.com
\xff\xfe    binary.example.com
10.0.0.10   caf\xc3\xa9.example.com
"""


def _lookup(name: str, multi: bool) -> tuple[str, ...]:
    return hosts.HostsFile("hosts", hosts.parse_hosts(HOSTS), multi).lookup(name).addresses


def test_first_matching_line_wins() -> None:
    h = hosts.HostsFile("hosts", hosts.parse_hosts(HOSTS))
    answer = h.lookup("multi.example.com")
    assert answer.addresses == ("10.0.0.1",)
    assert answer.lines == (4,)
    # of either family: an IPv6 line first hides the IPv4 line after it
    assert h.lookup("v6first.example.com").addresses == ("fd00::6",)


def test_multi_on_merges_all_matching_lines() -> None:
    h = hosts.HostsFile("hosts", hosts.parse_hosts(HOSTS), multi=True)
    answer = h.lookup("multi.example.com")
    assert answer.addresses == ("10.0.0.1", "10.0.0.2", "fd00::1")
    assert answer.lines == (4, 5, 6)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("MULTI.example.com", ("10.0.0.1",)),  # case-insensitive
        ("m-alias", ("10.0.0.1",)),  # aliases match
        ("M-ALIAS", ("10.0.0.1",)),
        ("web", ("127.0.1.1",)),
        ("commented.example.com", ()),
        ("glued.example.com", ()),  # '#' cuts the line even inside a field
        ("short.example.com", ()),  # inet_pton rejects 127.1
        ("zeros.example.com", ()),  # ... and leading zeros
        ("scoped.example.com", ()),  # ... and scope ids
        ("bogus.example.com", ()),
        ("mapped.example.com", ("::ffff:10.9.9.9",)),
        ("vtab.example.com", ("10.0.0.9",)),  # \v is a blank to glibc
        ("CAFÉ.example.com", ()),  # strcasecmp folds ASCII only
        ("café.example.com", ("10.0.0.10",)),
        ("nowhere.example.com", ()),
    ],
)
def test_lookup_semantics(name: str, expected: tuple[str, ...]) -> None:
    assert _lookup(name, multi=False) == expected


@pytest.mark.parametrize(
    ("text", "multi"),
    [
        (b"multi on\n", True),
        (b"MULTI On\n", True),
        (b"multi off\n", False),
        (b"multi on\nmulti off\n", False),
        (b"# multi on\n", False),
        (b"order hosts,bind\n", False),
        (b"", False),
    ],
)
def test_host_conf_multi(text: bytes, multi: bool) -> None:
    assert hosts.parse_multi(text) is multi


def test_load_unreadable_hosts_is_empty_with_a_problem(tmp_path: Path) -> None:
    h = hosts.load(tmp_path / "missing-hosts", tmp_path / "missing-host.conf")
    assert h.entries == () and h.multi is False
    assert h.problem is not None and "missing-hosts" in h.problem
    (tmp_path / "hosts-dir").mkdir()
    assert hosts.load(tmp_path / "hosts-dir", tmp_path / "x").problem is not None


NAMES = [
    "multi.example.com",
    "MULTI.example.com",
    "m-alias",
    "v6first.example.com",
    "glued.example.com",
    "short.example.com",
    "zeros.example.com",
    "scoped.example.com",
    "mapped.example.com",
    "vtab.example.com",
    "web",
    "nowhere.example.com",
]


@pytest.mark.parametrize("multi", [False, True])
async def test_agrees_with_glibc(tmp_path: Path, multi: bool, netns_isolated: None) -> None:
    """Our parser and the real getaddrinfo give the same addresses for every name."""
    etc = write_etc(
        tmp_path,
        {
            "hosts": HOSTS.decode("latin-1"),
            "host.conf": "multi on\n" if multi else "multi off\n",
            "resolv.conf": "",
            "nsswitch.conf": "hosts: files\n",  # no DNS: only the hosts file answers
        },
    )
    # write_text would re-encode the non-ASCII bytes; keep them exact
    etc["hosts"].write_bytes(HOSTS)
    real = await getaddrinfo_with_etc(etc, NAMES)
    for name in NAMES:
        ours = list(_lookup(name, multi))
        theirs = real[name]
        if not ours:
            assert isinstance(theirs, int), f"{name}: glibc found {theirs}"
        else:
            assert sorted(set(theirs)) == sorted(ours), name
