"""Apache ``ServerName`` / ``ServerAlias`` discovery under the configuration roots.

Each root (``/etc/apache2``, ``/etc/httpd``) is read from its main file
(``apache2.conf``, ``httpd.conf`` or ``conf/httpd.conf``) following ``Include`` and
``IncludeOptional`` like httpd does: relative paths are relative to ``ServerRoot``
(the root itself until a ``ServerRoot`` directive says otherwise), wildcards may
appear in any path component, a directory means every file below it, and a
wildcard that matches nothing is an error only for ``Include``. Lines starting
with ``#`` are comments, a trailing backslash continues a line, directive names
are case-insensitive. A root without a main file falls back to reading
``sites-enabled/*``, ``conf.d/*.conf`` and ``vhosts.d/*.conf`` directly.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.fqdn.names import Discovery, IncludeWalk, Problem, expand, has_magic, source

MAIN_FILES = ("apache2.conf", "httpd.conf", "conf/httpd.conf")
_WANTED = frozenset({"servername", "serveralias", "serverroot", "include", "includeoptional"})
FALLBACK_GLOBS = ("sites-enabled/*", "conf.d/*.conf", "vhosts.d/*.conf")

# One argument as ap_getword_conf reads it: a quoted string (backslash escapes the
# quote and itself; an unterminated quote runs to the end) or a run of non-spaces.
_WORD_RE = re.compile(r"""\s*(?:"((?:\\["\\]|[^"])*)"?|'((?:\\['\\]|[^'])*)'?|(\S+))""")
_UNESCAPE_RE = re.compile(r"""\\(["'\\])""")


def words(text: str) -> list[str]:
    """Split directive arguments like httpd's ``ap_getword_conf``."""
    out: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _WORD_RE.match(text, pos)
        if m is None or m.end() == pos:
            break
        dq, sq, bare = m.groups()
        if bare is not None:
            out.append(bare)
        else:
            out.append(_UNESCAPE_RE.sub(r"\1", dq if dq is not None else sq))
        pos = m.end()
    return out


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """``(first line number, text)`` with backslash continuations joined."""
    if "\\" not in text:  # no continuations: the common case, kept fast
        yield from enumerate(text.split("\n"), 1)
        return
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.removesuffix("\r")
        if not parts:
            start = number
        if line.endswith("\\"):
            parts.append(line[:-1])
            continue
        parts.append(line)
        yield start, "".join(parts)
        parts = []
    if parts:
        yield start, "".join(parts)


def server_name_host(arg: str) -> str:
    """The host of ``ServerName [scheme://]host[:port]``."""
    if "://" in arg:
        arg = arg.split("://", 1)[1]
    if arg.startswith("["):
        end = arg.find("]")
        return arg[1:end] if end > 0 else arg
    if arg.count(":") == 1:
        return arg.split(":", 1)[0]
    return arg


@dataclass
class _VirtualHost:
    where: str
    default: bool
    kept: list[str] = field(default_factory=list)


class _Reader:
    def __init__(self, root: Path, out: Discovery) -> None:
        self.server_root = root
        self.out = out
        self.walk = IncludeWalk(out)

    def file(self, path: Path, included_from: str | None) -> None:
        text = self.walk.enter(path, included_from)
        if text is None:
            return
        try:
            self._parse(path, text)
        finally:
            self.walk.leave()

    def _parse(self, path: Path, text: str) -> None:
        # Open sections: (lower-case name, as written, line, the virtual host if one).
        sections: list[tuple[str, str, int, _VirtualHost | None]] = []
        vhost: _VirtualHost | None = None
        for number, line in logical_lines(text):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("</"):
                name = line[2:].rstrip(">").strip().lower()
                if not sections or sections[-1][0] != name:
                    expected = f"</{sections[-1][1]}>" if sections else "no closing tag"
                    self._malformed(path, number, f"{line} where {expected} was expected")
                    break
                closed = sections.pop()[3]
                if closed is not None:
                    self._finish(closed)
                    vhost = next((s[3] for s in reversed(sections) if s[3] is not None), None)
                continue
            if line.startswith("<"):
                if not line.endswith(">"):
                    self._malformed(path, number, f"{line.split()[0]}> is missing its closing '>'")
                    break
                tag = line[1:-1].split(None, 1)
                if not tag:
                    self._malformed(path, number, "empty section tag")
                    break
                name = tag[0].lower()
                opened = None
                if name == "virtualhost":
                    addresses = words(tag[1]) if len(tag) > 1 else []
                    is_default = any(a.lower().startswith("_default_") for a in addresses)
                    opened = vhost = _VirtualHost(source(path, number), is_default)
                sections.append((name, tag[0], number, opened))
                continue
            # Most lines are directives this reader ignores: split the rest only if wanted.
            head = line.split(None, 1)
            if head[0].lower() in _WANTED:
                args = [head[0], *words(head[1])] if len(head) > 1 else head
                self._directive(args, source(path, number), vhost)
        else:
            if sections:
                _, shown, opened_at, _ = sections[-1]
                self._malformed(path, opened_at, f"<{shown}> is not closed")
        for *_, open_vhost in sections:
            if open_vhost is not None:
                self._finish(open_vhost)

    def _malformed(self, path: Path, line: int | None, message: str) -> None:
        self.out.problems.append(Problem(str(path), "malformed", message, line))

    def _directive(self, args: list[str], where: str, vhost: _VirtualHost | None) -> None:
        name = args[0].lower()
        if name == "servername" and len(args) >= 2:
            self._name(server_name_host(args[1]), where, vhost)
        elif name == "serveralias":
            for raw in args[1:]:
                self._name(raw, where, vhost)
        elif name == "serverroot" and len(args) >= 2:
            self.server_root = self.server_root / args[1]  # an absolute path replaces it
        elif name in ("include", "includeoptional") and len(args) >= 2:
            for pattern in args[1:]:
                self._include(pattern, where, optional=name == "includeoptional")

    def _name(self, raw: str, where: str, vhost: _VirtualHost | None) -> None:
        if self.out.add_name(raw, where) and vhost is not None:
            vhost.kept.append(raw)

    def _include(self, pattern: str, where: str, optional: bool) -> None:
        target = self.server_root / pattern
        if has_magic(str(target)):
            matches = expand(str(target))
            if not matches and not optional:
                self.out.problems.append(
                    Problem(str(target), "missing_include", f"no file matches (at {where})")
                )
        elif target.is_dir():
            matches = [target]
        elif not target.exists() and not target.is_symlink():
            if not optional:
                self.out.problems.append(
                    Problem(str(target), "missing_include", f"no such file (at {where})")
                )
            return
        else:
            matches = [target]
        for path in matches:
            if path.is_dir():
                for file in _files_below(path):
                    self.file(file, where)
            else:
                self.file(path, where)

    def _finish(self, vhost: _VirtualHost) -> None:
        if vhost.default:
            listed = (
                f"its names {', '.join(vhost.kept)} are checked"
                if vhost.kept
                else ("it has no FQDN")
            )
            self.out.notes.append(
                f"apache: the virtual host at {vhost.where} is a _default_ host "
                f"(catch-all for unlisted names); {listed}"
            )


def _files_below(directory: Path) -> list[Path]:
    """Every file below ``directory``, sorted (httpd includes a directory recursively)."""
    found: list[Path] = []
    for top, dirs, files in os.walk(directory):
        dirs.sort()
        found += [Path(top) / f for f in sorted(files)]
    return found


def discover(roots: Sequence[Path]) -> Discovery:
    """Names in ``ServerName``/``ServerAlias`` of each root's configuration."""
    out = Discovery()
    for root in roots:
        if not root.is_dir():
            out.notes.append(f"apache: {root} not present")
            continue
        main = next((root / m for m in MAIN_FILES if (root / m).is_file()), None)
        reader = _Reader(root, out)
        if main is not None:
            reader.file(main, None)
            continue
        out.notes.append(
            f"apache: no {' or '.join(MAIN_FILES)} under {root}; "
            f"reading {', '.join(FALLBACK_GLOBS)}"
        )
        for pattern in FALLBACK_GLOBS:
            for path in expand(str(root / pattern)):
                reader.file(path, None)
    return out
