"""What web server discovery returns, shared by the nginx and Apache readers."""

from __future__ import annotations

import glob
import ipaddress
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config import is_hostname

# Files larger than this are not parsed: no web server config is that big, and a
# runaway file (a log symlinked into conf.d) must not stall the check.
MAX_FILE_BYTES = 8 * 1024 * 1024
# Include nesting deeper than this is reported instead of followed.
MAX_INCLUDE_DEPTH = 32
# Parsing stops after this many files, so a pathological include fan-out stays bounded.
MAX_FILES = 20_000

LOCALHOST_NAMES = frozenset(
    {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", "localhost6"}
)


@dataclass(frozen=True)
class Found:
    """A name to check and where it came from (``file:line`` or ``config``)."""

    name: str
    source: str


@dataclass(frozen=True)
class Skipped:
    """A configured name that is not an FQDN, with the reason (``why``)."""

    name: str
    source: str
    why: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "source": self.source, "why": self.why}


@dataclass(frozen=True)
class Problem:
    """A file that could not be read or understood; discovery goes on without it."""

    path: str
    kind: str  # unreadable, malformed, include_cycle, missing_include, too_deep, too_many
    message: str
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "kind": self.kind, "message": self.message}


@dataclass
class Discovery:
    """Everything a reader found: names in file order, skipped names, problems, notes."""

    found: list[Found] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def extend(self, other: Discovery) -> None:
        self.found += other.found
        self.skipped += other.skipped
        self.problems += other.problems
        self.notes += other.notes
        self.files += other.files

    def add_name(self, raw: str, source: str) -> bool:
        """Record ``raw`` as a name to check (True) or as skipped, by :func:`classify`."""
        name, why = classify(raw)
        if name is None:
            self.skipped.append(Skipped(raw, source, why))
            return False
        self.found.append(Found(name, source))
        return True


def classify(raw: str) -> tuple[str | None, str]:
    """``(name, "")`` for an FQDN to check, else ``(None, why)``.

    ``why`` is one of: catch_all (``_`` or the empty name), regex (nginx ``~``),
    wildcard (``*``, ``?`` or a leading dot), variable (``$``), localhost,
    ip_address, not_fqdn (a single label) or invalid.
    """
    text = raw.strip()
    if text in ("", "_", '""', "''"):
        return None, "catch_all"
    if text.startswith("~"):
        return None, "regex"
    if "*" in text or "?" in text or text.startswith("."):
        return None, "wildcard"
    if "$" in text:
        return None, "variable"
    name = text.rstrip(".").lower()
    if name in LOCALHOST_NAMES or name.endswith(".localhost"):
        return None, "localhost"
    if name[-1:].isdigit() or ":" in name:  # could be an address: worth the parse
        try:
            ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            pass
        else:
            return None, "ip_address"
    if not name or not is_hostname(name):
        return None, "invalid"
    if "." not in name:
        return None, "not_fqdn"
    return name, ""


def source(path: Path | str, line: int) -> str:
    return f"{path}:{line}"


FileKey = tuple[int, int]  # (st_dev, st_ino): the file itself, whatever path reached it


def read_config(
    path: Path, out: Discovery, line_of_include: str | None = None
) -> tuple[str, FileKey] | None:
    """The text of ``path`` and its identity, or None with the problem recorded in ``out``.

    Only regular files are read: a FIFO or a device matched by a careless glob
    would otherwise block the check or feed it endless bytes.
    """
    where = f" (included from {line_of_include})" if line_of_include else ""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        what = "dangling symlink" if path.is_symlink() else "no such file"
        out.problems.append(Problem(str(path), "unreadable", f"{what}{where}"))
        return None
    except OSError as e:
        out.problems.append(Problem(str(path), "unreadable", f"{e.strerror or e}{where}"))
        return None
    try:
        st = os.fstat(fd)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            out.problems.append(Problem(str(path), "unreadable", f"is a directory{where}"))
            return None
        if not stat.S_ISREG(mode):
            out.problems.append(Problem(str(path), "unreadable", f"not a regular file{where}"))
            return None
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_FILE_BYTES:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        out.problems.append(Problem(str(path), "unreadable", f"{e.strerror or e}{where}"))
        return None
    finally:
        os.close(fd)
    if size > MAX_FILE_BYTES:
        out.problems.append(
            Problem(str(path), "unreadable", f"larger than {MAX_FILE_BYTES} bytes, not parsed")
        )
        return None
    out.files.append(str(path))
    return b"".join(chunks).decode("utf-8", errors="replace"), (st.st_dev, st.st_ino)


def has_magic(pattern: str) -> bool:
    return glob.has_magic(pattern)


def expand(pattern: str) -> list[Path]:
    """Files matching a glob, sorted like glob(3) sorts them (dot files not matched)."""
    return [Path(p) for p in sorted(glob.glob(pattern))]


@dataclass
class IncludeWalk:
    """Follows includes for a reader: cycle detection, depth and file-count limits.

    A file included many times (a shared snippet) is read once per discovery.
    """

    out: Discovery
    stack: list[tuple[FileKey, str]] = field(default_factory=list)  # (identity, shown path)
    parsed: int = 0
    _cache: dict[str, tuple[str, FileKey] | None] = field(default_factory=dict)

    def enter(self, path: Path, included_from: str | None = None) -> str | None:
        """The text of ``path`` to parse, or None when it must not or cannot be parsed.

        Every refusal is recorded as a :class:`Problem` (once per path for an
        unreadable file). A successful ``enter`` must be paired with :meth:`leave`.
        """
        shown = str(path)
        if len(self.stack) >= MAX_INCLUDE_DEPTH:
            self.out.problems.append(
                Problem(shown, "too_deep", f"includes nested deeper than {MAX_INCLUDE_DEPTH}")
            )
            return None
        if self.parsed >= MAX_FILES:
            if not any(p.kind == "too_many" for p in self.out.problems):
                self.out.problems.append(
                    Problem(shown, "too_many", f"stopped after {MAX_FILES} files")
                )
            return None
        if shown in self._cache:
            read = self._cache[shown]
        else:
            read = self._cache[shown] = read_config(path, self.out, included_from)
        if read is None:
            return None
        text, key = read
        for seen, _ in self.stack:
            if seen == key:
                chain = " -> ".join([s for _, s in self.stack] + [shown])
                where = f" (at {included_from})" if included_from else ""
                self.out.problems.append(
                    Problem(shown, "include_cycle", f"include cycle: {chain}{where}")
                )
                return None
        self.parsed += 1
        self.stack.append((key, shown))
        return text

    def leave(self) -> None:
        self.stack.pop()
