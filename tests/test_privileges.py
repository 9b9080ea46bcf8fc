"""The ``privileges`` check, for real (namespaces, setpriv) and on fixture /proc trees."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
from pathlib import Path

import pytest

from agent.checks import privileges
from agent.checks.privileges import SANDBOX_DROPPED, SANDBOX_ENV
from agent.config import Config
from agent.context import CheckContext, SystemPaths
from agent.model import Outcome, Status
from tests.clirun import NOBODY, report_of, run_cli

# ----------------------------------------------------- the kernel's view, via syscalls

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_PR_CAPBSET_READ = 23


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def kernel_last_cap() -> int:
    """The highest capability the kernel knows: prctl(PR_CAPBSET_READ) says EINVAL past it."""
    libc = _libc()
    cap = 0
    while libc.prctl(_PR_CAPBSET_READ, cap + 1, 0, 0, 0) >= 0:
        cap += 1
    assert ctypes.get_errno() == errno.EINVAL
    return cap


def effective_caps() -> int:
    """This process's effective set from capget(2) (what a child started as root gets too)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc().capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    return int(data[0].effective) | int(data[1].effective) << 32


def cap_to_name(cap: int) -> str:
    """libcap's name for a capability number (independent of the check's own table)."""
    libcap = ctypes.CDLL(ctypes.util.find_library("cap") or "libcap.so.2")
    libcap.cap_to_name.restype = ctypes.c_void_p
    ptr = libcap.cap_to_name(cap)
    try:
        return (ctypes.string_at(ptr).decode() if ptr else f"{cap}").upper()
    finally:
        libcap.cap_free(ctypes.c_void_p(ptr))


def kernel_missing_caps() -> list[str]:
    eff = effective_caps()
    return [cap_to_name(bit) for bit in range(kernel_last_cap() + 1) if not eff >> bit & 1]


def selinux_enforcing() -> bool:
    try:
        return Path("/sys/fs/selinux/enforce").read_text().strip() == "1"
    except OSError:
        return False


def privileges_report(**kwargs: object) -> tuple[int, dict[str, object]]:
    proc = run_cli("check", "--only", "privileges", "--json", **kwargs)  # type: ignore[arg-type]
    assert proc.stderr == ""
    report = report_of(proc)
    assert [c["name"] for c in report["checks"]] == ["privileges"]
    check: dict[str, object] = report["checks"][0]
    assert report["status"] == check["status"]
    return proc.returncode, check


# ------------------------------------------------------------------- for real


def test_cap_names_match_libcap() -> None:
    """The check's table of names agrees with libcap for every capability this kernel has."""
    for bit in range(kernel_last_cap() + 1):
        assert privileges.cap_name(bit) == cap_to_name(bit)


def test_root_in_the_test_namespace() -> None:
    """Real root here: pass, or warn naming exactly the capabilities the kernel says we lack."""
    missing = kernel_missing_caps()
    enforcing = selinux_enforcing()
    rc, check = privileges_report()
    details = check["details"]
    assert isinstance(details, dict)
    assert details["euid"] == 0
    assert details["initial_user_namespace"] is True
    assert details["uid_map"] == ["0 0 4294967295"]
    if not missing and not enforcing:
        assert (rc, check["status"], check["reason"]) == (0, "pass", "ok")
        return
    assert (rc, check["status"]) == (1, "warn")
    assert details["missing_capabilities"] == missing
    if missing:
        assert check["reason"] == "reduced_capabilities"
        for name in missing[:6]:
            assert name in str(check["summary"])
    if enforcing:
        assert "SELinux" in str(check["summary"])
    assert check["remediation"]


def test_root_in_the_sandbox_tolerates_what_the_unit_drops() -> None:
    lacking = [c for c in kernel_missing_caps() if c not in SANDBOX_DROPPED]
    tolerated = [c for c in kernel_missing_caps() if c in SANDBOX_DROPPED]
    rc, check = privileges_report(env={SANDBOX_ENV: "1"})
    details = check["details"]
    assert isinstance(details, dict)
    assert details["sandboxed"] is True
    assert details["missing_capabilities"] == lacking
    assert details["sandbox_dropped_capabilities"] == tolerated
    if not lacking and not selinux_enforcing():
        assert (rc, check["status"]) == (0, "pass")
    else:
        assert (rc, check["status"]) == (1, "warn")


def test_root_only_inside_a_user_namespace_fails() -> None:
    rc, check = privileges_report(prefix=["unshare", "--user", "--map-root-user"])
    assert (rc, check["status"], check["reason"]) == (2, "fail", "user_namespace")
    details = check["details"]
    assert isinstance(details, dict)
    assert details["euid"] == 0  # root as far as the process can tell...
    assert details["initial_user_namespace"] is False  # ...but only in its own namespace
    assert details["uid_map"] == ["0 0 1"]
    assert "user namespace" in str(check["summary"])
    assert check["remediation"]


def test_not_root_fails() -> None:
    rc, check = privileges_report(prefix=NOBODY)
    assert (rc, check["status"], check["reason"]) == (2, "fail", "not_root")
    details = check["details"]
    assert isinstance(details, dict)
    assert details["euid"] == 65534
    assert "65534" in str(check["summary"])


def test_not_root_table_shows_the_remediation() -> None:
    proc = run_cli("check", "--only", "privileges", prefix=NOBODY)
    assert proc.returncode == 2
    assert "FAIL" in proc.stdout
    assert "-> Run acme-preflight (and later the DigiCert ACME agent) as root" in proc.stdout


# ------------------------------------------------------------ fixture /proc trees

FULL_CAPS_40 = (1 << 41) - 1


def cap_bit(name: str) -> int:
    return privileges.CAP_NAMES.index(name)


def tree(
    root: Path,
    *,
    uid: str = "0\t0\t0\t0",
    cap_eff: int | None = FULL_CAPS_40,
    uid_map: str = "         0          0 4294967295\n",
    cap_last: int = 40,
    selinux: str | None = None,
) -> SystemPaths:
    """A minimal /proc and /sys like the kernel's, under ``root``."""
    proc, sys_ = root / "proc", root / "sys"
    (proc / "self").mkdir(parents=True)
    (proc / "sys" / "kernel").mkdir(parents=True)
    status = ["Name:\tpython3", "Umask:\t0022", "State:\tR (running)", f"Uid:\t{uid}"]
    status.append("Gid:\t0\t0\t0\t0")
    if cap_eff is not None:
        status += [f"CapPrm:\t{cap_eff:016x}", f"CapEff:\t{cap_eff:016x}"]
    (proc / "self" / "status").write_text("\n".join(status) + "\n")
    (proc / "self" / "uid_map").write_text(uid_map)
    (proc / "sys" / "kernel" / "cap_last_cap").write_text(f"{cap_last}\n")
    if selinux is not None:
        (sys_ / "fs" / "selinux").mkdir(parents=True)
        (sys_ / "fs" / "selinux" / "enforce").write_text(selinux)
    else:
        sys_.mkdir()
    return SystemPaths(proc=proc, sys=sys_)


async def run_on(paths: SystemPaths) -> Outcome:
    return await privileges.run(CheckContext(Config(), paths))


@pytest.fixture(autouse=True)
def _no_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SANDBOX_ENV, raising=False)


async def test_full_root_passes(tmp_path: Path) -> None:
    out = await run_on(tree(tmp_path))
    assert (out.status, out.reason) == (Status.PASS, "ok")
    assert out.details["missing_capabilities"] == []


async def test_setuid_root_counts_the_effective_uid(tmp_path: Path) -> None:
    out = await run_on(tree(tmp_path, uid="1000\t0\t0\t0"))
    assert out.status is Status.PASS


async def test_reduced_capabilities_warn_naming_them(tmp_path: Path) -> None:
    caps = FULL_CAPS_40 & ~(1 << cap_bit("CAP_NET_ADMIN")) & ~(1 << cap_bit("CAP_SYS_ADMIN"))
    out = await run_on(tree(tmp_path, cap_eff=caps))
    assert (out.status, out.reason) == (Status.WARN, "reduced_capabilities")
    assert out.details["missing_capabilities"] == ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"]
    assert "CAP_NET_ADMIN, CAP_SYS_ADMIN" in out.summary
    assert "CapabilityBoundingSet" in out.remediation


async def test_docker_default_capabilities_warn_with_a_short_summary(tmp_path: Path) -> None:
    # Docker's default set: the 14 capabilities a container keeps.
    kept = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
            "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]  # fmt: skip
    caps = sum(1 << cap_bit(n) for n in kept)
    assert f"{caps:016x}" == "00000000a80425fb"
    out = await run_on(tree(tmp_path, cap_eff=caps))
    assert out.status is Status.WARN
    assert len(out.details["missing_capabilities"]) == 41 - 14
    assert "and 21 more" in out.summary


async def test_an_older_kernel_does_not_expect_newer_capabilities(tmp_path: Path) -> None:
    # Linux 5.4: cap_last_cap 37 (no CAP_PERFMON, CAP_BPF, CAP_CHECKPOINT_RESTORE)
    out = await run_on(tree(tmp_path, cap_eff=(1 << 38) - 1, cap_last=37))
    assert out.status is Status.PASS


async def test_selinux_enforcing_warns(tmp_path: Path) -> None:
    out = await run_on(tree(tmp_path, selinux="1"))
    assert (out.status, out.reason) == (Status.WARN, "selinux_enforcing")
    assert "SELinux enforcing" in out.summary
    assert "ausearch" in out.remediation
    assert out.details["selinux_enforcing"] is True


async def test_selinux_permissive_passes(tmp_path: Path) -> None:
    out = await run_on(tree(tmp_path, selinux="0"))
    assert out.status is Status.PASS
    assert out.details["selinux_enforcing"] is False


async def test_reduced_capabilities_and_selinux_both_named(tmp_path: Path) -> None:
    caps = FULL_CAPS_40 & ~(1 << cap_bit("CAP_DAC_OVERRIDE"))
    out = await run_on(tree(tmp_path, cap_eff=caps, selinux="1"))
    assert (out.status, out.reason) == (Status.WARN, "reduced_capabilities")
    assert "CAP_DAC_OVERRIDE" in out.summary and "SELinux" in out.summary
    assert "CapabilityBoundingSet" in out.remediation and "ausearch" in out.remediation


async def test_sandbox_tolerates_only_what_the_unit_drops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dropped = sum(1 << cap_bit(n) for n in SANDBOX_DROPPED)
    paths = tree(tmp_path, cap_eff=FULL_CAPS_40 & ~dropped)
    # outside the sandbox the same set warns
    assert (await run_on(paths)).status is Status.WARN
    monkeypatch.setenv(SANDBOX_ENV, "1")
    out = await run_on(paths)
    assert out.status is Status.PASS
    assert sorted(out.details["sandbox_dropped_capabilities"]) == sorted(SANDBOX_DROPPED)
    assert out.details["missing_capabilities"] == []


async def test_sandbox_still_warns_about_other_capabilities(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SANDBOX_ENV, "1")
    caps = FULL_CAPS_40 & ~(1 << cap_bit("CAP_SYS_TIME")) & ~(1 << cap_bit("CAP_DAC_OVERRIDE"))
    out = await run_on(tree(tmp_path, cap_eff=caps))
    assert out.status is Status.WARN
    assert out.details["missing_capabilities"] == ["CAP_DAC_OVERRIDE"]
    assert out.details["sandbox_dropped_capabilities"] == ["CAP_SYS_TIME"]
    assert "CAP_SYS_TIME" not in out.summary


async def test_not_root_in_fixture_fails(tmp_path: Path) -> None:
    out = await run_on(tree(tmp_path, uid="0\t1000\t1000\t1000", cap_eff=0))
    assert (out.status, out.reason) == (Status.FAIL, "not_root")
    assert "1000" in out.summary


async def test_root_in_a_user_namespace_fails(tmp_path: Path) -> None:
    out = await run_on(tree(tmp_path, uid_map="         0     100000      65536\n"))
    assert (out.status, out.reason) == (Status.FAIL, "user_namespace")
    assert "0 100000 65536" in out.summary


async def test_split_initial_namespace_map_is_not_the_initial_namespace(tmp_path: Path) -> None:
    out = await run_on(tree(tmp_path, uid_map="0 0 1000\n1000 1000 4294966295\n"))
    assert (out.status, out.reason) == (Status.FAIL, "user_namespace")


async def test_unreadable_proc_is_an_error_not_a_pass(tmp_path: Path) -> None:
    out = await run_on(SystemPaths(proc=tmp_path / "no-proc", sys=tmp_path / "no-sys"))
    assert (out.status, out.reason) == (Status.ERROR, "proc_unreadable")
    assert out.remediation
