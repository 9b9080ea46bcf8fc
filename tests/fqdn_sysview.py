"""Run a command where /etc/hosts, /etc/resolv.conf, ... are fixture files.

getaddrinfo reads the real /etc files through nsswitch, so tests of the system
view run a subprocess in a private mount namespace (``unshare --mount``, private
propagation: nothing leaks to the host) with fixtures bind-mounted over them.
The caller is already in the test run's private network namespace, so the lab
DNS server on 127.0.0.53 is what a fixture resolv.conf points at.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ETC_FILES = ("hosts", "host.conf", "resolv.conf", "nsswitch.conf")


def write_etc(tmp: Path, files: Mapping[str, str]) -> dict[str, Path]:
    """Fixture files for ``/etc/<name>`` (each of ETC_FILES must be given)."""
    missing = set(ETC_FILES) - set(files)
    assert not missing, f"give every one of {ETC_FILES}; missing {missing}"
    etc = tmp / "etc"
    etc.mkdir(exist_ok=True)
    out = {}
    for name, text in files.items():
        (etc / name).write_text(text)
        out[name] = etc / name
    return out


def _script(etc: Mapping[str, Path]) -> str:
    mounts = " && ".join(f'mount --bind "{path}" "/etc/{name}"' for name, path in etc.items())
    return f'{mounts} && exec "$@"'


async def run_with_etc(
    etc: Mapping[str, Path], argv: Sequence[str], timeout: float = 30
) -> tuple[int, str, str]:
    """``argv`` in a mount namespace where /etc/<name> are the given files."""
    proc = await asyncio.create_subprocess_exec(
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        _script(etc),
        "sh",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


GAI_SCRIPT = """
import json, socket, sys
out = {}
for name in sys.argv[1:]:
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        out[name] = [i[4][0] for i in infos]
    except socket.gaierror as e:
        out[name] = e.errno
print(json.dumps(out))
"""


async def getaddrinfo_with_etc(etc: Mapping[str, Path], names: Sequence[str]) -> dict[str, Any]:
    """What real getaddrinfo answers for ``names`` with these /etc files."""
    rc, out, err = await run_with_etc(etc, [sys.executable, "-c", GAI_SCRIPT, *names])
    assert rc == 0, err
    result: dict[str, Any] = json.loads(out)
    return result
