"""The shipped Prometheus alert rules: valid, each alert tested with promtool (Debian's
``prometheus`` package), fed the daemon's real exposition, and naming only metrics that exist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.daemon.metrics import METRICS
from agent.daemon.metrics import PREFIX as DAEMON
from agent.daemon.metrics import Metrics as DaemonMetrics
from collector.metrics import Metrics as CollectorMetrics

RULES_DIR = Path(__file__).resolve().parent.parent / "packaging" / "prometheus"
RULES = RULES_DIR / "acme-preflight-rules.yml"
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None and os.environ.get("CI") != "true",
    reason="promtool is missing (Debian's prometheus package; .ci/apt-packages.txt installs it)",
)


def promtool(*args: str | Path, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL, "promtool is missing: apt-get install prometheus"
    return subprocess.run(
        [PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=cwd
    )


def test_rules_are_valid_and_every_alert_is_tested() -> None:
    check = promtool("check", "rules", RULES)
    assert check.returncode == 0, check.stdout + check.stderr
    run = promtool("test", "rules", "acme-preflight-rules.test.yml")
    assert run.returncode == 0, run.stdout + run.stderr
    alerts = set(re.findall(r"- alert: (\w+)", RULES.read_text()))
    tested = set(
        re.findall(r"alertname: (\w+)", (RULES_DIR / "acme-preflight-rules.test.yml").read_text())
    )
    assert alerts == tested
    assert {
        "AcmePreflightHostNotReady",
        "AcmePreflightCheckFailing",
        "AcmePreflightDeliveryFailing",
        "AcmePreflightSpoolGrowing",
        "AcmePreflightDaemonDown",
    } <= alerts


def test_the_tests_catch_a_rule_that_fires_too_early(tmp_path: Path) -> None:
    shutil.copy(RULES_DIR / "acme-preflight-rules.test.yml", tmp_path)
    text = RULES.read_text()
    (tmp_path / RULES.name).write_text(re.sub(r"\n\s+for: \w+", "", text))
    run = promtool("test", "rules", "acme-preflight-rules.test.yml", cwd=tmp_path)
    assert run.returncode != 0
    assert "AcmePreflightHostNotReady" in run.stdout + run.stderr


def exported_names() -> set[str]:
    names = {DAEMON + n for n in METRICS} | {"up"}
    text = CollectorMetrics().render({"fail": 1}, 0, [("digicert_ip", "ip_unreachable", "fail", 1)])
    names |= {f.name for f in text_string_to_metric_families(text)}
    names |= {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    return names


def test_rules_name_only_metrics_that_are_exported() -> None:
    exprs = re.findall(r"\n\s+expr: (.+)", RULES.read_text())
    used = set(re.findall(r"\b(acme_preflight_\w+|up)\b", " ".join(exprs)))
    assert used and used <= exported_names()


def test_alerts_fire_on_what_the_daemon_really_exports(tmp_path: Path) -> None:
    """The daemon's own /metrics text for a failing run, as promtool input series."""
    m = DaemonMetrics(version="1.0")
    m.last_report = {
        "status": "fail",
        "checks": [
            {"name": "privileges", "status": "pass", "duration_ms": 1.0},
            {"name": "digicert_ip", "status": "fail", "duration_ms": 3000.0},
        ],
    }
    m.last_run_ts = time.time()
    m.delivery_failed("connection refused", None)
    series = []
    for fam in text_string_to_metric_families(m.render()):
        for s in fam.samples:
            labels = {**s.labels, "job": "acme-preflight", "instance": "web-07:9775"}
            inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            series.append(
                f"      - series: '{s.name}{{{inner}}}'\n        values: '{s.value:g}x30'"
            )
    lab = 'job: acme-preflight, instance: "web-07:9775"'
    # the same rules without their annotations (promtool compares those too; tested above)
    (tmp_path / "rules.yml").write_text(
        re.sub(
            r"\n        annotations:\n(?:          .*\n|            .*\n)+", "\n", RULES.read_text()
        )
    )
    (tmp_path / "real.test.yml").write_text(
        f"""rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
{chr(10).join(series)}
    alert_rule_test:
      - eval_time: 20m
        alertname: AcmePreflightCheckFailing
        exp_alerts:
          - exp_labels: {{severity: warning, {lab}, check: digicert_ip}}
      - eval_time: 20m
        alertname: AcmePreflightHostNotReady
        exp_alerts:
          - exp_labels: {{severity: warning, {lab}}}
      - eval_time: 20m
        alertname: AcmePreflightDeliveryFailing
        exp_alerts:
          - exp_labels: {{severity: warning, {lab}}}
      - eval_time: 20m
        alertname: AcmePreflightSpoolGrowing
        exp_alerts: []
"""
    )
    run = promtool("test", "rules", "real.test.yml", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr


def test_scrape_config_example_is_valid(tmp_path: Path) -> None:
    cfg = (RULES_DIR / "scrape-config.example.yml").read_text()
    cfg = cfg.replace("/etc/prometheus/acme-preflight-rules.yml", str(RULES))
    (tmp_path / "prometheus.yml").write_text(cfg)
    run = promtool("check", "config", tmp_path / "prometheus.yml")
    assert run.returncode == 0, run.stdout + run.stderr
