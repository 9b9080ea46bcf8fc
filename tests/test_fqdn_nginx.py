"""nginx server_name discovery against the fixture tree and small generated configs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from agent.fqdn import nginx
from agent.fqdn.names import Discovery

TREE = Path(__file__).parent / "fixtures" / "fqdn" / "nginx"


@pytest.fixture(scope="module")
def found() -> Discovery:
    return nginx.discover(TREE / "nginx.conf")


def _names(d: Discovery) -> list[str]:
    return [f.name for f in d.found]


def _sources(d: Discovery) -> dict[str, str]:
    return {f.name: f.source for f in d.found}


def test_fixture_tree_names_in_file_order(found: Discovery) -> None:
    assert _names(found) == [
        "blog.example.org",
        "cycle.example.net",
        "cycle-b.example.net",
        "shop.example.com",
        "www.shop.example.com",
        "pay.shop.example.com",
        "api.shop.example.com",
        "status.shop.example.com",
        "one.example.org",
        "two.example.org",
        "broken.example.com",
    ]


def test_sources_are_file_and_directive_line(found: Discovery) -> None:
    src = _sources(found)
    assert src["blog.example.org"] == f"{TREE}/sites-enabled/blog:3"
    # a multi-line server_name is reported at the line the directive starts on
    assert src["two.example.org"] == f"{TREE}/snippets/names.d/20-multi.conf:1"
    # nested include two levels deep, resolved against the conf prefix
    assert src["status.shop.example.com"] == f"{TREE}/snippets/names.d/10-status.conf:1"


def test_not_included_and_commented_names_are_absent(found: Discovery) -> None:
    names = _names(found) + [s.name for s in found.skipped]
    assert "unused.example.com" not in names  # sites-available is not included
    assert "hidden.example.com" not in names  # a glob does not match dot files
    assert "commented.example.com" not in names


def test_non_fqdns_skipped_with_reason(found: Discovery) -> None:
    skipped = {s.name: s.why for s in found.skipped}
    assert skipped == {
        "_": "catch_all",
        "": "catch_all",
        "$hostname": "variable",
        "*.cdn.example.com": "wildcard",
        ".static.example.com": "wildcard",
        "www.example.*": "wildcard",
        r"~^(?<sub>\w+)\.example\.net$": "regex",
        "localhost": "localhost",
        "192.0.2.7": "ip_address",
    }


def test_default_server_noted(found: Discovery) -> None:
    notes = [n for n in found.notes if "default server" in n]
    assert len(notes) == 1
    assert f"{TREE}/conf.d/00-default.conf:2" in notes[0]
    assert "no FQDN" in notes[0]


def test_problems_reported_not_raised(found: Discovery) -> None:
    kinds = {(Path(p.path).name, p.kind) for p in found.problems}
    assert kinds == {
        ("cycle-a.conf", "include_cycle"),
        ("dir.conf", "unreadable"),
        ("gone.conf", "unreadable"),
        ("zz-broken.conf", "malformed"),
    }
    by_name = {Path(p.path).name: p for p in found.problems}
    assert "dangling symlink" in by_name["gone.conf"].message
    assert "is a directory" in by_name["dir.conf"].message
    assert "cycle-b.conf -> " in by_name["cycle-a.conf"].message
    assert by_name["zz-broken.conf"].line == 6


def test_missing_main_file_is_a_note(tmp_path: Path) -> None:
    d = nginx.discover(tmp_path / "nginx.conf")
    assert d.found == [] and d.problems == []
    assert d.notes == [f"nginx: {tmp_path}/nginx.conf not present"]


def _conf(tmp_path: Path, text: str, files: dict[str, str] | None = None) -> Discovery:
    (tmp_path / "nginx.conf").write_text(text)
    for name, body in (files or {}).items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    return nginx.discover(tmp_path / "nginx.conf")


def test_relative_include_is_relative_to_conf_prefix_not_including_file(tmp_path: Path) -> None:
    d = _conf(
        tmp_path,
        "http { include sub/a.conf; }",
        {
            "sub/a.conf": "server { include b.conf; }",  # <prefix>/b.conf, not sub/b.conf
            "b.conf": "server_name prefix.example.com;",
            "sub/b.conf": "server_name wrong.example.com;",
        },
    )
    assert _names(d) == ["prefix.example.com"]


def test_missing_plain_include_is_a_problem_but_empty_glob_is_not(tmp_path: Path) -> None:
    d = _conf(tmp_path, "include missing.conf;\ninclude none/*.conf;\nserver_name a.example.com;")
    assert _names(d) == ["a.example.com"]
    assert [(Path(p.path).name, p.kind) for p in d.problems] == [("missing.conf", "unreadable")]
    assert "no such file" in d.problems[0].message


def test_absolute_include(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "x.conf").write_text("server { server_name abs.example.com; }")
    d = _conf(tmp_path, f"http {{ include {other}/*.conf; }}")
    assert _names(d) == ["abs.example.com"]


def test_self_include_is_a_cycle(tmp_path: Path) -> None:
    d = _conf(tmp_path, "server_name self.example.com; include nginx.conf;")
    assert _names(d) == ["self.example.com"]
    assert [p.kind for p in d.problems] == ["include_cycle"]


def test_same_file_twice_is_not_a_cycle(tmp_path: Path) -> None:
    d = _conf(
        tmp_path, "include n.conf; include n.conf;", {"n.conf": "server_name twice.example.com;"}
    )
    assert d.problems == []
    assert _names(d) == ["twice.example.com", "twice.example.com"]


def test_default_server_with_a_real_name_keeps_it(tmp_path: Path) -> None:
    d = _conf(tmp_path, "server { listen 443 ssl default_server; server_name main.example.com _; }")
    assert _names(d) == ["main.example.com"]
    assert [s.name for s in d.skipped] == ["_"]
    assert "its names main.example.com are checked" in d.notes[0]


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ('server_name "unterminated.example.com;\n', "unterminated quoted string", 1),
        ('server_name "a.example.com"b;', "unexpected 'b'", 1),
        ("}\nserver_name late.example.com;", 'unexpected "}"', 1),
        ("\n\n;", 'unexpected ";"', 3),
        ("server { server_name x.example.com }", 'unexpected "}"', 1),
        ("server_name no-semicolon.example.com", 'expecting ";" or "}"', 1),
    ],
)
def test_malformed_files_are_problems(tmp_path: Path, text: str, message: str, line: int) -> None:
    d = _conf(tmp_path, text)
    assert len(d.problems) == 1
    assert d.problems[0].kind == "malformed"
    assert message in d.problems[0].message
    assert d.problems[0].line == line


def test_names_before_a_syntax_error_are_kept(tmp_path: Path) -> None:
    d = _conf(tmp_path, "server { server_name kept.example.com; server_name 'open.example.com")
    assert _names(d) == ["kept.example.com"]
    assert d.problems[0].kind == "malformed"


def test_tokens_follow_nginx_rules() -> None:
    text = 'a#b \'c d\' "e\\"f" g\\ h ${var}x; # comment\nk{}'
    assert list(nginx.tokens(text)) == [
        ("word", "a#b", 1),
        ("word", "c d", 1),
        ("word", 'e"f', 1),
        ("word", "g\\ h", 1),  # nginx keeps the backslash of an unknown escape
        ("word", "${var}x", 1),
        (";", ";", 1),
        ("word", "k", 2),
        ("{", "{", 2),
        ("}", "}", 2),
    ]


def test_multiline_quoted_string_counts_lines(tmp_path: Path) -> None:
    d = _conf(tmp_path, 'return 200 "a\nb\nc";\nserver_name after.example.com;')
    assert _sources(d)["after.example.com"].endswith("nginx.conf:4")


def test_fifo_or_device_is_not_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.conf")  # reading it would block forever
    d = _conf(tmp_path, "include fifo.conf; include /dev/zero; server_name ok.example.com;")
    assert _names(d) == ["ok.example.com"]
    assert [(p.path, p.message) for p in d.problems] == [
        (f"{tmp_path}/fifo.conf", f"not a regular file (included from {tmp_path}/nginx.conf:1)"),
        ("/dev/zero", f"not a regular file (included from {tmp_path}/nginx.conf:1)"),
    ]


def test_cycle_through_a_symlink_is_detected(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "loop.conf").symlink_to(tmp_path / "nginx.conf")
    d = _conf(tmp_path, "server_name a.example.com; include conf.d/*.conf;")
    assert _names(d) == ["a.example.com"]
    assert [p.kind for p in d.problems] == ["include_cycle"]


def test_shared_snippet_read_once_and_problem_reported_once(tmp_path: Path) -> None:
    d = _conf(
        tmp_path,
        "http {\n"
        "  server { server_name a.example.com; include snip.conf; include gone.conf; }\n"
        "  server { server_name b.example.com; include snip.conf; include gone.conf; }\n"
        "}\n",
        {"snip.conf": "server_name snip.example.com;"},
    )
    assert _names(d) == ["a.example.com", "snip.example.com", "b.example.com", "snip.example.com"]
    assert d.files.count(f"{tmp_path}/snip.conf") == 1
    assert [Path(p.path).name for p in d.problems] == ["gone.conf"]


def test_permission_denied_as_an_unprivileged_user() -> None:
    """Root reads everything, so the parser runs as nobody (uid 65534) via setpriv."""
    tree = Path(tempfile.mkdtemp(prefix="fqdn-perm-"))
    try:
        tree.chmod(0o755)
        (tree / "nginx.conf").write_text("include secret.conf; server_name ok.example.com;")
        (tree / "secret.conf").write_text("server_name secret.example.com;")
        (tree / "secret.conf").chmod(0o600)
        script = (
            "import json, sys; from pathlib import Path; from agent.fqdn import nginx; "
            "d = nginx.discover(Path(sys.argv[1])); "
            "print(json.dumps([[f.name for f in d.found], [p.to_dict() for p in d.problems]]))"
        )
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        proc = subprocess.run(
            [*nobody, sys.executable, "-c", script, str(tree / "nginx.conf")],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=Path(__file__).parent.parent,
            check=True,
        )
    finally:
        shutil.rmtree(tree)
    names, problems = json.loads(proc.stdout)
    assert names == ["ok.example.com"]
    assert [(Path(p["path"]).name, p["kind"]) for p in problems] == [("secret.conf", "unreadable")]
    assert "Permission denied" in problems[0]["message"]
