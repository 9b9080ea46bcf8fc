"""The installed package under a real systemd (tests/systemdboot.py), one boot per root.

Each distribution root boots once (module scope) and the tests below run in order on it,
like an operator would: install the .deb (its postinst enables and starts the agent), look at
the service, reload it, break its config, start the collector and deliver over TLS, take the
collector away (the spool fills) and bring it back, hang the daemon (the watchdog kills and
restarts it), upgrade N -> N+1, remove, purge. The DigiCert lab runs in the boot's own
network namespace; nothing here can reach beyond loopback.

Two settings are the test's, not the package's, each through a drop-in an operator could
write: ``WatchdogSec=3s`` (the shipped 60 s would make a missing ping show only after a
minute; with 3 s a daemon that stops pinging is killed within the test, so NRestarts=0 over
the run proves the pings) and the collector's TLS key as a credential (how docs/install.md
says to give the DynamicUser collector a root-only key).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from agent import __version__
from tests import distroots
from tests.collectorutil import TOKEN, TOKENS_TEXT
from tests.lab.config import lab_config_data, to_toml
from tests.systemdboot import BootedSystem, bump_deb_version, wait_for

REPO = Path(__file__).resolve().parent.parent
DIST = REPO / "dist"
AGENT = "acme-preflight.service"
COLLECTOR = "acme-preflight-collector.service"
CONF = "/etc/acme-preflight/config.toml"
STATE = "/var/lib/acme-preflight"
WEB_NAME = "www.boot.example"
COLLECTOR_URL = "https://127.0.0.1:8475"
WATCHDOG_S = 3
VENV_PY = "/opt/acme-preflight/bin/python"

# GET a URL from inside the booted root with the installed interpreter; prints
# {"status": N, "body": "..."}.
_FETCH = r"""
import json, ssl, sys, urllib.request, urllib.error
url, ca, token = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca) if ca else None
req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
try:
    with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
        print(json.dumps({"status": r.status, "body": r.read().decode()}))
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "body": e.read().decode()}))
"""

# Rows in the agent's spool (the daemon's own file, read-only).
_SPOOL_ROWS = r"""
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(db.execute("SELECT count(*) FROM reports").fetchone()[0])
"""

pytestmark = [pytest.mark.usefixtures("netns_isolated"), pytest.mark.systemd_boot]


@dataclass
class Target:
    name: str
    lower: Path
    deb: Path
    python: str


def _deb_for(target: str) -> Path:
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    path = DIST / f"acme-preflight_{__version__}_{target}_{arch}.deb"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make package` first (.ci/run does)", pytrace=False)
    return path


@pytest.fixture(scope="module", params=["debian12", "debian13"])
def target(request: pytest.FixtureRequest) -> Target:
    name: str = request.param
    if name == "debian12":  # this machine is Debian 12: its own root, through the overlay
        return Target(name, Path("/"), _deb_for(name), "python3.11")
    root = distroots.cached_root(name)
    if root is None:
        pytest.fail(
            f"no {name} root in {distroots.CACHE}: run `make test-roots` first (.ci/run does)",
            pytrace=False,
        )
    return Target(name, root, _deb_for(name), distroots.ROOTS[name].python)


@dataclass
class Host:
    boot: BootedSystem
    target: Target
    collector_ca: str
    config_data: dict[str, dict[str, Any]]

    def fetch(self, url: str, *, ca: str = "", token: str = "") -> tuple[int, str]:
        out = self.boot.run(VENV_PY, "-c", _FETCH, url, ca, token, check=True).stdout
        data = json.loads(out)
        return int(data["status"]), str(data["body"])

    def hosts(self) -> list[dict[str, Any]]:
        status, body = self.fetch(
            f"{COLLECTOR_URL}/api/v1/hosts", ca=self.collector_ca, token=TOKEN
        )
        assert status == 200, body
        data = json.loads(body)
        return list(data["hosts"] if isinstance(data, dict) else data)

    def report_ids(self) -> set[str]:
        status, body = self.fetch(
            f"{COLLECTOR_URL}/api/v1/hosts/boot-host/reports?limit=500",
            ca=self.collector_ca,
            token=TOKEN,
        )
        if status == 404:  # no report from this host yet
            return set()
        assert status == 200, body
        data = json.loads(body)
        reports = data["reports"] if isinstance(data, dict) else data
        return {r["report"]["report_id"] for r in reports}

    def spooled(self) -> int:
        proc = self.boot.run(VENV_PY, "-c", _SPOOL_ROWS, f"{STATE}/spool.sqlite3", check=True)
        return int(proc.stdout)

    def agent(self, *props: str) -> dict[str, str]:
        return self.boot.show(AGENT, *props)

    def runs(self) -> list[str]:
        return [
            line
            for line in self.boot.journal(AGENT).splitlines()
            if line.startswith("check run finished")
        ]

    def write_config(self, text: str) -> None:
        self.boot.write(CONF, text, 0o600)


def _agent_config(collector_ca: str) -> dict[str, dict[str, Any]]:
    data = lab_config_data(
        Path(STATE),
        overrides={
            "agent": {
                "interval": "1s",
                "jitter": 0,
                "timeout": "0.9s",
                "host_id": "boot-host",
                "log_level": "info",
            },
            # Discovery reads the web server config: proof the sandbox shows /etc/nginx.
            "fqdn": {"discover": True, "nginx_conf": "/etc/nginx/nginx.conf"},
            "collector": {"url": COLLECTOR_URL, "ca_file": collector_ca},
            "status": {"listen": "127.0.0.1:9775"},
        },
    )
    return data


def _prepare_root(boot: BootedSystem, work: Path) -> tuple[str, dict[str, dict[str, Any]]]:
    """Everything an operator sets up before installing: trust, tokens, configs, drop-ins."""
    lab_ca = boot.serve_lab(work / "lab")
    # The lab's "DigiCert" root joins the system trust store, as a corporate CA would.
    boot.put(lab_ca, "/usr/local/share/ca-certificates/acme-preflight-lab.crt")
    boot.run("update-ca-certificates", check=True)

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    collector_ca = "/etc/acme-preflight/collector-ca.pem"
    boot.write(collector_ca, ca.cert_pem.bytes())
    boot.write(
        "/etc/acme-preflight/collector-cert.pem", b"".join(b.bytes() for b in leaf.cert_chain_pems)
    )
    boot.write(
        "/etc/credstore/acme-preflight-collector.tls-key", leaf.private_key_pem.bytes(), 0o600
    )
    boot.write("/etc/credstore/acme-preflight-collector.tokens", TOKENS_TEXT, 0o600)
    boot.write("/etc/credstore/acme-preflight.collector-token", TOKEN, 0o600)
    boot.write(
        "/etc/systemd/system/acme-preflight-collector.service.d/tls.conf",
        "[Service]\nLoadCredential=collector-tls-key:acme-preflight-collector.tls-key\n",
    )
    boot.write(
        "/etc/systemd/system/acme-preflight.service.d/watchdog.conf",
        f"[Service]\nWatchdogSec={WATCHDOG_S}s\n",
    )
    boot.write(
        "/etc/acme-preflight/collector.toml",
        'listen = "127.0.0.1:8475"\n'
        'tokens_file = "/run/credentials/acme-preflight-collector.service/collector-tokens"\n'
        "[tls]\n"
        'cert = "/etc/acme-preflight/collector-cert.pem"\n'
        'key = "/run/credentials/acme-preflight-collector.service/collector-tls-key"\n',
    )
    data = _agent_config(collector_ca)
    boot.write(CONF, to_toml(data), 0o600)
    boot.write(
        "/etc/nginx/nginx.conf", f"http {{\n  server {{\n    server_name {WEB_NAME};\n  }}\n}}\n"
    )
    hosts = boot.path("/etc/hosts")
    hosts.write_text(hosts.read_text() + f"127.0.0.1 {WEB_NAME}\n")
    return collector_ca, data


@pytest.fixture(scope="module")
def host(target: Target, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    work = tmp_path_factory.mktemp(f"boot-{target.name}")
    with BootedSystem(work / "sys", target.lower) as boot:
        collector_ca, data = _prepare_root(boot, work)
        boot.put(target.deb, "/tmp/pkg.deb")
        # --force-confold: the configs above are the admin's, written before the install.
        proc = boot.run("dpkg", "--force-confold", "-i", "/tmp/pkg.deb", timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield Host(boot, target, collector_ca, data)


# ---------------------------------------------------------------------------- the tests


def test_install_enables_and_starts_the_agent(host: Host) -> None:
    boot = host.boot
    assert boot.systemctl("is-enabled", AGENT).stdout.strip() == "enabled"
    p = wait_for(
        lambda: host.agent(
            "ActiveState",
            "SubState",
            "StatusText",
            "Type",
            "NRestarts",
            "WatchdogUSec",
            "MainPID",
            "Result",
        ),
        30,
        "the first check run's STATUS=",
        accept=lambda q: q["StatusText"].startswith("last run"),
    )
    # Type=notify: "active (running)" is only reached after READY=1.
    assert (p["Type"], p["ActiveState"], p["SubState"], p["Result"]) == (
        "notify", "active", "running", "success",
    )  # fmt: skip
    assert re.fullmatch(
        r"last run (PASS|SKIP|WARN|FAIL) \(.+\); \d+ queued for the collector", p["StatusText"]
    )
    assert p["WatchdogUSec"] == f"{WATCHDOG_S}s"
    assert p["NRestarts"] == "0"
    status = boot.systemctl("status", AGENT, check=False).stdout
    assert "active (running)" in status
    # The interpreter the package depends on is the one running the daemon.
    # (the link names the file as the service's own mount namespace sees it)
    exe = boot.run("readlink", f"/proc/{p['MainPID']}/exe", check=True).stdout.strip()
    assert exe.endswith(f"/usr/bin/{host.target.python}"), exe
    deps = boot.run("dpkg-query", "-W", "-f", "${Depends}", "acme-preflight", check=True).stdout
    assert host.target.python in deps


def test_status_endpoint_and_status_command(host: Host) -> None:
    status, body = host.fetch("http://127.0.0.1:9775/healthz")
    assert status == 200, body
    proc = host.boot.run("acme-preflight", "status", "--json", timeout=30)
    assert proc.returncode in (0, 1, 2), proc.stderr
    report = json.loads(proc.stdout)
    assert report["agent"]["host_id"] == "boot-host"
    names = [c["name"] for c in report["checks"]]
    assert names[:2] == ["privileges", "outbound_https"]
    text = host.boot.run("acme-preflight", "status", timeout=30).stdout
    assert "outbound_https" in text


def test_the_sandbox_shows_what_the_checks_read_and_writes_only_the_state_dir(host: Host) -> None:
    boot = host.boot
    last = json.loads(boot.path(f"{STATE}/last.json").read_text())
    checks = {c["name"]: c for c in last["checks"]}
    # /proc (uid_map, capabilities) under the unit's own sandbox: real root, passes.
    assert checks["privileges"]["status"] == "pass", checks["privileges"]
    # the lab DigiCert over TLS, trusted through the root's system store
    assert checks["outbound_https"]["status"] == "pass", checks["outbound_https"]
    # /etc/nginx read: the server name was discovered there
    assert WEB_NAME in json.dumps(checks["fqdn_resolution"]["details"])
    pid = host.agent("MainPID")["MainPID"]
    assert _writable(boot, pid, f"{STATE}/probe")
    for path in ("/etc/acme-preflight/probe", "/opt/acme-preflight/probe", "/usr/probe",
                 "/root/probe", "/var/lib/probe", "/etc/nginx/probe"):  # fmt: skip
        assert not _writable(boot, pid, path), path
    assert not boot.path("/var/lib/probe").exists()


def test_journal_lines_are_readable_and_carry_their_priority(host: Host) -> None:
    runs = wait_for(lambda: host.runs() or None, 30, "check runs in the journal")
    assert re.fullmatch(
        r"check run finished status=(pass|skip|warn|fail) report_id=[0-9a-f-]{36}( \w+=\d+)+",
        runs[-1],
    )
    entries = host.boot.journal_json(AGENT)
    ours = [e for e in entries if str(e.get("MESSAGE", "")).startswith("check run finished")]
    assert ours and {e["PRIORITY"] for e in ours} == {"6"}  # <6> was read, and stripped
    assert not [e for e in entries if str(e.get("MESSAGE", "")).startswith(("<", "{"))]
    warnings = host.boot.journal(AGENT, "-p", "warning")
    assert "check run finished" not in warnings


def test_reload_applies_a_changed_interval(host: Host) -> None:
    boot = host.boot
    pid = host.agent("MainPID")["MainPID"]
    data = json.loads(json.dumps(host.config_data))
    data["agent"]["interval"] = "3s"
    host.write_config(to_toml(data))
    boot.systemctl("reload", AGENT)
    wait_for(lambda: "config reloaded interval_s=3.0" in boot.journal(AGENT), 15, "the reload")
    before = len(host.runs())
    time.sleep(6)
    after = len(host.runs())
    assert 1 <= after - before <= 3, (before, after)  # 6 runs at the old 1 s interval
    assert host.agent("MainPID")["MainPID"] == pid
    host.write_config(to_toml(host.config_data))
    boot.systemctl("reload", AGENT)
    wait_for(
        lambda: boot.journal(AGENT).count("config reloaded interval_s=1.0") >= 1, 15, "reload back"
    )


def test_broken_config_on_reload_keeps_the_service_running(host: Host) -> None:
    boot = host.boot
    pid = host.agent("MainPID")["MainPID"]
    host.write_config(to_toml(host.config_data) + '\n[agent2]\ninterval = "x"\n')
    boot.systemctl("reload", AGENT)
    p = wait_for(
        lambda: host.agent("StatusText", "ActiveState", "MainPID"),
        15,
        "STATUS= to say the reload failed",
        accept=lambda q: "reload failed" in q["StatusText"],
    )
    assert (p["ActiveState"], p["MainPID"]) == ("active", pid)
    errors = boot.journal(AGENT, "-p", "err")
    assert "config reload failed; keeping the running config" in errors
    assert "[agent2]" in errors  # names what is wrong
    host.write_config(to_toml(host.config_data))
    boot.systemctl("reload", AGENT)
    wait_for(
        lambda: host.agent("StatusText")["StatusText"].startswith("last run"), 15, "a good run"
    )


def test_collector_unit_ingests_over_tls_and_keeps_its_data(host: Host) -> None:
    boot = host.boot
    boot.systemctl("enable", "--now", COLLECTOR)
    p = boot.show(COLLECTOR, "ActiveState", "DynamicUser", "MainPID", "NRestarts")
    assert (p["ActiveState"], p["DynamicUser"]) == ("active", "yes")
    uid = boot.run("stat", "-c", "%u", f"/proc/{p['MainPID']}", check=True).stdout.strip()
    assert uid != "0"
    got = wait_for(
        lambda: host.report_ids() if _collector_up(host) else None, 60, "reports at the collector"
    )
    assert any(h["host_id"] == "boot-host" for h in host.hosts())
    # the agent's queue drains over TLS
    wait_for(host.spooled, 30, "an empty spool", accept=lambda n: n == 0)
    boot.systemctl("restart", COLLECTOR)
    wait_for(lambda: _collector_up(host), 30, "the collector after its restart")
    assert got <= host.report_ids()  # nothing lost across the restart
    db = boot.path("/var/lib/private/acme-preflight-collector/collector.db")
    assert db.is_file()
    pid = boot.show(COLLECTOR, "MainPID")["MainPID"]
    assert _writable(boot, pid, "/var/lib/acme-preflight-collector/probe")
    for path in ("/etc/acme-preflight/probe", "/opt/acme-preflight/probe", "/var/lib/probe"):
        assert not _writable(boot, pid, path), path


def _writable(boot: BootedSystem, pid: str, path: str) -> bool:
    """Whether root could create ``path`` in the mount namespace of process ``pid`` (a
    service's: its ProtectSystem= view)."""
    proc = boot.run("nsenter", f"--target={pid}", "--mount", "--root", "--", "touch", path)
    return proc.returncode == 0


def _collector_up(host: Host) -> bool:
    try:
        return host.fetch(f"{COLLECTOR_URL}/healthz", ca=host.collector_ca)[0] == 200
    except AssertionError:
        return False


def test_spool_holds_reports_while_the_collector_is_down(host: Host) -> None:
    boot = host.boot
    boot.systemctl("stop", COLLECTOR)
    wait_for(host.spooled, 30, "reports to queue in the spool", accept=lambda n: n >= 3)
    boot.systemctl("start", COLLECTOR)
    wait_for(host.spooled, 60, "the spool to drain", accept=lambda n: n == 0)


def test_many_cycles_without_a_restart(host: Host) -> None:
    # Everything so far (spool writes, TLS delivery, reloads, a broken config) with the
    # syscall filter and the 3 s watchdog in force: not one restart.
    wait_for(lambda: len(host.runs()), 60, "20 check runs", accept=lambda n: n >= 20)
    p = host.agent("NRestarts", "ActiveState", "WatchdogTimestampMonotonic")
    assert (p["NRestarts"], p["ActiveState"]) == ("0", "active")
    first = int(p["WatchdogTimestampMonotonic"])
    # WATCHDOG=1 keeps arriving (every WatchdogSec/2)
    wait_for(
        lambda: int(host.agent("WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]),
        WATCHDOG_S,
        "the next watchdog ping",
        accept=lambda stamp: stamp > first,
    )
    assert host.boot.journal(AGENT).count("daemon started") == 1
    assert "SIGSYS" not in host.boot.journal(AGENT)


def test_the_watchdog_restarts_a_hung_daemon(host: Host) -> None:
    boot = host.boot
    pid = host.agent("MainPID")["MainPID"]
    boot.run("kill", "-STOP", pid, check=True)  # the event loop stops: no more WATCHDOG=1
    p = wait_for(
        lambda: host.agent("NRestarts", "MainPID", "ActiveState", "SubState"),
        WATCHDOG_S + 40,
        "the watchdog to kill and restart the daemon",
        accept=lambda q: (
            q["NRestarts"] == "1" and q["MainPID"] not in ("0", pid) and q["SubState"] == "running"
        ),
    )
    assert p["ActiveState"] == "active"
    assert (
        "Watchdog timeout" in boot.run("journalctl", "--no-pager", "-u", AGENT, check=True).stdout
    )


def test_upgrade_keeps_the_conffile_edit_and_the_spool(host: Host, tmp_path: Path) -> None:
    boot = host.boot
    boot.systemctl("stop", COLLECTOR)
    wait_for(host.spooled, 30, "reports to queue in the spool", accept=lambda n: n >= 2)
    edited = to_toml(host.config_data) + "# edited by the admin\n"
    host.write_config(edited)
    started = boot.journal(AGENT).count("daemon started")
    pid = host.agent("MainPID")["MainPID"]
    newer = bump_deb_version(host.target.deb, tmp_path / "newer.deb", f"{__version__}+up1")
    boot.put(newer, "/tmp/newer.deb")
    proc = boot.run("dpkg", "-i", "/tmp/newer.deb", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    version = boot.run("dpkg-query", "-W", "-f", "${Version}", "acme-preflight", check=True).stdout
    assert version == f"{__version__}+up1"
    assert boot.path(CONF).read_text() == edited
    wait_for(lambda: host.agent("MainPID")["MainPID"] not in ("0", pid), 30, "the new daemon")
    time.sleep(2)
    assert boot.journal(AGENT).count("daemon started") == started + 1  # restarted once
    spooled = host.spooled()
    assert spooled >= 2  # the spool survived the upgrade
    # the collector stayed stopped (try-restart), then takes the backlog
    assert boot.show(COLLECTOR, "ActiveState")["ActiveState"] == "inactive"
    boot.systemctl("start", COLLECTOR)
    wait_for(host.spooled, 60, "the spool to drain after the upgrade", accept=lambda n: n == 0)


def test_remove_stops_and_disables_then_purge_removes_the_state(host: Host) -> None:
    boot = host.boot
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    proc = boot.run("apt-get", "remove", "-y", "acme-preflight", env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for unit in (AGENT, COLLECTOR):
        assert boot.show(unit, "ActiveState")["ActiveState"] == "inactive"
        assert not boot.path(f"/etc/systemd/system/multi-user.target.wants/{unit}").exists()
    assert boot.path(CONF).is_file()  # config kept by remove
    assert boot.path(f"{STATE}/spool.sqlite3").is_file()  # state kept by remove
    proc = boot.run("apt-get", "purge", "-y", "acme-preflight", env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for gone in ("/etc/acme-preflight/config.toml", "/etc/acme-preflight/collector.toml", STATE,
                 "/var/lib/private/acme-preflight-collector", "/opt/acme-preflight"):  # fmt: skip
        assert not boot.path(gone).exists(), gone
    assert boot.run("dpkg-query", "-W", "acme-preflight").returncode != 0
