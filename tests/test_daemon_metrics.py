"""The Prometheus exposition, validated with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from agent.daemon.metrics import METRICS, Metrics


def test_every_family_parses_with_help_and_type() -> None:
    m = Metrics("1.2.3", runs=4, delivered=3, dropped=2)
    m.last_report = {
        "status": "fail",
        "checks": [
            {"name": "privileges", "status": "pass", "duration_ms": 1.5},
            {"name": "clock_skew", "status": "error", "duration_ms": 2000},
            {"name": 'we"ird\\name\n', "status": "fail", "duration_ms": 0},
        ],
    }
    m.last_run_ts = 1_800_000_000.25
    # the error families are there only while something fails
    m.delivery_ok()
    m.delivery_failed("HTTP 503 Service Unavailable", 503)
    m.spool_failed("database or disk is full")
    families = {f.name: f for f in text_string_to_metric_families(m.render())}
    assert families["acme_preflight_last_delivery_error_info"].samples[0].labels == {
        "kind": "http",
        "http_status": "503",
    }
    assert families["acme_preflight_last_spool_error_info"].samples[0].labels == {
        "kind": "disk_full"
    }
    # counters lose their _total suffix in the parsed family name
    assert set(families) == {
        "acme_preflight_" + (n.removesuffix("_total") if k == "counter" else n)
        for n, (k, _) in METRICS.items()
    }
    status = {s.labels["check"]: s.value for s in families["acme_preflight_check_status"].samples}
    assert status == {"privileges": 0, "clock_skew": 3, 'we"ird\\name\n': 2}
    up = {s.labels["check"]: s.value for s in families["acme_preflight_check_up"].samples}
    assert up == {"privileges": 1, "clock_skew": 0, 'we"ird\\name\n': 1}
    dur = families["acme_preflight_check_duration_seconds"].samples
    assert dur[1].value == 2.0
    assert families["acme_preflight_last_run_status"].samples[0].value == 2
    assert families["acme_preflight_reports_delivered"].samples[0].value == 3
    assert families["acme_preflight_reports_dropped"].type == "counter"
    dropped = {
        s.labels["reason"]: s.value for s in families["acme_preflight_reports_dropped"].samples
    }
    assert dropped == {"spool_full": 2, "dead_letter": 0, "spool_corrupt": 0}
    m.delivery_hold("the collector rejected 5 report(s) in a row")
    held = {f.name: f for f in text_string_to_metric_families(m.render())}
    assert held["acme_preflight_delivery_held"].samples[0].value == 1
    m.delivery_ok()  # an acceptance ends the hold
    assert "acme_preflight_delivery_held 0" in m.render()
    assert (
        families["acme_preflight_last_run_timestamp_seconds"].samples[0].value == 1_800_000_000.25
    )


def test_before_the_first_run() -> None:
    families = {f.name for f in text_string_to_metric_families(Metrics("1").render())}
    assert "acme_preflight_last_run_status" not in families
    assert "acme_preflight_spool_reports" in families
