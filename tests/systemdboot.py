"""A real systemd booted as PID 1 on a throwaway root, for tests of the installed package.

The root is an overlay whose lower layer is this machine's ``/`` (or a Debian root made by
``mmdebstrap``, tests/distroots.py) and whose upper layer is a tmpfs, with its own ``/proc``,
a fresh ``/dev`` (``null zero full random urandom tty`` bound in, a new ``devpts``), tmpfs on
``/run``, ``/tmp`` and ``/dev/shm``, and ``/sys`` bound (and a cgroup2 hierarchy of its own). systemd boots in it inside new PID, mount, network, UTS and cgroup namespaces (``unshare --net``: only its own
``lo``, which systemd brings up, so nothing it starts can reach beyond loopback), so its
``systemd-tmpfiles --boot`` and everything it writes stay in the tmpfs, never on the
machine's own root. It boots to ``basic.target`` (the lower root's own enabled services,
e.g. this machine's postgresql, stay down); the package's units start because they are
enabled and started, as on a real host. Killing PID 1 ends the whole namespace.

systemd boots after a ``pivot_root`` into it (not ``chroot``: the kernel refuses user
namespaces, which ``PrivateUsers=`` needs, to a chrooted process).
``nsenter -t PID -a -r -w`` enters it: :meth:`BootedSystem.run` runs a command there,
:meth:`BootedSystem.path` reaches a file of the root from the test (``/proc/PID/root``).
:meth:`BootedSystem.serve_lab` starts the DigiCert lab (tests/lab) in its network namespace.
Each boot gets its own cgroup (``acme-preflight-boot-*`` under the test's cgroup in every
hierarchy), so the cgroups its systemd creates are removed with it. Needs root.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
T = TypeVar("T")

# Runs in the new namespaces, as PID 1, until it execs systemd.
_SETUP = r"""
set -e
mount -t tmpfs -o mode=0755 tmpfs "$W"
mkdir "$W/upper" "$W/work" "$W/root"
mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$W/upper,workdir=$W/work" "$W/root"
R="$W/root"
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
# A cgroup2 hierarchy of its own: mounted inside the cgroup namespace, its root is this
# boot's cgroup (the bound /sys shows the machine's whole tree, where systemd would create
# its slices at the top), and systemd 256+ refuses cgroup v1 anyway.
mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
mount -t tmpfs -o mode=0755,nosuid tmpfs "$R/dev"
for n in null zero full random urandom tty; do
    touch "$R/dev/$n"
    mount --bind "/dev/$n" "$R/dev/$n"
done
mkdir "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
ln -s /proc/self/fd "$R/dev/fd"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/dev/shm"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$R/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/tmp"
# pivot_root, not chroot: the kernel refuses user namespaces (PrivateUsers=, as in the
# collector's unit) to a chrooted process.
cd "$R"
mkdir -p .oldroot
pivot_root . .oldroot
umount -l /.oldroot
rmdir /.oldroot
# Shared within this namespace (its own peer group; the machine's mounts are private to
# it), as systemd-nspawn leaves a container's root: systemd sets up credentials in a
# child mount namespace and relies on the mounts propagating back.
mount --make-rshared /
cd /
exec /usr/bin/env -i container=other "PATH=$PATH" /lib/systemd/systemd --system --unit=basic.target
"""


class BootError(RuntimeError):
    pass


def wait_for(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    accept: Callable[[T], bool] | None = None,
    interval: float = 0.2,
) -> T:
    """Poll ``probe`` until its value is truthy (or ``accept`` takes it); fail naming
    ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and (accept(value) if accept else bool(value)):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}: {value!r}")
        time.sleep(interval)


def _die_with_parent() -> None:
    """In the boot's first process: SIGKILL when the test process dies, however it dies
    (unshare's --kill-child then takes PID 1 and so the whole namespace with it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _cgroup_dirs() -> list[Path]:
    """This process's cgroup directory in every mounted hierarchy (v1 and v2)."""
    controllers = {
        line.split()[0]
        for line in Path("/proc/cgroups").read_text().splitlines()[1:]
        if line.strip()
    }
    own: dict[frozenset[str], str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        own[frozenset(c for c in ctrls.split(",") if c)] = path
    dirs: dict[frozenset[str], Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(" "), right.split(" ")
        fstype, superopts = rfields[0], rfields[2] if len(rfields) > 2 else ""
        if fstype == "cgroup2":
            key: frozenset[str] = frozenset()
        elif fstype == "cgroup":
            opts = superopts.split(",")
            key = frozenset(o for o in opts if o in controllers or o.startswith("name="))
        else:
            continue
        root, mountpoint = fields[3], fields[4]
        ours = own.get(key)
        if ours is None or key in dirs or not ours.startswith(root):
            continue
        dirs[key] = Path(mountpoint) / ours[len(root) :].lstrip("/")
    return list(dirs.values())


_CGROUP_PREFIX = "acme-preflight-boot-"


def _sweep_stale_cgroups(parent: Path) -> None:
    """Empty cgroups of boots whose test was killed before close() (a live boot's cgroup
    holds processes, so rmdir leaves it alone)."""
    for old in parent.glob(f"{_CGROUP_PREFIX}*"):
        try:
            if time.time() - old.stat().st_mtime > 60:
                _remove_cgroup_tree(old)
        except OSError:
            continue


def _remove_cgroup_tree(top: Path) -> None:
    for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):  # still populated: tried again by the caller
            os.rmdir(dirpath)


class BootedSystem:
    """systemd as PID 1 on an overlay of ``lower`` (see the module docstring)."""

    def __init__(
        self,
        workdir: Path,
        lower: Path = Path("/"),
        *,
        boot_timeout: float = 60,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "mnt").mkdir(exist_ok=True)
        self._console: IO[bytes] = open(workdir / "console.log", "wb")  # noqa: SIM115
        self._labs: list[subprocess.Popen[str]] = []
        self._cgroups: list[Path] = []
        self._proc = subprocess.Popen(
            [
                # Waits for "go" before making the namespaces: by then _enter_own_cgroups
                # has moved it into this boot's cgroups, which become the namespace's root.
                "sh",
                "-c",
                'read -r go && exec "$@"',
                "sh",
                "unshare",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount",
                "--propagation",
                "private",
                "--net",
                "--uts",
                "--cgroup",
                "sh",
                "-c",
                _SETUP,
            ],
            env={
                "W": str(workdir / "mnt"),
                "LOWER": str(lower),
                "PATH": PATH,
            },
            stdin=subprocess.PIPE,
            stdout=self._console,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        try:
            self._enter_own_cgroups()
            assert self._proc.stdin is not None
            self._proc.stdin.write(b"go\n")
            self._proc.stdin.close()
            self.pid = wait_for(self._pid1, 15, "systemd to start as PID 1")
            state = wait_for(self._booted, boot_timeout, "systemd to finish booting")
            if state not in ("running", "degraded"):
                raise BootError(f"systemd is {state}: {self.console()}")
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ boot

    def _enter_own_cgroups(self) -> None:
        # Before the cgroup namespace is made (the script waits for "go"): its root becomes
        # this cgroup, so what systemd creates lands below it and goes in close().
        name = f"{_CGROUP_PREFIX}{uuid.uuid4().hex[:12]}"
        for parent in _cgroup_dirs():
            _sweep_stale_cgroups(parent)
            d = parent / name
            try:
                d.mkdir()
            except OSError:
                continue
            self._cgroups.append(d)
            try:
                for knob in ("cpuset.cpus", "cpuset.mems"):  # v1 cpuset: empty until copied
                    if (parent / knob).exists():
                        (d / knob).write_text((parent / knob).read_text())
                (d / "cgroup.procs").write_text(f"{self._proc.pid}\n")
            except OSError:
                pass  # stays in the parent's cgroup of this hierarchy

    def _pid1(self) -> int | None:
        if self._proc.poll() is not None:
            raise BootError(f"the boot namespace exited: {self.console()}")
        try:
            children = Path(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children").read_text()
        except OSError:
            return None
        for pid in children.split():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
            except OSError:
                continue
        return None

    def _booted(self) -> str | None:
        if self._proc.poll() is not None:
            raise BootError(f"systemd exited while booting: {self.console()}")
        out = self.run("systemctl", "is-system-running", timeout=20).stdout.strip()
        return out if out in ("running", "degraded", "maintenance", "stopping") else None

    def console(self) -> str:
        self._console.flush()
        return (self.workdir / "console.log").read_text(errors="replace")[-4000:]

    # ------------------------------------------------------------------ inside

    def command(self, *cmd: str, env: Mapping[str, str] | None = None) -> list[str]:
        """The argv that runs ``cmd`` inside the booted system (root, namespaces, cwd /)."""
        base = {"PATH": PATH, "LANG": "C.UTF-8", "HOME": "/root", "SYSTEMD_PAGER": ""}
        args = [f"{k}={v}" for k, v in {**base, **(env or {})}.items()]
        enter = ["nsenter", f"--target={self.pid}", "--all", "--root", "--wd", "--"]
        return [*enter, "/usr/bin/env", "-i", *args, *cmd]

    def run(
        self,
        *cmd: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
        input: str | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.command(*cmd, env=env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def path(self, inside: str) -> Path:
        """Where the test reaches a path of the booted root (PID 1's root directory)."""
        return Path(f"/proc/{self.pid}/root") / inside.lstrip("/")

    def write(self, inside: str, data: str | bytes, mode: int = 0o644) -> str:
        target = self.path(inside)
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            data = data.encode()
        target.write_bytes(data)
        target.chmod(mode)
        return inside

    def put(self, src: Path, inside: str, mode: int = 0o644) -> str:
        return self.write(inside, src.read_bytes(), mode)

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args, check=check)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str, *args: str) -> str:
        """``journalctl -u UNIT -o cat`` (after a flush, so the last lines are in)."""
        self.run("journalctl", "--flush", timeout=30)
        return self.run(
            "journalctl", "--no-pager", "-u", unit, "-o", "cat", *args, check=True
        ).stdout

    def journal_json(self, unit: str, *args: str) -> list[dict[str, Any]]:
        self.run("journalctl", "--flush", timeout=30)
        out = self.run(
            "journalctl", "--no-pager", "-u", unit, "-o", "json", *args, check=True
        ).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def serve_lab(self, workdir: Path) -> Path:
        """The DigiCert lab (HTTPS on 127.0.0.2:443, DNS on 127.0.0.53) in this system's
        network namespace, run by a helper process of the test (it stops in close());
        returns its CA bundle, which the caller installs into the root's trust store."""
        workdir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            [
                "nsenter",
                f"--target={self.pid}",
                "--net",
                "--",
                sys.executable,
                "-m",
                "tests.systemdboot",
                "lab",
                str(workdir),
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._labs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line != "ready\n":
            proc.kill()
            _, err = proc.communicate(timeout=10)
            raise BootError(f"the lab did not start: {line}{err}")
        return workdir / "lab-ca.pem"

    # ------------------------------------------------------------------ end

    def close(self) -> None:
        for lab in self._labs:
            if lab.stdin is not None:
                lab.stdin.close()  # the helper stops at EOF
            try:
                lab.wait(timeout=10)
            except subprocess.TimeoutExpired:
                lab.kill()
                lab.wait(timeout=10)
            for stream in (lab.stdout, lab.stderr):
                if stream is not None:
                    stream.close()
        if self._proc.poll() is None:
            # --kill-child: unshare's death SIGKILLs PID 1, which ends the namespace.
            self._proc.send_signal(signal.SIGKILL)
        self._proc.wait(timeout=30)
        self._console.close()
        deadline = time.monotonic() + 10
        for cg in self._cgroups:
            # The namespace's processes are gone once their zombies are reaped.
            while cg.exists():
                _remove_cgroup_tree(cg)
                if not cg.exists() or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        shutil.rmtree(self.workdir / "mnt", ignore_errors=True)

    def __enter__(self) -> BootedSystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bump_deb_version(deb: Path, out: Path, version: str) -> Path:
    """The same .deb as ``version`` (e.g. N+1 for an upgrade): unpacked, control edited,
    rebuilt (fast gzip; the contents are the package's own)."""
    tree = out.with_suffix(".tree")
    shutil.rmtree(tree, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    text = control.read_text()
    control.write_text(
        "".join(
            f"Version: {version}\n" if line.startswith("Version:") else line
            for line in text.splitlines(keepends=True)
        )
    )
    subprocess.run(
        ["dpkg-deb", "-Zgzip", "-z1", "--build", str(tree), str(out)],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(tree, ignore_errors=True)
    return out


def _serve_lab(workdir: Path) -> int:
    """``python -m tests.systemdboot lab DIR``: the lab until stdin closes."""
    from tests.lab.digicert import DigicertLab
    from tests.lab.pki import make_pki

    with DigicertLab(make_pki(), workdir) as lab:
        print("ready", flush=True)
        sys.stdin.read()
        del lab
    return 0


def main(argv: Iterable[str]) -> int:
    args = list(argv)
    if len(args) == 2 and args[0] == "lab":
        return _serve_lab(Path(args[1]))
    print("usage: python -m tests.systemdboot lab DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
