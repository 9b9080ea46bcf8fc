"""``privileges``: the process has real root, as DigiCert's ACME agent needs.

Real root means euid 0 in the initial user namespace with the full capability
set. Root inside a user namespace (containers, ``unshare --user``) cannot do
what the ACME agent must: write certificates and reload the web server.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agent.context import CheckContext
from agent.model import Outcome, Status

INITIAL_UID_MAP = ("0", "0", "4294967295")

# Linux capability numbers (include/uapi/linux/capability.h).
CAP_NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip

# Capabilities the shipped systemd unit removes from acme-preflight itself
# (ProtectKernelModules, ProtectClock, ProtectKernelLogs, ...). The ACME agent runs
# in its own unit, so their absence here says nothing about the host: when the
# unit sets ACME_PREFLIGHT_SANDBOX=1 they are reported but do not warn.
SANDBOX_DROPPED = frozenset(
    {
        "CAP_SYS_MODULE",
        "CAP_SYS_TIME",
        "CAP_WAKE_ALARM",
        "CAP_SYSLOG",
        "CAP_SYS_RAWIO",
        "CAP_MKNOD",
        "CAP_SYS_BOOT",
        "CAP_SYS_TTY_CONFIG",
        "CAP_LINUX_IMMUTABLE",
        "CAP_BLOCK_SUSPEND",
        "CAP_BPF",
        "CAP_PERFMON",
        "CAP_CHECKPOINT_RESTORE",
        "CAP_SYS_PACCT",
        "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE",
        "CAP_IPC_LOCK",
    }
)
SANDBOX_ENV = "ACME_PREFLIGHT_SANDBOX"


@dataclass(frozen=True)
class ProcFacts:
    euid: int | None
    uid_map: tuple[tuple[str, ...], ...]
    cap_eff: int | None
    cap_last: int
    selinux_enforcing: bool | None


def cap_name(bit: int) -> str:
    return CAP_NAMES[bit] if bit < len(CAP_NAMES) else f"CAP_{bit}"


def read_facts(proc: Path, sys: Path) -> ProcFacts:
    """What the check needs from ``/proc/self`` and ``/sys``; missing pieces are None."""
    euid: int | None = None
    cap_eff: int | None = None
    try:
        for line in (proc / "self" / "status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "Uid":
                euid = int(value.split()[1])
            elif key == "CapEff":
                cap_eff = int(value.strip(), 16)
    except (OSError, ValueError, IndexError):
        pass
    try:
        uid_map = tuple(
            tuple(line.split()) for line in (proc / "self" / "uid_map").read_text().splitlines()
        )
    except OSError:
        uid_map = ()
    try:
        cap_last = int((proc / "sys" / "kernel" / "cap_last_cap").read_text().strip())
    except (OSError, ValueError):
        cap_last = len(CAP_NAMES) - 1
    try:
        selinux: bool | None = (sys / "fs" / "selinux" / "enforce").read_text().strip() == "1"
    except OSError:
        selinux = None
    return ProcFacts(euid, uid_map, cap_eff, cap_last, selinux)


OK = "ok"
PROC_UNREADABLE = "proc_unreadable"
NOT_ROOT = "not_root"
USER_NAMESPACE = "user_namespace"
REDUCED_CAPABILITIES = "reduced_capabilities"
SELINUX_ENFORCING = "selinux_enforcing"

# Every reason this check gives, with its remediation (see agent.checks.reason_table).
REASONS: dict[str, str] = {
    OK: "",
    PROC_UNREADABLE: "Make sure /proc is mounted and readable by acme-preflight.",
    NOT_ROOT: (
        "Run acme-preflight (and later the DigiCert ACME agent) as root, e.g. with sudo or "
        "as the shipped systemd service."
    ),
    USER_NAMESPACE: (
        "Run on the host itself (not in a rootless container or user namespace): the ACME "
        "agent must write certificates and reload the web server as real root."
    ),
    REDUCED_CAPABILITIES: (
        "Run without a capability bounding set (no CapabilityBoundingSet= or --cap-drop for "
        "this host's ACME agent); a restricted root may be unable to install certificates or "
        "reload the web server."
    ),
    SELINUX_ENFORCING: (
        "With SELinux enforcing, make sure the ACME agent's domain may write the certificate "
        "files and reload the web server (check 'ausearch -m avc')."
    ),
}


def missing_caps(cap_eff: int, cap_last: int) -> list[str]:
    return [cap_name(bit) for bit in range(cap_last + 1) if not cap_eff >> bit & 1]


def evaluate(facts: ProcFacts, sandboxed: bool = False) -> Outcome:
    """Turn the facts into pass / warn / fail."""
    details: dict[str, object] = {
        "euid": facts.euid,
        "uid_map": [" ".join(row) for row in facts.uid_map],
        "initial_user_namespace": facts.uid_map == (INITIAL_UID_MAP,),
        "cap_eff": None if facts.cap_eff is None else f"{facts.cap_eff:016x}",
        "selinux_enforcing": facts.selinux_enforcing,
        "sandboxed": sandboxed,
    }
    if facts.euid is None:
        return Outcome(
            Status.ERROR,
            "Could not read the effective user id from /proc/self/status",
            PROC_UNREADABLE,
            REASONS[PROC_UNREADABLE],
            details,
        )
    if facts.euid != 0:
        return Outcome(
            Status.FAIL,
            f"Not running as root (effective uid {facts.euid}); the ACME agent needs root",
            NOT_ROOT,
            REASONS[NOT_ROOT],
            details,
        )
    if facts.uid_map != (INITIAL_UID_MAP,):
        mapping = "; ".join(" ".join(row) for row in facts.uid_map) or "unreadable"
        return Outcome(
            Status.FAIL,
            f"Root only inside a user namespace (uid_map {mapping}), not real root on the host",
            USER_NAMESPACE,
            REASONS[USER_NAMESPACE],
            details,
        )
    warnings: list[str] = []
    reason = ""
    remediation = ""
    if facts.cap_eff is not None:
        missing = missing_caps(facts.cap_eff, facts.cap_last)
        tolerated = [c for c in missing if sandboxed and c in SANDBOX_DROPPED]
        lacking = [c for c in missing if c not in tolerated]
        details["missing_capabilities"] = lacking
        details["sandbox_dropped_capabilities"] = tolerated
        if lacking:
            shown = ", ".join(lacking[:6]) + (
                f" and {len(lacking) - 6} more" if len(lacking) > 6 else ""
            )
            warnings.append(f"a reduced capability set (missing {shown})")
            reason = REDUCED_CAPABILITIES
            remediation = REASONS[REDUCED_CAPABILITIES]
    if facts.selinux_enforcing:
        warnings.append("SELinux enforcing, which may confine the ACME agent")
        reason = reason or SELINUX_ENFORCING
        remediation = (remediation + " " if remediation else "") + REASONS[SELINUX_ENFORCING]
    if warnings:
        return Outcome(
            Status.WARN, "Root, but with " + "; ".join(warnings), reason, remediation, details
        )
    return Outcome(
        Status.PASS,
        "Real root: uid 0 in the initial user namespace with full capabilities",
        OK,
        "",
        details,
    )


async def run(ctx: CheckContext) -> Outcome:
    facts = read_facts(ctx.paths.proc, ctx.paths.sys)
    return evaluate(facts, sandboxed=os.environ.get(SANDBOX_ENV) == "1")
