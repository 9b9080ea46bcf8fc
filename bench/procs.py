"""The benchmarks' peers as separate processes: the DigiCert lab and the real collector.

Running them out of process keeps their CPU and memory out of the figures of the
agent under test (and out of its GIL). Both only bind 127.0.0.x.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from common import ROOT

TOKEN = "bench-collector-token-0123456789"
FQDN_NAME = "www.lab.test"  # the "local web server" name for fqdn_resolution

# A child that starts DigicertLab (HTTPS :443 on 127.0.0.2, DNS :53 on 127.0.0.53) and the
# sensor proxy (127.0.0.4:48999), prints one JSON line, and runs until stdin closes.
_LAB = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from tests.lab.digicert import DigicertLab
from tests.lab.pki import make_pki
workdir = Path(sys.argv[1])
lab = DigicertLab(make_pki(), workdir)
sensor = lab.start_sensor()
lab.dns.set(sys.argv[3], ["127.0.0.1"])
print(json.dumps({"ca_bundle": str(lab.ca_bundle), "https_port": lab.https.port,
                  "nameserver": lab.nameserver, "sensor": list(sensor.address)}), flush=True)
sys.stdin.read()
lab.close()
"""


class Child:
    """A subprocess that runs until :meth:`close`; ``info`` is its first stdout line."""

    def __init__(self, argv: list[str], ready: str, stdin: bool = False, **kw: Any) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            **kw,
        )
        assert self.proc.stdout is not None
        self.line = self._await_line(self.proc.stdout, ready)

    def _await_line(self, out: IO[str], ready: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = out.readline()
            if not line:
                raise RuntimeError(f"{self.proc.args!r} exited with {self.proc.wait()}")
            if re.search(ready, line):
                return line.strip()
        raise RuntimeError(f"{self.proc.args!r} did not become ready")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LabProcess(Child):
    """The DigiCert lab with the sensor, serving from a child process."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(
            [sys.executable, "-c", _LAB, str(workdir), str(ROOT), FQDN_NAME],
            ready=r"^\{",
            stdin=True,
        )
        self.info: dict[str, Any] = json.loads(self.line)
        self.ca_bundle = Path(self.info["ca_bundle"])
        self.workdir = workdir

    def agent_config(self, state_dir: Path, **overrides: Any) -> dict[str, dict[str, Any]]:
        """All six checks against this lab, sensor included, as config data."""
        from tests.lab.config import lab_config_data

        base: dict[str, Any] = {
            "agent": {"timeout": "2s", "log_level": "warning", "jitter": 0},
            "fqdn": {"names": [FQDN_NAME]},
            "sensor": {"host": self.info["sensor"][0], "version": "3.8.47"},
        }
        for section, values in overrides.items():
            base.setdefault(section, {}).update(values)
        return lab_config_data(
            state_dir,
            port=self.info["https_port"],
            nameserver=self.info["nameserver"],
            overrides=base,
        )


class CollectorProcess(Child):
    """``python -m collector serve`` on a free loopback port with its own database."""

    def __init__(
        self, workdir: Path, synchronous: str = "full", listen: str = "127.0.0.1:0"
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "tokens").write_text(TOKEN + "\n")
        (workdir / "collector.toml").write_text(f'synchronous = "{synchronous}"\n')
        self.db = workdir / "collector.sqlite3"
        super().__init__(
            [
                sys.executable,
                "-m",
                "collector",
                "serve",
                "--config",
                str(workdir / "collector.toml"),
                "--listen",
                listen,
                "--db",
                str(self.db),
                "--tokens-file",
                str(workdir / "tokens"),
            ],
            ready=r"listening on",
            stderr=subprocess.DEVNULL,
        )
        self.url = self.line.rsplit(" ", 1)[1]

    def stored(self) -> int:
        """Reports in the collector's database (read-only, beside the running server)."""
        import sqlite3

        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0])


def etc_fixture(workdir: Path, nameserver: str) -> dict[str, Path]:
    """/etc/resolv.conf and /etc/hosts for the bench's mount namespace: the lab DNS."""
    import socket

    etc = workdir / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    (etc / "resolv.conf").write_text(f"nameserver {nameserver}\noptions timeout:1 attempts:1\n")
    (etc / "hosts").write_text(
        f"127.0.0.1 localhost\n::1 localhost\n127.0.1.1 {host}.lab.test {host}\n"
        f"127.0.0.1 {FQDN_NAME}\n"
    )
    return {"resolv.conf": etc / "resolv.conf", "hosts": etc / "hosts"}
