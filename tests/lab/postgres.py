"""A real PostgreSQL server for tests and benchmarks: Debian's ``postgresql`` binaries.

``initdb`` + ``pg_ctl`` in a temporary directory, listening on a unix socket only (no TCP
port at all), run as the ``postgres`` user (the server refuses to run as root). Password
authentication (SCRAM) is on, so the collector's ``[store] password_file`` is exercised by
every test that uses it. One server per test session; each test gets its own database.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

USER = "collector"
PASSWORD = "pg-test-" + uuid.uuid4().hex  # a fresh secret per session
RUN_AS = "postgres"  # the Debian package's system user


def bindir() -> Path | None:
    """The newest installed server's bin directory, or None without the package."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version_key)
    return Path(found[-1]).parent if found else None


def _version_key(p: str) -> int:
    try:
        return int(Path(p).parent.parent.name)
    except ValueError:
        return 0


@dataclass
class PostgresServer:
    root: Path
    bin: Path
    fsync: bool = False  # tests: off (speed); benchmarks: on (the durable figure)
    port: int = 5432
    _databases: list[str] = field(default_factory=list)

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    def url(self, database: str) -> str:
        """A URL without the password (it comes from :attr:`password_file`)."""
        return f"postgresql://{USER}@/{database}?host={self.socket_dir}&port={self.port}"

    def _run_as(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "PGPASSWORD": PASSWORD}
        return subprocess.run(
            ["runuser", "-u", RUN_AS, "--", *cmd],
            check=check,
            capture_output=True,
            text=True,
            env=env,
            cwd="/",
            timeout=120,
        )

    def start(self) -> None:
        pw = pwd.getpwnam(RUN_AS)
        data = self.root / "data"
        self.socket_dir.mkdir()
        pwfile = self.root / "initdb-pw"
        pwfile.write_text(PASSWORD + "\n")
        for p in (self.root, self.socket_dir, pwfile):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        self._run_as(
            str(self.bin / "initdb"),
            "-D",
            str(data),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-instructions",
            "--no-sync",
        )
        pwfile.unlink()
        opts = f"-k {self.socket_dir} -c listen_addresses='' -p {self.port}"
        if not self.fsync:
            opts += " -F -c synchronous_commit=off -c full_page_writes=off"
        self._run_as(
            str(self.bin / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        )
        self.password_file.write_text(PASSWORD + "\n")
        self.password_file.chmod(0o600)

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = self._run_as(
            str(self.bin / "psql"),
            "-h",
            str(self.socket_dir),
            "-p",
            str(self.port),
            "-U",
            USER,
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            sql,
        )
        return out.stdout

    def create_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        self.psql(f"CREATE DATABASE {name}")
        self._databases.append(name)
        return name

    def stop(self) -> None:
        data = self.root / "data"
        if data.exists():
            self._run_as(
                str(self.bin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop", check=False
            )


@contextlib.contextmanager
def running(fsync: bool = False) -> Iterator[PostgresServer]:
    """A started server in a fresh directory; stopped and removed afterwards."""
    pg_bin = bindir()
    if pg_bin is None:
        raise RuntimeError("PostgreSQL is not installed (Debian package `postgresql`)")
    root = Path(tempfile.mkdtemp(prefix="acme-pf-pg-"))
    server = PostgresServer(root, pg_bin, fsync=fsync)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
