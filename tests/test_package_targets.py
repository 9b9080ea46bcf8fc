"""The packages of the targets this machine cannot boot (Ubuntu, RHEL): what can be tested here.

- Every target's package names its interpreter in Depends:/Requires:, carries extension
  modules of exactly that CPython, and puts the venv's bin/python on it.
- The packages whose interpreter this machine has (CPython 3.11: RHEL 8/9's AppStream
  python3.11) are installed into a throwaway overlay of this root
  (tests/pkgroot.py) - the .rpm with this machine's rpm and ``--nodeps`` (RHEL's glibc and
  python3.11 packages cannot be had here; this root's python3.11 is the same version), the
  .deb with dpkg and its dependencies met - and every module of agent/ and collector/ is
  imported with the installed venv, which then runs ``config validate`` and ``check``.
- Ubuntu 22.04's python3.10 and 24.04's python3.12 are not Debian packages here: the image's
  pyenv CPython of that version stands in for /usr/bin/python3.X (and /usr/lib/python3.X)
  inside the root, the .deb is installed with ``dpkg --force-depends`` (its postinst compiles
  with that interpreter), and the venv imports everything and runs a check under it.

Debian 12 and 13 are booted for real: tests/test_systemd_boot.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import __version__
from tests.lab.config import write_lab_config
from tests.pkgroot import PackageRoot

pytestmark = pytest.mark.usefixtures("netns_isolated")

REPO = Path(__file__).resolve().parent.parent
DIST = REPO / "dist"
VENV = "/opt/acme-preflight"
# target -> interpreter (packaging/build.sh TARGETS)
DEBS = {
    "debian12": "python3.11",
    "debian13": "python3.13",
    "ubuntu2204": "python3.10",
    "ubuntu2404": "python3.12",
}
RPMS = {"el8": "python3.11", "el9": "python3.11"}

# Imports every module of the two packages (what a venv for the wrong Python fails at).
_IMPORT_ALL = r"""
import importlib, pkgutil, sys
import agent, collector
names = []
for pkg in (agent, collector):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        # __main__ runs the CLI; collector.store_pg (psycopg, bundled) is imported too
        if m.name.endswith(".__main__"):
            continue
        importlib.import_module(m.name)
        names.append(m.name)
print(sys.version_info[:2], len(names))
"""


def _arch() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()


def _deb(target: str) -> Path:
    path = DIST / f"acme-preflight_{__version__}_{target}_{_arch()}.deb"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make package` first (.ci/run does)", pytrace=False)
    return path


def _rpm(target: str) -> Path:
    found = sorted(DIST.glob(f"acme-preflight-{__version__}-1.{target}.*.rpm"))
    if len(found) != 1:
        pytest.fail(f"expected one {target} .rpm in {DIST}: run `make package`", pytrace=False)
    return found[0]


def _q(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def _extension_tags(names: list[str]) -> set[str]:
    return {
        m.group(1)
        for n in names
        if n.endswith(".so") and (m := re.search(r"\.(cpython-\d+|abi3)[^/]*\.so$", n))
    }


@pytest.mark.parametrize("target", list(DEBS))
def test_deb_names_its_interpreter_and_carries_its_wheels(target: str) -> None:
    interp = DEBS[target]
    deb = _deb(target)
    depends = _q("dpkg-deb", "-f", str(deb), "Depends")
    assert depends.split(",")[0].strip() == interp
    assert "procps" in depends  # /bin/kill for ExecReload=
    listing = _q("dpkg-deb", "-c", str(deb))
    assert f"./opt/acme-preflight/bin/python -> /usr/bin/{interp}" in listing
    assert f"./opt/acme-preflight/lib/{interp}/site-packages/agent/__init__.py" in listing
    tags = _extension_tags(listing.split())
    assert tags and tags <= {f"cpython-{interp.removeprefix('python').replace('.', '')}", "abi3"}
    assert f"version = {interp.removeprefix('python')}" in _pyvenv_cfg(deb)


def _pyvenv_cfg(deb: Path) -> str:
    proc = subprocess.run(
        ["sh", "-c", 'dpkg-deb --fsys-tarfile "$0" | tar -xO ./opt/acme-preflight/pyvenv.cfg', deb],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


@pytest.mark.parametrize("target", list(RPMS))
def test_rpm_names_its_interpreter_and_carries_its_wheels(target: str) -> None:
    rpm = _rpm(target)
    requires = _q("rpm", "-qp", "--requires", str(rpm)).split("\n")
    assert RPMS[target] in requires and "util-linux" in requires
    assert _q("rpm", "-qp", "--qf", "%{RELEASE}", str(rpm)) == f"1.{target}"
    files = _q("rpm", "-qpl", str(rpm)).split()
    assert _extension_tags(files) <= {"cpython-311", "abi3"}
    assert f"/opt/acme-preflight/lib/{RPMS[target]}/site-packages/agent/__init__.py" in files


@pytest.fixture
def root(tmp_path: Path) -> Iterator[PackageRoot]:
    r = PackageRoot(tmp_path / "root")
    try:
        yield r
    finally:
        r.close()


def _runs_under(root: PackageRoot, tmp_path: Path, version: str = "3.11") -> None:
    """The installed venv imports everything and the agent runs a check (against the lab
    config, so no name is looked up beyond loopback)."""
    proc = root.run(f"{VENV}/bin/python", "-c", _IMPORT_ALL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"({version.replace('.', ', ')}) "), proc.stdout
    assert int(proc.stdout.split()[-1]) > 40
    config = write_lab_config(tmp_path / "config.toml", state_dir=Path("/tmp/state"))
    root.put(config, "/tmp/config.toml")
    proc = root.run("acme-preflight", "--config", "/tmp/config.toml", "config", "validate")
    assert proc.returncode == 0, proc.stderr
    proc = root.run(
        "acme-preflight", "--config", "/tmp/config.toml", "check", "--json", "--only", "privileges"
    )
    # pass, or warn where the test itself runs with fewer capabilities: the check ran
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    (result,) = json.loads(proc.stdout)["checks"]
    assert (result["name"], result["status"] in ("pass", "warn")) == ("privileges", True)


@pytest.mark.parametrize("target", list(RPMS))
def test_rpm_installs_and_its_venv_runs_under_python311(
    target: str, root: PackageRoot, tmp_path: Path
) -> None:
    root.put(_rpm(target), "/tmp/pkg.rpm")
    assert root.run("rpm", "--initdb").returncode == 0
    # --nodeps: this root's rpm database knows nothing of Debian's python3.11 and glibc.
    proc = root.run("rpm", "-i", "--nodeps", "/tmp/pkg.rpm", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert root.run("rpm", "-q", "acme-preflight").stdout.startswith(
        f"acme-preflight-{__version__}-1.{target}"
    )
    _runs_under(root, tmp_path)
    # %post compiled the byte-code with the target's interpreter
    pyc = root.path(f"{VENV}/lib/python3.11/site-packages/agent/__pycache__")
    assert any(p.name.endswith(".cpython-311.pyc") for p in pyc.iterdir())
    proc = root.run("rpm", "-e", "--nodeps", "acme-preflight", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not root.path(VENV).exists()


PYENV = Path("/root/.pyenv/versions")


def _provide_interpreter(root: PackageRoot, version: str) -> None:
    """The distribution's /usr/bin/pythonX.Y inside the root, from the image's pyenv build of
    that version (home = /usr/bin in the venv's pyvenv.cfg finds /usr/lib/pythonX.Y)."""
    found = sorted(PYENV.glob(f"{version}.*"))
    assert found, f"no CPython {version} under {PYENV} (the machine image ships it)"
    root.path(f"/usr/bin/python{version}").symlink_to(found[-1] / "bin" / f"python{version}")
    root.path(f"/usr/lib/python{version}").symlink_to(found[-1] / "lib" / f"python{version}")


@pytest.mark.parametrize(("target", "version"), [("ubuntu2204", "3.10"), ("ubuntu2404", "3.12")])
def test_ubuntu_deb_installs_and_runs_with_its_python(
    target: str, version: str, root: PackageRoot, tmp_path: Path
) -> None:
    _provide_interpreter(root, version)
    root.put(_deb(target), "/tmp/pkg.deb")
    # --force-depends: python3.X is there (above) but not as a Debian package
    proc = root.run("dpkg", "-i", "--force-depends", "/tmp/pkg.deb", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = root.path(f"{VENV}/lib/python{version}/site-packages")
    assert (site / "agent" / "__init__.py").is_file()
    assert not list(site.glob("**/*.cpython-311-*.so"))
    shebang = root.path(f"{VENV}/bin/acme-preflight").read_text().splitlines()[0]
    assert shebang == f"#!{VENV}/bin/python"
    # postinst compiled the byte-code with the target's interpreter
    tag = "cpython-" + version.replace(".", "")
    assert any(p.name.endswith(f".{tag}.pyc") for p in (site / "agent" / "__pycache__").iterdir())
    _runs_under(root, tmp_path, version)
