"""``state_dir/last.json``: the last report, replaced atomically after every run.

Standard library only: ``acme-preflight status`` reads it without loading the daemon.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

LAST_FILE = "last.json"


def write_last(state_dir: Path, report: dict[str, Any]) -> Path:
    """Write to a temp file in the same directory, fsync, rename, fsync the directory.

    A reader (or a crash) sees the old file or the new one, never half of either.
    """
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = state_dir / LAST_FILE
    data = (json.dumps(report, indent=2) + "\n").encode()
    fd, tmp = tempfile.mkstemp(prefix=".last.", suffix=".tmp", dir=state_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


def read_last(state_dir: Path) -> dict[str, Any]:
    """The last report; raises OSError or ValueError with a readable message."""
    path = state_dir / LAST_FILE
    data = json.loads(path.read_text("utf-8"))
    if not isinstance(data, dict) or "checks" not in data:
        raise ValueError(f"{path} does not hold an acme-preflight report")
    return data
