"""A throwaway copy of this machine's root to install packages into for real.

An overlay mount (lower: ``/``; upper: a tmpfs) in a private mount namespace, held open by a
``sleep`` process; commands enter it with ``nsenter --mount`` and ``chroot``. dpkg, its
maintainer scripts, python3.11 and systemd-analyze are the machine's own, seen through the
overlay; everything they write lands in the tmpfs and vanishes with the namespace, so the
real ``/`` (its dpkg database, /etc, /opt) is never touched. The namespace shares the test's
network namespace. Needs root (CI and ``make test`` run as root).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_SETUP = """
set -e
mount -t tmpfs -o mode=0755 tmpfs "$W"
mkdir "$W/upper" "$W/work" "$W/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$W/upper,workdir=$W/work" "$W/root"
for d in proc sys dev; do mount --rbind "/$d" "$W/root/$d"; done
# Fresh /tmp and /run: no /run/systemd/system, so this root has no running systemd.
mount -t tmpfs -o mode=1777 tmpfs "$W/root/tmp"
mount -t tmpfs -o mode=0755 tmpfs "$W/root/run"
echo ready
exec sleep 900
"""


class PackageRoot:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", _SETUP],
            env={"W": str(workdir), "PATH": PATH},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if line != "ready\n":
            self._proc.kill()
            _, err = self._proc.communicate(timeout=10)
            raise RuntimeError(f"could not set up the overlay root: {err.strip()}")

    def path(self, inside: str) -> Path:
        """Where the test process reaches a path of this root (through /proc/PID/root)."""
        root = Path(f"/proc/{self._proc.pid}/root") / str(self.workdir).lstrip("/") / "root"
        return root / inside.lstrip("/")

    def put(self, src: Path, inside: str) -> str:
        shutil.copyfile(src, self.path(inside))
        return inside

    def _enter(self) -> list[str]:
        return ["nsenter", f"--target={self._proc.pid}", "--mount", "--"]

    def bind(self, path: Path) -> None:
        """Show this machine's ``path`` at the same place inside the root: the root's own /tmp
        and /run hide what is there (a checkout and its venv cloned under /tmp, say)."""
        target = f"{self.workdir}/root{path.resolve()}"
        script = 'mkdir -p "$1" && mount --bind "$2" "$1"'
        subprocess.run(
            [*self._enter(), "sh", "-c", script, "sh", target, str(path)],
            check=True,
            capture_output=True,
            env={"PATH": PATH},
        )

    def command(self, *cmd: str, env: Mapping[str, str] | None = None) -> list[str]:
        """The argv that runs ``cmd`` chrooted in this root with a clean environment."""
        base = {"PATH": PATH, "LANG": "C.UTF-8", "HOME": "/root"}
        args = [f"{k}={v}" for k, v in {**base, **(env or {})}.items()]
        full = self._enter()
        return [*full, "chroot", str(self.workdir / "root"), "env", "-i", *args, *cmd]

    def run(
        self, *cmd: str, env: Mapping[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*cmd, env=env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def close(self) -> None:
        self._proc.kill()
        self._proc.wait(timeout=10)
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()
