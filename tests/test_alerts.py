"""dashboards/alerts.yml: promtool accepts it, its unit tests prove each alert fires on the series that
should fire it and stays quiet otherwise, and every alert is documented and built on the contract.
(The same expressions run against a live Prometheus in tests/test_dashboards.py.)"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.promstack import (
    CONTRACT,
    DASHBOARDS,
    RECORDED,
    ROOT,
    alert_rules,
    base_metric,
    label_problems,
    load_yaml,
    metric_names,
    recording_rules,
    require_binary,
)

# The list, each mapped to the alert that covers it.
REQUIRED = {
    "upstream error ratio high": "RuntapUpstreamErrorRatioHigh",
    "runtap p99 overhead high": "RuntapProxyOverheadHigh",
    "runs failing above a ratio": "RuntapRunsFailing",
    "runs ending incomplete because of a token cap": "RuntapRunsIncompleteTokenCap",
    "capture dropping": "RuntapCaptureDropping",
    "capture erroring": "RuntapCaptureErrors",
    "capture queue growing": "RuntapCaptureQueueGrowing",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = require_binary("promtool")
    return subprocess.run([binary, *args], cwd=DASHBOARDS, capture_output=True, text=True, timeout=60)


def test_promtool_check_rules_passes() -> None:
    res = promtool("check", "rules", "alerts.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    n = len(alert_rules()) + len(recording_rules())
    assert f"SUCCESS: {n} rules found" in res.stdout


def test_promtool_unit_tests_pass() -> None:
    res = promtool("test", "rules", "alerts_test.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_promtool_accepts_the_example_prometheus_config_and_its_rule_file() -> None:
    res = promtool("check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "alerts.yml" in res.stdout  # the rule file was found next to the config and checked


def test_a_broken_alert_fails_promtool(tmp_path: Path) -> None:
    # Guards the two tests above: promtool really reads our file and rejects bad PromQL.
    bad = tmp_path / "alerts.yml"
    bad.write_text((DASHBOARDS / "alerts.yml").read_text().replace(
        "rate(runtap_proxy_overhead_seconds_bucket[5m])", "rate(runtap_proxy_overhead_seconds_bucket)", 1))
    res = promtool("check", "rules", str(bad))
    assert res.returncode != 0


def test_every_required_alert_exists_with_summary_description_runbook_and_severity() -> None:
    rules = {r["alert"]: r for r in alert_rules()}
    assert set(REQUIRED.values()) <= set(rules)
    for name, rule in rules.items():
        ann = rule["annotations"]
        assert ann.get("summary") and ann.get("description"), name
        assert ann.get("runbook") == f"docs/dashboards.md, section Alerts, {name}"
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert "$labels" in ann["summary"] or "$value" in ann["summary"], f"{name}: summary is too vague"


def test_alert_and_recording_expressions_use_only_contract_metrics_and_labels() -> None:
    for rule in alert_rules() + recording_rules():
        expr = rule["expr"]
        for name in metric_names(expr):
            assert name in RECORDED or base_metric(name) in CONTRACT, f"{rule}: unknown metric {name}"
        assert label_problems(expr) == [], f"{rule.get('alert') or rule.get('record')}: {expr}"


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    doc = load_yaml(DASHBOARDS / "alerts_test.yml")
    assert doc["rule_files"] == ["alerts.yml"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for t in case.get("alert_rule_test", []):
            (fires if t["exp_alerts"] else quiet).add(t["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - fires == set(), "alerts never shown to fire"
    assert names - quiet == set(), "alerts never shown to stay quiet"


def test_every_price_rule_is_per_token_and_each_model_has_prompt_and_completion() -> None:
    by_model: dict[str, set[str]] = {}
    for rule in recording_rules():
        if rule["record"] != "runtap:token_price_usd":
            continue
        m = re.fullmatch(r"vector\((\d+(?:\.\d+)?) / 1e6\)", rule["expr"])
        assert m, rule["expr"]  # USD per 1M tokens, divided: the list prices stay readable
        assert 0 < float(m.group(1)) < 1000
        by_model.setdefault(rule["labels"]["model"], set()).add(rule["labels"]["type"])
    assert by_model
    for model, types in by_model.items():
        # cached_prompt only where the price book has a cached-input price
        assert {"prompt", "completion"} <= types <= {"prompt", "completion", "cached_prompt"}, (model, types)


def test_response_charges_are_derived_from_the_list_prices_for_every_counted_type() -> None:
    derived = [r for r in recording_rules() if r["record"] == "runtap:response_token_charge_usd"]
    types = {r["labels"]["type"] for r in derived}
    # exactly the types runtap_response_tokens_total counts (proxy/addons/response_metrics.py)
    assert types == {"input", "cached_input", "output", "reasoning"}
    for rule in derived:
        assert "vector(" not in rule["expr"], "a response charge must follow the list prices, not repeat them"
        assert metric_names(rule["expr"]) == {"runtap:token_price_usd"}
    names = [r["record"] for g in load_yaml(DASHBOARDS / "alerts.yml")["groups"] for r in g["rules"] if "record" in r]
    # Prometheus evaluates a group's rules in order: the charges must come after every price they read.
    assert names.index("runtap:response_token_charge_usd") > len(names) - len(derived) - 1


def test_docs_have_a_runbook_line_for_every_alert() -> None:
    page = (ROOT / "docs" / "dashboards.md").read_text()
    m = re.search(r"^(#{2,3}) Alerts\n(.*?)(?=^\1 |\Z)", page, re.S | re.M)
    if m is None:
        pytest.fail("docs/dashboards.md has no '## Alerts' section")
    for name in {r["alert"] for r in alert_rules()}:
        assert re.search(rf"^- \*\*{name}\*\*: \S", m.group(2), re.M), f"no runbook line for {name}"


def _usd(v: float) -> str:
    """A price as the rules write it: cents when exact, else as many decimals as it has."""
    return f"{v:.2f}" if abs(v * 100 - round(v * 100)) < 1e-9 else f"{v:.6f}".rstrip("0")


def test_price_rules_match_the_price_book_the_sql_reports_use() -> None:
    from runtap.analytics.prices import builtin_prices

    latest: dict[str, Any] = {}
    for p in builtin_prices():
        if p.kind == "model" and (p.name not in latest or p.effective_from > latest[p.name].effective_from):
            latest[p.name] = p
    expected = {(name, typ): round(v, 6) for name, p in latest.items()
                for typ, v in (("prompt", p.prompt_usd_per_1m), ("completion", p.completion_usd_per_1m),
                               ("cached_prompt", p.cached_prompt_usd_per_1m)) if v is not None}
    got = {}
    for rule in recording_rules():
        if rule["record"] != "runtap:token_price_usd":
            continue
        m = re.fullmatch(r"vector\(([\d.]+) / 1e6\)", rule["expr"])
        assert m
        got[(rule["labels"]["model"], rule["labels"]["type"])] = round(float(m.group(1)), 6)
    if got != expected:
        paste = "\n".join(f"      - record: runtap:token_price_usd\n        expr: vector({_usd(v)} / 1e6)\n"
                          f"        labels: {{model: {m}, type: {t}}}" for (m, t), v in expected.items())
        pytest.fail("dashboards/alerts.yml prices differ from analytics/prices.csv; the rules should be:\n"
                    + paste)
