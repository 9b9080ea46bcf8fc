"""``/etc/hosts`` as glibc's ``files`` NSS module reads it for getaddrinfo.

- ``#`` starts a comment anywhere on a line; fields are separated by ASCII blanks;
- a line is an address, a canonical name and optional aliases; lines whose address
  ``inet_pton`` rejects (``127.1``, leading zeros, ``fe80::1%eth0``) are ignored;
- names match case-insensitively (ASCII), canonical name or alias alike;
- getaddrinfo stops at the first matching line, of either family, unless
  ``/etc/host.conf`` says ``multi on``: then every matching line counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agent.fqdn.locality import normalize


@dataclass(frozen=True)
class HostsEntry:
    address: str
    names: tuple[str, ...]  # lower-cased; the canonical name first
    line: int


@dataclass(frozen=True)
class HostsAnswer:
    """What the hosts file gives for one name: addresses and the lines they came from."""

    addresses: tuple[str, ...]
    lines: tuple[int, ...]


@dataclass(frozen=True)
class HostsFile:
    path: str
    entries: tuple[HostsEntry, ...] = ()
    multi: bool = False
    problem: str | None = None
    _index: dict[str, tuple[HostsEntry, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        index: dict[str, list[HostsEntry]] = {}
        for entry in self.entries:
            for name in dict.fromkeys(entry.names):
                index.setdefault(name, []).append(entry)
        self._index.update({k: tuple(v) for k, v in index.items()})

    def lookup(self, name: str) -> HostsAnswer:
        matches = self._index.get(_ascii_lower(name), ())
        if not self.multi:
            matches = matches[:1]
        addresses = tuple(dict.fromkeys(e.address for e in matches))
        return HostsAnswer(addresses, tuple(e.line for e in matches))


def _fold(name: bytes) -> str:
    # strcasecmp folds ASCII only (bytes.lower() does the same); str.lower() would
    # also fold non-ASCII letters. surrogateescape keeps any byte sequence lossless.
    return name.lower().decode("utf-8", "surrogateescape")


def _ascii_lower(text: str) -> str:
    return _fold(text.encode("utf-8", "surrogateescape"))


def _address(field_: bytes) -> str | None:
    """The address as getaddrinfo returns it, or None where glibc skips the line."""
    text = field_.decode("ascii", errors="replace")
    return None if "%" in text else normalize(text)  # inet_pton: no scope ids


def parse_hosts(data: bytes) -> tuple[HostsEntry, ...]:
    """Every usable line of a hosts file, in order."""
    entries: list[HostsEntry] = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        fields = raw.split(b"#", 1)[0].split()
        if len(fields) < 2:
            continue
        address = _address(fields[0])
        if address is None:
            continue
        entries.append(HostsEntry(address, tuple(_fold(f) for f in fields[1:]), number))
    return tuple(entries)


def parse_multi(data: bytes) -> bool:
    """Whether ``host.conf`` turns on ``multi`` (the last ``multi`` line wins)."""
    multi = False
    for raw in data.split(b"\n"):
        fields = raw.split(b"#", 1)[0].replace(b",", b" ").split()
        if len(fields) >= 2 and fields[0].lower() == b"multi":
            value = fields[1].lower()
            if value.startswith(b"on"):
                multi = True
            elif value.startswith(b"off"):
                multi = False
    return multi


def load(hosts: Path, host_conf: Path) -> HostsFile:
    """The hosts file as glibc sees it; an unreadable file is empty, with a problem."""
    try:
        multi = parse_multi(host_conf.read_bytes())
    except OSError:
        multi = False  # glibc's default when host.conf is absent
    try:
        data = hosts.read_bytes()
    except OSError as e:
        return HostsFile(str(hosts), (), multi, f"cannot read {hosts}: {e.strerror or e}")
    return HostsFile(str(hosts), parse_hosts(data), multi)
