"""Helpers for the dashboard and alert tests: a real Prometheus on 127.0.0.1, the issue-3 metric
contract, and the small PromQL reading the static checks need.

Prometheus runs as a subprocess with its own temp storage and a 1 s scrape/evaluation interval; every
wait polls its HTTP API with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "dashboards"
T = TypeVar("T")

# The metric contract of issue 3 (name -> (type, labels)), plus runtap's own additions that the
# dashboards read. Dashboards and alerts may use only these
# names and labels, plus the ones Prometheus adds (instance, job) and `le` on histogram buckets.
CONTRACT: dict[str, tuple[str, frozenset[str]]] = {
    name: (kind, frozenset(labels.split()))
    for name, kind, labels in (
        ("runtap_requests_total", "counter", "operation code stream"),
        ("runtap_request_duration_seconds", "histogram", "operation stream"),
        ("runtap_upstream_ttfb_seconds", "histogram", "operation stream"),
        ("runtap_proxy_overhead_seconds", "histogram", "operation"),
        ("runtap_upstream_errors_total", "counter", "reason"),
        ("runtap_run_transitions_total", "counter", "from_status to_status model"),
        ("runtap_runs_finished_total", "counter", "status model"),
        ("runtap_run_queue_seconds", "histogram", "model"),
        ("runtap_run_duration_seconds", "histogram", "status model"),
        ("runtap_tool_turnaround_seconds", "histogram", "model"),
        ("runtap_tokens_total", "counter", "model type"),
        ("runtap_token_budget_ratio", "histogram", "model type"),
        ("runtap_runs_incomplete_total", "counter", "model reason"),
        ("runtap_run_errors_total", "counter", "model code"),
        ("runtap_steps_finished_total", "counter", "type tool status"),
        ("runtap_step_duration_seconds", "histogram", "type"),
        ("runtap_sse_events_total", "counter", "event"),
        ("runtap_capture_queue_depth", "gauge", ""),
        ("runtap_capture_dropped_total", "counter", "stage"),
        ("runtap_capture_errors_total", "counter", "stage"),
        ("runtap_capture_written_total", "counter", "table"),
        # the Responses API (issue 14), parallel to the run metrics
        ("runtap_response_transitions_total", "counter", "from_status to_status model"),
        ("runtap_responses_finished_total", "counter", "status model"),
        ("runtap_response_tokens_total", "counter", "model type"),
        ("runtap_response_token_budget_ratio", "histogram", "model"),
        ("runtap_responses_incomplete_total", "counter", "model reason"),
        ("runtap_response_errors_total", "counter", "model code"),
        ("runtap_response_queue_seconds", "histogram", "model"),
        ("runtap_response_duration_seconds", "histogram", "status model"),
        ("runtap_response_stream_first_event_seconds", "histogram", "model"),
        ("runtap_response_stream_first_output_seconds", "histogram", "model"),
        ("runtap_response_tool_turnaround_seconds", "histogram", "model"),
        # added by runtap beyond the table
        ("runtap_event_loop_lag_seconds", "histogram", ""),
        ("runtap_capture_lag_seconds", "histogram", ""),
        ("runtap_capture_db_memory_bytes", "gauge", "tag"),
        ("runtap_capture_db_memory_limit_bytes", "gauge", ""),
        ("runtap_capture_metrics_up", "gauge", ""),
    )
}
# Recording rules that dashboards/alerts.yml defines (the cost estimate's price table, and what a
# counted response token adds to the bill).
RECORDED: dict[str, frozenset[str]] = {"runtap:token_price_usd": frozenset({"model", "type"}),
                                      "runtap:response_token_charge_usd": frozenset({"model", "type"})}
TARGET_LABELS = frozenset({"instance", "job"})

# What Grafana puts in place of its variables when a user picks "All" and a 1 m rate window.
GRAFANA_VARS: dict[str, str] = {
    "datasource": "prometheus", "model": ".*", "operation": ".*", "instance": ".*",
    "__rate_interval": "1m", "__interval": "15s", "__range": "5m", "__range_s": "300",
}

_IDENT = re.compile(r"\bruntap[_:][a-zA-Z0-9_:]*")
_SUFFIXES = ("_bucket", "_sum", "_count")


def substitute(expr: str, variables: Mapping[str, str] = GRAFANA_VARS) -> str:
    """Grafana's `$name` / `${name}` / `[[name]]` template syntax, replaced the way Grafana does."""
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in variables:
            raise KeyError(f"template variable ${name} has no test value")
        return variables[name]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", repl, expr)


def base_metric(name: str) -> str:
    """Series name -> the metric it belongs to (`x_bucket` -> `x` for a contract histogram)."""
    for suffix in _SUFFIXES:
        stem = name.removesuffix(suffix)
        if stem != name and CONTRACT.get(stem, ("", ""))[0] == "histogram":
            return stem
    return name


def metric_names(expr: str) -> set[str]:
    """Every runtap series name an expression reads."""
    return set(_IDENT.findall(expr))


def _matching_paren(s: str, start: int) -> int:
    depth = 0
    for i in range(start, len(s)):
        if s[i] == "(":
            depth += 1
        elif s[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced parentheses in {s!r}")


def label_uses(expr: str) -> list[tuple[frozenset[str], frozenset[str]]]:
    """(labels used, series they are used on) for each selector and each `by`/`on`/`without` clause.

    Selector labels belong to their own metric. A grouping clause's labels must exist on the series
    inside the expression it groups: the aggregation's argument for `sum by (...) (arg)`, or both sides
    for a binary operator's `on (...)` (approximated by the whole expression).
    """
    uses: list[tuple[frozenset[str], frozenset[str]]] = []
    for m in re.finditer(r"\b(runtap[_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}", expr):
        labels = frozenset(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", m.group(2)))
        uses.append((labels, frozenset({m.group(1)})))
    for m in re.finditer(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
        labels = frozenset(x.strip() for x in m.group(2).split(",") if x.strip())
        if not labels:
            continue
        if m.group(1) in ("by", "without"):
            open_at = expr.index("(", m.end())
            scope = expr[open_at:_matching_paren(expr, open_at) + 1]
        else:
            scope = expr
        uses.append((labels, frozenset(metric_names(scope))))
    return uses


def known_labels(series: str) -> frozenset[str] | None:
    if series in RECORDED:
        return RECORDED[series]
    base = base_metric(series)
    if base not in CONTRACT:
        return None
    labels = CONTRACT[base][1] | TARGET_LABELS
    return labels | {"le"} if series.endswith("_bucket") else labels


def label_problems(expr: str) -> list[str]:
    problems = []
    for labels, series in label_uses(expr):
        allowed: set[str] = set()
        for s in series:
            allowed |= known_labels(s) or set()
        for label in sorted(labels - allowed):
            problems.append(f"label {label!r} is on none of {sorted(series)}")
    return problems


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package `prometheus`; `bash scripts/setup.sh --test` "
                    "installs it)")
    return path


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0, every: float = 0.1) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last_exc = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"
                                 + (f" (last error: {last_exc})" if last_exc else ""))
        time.sleep(every)  # pacing of a poll loop with a deadline, not synchronisation


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            status: int = r.status
            return status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class PromQLError(AssertionError):
    pass


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def api(self, path: str, **params: str | list[str]) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        status, body = http_get(f"{self.url}/api/v1/{path}?{query}")
        doc = json.loads(body)
        if doc.get("status") != "success":
            raise PromQLError(f"{path} {params}: HTTP {status} {doc.get('errorType')}: {doc.get('error')}")
        return doc["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        data = self.api("query", **params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = self.api("metadata")
        return meta

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def prometheus_config(scrape_targets: Iterable[str], rule_files: Iterable[Path] = (), *,
                      interval: str = "1s", job: str = "runtap",
                      base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A scrape config; `base` (e.g. dashboards/prometheus.yml) keeps its job settings, with the
    targets, rule files and intervals replaced for a test."""
    cfg: dict[str, Any] = json.loads(json.dumps(base)) if base else {
        "scrape_configs": [{"job_name": job, "metrics_path": "/metrics"}]}
    cfg["global"] = {**cfg.get("global", {}), "scrape_interval": interval, "evaluation_interval": interval,
                     "scrape_timeout": interval}
    cfg.pop("alerting", None)
    cfg["rule_files"] = [str(p) for p in rule_files]
    jobs = [j for j in cfg["scrape_configs"] if j["job_name"] == job]
    if not jobs:
        raise ValueError(f"no scrape job {job!r} in the config")
    jobs[0]["static_configs"] = [{"targets": list(scrape_targets)}]
    jobs[0]["scrape_interval"] = interval
    jobs[0]["scrape_timeout"] = interval
    cfg["scrape_configs"] = jobs
    return cfg


@contextmanager
def run_prometheus(workdir: Path, config: Mapping[str, Any], *,
                   ready_timeout: float = 30.0) -> Iterator[Prometheus]:
    """Start /usr/bin/prometheus on a free 127.0.0.1 port with storage under `workdir`."""
    binary = require_binary("prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = workdir / "prometheus.yml"
    cfg_path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    port = free_port()
    log_path = workdir / "prometheus.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={cfg_path}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
             # Debian's build otherwise looks for its console templates under /etc/prometheus.
             f"--web.console.templates={workdir}", f"--web.console.libraries={workdir}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {proc.returncode}:\n{prom.log()}")
            return http_get(prom.url + "/-/ready", timeout=1)[0] == 200
        wait_for("prometheus to be ready", ready, ready_timeout)
        yield prom
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def python_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTAP_", "OTEL_"))}
    env["OTEL_TRACES_EXPORTER"] = "none"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from iter_panels(p.get("panels", []))


def dashboard_targets(dashboard: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query target of every panel, collapsed rows included."""
    for panel in iter_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield panel, target


def alert_rules(path: Path | None = None) -> list[dict[str, Any]]:
    doc = load_yaml(path or DASHBOARDS / "alerts.yml")
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def recording_rules(path: Path | None = None) -> list[dict[str, Any]]:
    doc = load_yaml(path or DASHBOARDS / "alerts.yml")
    return [r for g in doc["groups"] for r in g["rules"] if "record" in r]
