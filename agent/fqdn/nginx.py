"""nginx ``server_name`` discovery: ``nginx.conf`` and everything it includes.

Tokens follow nginx's own reader (``ngx_conf_read_token``): ``#`` starts a comment
only at the start of a token, ``"..."`` and ``'...'`` quote with backslash escapes,
``;`` ends a directive, ``{``/``}`` open and close blocks, and every file must be
balanced on its own. Relative ``include`` paths are relative to the directory of
the main configuration file (nginx's conf prefix), not of the including file; a
glob that matches nothing is fine, a missing plain file is not.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from agent.fqdn.names import Discovery, IncludeWalk, Problem, expand, has_magic, source

# One token after any blanks and comments; no match means a syntax error or the end.
_TOKEN_RE = re.compile(
    r"""
    (?=(?P<blank>(?:[ \t\r\n]+|\#[^\n]*)*))(?P=blank)  # atomic: no backtracking into
                                                    # blanks (no ReDoS); *+ needs 3.11
    (?:
      (?P<punct>[;{}])
    | "(?P<dq>(?:[^"\\]|\\.)*)"
    | '(?P<sq>(?:[^'\\]|\\.)*)'
    | (?P<word>(?:\\.|\$\{?|[^ \t\r\n;{}\#"'\\$])(?:\\.|\$\{?|[^ \t\r\n;{\\$])*)
    )
    """,
    re.VERBOSE | re.DOTALL,
)
_SKIP_RE = re.compile(r"(?=(?P<blank>(?:[ \t\r\n]+|\#[^\n]*)*))(?P=blank)")
_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}
# What may follow a closing quote (nginx's need_space).
_AFTER_QUOTE = frozenset(" \t\r\n;{)")


class SyntaxProblem(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


def _unescape(text: str) -> str:
    return _ESCAPE_RE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(0)), text)


def tokens(text: str) -> Iterator[tuple[str, str, int]]:
    """``(kind, value, line)`` with kind ``word`` or one of ``; { }``.

    Raises :class:`SyntaxProblem` where nginx would refuse the file.
    """
    pos, line, counted, end = 0, 1, 0, len(text)
    match = _TOKEN_RE.match
    while pos < end:
        m = match(text, pos)
        if m is None:
            bad = _SKIP_RE.match(text, pos).end()  # type: ignore[union-attr]
            if bad >= end:
                return  # only blanks and comments were left
            line += text.count("\n", counted, bad)
            ch = text[bad]
            what = "unterminated quoted string" if ch in "\"'" else f"unexpected {ch!r}"
            raise SyntaxProblem(line, what)
        kind = m.lastgroup or ""
        start = m.start(kind)
        # Newlines between the previous token's start and this one's (one count per token).
        line += text.count("\n", counted, start)
        counted = start
        value = m.group(kind)
        pos = m.end()
        if kind == "punct":
            yield value, value, line
            continue
        if kind != "word" and pos < end and text[pos] not in _AFTER_QUOTE:
            raise SyntaxProblem(line + value.count("\n"), f"unexpected {text[pos]!r}")
        yield "word", _unescape(value) if "\\" in value else value, line


@dataclass
class _Server:
    """A ``server { }`` block: its names and whether it is the default server."""

    where: str
    names: list[tuple[str, str]] = field(default_factory=list)
    default: bool = False


class _Reader:
    def __init__(self, conf: Path, out: Discovery) -> None:
        self.prefix = conf.parent
        self.out = out
        self.walk = IncludeWalk(out)
        # Tokens per file (a snippet included by 500 vhosts is tokenized once).
        self._tokens: dict[str, tuple[list[tuple[str, str, int]], SyntaxProblem | None]] = {}

    def _tokenized(self, path: Path, text: str) -> Iterator[tuple[str, str, int]]:
        key = str(path)
        if key not in self._tokens:
            found: list[tuple[str, str, int]] = []
            error = None
            try:
                found.extend(tokens(text))
            except SyntaxProblem as e:
                error = e
            self._tokens[key] = (found, error)
        found, error = self._tokens[key]
        yield from found
        if error is not None:
            raise error

    def file(self, path: Path, server: _Server | None, included_from: str | None) -> None:
        text = self.walk.enter(path, included_from)
        if text is None:
            return
        try:
            self._parse(path, text, server)
        finally:
            self.walk.leave()

    def _parse(self, path: Path, text: str, outer: _Server | None) -> None:
        # The block stack: one entry per open block, the _Server for server blocks.
        blocks: list[_Server | None] = []
        args: list[str] = []
        start = 0
        try:
            for kind, value, line in self._tokenized(path, text):
                if kind == "word":
                    if not args:
                        start = line
                    args.append(value)
                    continue
                if kind == "}":
                    if args:
                        raise SyntaxProblem(line, 'unexpected "}"')
                    if not blocks:
                        raise SyntaxProblem(line, 'unexpected "}"')
                    closed = blocks.pop()
                    if closed is not None:
                        self._finish(closed)
                    continue
                if not args:
                    raise SyntaxProblem(line, f'unexpected "{kind}"')
                server = next((b for b in reversed(blocks) if b is not None), outer)
                if kind == "{":
                    block = _Server(source(path, start)) if args[0] == "server" else None
                    blocks.append(block)
                else:
                    self._directive(path, start, args, server)
                args = []
            if args:
                raise SyntaxProblem(start, 'unexpected end of file, expecting ";" or "}"')
            if blocks:
                raise SyntaxProblem(text.count("\n") + 1, 'unexpected end of file, expecting "}"')
        except SyntaxProblem as e:
            self.out.problems.append(Problem(str(path), "malformed", str(e), e.line))
            # Names already read are real; keep them.
            for block in blocks:
                if block is not None:
                    self._finish(block)

    def _directive(self, path: Path, line: int, args: list[str], server: _Server | None) -> None:
        name = args[0]
        if name == "server_name":
            where = source(path, line)
            for raw in args[1:]:
                if server is None:
                    self.out.add_name(raw, where)
                else:
                    server.names.append((raw, where))
        elif name == "listen" and server is not None:
            if "default_server" in args[2:] or "default" in args[2:]:
                server.default = True
        elif name == "include":
            if len(args) != 2:
                self.out.problems.append(
                    Problem(str(path), "malformed", "include takes exactly one argument", line)
                )
                return
            self._include(args[1], source(path, line), server)

    def _include(self, pattern: str, where: str, server: _Server | None) -> None:
        target = Path(pattern)
        if not target.is_absolute():
            target = self.prefix / target
        if has_magic(str(target)):
            for path in expand(str(target)):
                self.file(path, server, where)
        else:
            self.file(target, server, where)

    def _finish(self, server: _Server) -> None:
        kept = [raw for raw, where in server.names if self.out.add_name(raw, where)]
        if server.default:
            listed = f"its names {', '.join(kept)} are checked" if kept else "it has no FQDN"
            self.out.notes.append(
                f"nginx: the server at {server.where} is the default server "
                f"(catch-all for unlisted names); {listed}"
            )


def discover(conf: Path) -> Discovery:
    """Names in ``server_name`` directives of ``conf`` and its includes."""
    out = Discovery()
    if not conf.exists() and not conf.is_symlink():
        out.notes.append(f"nginx: {conf} not present")
        return out
    _Reader(conf, out).file(conf, None, None)
    return out
