"""Apache ServerName/ServerAlias discovery against Debian and RHEL fixture trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.fqdn import apache
from agent.fqdn.names import Discovery

FIXTURES = Path(__file__).parent / "fixtures" / "fqdn"
DEBIAN = FIXTURES / "apache2"
RHEL = FIXTURES / "httpd"


@pytest.fixture(scope="module")
def debian() -> Discovery:
    return apache.discover([DEBIAN])


def _names(d: Discovery) -> list[str]:
    return [f.name for f in d.found]


def test_debian_tree_names(debian: Discovery) -> None:
    assert _names(debian) == [
        "main.example.com",  # ServerName host:port, global context
        "cycle-a.example.net",
        "shop.example.com",  # ServerName scheme://host:port
        "www.shop.example.com",
        "quoted.shop.example.com",
        "continued-1.example.com",  # a backslash continues the line
        "continued-2.example.com",
        "lower-case-directive.example.com",
        "part.shop.example.com",  # Include vhost-parts/*.conf, relative to ServerRoot
        "dir-include.example.com",  # Include of a directory reads every file below it
        "broken.example.org",
    ]


def test_sources(debian: Discovery) -> None:
    src = {f.name: f.source for f in debian.found}
    assert src["main.example.com"] == f"{DEBIAN}/apache2.conf:4"
    assert src["continued-2.example.com"] == f"{DEBIAN}/sites-enabled/shop.conf:5"
    assert src["dir-include.example.com"] == f"{DEBIAN}/conf/extra/more.conf:1"


def test_not_enabled_and_commented_are_absent(debian: Discovery) -> None:
    names = _names(debian) + [s.name for s in debian.skipped]
    assert "unused.example.com" not in names
    assert "commented.example.com" not in names
    assert "www.example.com" not in names  # "#ServerName" inside a VirtualHost


def test_skipped(debian: Discovery) -> None:
    assert {s.name: s.why for s in debian.skipped} == {
        "localhost": "localhost",
        "*.cdn.example.com": "wildcard",
        "www.example.?": "wildcard",
        "198.51.100.4": "ip_address",
    }


def test_default_vhost_noted(debian: Discovery) -> None:
    assert any(
        "_default_" in n and f"{DEBIAN}/sites-enabled/000-default.conf:7" in n for n in debian.notes
    )


def test_problems(debian: Discovery) -> None:
    by_name = {Path(p.path).name: p for p in debian.problems}
    assert {k: p.kind for k, p in by_name.items()} == {
        "cycle-a.conf": "include_cycle",
        "gone.conf": "unreadable",
        "zz-broken.conf": "malformed",
    }
    assert "dangling symlink" in by_name["gone.conf"].message
    assert "<VirtualHost> is not closed" in by_name["zz-broken.conf"].message
    assert by_name["zz-broken.conf"].line == 1


def test_rhel_layout_includes_relative_to_server_root() -> None:
    d = apache.discover([RHEL])
    assert _names(d) == ["rhel.example.com", "app.example.com", "app-alias.example.com"]
    assert d.problems == []
    assert f"{RHEL}/conf.d/app.conf" in d.files


def test_both_roots_and_a_missing_one() -> None:
    d = apache.discover([DEBIAN, RHEL, FIXTURES / "no-such-root"])
    assert "app.example.com" in _names(d) and "shop.example.com" in _names(d)
    assert f"apache: {FIXTURES}/no-such-root not present" in d.notes


def test_server_root_directive_moves_relative_includes(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "etc-apache2", tmp_path / "srv-root"
    (root).mkdir()
    (elsewhere / "sites").mkdir(parents=True)
    (root / "apache2.conf").write_text(f'ServerRoot "{elsewhere}"\nIncludeOptional sites/*.conf\n')
    (elsewhere / "sites" / "a.conf").write_text("ServerName moved.example.com\n")
    (root / "sites").mkdir()
    (root / "sites" / "a.conf").write_text("ServerName wrong.example.com\n")
    assert _names(apache.discover([root])) == ["moved.example.com"]


def test_missing_include_is_a_problem_include_optional_is_not(tmp_path: Path) -> None:
    (tmp_path / "apache2.conf").write_text(
        "Include missing.conf\nInclude none/*.conf\nIncludeOptional none/*.conf\n"
        "IncludeOptional missing-too.conf\nServerName ok.example.com\n"
    )
    d = apache.discover([tmp_path])
    assert _names(d) == ["ok.example.com"]
    assert [(Path(p.path).name, p.kind) for p in d.problems] == [
        ("missing.conf", "missing_include"),
        ("*.conf", "missing_include"),
    ]


def test_root_without_main_file_reads_conventional_dirs(tmp_path: Path) -> None:
    (tmp_path / "sites-enabled").mkdir()
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "sites-enabled" / "a").write_text(
        "<VirtualHost *:80>\nServerName a.example.com\n</VirtualHost>\n"
    )
    (tmp_path / "conf.d" / "b.conf").write_text("ServerAlias b.example.com\n")
    (tmp_path / "conf.d" / "c.disabled").write_text("ServerAlias c.example.com\n")
    d = apache.discover([tmp_path])
    assert _names(d) == ["a.example.com", "b.example.com"]
    assert any("no apache2.conf" in n for n in d.notes)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "<VirtualHost *:80>\nServerName a.example.com\n</Directory>\n",
            "</Directory> where </VirtualHost>",
        ),
        ("</VirtualHost>\n", "no closing tag"),
        ("<VirtualHost *:80\n", "missing its closing '>'"),
        ("<>\n", "empty section tag"),
    ],
)
def test_malformed_sections(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "apache2.conf").write_text(text)
    d = apache.discover([tmp_path])
    assert [p.kind for p in d.problems] == ["malformed"]
    assert message in d.problems[0].message


def test_words_like_ap_getword_conf() -> None:
    assert apache.words('a "b c" \'d e\' "f\\"g" "unterminated h') == [
        "a",
        "b c",
        "d e",
        'f"g',
        "unterminated h",
    ]


@pytest.mark.parametrize(
    ("arg", "host"),
    [
        ("www.example.com", "www.example.com"),
        ("www.example.com:8443", "www.example.com"),
        ("https://www.example.com:443", "www.example.com"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
    ],
)
def test_server_name_host(arg: str, host: str) -> None:
    assert apache.server_name_host(arg) == host
