"""The Grafana dashboards: well-formed for Grafana 10/11, built only on the issue-3 metric contract, and
(slow) every panel query valid and returning data on a real Prometheus scraping a real `runtap serve`
that the real SDK drove through the simulated upstream. The same run checks every alert expression."""

from __future__ import annotations

import asyncio
import calendar
import json
import math
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.promstack import (
    CONTRACT,
    DASHBOARDS,
    GRAFANA_VARS,
    RECORDED,
    ROOT,
    Prometheus,
    PromQLError,
    alert_rules,
    base_metric,
    dashboard_targets,
    free_port,
    http_get,
    iter_panels,
    label_problems,
    load_yaml,
    metric_names,
    prometheus_config,
    python_env,
    recording_rules,
    require_binary,
    run_prometheus,
    stop_process,
    substitute,
    wait_for,
)

UIDS = {"runs-overview.json": "runtap-runs-overview", "cost.json": "runtap-cost"}
VARIABLES = {"runs-overview.json": {"datasource", "instance", "model", "operation"},
             "cost.json": {"datasource", "instance", "model"}}
TERMINAL = {"completed", "failed", "incomplete", "cancelled", "expired"}
# A response ends in one of these (the Responses API has no expired).
RESPONSE_TERMINAL = {"completed", "failed", "incomplete", "cancelled"}
# Alerts that must be quiet while runtap, the upstream and capture are healthy. The two run-outcome
# alerts are not in this set: the simulated workload fails and token-caps one run in eleven on purpose.
QUIET_WHEN_HEALTHY = {"RuntapUpstreamErrorRatioHigh", "RuntapProxyOverheadHigh", "RuntapCaptureDropping",
                      "RuntapCaptureErrors", "RuntapCaptureQueueGrowing", "RuntapCaptureMetricsMissing"}
# Series a healthy run legitimately never creates (nothing dropped, no capture or connection errors).
ABSENT_WHEN_HEALTHY = {"runtap_capture_dropped_total", "runtap_capture_errors_total",
                       "runtap_upstream_errors_total"}


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DASHBOARDS / name).read_text())
    return doc


@pytest.fixture(params=sorted(UIDS), ids=lambda n: n.removesuffix(".json"))
def dashboard(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param, load(request.param)


def test_the_dashboard_files_are_the_two_provisioned_ones() -> None:
    assert {p.name for p in DASHBOARDS.glob("*.json")} == set(UIDS)


def test_dashboard_is_current_grafana_json_with_a_stable_uid(dashboard: tuple[str, dict[str, Any]]) -> None:
    name, d = dashboard
    assert d["schemaVersion"] == 39  # Grafana 10.4 / 11 write 39; older Grafanas migrate it down
    assert d["uid"] == UIDS[name]
    assert d["id"] is None, "a provisioned dashboard must not carry a database id"
    assert d["title"].startswith("runtap")
    assert d["description"]
    ids = [p["id"] for p in iter_panels(d["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_template_variables_cover_datasource_model_operation_instance(
        dashboard: tuple[str, dict[str, Any]]) -> None:
    name, d = dashboard
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert set(variables) == VARIABLES[name]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for var_name in VARIABLES[name] - {"datasource"}:
        v = variables[var_name]
        assert v["type"] == "query" and v["datasource"]["uid"] == "${datasource}"
        # "All" must be a regex Prometheus accepts, since panels match it with =~.
        assert v["includeAll"] and v["multi"] and v["allValue"] == ".*"
        m = re.fullmatch(r"label_values\((\w+)(\{[^}]*\})?, (\w+)\)", v["definition"])
        assert m, v["definition"]
        assert m.group(3) == var_name
        assert var_name in CONTRACT[m.group(1)][1] | {"instance"}
        assert v["query"]["query"] == v["definition"]


def test_every_panel_has_a_description_unit_and_thresholds(dashboard: tuple[str, dict[str, Any]]) -> None:
    _, d = dashboard
    for panel in iter_panels(d["panels"]):
        assert panel.get("description"), f"panel {panel['title']!r} has no description"
        if panel["type"] in ("row", "text"):
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        defaults = panel["fieldConfig"]["defaults"]
        if panel["type"] == "heatmap":
            assert panel["options"]["yAxis"]["unit"], panel["title"]
            continue
        assert defaults.get("unit"), f"panel {panel['title']!r} has no unit"
        steps = defaults["thresholds"]["steps"]
        assert steps[0]["value"] is None and all(s["value"] is not None for s in steps[1:]), panel["title"]


def test_units_fit_what_the_query_measures(dashboard: tuple[str, dict[str, Any]]) -> None:
    _, d = dashboard
    for panel, target in dashboard_targets(d):
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        expr = target["expr"]
        if expr.startswith("histogram_quantile") and "_seconds_bucket" in expr:
            assert unit == "s", panel["title"]
        if "runtap_token_budget_ratio" in expr and panel["type"] != "heatmap":
            assert unit == "percentunit", panel["title"]
        if "group_left () runtap:token_price_usd" in expr or expr.startswith("runtap:token_price_usd"):
            assert unit == "currencyUSD", panel["title"]


def test_panels_tile_the_24_column_grid_without_overlap(dashboard: tuple[str, dict[str, Any]]) -> None:
    _, d = dashboard
    taken: dict[tuple[int, int], str] = {}
    for panel in iter_panels(d["panels"]):
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[(x, y)]!r}"
                taken[(x, y)] = panel["title"]


def test_queries_use_only_contract_metrics_and_labels(dashboard: tuple[str, dict[str, Any]]) -> None:
    _, d = dashboard
    for panel, target in dashboard_targets(d):
        expr = target["expr"]
        assert target["datasource"]["uid"] == "${datasource}"
        names = metric_names(expr)
        assert names, f"{panel['title']!r}: no runtap metric in {expr}"
        for name in names:
            assert name in RECORDED or base_metric(name) in CONTRACT, f"{panel['title']!r}: unknown {name}"
            if base_metric(name) in CONTRACT and CONTRACT[base_metric(name)][0] == "histogram":
                assert name != base_metric(name), f"{panel['title']!r}: bare histogram name {name}"
        assert label_problems(expr) == [], f"{panel['title']!r}: {expr}"


def test_queries_honour_the_template_variables(dashboard: tuple[str, dict[str, Any]]) -> None:
    name, d = dashboard
    for panel, target in dashboard_targets(d):
        expr = target["expr"]
        for m in re.finditer(r"\b(runtap_\w+)\{([^}]*)\}", expr):
            metric, selector = base_metric(m.group(1)), m.group(2)
            labels = CONTRACT[metric][1]
            assert 'instance=~"$instance"' in selector, f"{panel['title']!r}: {m.group(0)}"
            if "model" in labels:
                assert 'model=~"$model"' in selector, f"{panel['title']!r}: {m.group(0)}"
            if "operation" in labels and "operation" in VARIABLES[name]:
                assert 'operation=~"$operation"' in selector, f"{panel['title']!r}: {m.group(0)}"
        for bare in re.findall(r"\b(runtap_\w+)\b(?!\{)", expr):
            pytest.fail(f"{panel['title']!r}: {bare} has no selector, so no $instance filter")


def test_runs_overview_shows_every_contract_metric() -> None:
    d = load("runs-overview.json")
    used = {base_metric(n) for _, t in dashboard_targets(d) for n in metric_names(t["expr"])}
    assert set(CONTRACT) - used == set()


def test_budget_use_is_a_heatmap_of_the_ratio_buckets() -> None:
    d = load("runs-overview.json")
    heatmaps = [p for p in iter_panels(d["panels"]) if p["type"] == "heatmap"]
    assert len(heatmaps) == 1
    (panel,) = heatmaps
    (target,) = panel["targets"]
    assert target["format"] == "heatmap"
    assert "runtap_token_budget_ratio_bucket" in target["expr"]
    assert target["expr"].startswith("sum by (le) (")
    # Prometheus already bucketed the data: Grafana must not re-bucket it.
    assert panel["options"]["calculate"] is False
    assert panel["options"]["yAxis"]["unit"] == "percentunit"


def test_cost_dashboard_is_labelled_an_estimate_and_prices_the_workload_models() -> None:
    d = load("cost.json")
    assert "estimate" in d["title"].lower() and "ESTIMATE" in d["description"]
    texts = [p for p in iter_panels(d["panels"]) if p["type"] == "text"]
    assert texts and "**Estimate.**" in texts[0]["options"]["content"]
    assert "report" in texts[0]["options"]["content"]
    for panel in iter_panels(d["panels"]):
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        if unit == "currencyUSD" and panel["type"] != "table":
            assert "estimate" in (panel["title"] + panel["description"]).lower(), panel["title"]
    priced = {(r["labels"]["model"], r["labels"]["type"]) for r in recording_rules()
              if r["record"] == "runtap:token_price_usd"}
    for workload in ("workload.py", "responses_workload.py"):
        text = (ROOT / "demo" / workload).read_text()
        for model in set(re.findall(r'model="([^"]+)"', text)):
            assert {(model, "prompt"), (model, "completion")} <= priced, f"no price for {model} ({workload})"


@pytest.mark.parametrize("name", ["runs-overview", "cost"])
def test_layout_picture_in_docs_is_rendered_from_the_current_json(tmp_path: Path, name: str) -> None:
    out = tmp_path / "layout.svg"
    subprocess.run([sys.executable, str(DASHBOARDS / "render_layout.py"),
                    str(DASHBOARDS / f"{name}.json"), "-o", str(out)], check=True, cwd=ROOT)
    committed = ROOT / "docs" / f"dashboard-{name}.svg"
    assert committed.read_text() == out.read_text(), (
        f"docs/dashboard-{name}.svg is stale: python dashboards/render_layout.py "
        f"dashboards/{name}.json -o docs/dashboard-{name}.svg")
    svg = out.read_text()
    for panel in iter_panels(load(f"{name}.json")["panels"]):
        assert _xml_escape(panel["title"]) in svg
    assert f"](dashboard-{name}.svg)" in (ROOT / "docs" / "dashboards.md").read_text()


def _xml_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def test_metrics_module_defines_every_metric_the_dashboards_and_alerts_read() -> None:
    from runtap.proxy.addons.metrics import Metrics

    registry = CollectorRegistry()
    Metrics(registry)
    exposed = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        name = family.name + "_total" if family.type == "counter" else family.name
        exposed[name] = family.type
    used: set[str] = set()
    for path in sorted(DASHBOARDS.glob("*.json")):
        used |= {base_metric(n) for _, t in dashboard_targets(json.loads(path.read_text()))
                 for n in metric_names(t["expr"])}
    used |= {base_metric(n) for r in alert_rules() for n in metric_names(r["expr"])}
    used -= set(RECORDED)
    missing = sorted(m for m in used if m not in exposed)
    assert missing == [], f"proxy/addons/metrics.py does not define: {missing}"
    for m in used:
        assert exposed[m] == CONTRACT[m][0], f"{m} is a {exposed[m]}, the contract says {CONTRACT[m][0]}"


# --- proof on a real Prometheus ------------------------------------------------------------------


@dataclass
class Live:
    prom: Prometheus
    admin_url: str
    missing_after_workload: set[str] = field(default_factory=set)


def _counter_sums(text: str) -> dict[str, float]:
    """Sum of every counter and histogram count in a /metrics page, by series name."""
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith(("_total", "_count")):
                sums[s.name] = sums.get(s.name, 0.0) + s.value
    return sums


def _scraped_everything(prom: Prometheus, admin_url: str, finished: dict[str, int]) -> None:
    """Block until Prometheus holds a scrape at least as new as runtap's state once every finished run
    and response is counted: runtap's counters are read first, then Prometheus's sums must reach them."""
    def local() -> dict[str, float] | None:
        status, body = http_get(admin_url + "/metrics")
        sums = _counter_sums(body.decode())
        if any(sums.get(name, 0) < n for name, n in finished.items()):
            return None  # the capture writer has not applied every run and response yet
        return sums if status == 200 and sums else None
    snapshot = wait_for("runtap to count every finished run", local, 30)

    def caught_up() -> bool:
        for name, value in snapshot.items():
            got = prom.value(f"sum({name})")
            if got is None or got < value:
                return False
        return True
    wait_for("prometheus to scrape runtap's latest counters", caught_up, 30)


def _finished(results: list[tuple[Any, Any]]) -> dict[str, int]:
    """What runtap must have counted once it applied every run and response the workloads finished."""
    return {
        "runtap_runs_finished_total": sum(1 for runs, _ in results for s in runs.runs.values() if s in TERMINAL),
        "runtap_responses_finished_total": sum(
            1 for _, resp in results for s in resp.responses.values() if s in RESPONSE_TERMINAL),
    }


def _drive(base_url: str) -> tuple[Any, Any]:
    from runtap.demo.responses_workload import run_responses_workload
    from runtap.demo.workload import run_workload

    with warnings.catch_warnings():
        # The SDK marks every Assistants call deprecated; a module fixture runs outside the per-test
        # filters that pyproject.toml sets for this.
        warnings.filterwarnings("ignore", "The Assistants API is deprecated", DeprecationWarning)
        runs = asyncio.run(run_workload(base_url, rounds=1))
    # The Responses panels need responses: the demo's Responses workload (every lifecycle it has).
    responses = asyncio.run(run_responses_workload(base_url, rounds=1))
    return runs, responses


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    require_binary("prometheus")
    work = tmp_path_factory.mktemp("prometheus-proof")
    sim_port, proxy_port, admin_port = free_port(), free_port(), free_port()
    # runtap runs with the compose file's environment, so the example's settings are the tested ones.
    compose_env = load_yaml(ROOT / "docker-compose.yml")["services"]["runtap"]["environment"]
    env = python_env(**{k: str(v) for k, v in compose_env.items()
                        if k not in ("RUNTAP_UPSTREAM", "RUNTAP_LISTEN", "RUNTAP_ADMIN", "RUNTAP_DB")})
    procs: list[subprocess.Popen[bytes]] = []
    logs = {name: open(work / f"{name}.log", "wb") for name in ("sim", "runtap")}  # noqa: SIM115
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "runtap.demo.sim", "--host", "127.0.0.1", "--port", str(sim_port)],
            cwd=ROOT, env=python_env(), stdout=logs["sim"], stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "runtap.proxy", "serve", "--upstream", f"http://127.0.0.1:{sim_port}",
             "--listen", f"127.0.0.1:{proxy_port}", "--admin", f"127.0.0.1:{admin_port}",
             "--db", str(work / "runtap.duckdb")],
            cwd=ROOT, env=env, stdout=logs["runtap"], stderr=subprocess.STDOUT))
        admin_url = f"http://127.0.0.1:{admin_port}"
        cfg = prometheus_config([f"127.0.0.1:{admin_port}"], [DASHBOARDS / "alerts.yml"],
                                base=load_yaml(DASHBOARDS / "prometheus.yml"))
        with run_prometheus(work / "prometheus", cfg) as prom:
            def up() -> bool:
                for name, p in zip(("sim", "runtap"), procs, strict=True):
                    if p.poll() is not None:
                        log = (work / f"{name}.log").read_text()[-2000:]
                        raise AssertionError(f"{name} exited with {p.returncode}:\n{log}")
                return (http_get(admin_url + "/healthz", 1)[0] == 200
                        and http_get(f"http://127.0.0.1:{sim_port}/v1/models", 1)[0] < 500)
            wait_for("runtap and the simulated upstream to answer", up, 30)
            base_url = f"http://127.0.0.1:{proxy_port}/v1"
            # Two rounds with a scrape between them, so every counter has grown inside the rate window
            # (rate() cannot see the increase that created a series).
            first = _drive(base_url)
            _scraped_everything(prom, admin_url, _finished([first]))
            second = _drive(base_url)
            _scraped_everything(prom, admin_url, _finished([first, second]))
            names = prom.query('group by (__name__) ({__name__=~"runtap_.+"})')
            have = {r["metric"]["__name__"] for r in names}
            expected = {n for n, (kind, _) in CONTRACT.items()} - ABSENT_WHEN_HEALTHY
            present = {base_metric(n) for n in have}
            yield Live(prom, admin_url, expected - present)
    finally:
        for p in reversed(procs):
            stop_process(p)
        for f in logs.values():
            f.close()


def _epoch(rfc3339: str) -> float:
    """Prometheus's nanosecond RFC 3339 timestamps, to epoch seconds (0 when never evaluated)."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z", rfc3339)
    if not m:
        return 0.0
    whole = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
    return whole + float("0." + (m.group(2) or "0"))


def _has_data(result: list[dict[str, Any]]) -> bool:
    return any(not math.isnan(float(r["value"][1])) for r in result)


@pytest.mark.slow
def test_every_dashboard_query_returns_data_on_a_real_prometheus(live: Live) -> None:
    known = set(live.prom.metadata()) | set(RECORDED)
    failures = []
    checked = 0
    for path in sorted(DASHBOARDS.glob("*.json")):
        d = json.loads(path.read_text())
        for panel, target in dashboard_targets(d):
            expr = substitute(target["expr"])
            where = f"{path.name} / {panel['title']} / {target['refId']}"
            checked += 1
            unknown = sorted(n for n in metric_names(expr) if base_metric(n) not in known and n not in known)
            if unknown:
                failures.append(f"{where}: Prometheus never saw {unknown}")
                continue
            try:
                result = live.prom.query(expr)
            except PromQLError as exc:
                failures.append(f"{where}: invalid: {exc}")
                continue
            if not _has_data(result):
                failures.append(f"{where}: no data for {expr}")
        for var in d["templating"]["list"]:
            if var["type"] != "query":
                continue
            m = re.fullmatch(r"label_values\((.+), (\w+)\)", var["definition"])
            assert m
            values = live.prom.api(f"label/{m.group(2)}/values", **{"match[]": substitute(m.group(1))})
            if not values:
                failures.append(f"{path.name} / variable {var['name']}: no values")
    assert checked >= 40
    hint = (f"\nmetrics runtap did not export during the workload: {sorted(live.missing_after_workload)}"
            if live.missing_after_workload else "")
    assert failures == [], f"{len(failures)} of {checked} queries failed:\n" + "\n".join(failures) + hint


@pytest.mark.slow
def test_every_alert_expression_is_valid_and_the_health_alerts_are_quiet(live: Live) -> None:
    rules = alert_rules()
    assert QUIET_WHEN_HEALTHY <= {r["alert"] for r in rules}
    for rule in rules:
        result = live.prom.query(rule["expr"])  # raises on an invalid expression
        if rule["alert"] in QUIET_WHEN_HEALTHY:
            assert result == [], f"{rule['alert']} would fire on a healthy run: {result}"
    t0 = time.time()

    def evaluated() -> list[dict[str, Any]] | None:
        groups = live.prom.api("rules")["groups"]
        rs = [r for g in groups for r in g["rules"]]
        done = all(_epoch(r.get("lastEvaluation", "")) > t0 for r in rs)
        return rs if done and rs else None
    evaluated_rules = wait_for("prometheus to evaluate every rule", evaluated, 15)
    bad = [(r["name"], r.get("lastError")) for r in evaluated_rules if r["health"] != "ok"]
    assert bad == []
    assert len(evaluated_rules) == len(rules) + len(recording_rules())
    active = {a["labels"]["alertname"] for a in live.prom.api("alerts")["alerts"]}
    assert active & QUIET_WHEN_HEALTHY == set()
    # The cost estimate's join: every model that used tokens has a price.
    unpriced = live.prom.query("sum by (model) (runtap_tokens_total) unless on (model) "
                               "runtap:token_price_usd")
    assert unpriced == []
    assert live.prom.query("runtap:token_price_usd")


# The cost dashboard's pricing, on all tokens counted since runtap started (no range, so nothing is
# extrapolated): runs by the list prices, responses by the charges derived from them.
PROM_RUN_USD = "sum(runtap_tokens_total * on (model, type) group_left () runtap:token_price_usd)"
PROM_RESPONSE_USD = ("sum(runtap_response_tokens_total * on (model, type) group_left () "
                     "runtap:response_token_charge_usd)")


@pytest.mark.slow
def test_the_cost_estimate_prices_runs_and_responses_as_the_sql_report_does(live: Live) -> None:
    """The recording rules bill each API as the exact SQL report does (cached input at its price,
    reasoning inside output): the estimate over every counted token equals the report's token cost."""
    from runtap.analytics.commands.report_client import fetch_report
    from runtap.analytics.reports import ReportParams

    sql = {"assistants": 0.0, "responses": 0.0}
    tokens = {"cached": 0, "reasoning": 0}
    for r in fetch_report(live.admin_url, "cost", ReportParams(by="api")).records():
        assert r["unpriced_runs"] == 0, r
        sql[r["api"]] += r["token_usd"] or 0.0
        tokens["cached"] += r["cached_prompt_tokens"]
        tokens["reasoning"] += r["reasoning_tokens"]
    # the workload exercises what the response charges are for
    assert sql["assistants"] > 0 and sql["responses"] > 0 and tokens["cached"] > 0 and tokens["reasoning"] > 0
    assert live.prom.value(PROM_RUN_USD) == pytest.approx(sql["assistants"], rel=1e-9, abs=1e-5)
    assert live.prom.value(PROM_RESPONSE_USD) == pytest.approx(sql["responses"], rel=1e-9, abs=1e-5)


def test_grafana_vars_cover_every_variable_the_dashboards_use() -> None:
    used: set[str] = set()
    for path in sorted(DASHBOARDS.glob("*.json")):
        for _, target in dashboard_targets(json.loads(path.read_text())):
            used |= set(re.findall(r"\$\{?(\w+)", target["expr"]))
    assert used <= set(GRAFANA_VARS)
