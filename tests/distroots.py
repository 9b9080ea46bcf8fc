"""Roots of other Debian releases for the boot tests, made with ``mmdebstrap``.

Building one needs Debian's package registry, so it happens before the tests and outside
their network namespace (``make test-roots``; .ci/run calls it before ``make test``). A root
is cached at ``CACHE/<name>-<YYYYMMDD>-<hash of suite and packages>``: a run on the same day
reuses it, a changed package list or a new day builds a fresh one (and removes the older
ones of that name). Tests take the newest root whose hash matches (:func:`cached_root`).

    python -m tests.distroots build [NAME ...]     # default: every root in ROOTS
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("ACME_PREFLIGHT_ROOTS", "/var/cache/acme-preflight-test-roots"))


@dataclass(frozen=True)
class RootSpec:
    suite: str
    python: str  # the interpreter the target's package depends on
    # What an operator's host has before `apt install ./acme-preflight…deb`: systemd, the
    # interpreter and the package's other dependencies (procps: /bin/kill for ExecReload),
    # the trust store, and nothing else (mmdebstrap's "apt" variant: Essential + apt).
    packages: tuple[str, ...]

    def key(self) -> str:
        text = " ".join((self.suite, *sorted(self.packages)))
        return hashlib.sha256(text.encode()).hexdigest()[:10]


ROOTS: dict[str, RootSpec] = {
    "debian13": RootSpec(
        "trixie", "python3.13", ("systemd", "python3.13", "procps", "ca-certificates")
    ),
}


def _dirs(name: str) -> list[Path]:
    spec = ROOTS[name]
    if not CACHE.is_dir():
        return []
    return sorted(
        (p for p in CACHE.glob(f"{name}-*-{spec.key()}") if (p / "etc/os-release").is_file()),
        reverse=True,  # YYYYMMDD sorts by date
    )


def cached_root(name: str) -> Path | None:
    """The newest complete root built for ``name`` with today's package list, if any."""
    dirs = _dirs(name)
    return dirs[0] if dirs else None


def build(name: str, today: dt.date | None = None) -> Path:
    spec = ROOTS[name]
    stamp = (today or dt.date.today()).strftime("%Y%m%d")
    target = CACHE / f"{name}-{stamp}-{spec.key()}"
    if (target / "etc/os-release").is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    subprocess.run(
        [
            "mmdebstrap",
            "--quiet",
            "--variant=apt",
            "--include=" + ",".join(spec.packages),
            spec.suite,
            str(partial),
        ],
        check=True,
    )
    partial.rename(target)  # only a complete root gets the name tests look for
    for old in CACHE.glob(f"{name}-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "build":
        print(__doc__, file=sys.stderr)
        return 2
    for name in argv[1:] or list(ROOTS):
        print(f"{name}: {build(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
