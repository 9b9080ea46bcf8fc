"""docs/collector.md's quick start, extracted from the page and run as written in a scratch root.

The root is an overlay of this machine's root (tests/pkgroot.py): /etc and /var/lib are the
machine's own as a fresh machine has them, and everything the commands write vanishes with it.
The collector it starts listens on 0.0.0.0 inside the test's network namespace (only lo).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clirun import REPO
from tests.collectorutil import report
from tests.pkgroot import PATH, PackageRoot

pytestmark = pytest.mark.usefixtures("netns_isolated")

DOC = REPO / "docs" / "collector.md"
ETC = "/etc/acme-preflight-collector"


def quickstart() -> str:
    """The one ``sh`` block of the "Quick start" section."""
    section = DOC.read_text().split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the quick start is one sh block"
    return str(blocks[0])


@pytest.fixture
def root(tmp_path: Path) -> Iterator[PackageRoot]:
    r = PackageRoot(tmp_path / "root")
    try:
        yield r
    finally:
        r.close()


def _request(
    cafile: Path, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, bytes]:
    """Over TLS to 127.0.0.1:8475, verifying the certificate for this host's name."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection(("127.0.0.1", 8475), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=socket.gethostname()) as tls,
    ):
        conn = http.client.HTTPConnection("127.0.0.1", 8475, timeout=10)
        conn.sock = tls
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()


def test_the_quick_start_runs_as_written_on_a_fresh_machine(root: PackageRoot) -> None:
    # a fresh machine: nothing the quick start makes is there before it runs
    assert not root.path(ETC).exists()
    assert not root.path("/var/lib/acme-preflight-collector").exists()
    bindir = Path(sys.executable).parent  # the collector command, as `make install` puts it
    for path in {REPO, Path(sys.prefix)}:  # the checkout and its venv, wherever they are
        root.bind(path)
    proc = subprocess.Popen(
        root.command("sh", "-e", "-c", quickstart(), env={"PATH": f"{bindir}:{PATH}"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # the shell and the collector it runs stop together
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            proc.wait(30)
            raise AssertionError(f"the quick start failed: {proc.stderr.read()}")  # type: ignore[union-attr]
        assert line == "acme-preflight-collector: listening on https://0.0.0.0:8475\n"

        etc = root.path(ETC)
        for name, mode in (
            ("", 0o700),
            ("tokens", 0o600),
            ("read-tokens", 0o600),
            ("key.pem", 0o600),
        ):
            assert (os.stat(etc / name).st_mode & 0o777) == mode, name
        token = (etc / "tokens").read_text().split()[0]
        read_token = (etc / "read-tokens").read_text().split()[0]
        assert len(token) == len(read_token) == 48 and token != read_token
        cert = etc / "cert.pem"

        sent = report("quickstart-host")
        status, body = _request(
            cert,
            "POST",
            "/api/v1/reports",
            json.dumps(sent).encode(),
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        assert status == 202, body
        # reads need the read token (the collector listens beyond loopback)
        assert _request(cert, "GET", "/api/v1/hosts", None, {})[0] == 401
        assert (
            _request(cert, "GET", "/api/v1/hosts", None, {"Authorization": f"Bearer {token}"})[0]
            == 401
        )
        basic = base64.b64encode(f"admin:{read_token}".encode()).decode()
        status, body = _request(
            cert, "GET", "/api/v1/hosts", None, {"Authorization": f"Basic {basic}"}
        )
        assert status == 200, body
        assert "quickstart-host" in body.decode()
        assert root.path("/var/lib/acme-preflight-collector/collector.db").is_file()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    err = proc.stderr.read()  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]
    proc.stdout.close()  # type: ignore[union-attr]
    # the documented setup is the safe one: no start-up warning about it
    assert "acme-preflight-collector: warning:" not in err, err
