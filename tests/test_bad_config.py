"""Every hostile start-up value of `runtap serve` is one clear line and a non-zero exit, never a
traceback and never a silent start with a surprising meaning (the brief's Non-negotiable 4).

Table-driven: each row is a real `runtap serve` process, given the value as its flag's RUNTAP_*
variable or as an OTEL_* variable, in the capture mode(s) where the value is read differently
(`--capture-mode process`: the relay imports no OpenTelemetry SDK, the capture process does); except
the rows `resolve` refuses (RESOLVED), checked in-process against it beside two real ones of that kind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from runtap.proxy.__main__ import build_parser
from runtap.proxy.addons.otel_check import check_env
from runtap.settings.config import ConfigError, resolve

ROOT = Path(__file__).resolve().parents[1]
BOTH = ("inprocess", "process")
TRACING = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
SECRET = "sk-secret-header-value"  # noqa: S105 - a value the error line must not echo

# (id, variables, the text the one line must hold, capture modes)
CASES: list[tuple[str, dict[str, str], str, tuple[str, ...]]] = [
    # OTEL_* the SDK reads leniently or with a traceback
    ("bsp-queue-nan", {**TRACING, "OTEL_BSP_MAX_QUEUE_SIZE": "abc"}, "OTEL_BSP_MAX_QUEUE_SIZE", BOTH),
    ("bsp-queue-0", {**TRACING, "OTEL_BSP_MAX_QUEUE_SIZE": "0"}, "OTEL_BSP_MAX_QUEUE_SIZE", ("inprocess",)),
    ("bsp-batch-neg", {**TRACING, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "-5"}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
     ("process",)),
    ("bsp-batch-over-queue", {**TRACING, "OTEL_BSP_MAX_QUEUE_SIZE": "10", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "20"},
     "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", ("inprocess",)),
    ("bsp-delay-empty", {**TRACING, "OTEL_BSP_SCHEDULE_DELAY": ""}, "OTEL_BSP_SCHEDULE_DELAY", BOTH),
    ("bsp-delay-huge", {**TRACING, "OTEL_BSP_SCHEDULE_DELAY": "1" + "0" * 30}, "OTEL_BSP_SCHEDULE_DELAY",
     ("inprocess",)),
    ("bsp-timeout-float", {**TRACING, "OTEL_BSP_EXPORT_TIMEOUT": "1.5"}, "OTEL_BSP_EXPORT_TIMEOUT", ("process",)),
    ("span-limit", {**TRACING, "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "-1"},
     "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", ("process",)),
    ("otlp-timeout-nan", {**TRACING, "OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, "OTEL_EXPORTER_OTLP_TIMEOUT",
     ("inprocess",)),
    ("otlp-timeout-ms", {**TRACING, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "10000"},
     "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", ("inprocess",)),
    ("otlp-timeout-0", {**TRACING, "OTEL_EXPORTER_OTLP_TIMEOUT": "0"}, "OTEL_EXPORTER_OTLP_TIMEOUT", ("process",)),
    ("otlp-compression", {**TRACING, "OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, "OTEL_EXPORTER_OTLP_COMPRESSION",
     BOTH),
    ("otlp-headers", {**TRACING, "OTEL_EXPORTER_OTLP_HEADERS": f"authorization {SECRET}"},
     "OTEL_EXPORTER_OTLP_HEADERS", BOTH),
    ("otlp-endpoint", {"OTEL_EXPORTER_OTLP_ENDPOINT": "127.0.0.1:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT", BOTH),
    ("otlp-endpoint-port", {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:99999/v1/traces"},
     "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ("inprocess",)),
    ("otlp-certificate", {**TRACING, "OTEL_EXPORTER_OTLP_CERTIFICATE": "/no/such/ca.pem"},
     "OTEL_EXPORTER_OTLP_CERTIFICATE", ("process",)),
    ("sampler-name", {**TRACING, "OTEL_TRACES_SAMPLER": "traceidratoi"}, "OTEL_TRACES_SAMPLER", BOTH),
    ("sampler-arg", {**TRACING, "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"},
     "OTEL_TRACES_SAMPLER_ARG", BOTH),
    ("resource-attrs", {**TRACING, "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,team"},
     "OTEL_RESOURCE_ATTRIBUTES", BOTH),
    ("service-name-blank", {**TRACING, "OTEL_SERVICE_NAME": "   "}, "OTEL_SERVICE_NAME", ("inprocess",)),
    ("sdk-disabled-1", {**TRACING, "OTEL_SDK_DISABLED": "1"}, "OTEL_SDK_DISABLED", BOTH),
    ("protocol-grpc", {**TRACING, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL",
     ("process",)),
    # runtap's own settings
    ("listen-empty", {"RUNTAP_LISTEN": ""}, "RUNTAP_LISTEN", ("inprocess",)),
    ("listen-no-ip", {"RUNTAP_LISTEN": "256.1.1.1:8080"}, "RUNTAP_LISTEN", ("inprocess",)),
    ("admin-port-neg", {"RUNTAP_ADMIN": "127.0.0.1:-1"}, "RUNTAP_ADMIN", ("inprocess",)),
    ("upstream-port", {"RUNTAP_UPSTREAM": "http://127.0.0.1:99999"}, "RUNTAP_UPSTREAM", ("inprocess",)),
    ("db-directory", {"RUNTAP_DB": "{tmp}"}, "is a directory", BOTH),
    ("spool-unwritable", {"RUNTAP_SPOOL": "/proc/self/runtap.spool.jsonl"}, "RUNTAP_SPOOL", BOTH),
    ("spool-directory", {"RUNTAP_SPOOL": "{tmp}"}, "RUNTAP_SPOOL", ("inprocess",)),
    ("export-dir-file", {"RUNTAP_EXPORT_DIR": "{tmp}/f.txt"}, "RUNTAP_EXPORT_DIR", ("inprocess",)),
    ("instance-path", {"RUNTAP_EXPORT_DIR": "{tmp}/lake", "RUNTAP_INSTANCE": "../x"}, "RUNTAP_INSTANCE",
     ("process",)),
    ("timeout-huge", {"RUNTAP_READ_TIMEOUT": "1e300"}, "RUNTAP_READ_TIMEOUT", ("inprocess",)),
    ("timeout-neg", {"RUNTAP_GRACE_PERIOD": "-1"}, "RUNTAP_GRACE_PERIOD", ("inprocess",)),
    ("timeout-empty", {"RUNTAP_CONNECT_TIMEOUT": ""}, "RUNTAP_CONNECT_TIMEOUT", ("inprocess",)),
    ("queue-huge", {"RUNTAP_QUEUE_SIZE": "1" + "0" * 30}, "RUNTAP_QUEUE_SIZE", ("process",)),
    ("queue-0", {"RUNTAP_QUEUE_SIZE": "0"}, "RUNTAP_QUEUE_SIZE", ("inprocess",)),
    ("workers-huge", {"RUNTAP_WORKERS": "100000"}, "RUNTAP_WORKERS", ("inprocess",)),
    ("connections-nan", {"RUNTAP_MAX_CONNECTIONS": "many"}, "RUNTAP_MAX_CONNECTIONS", ("inprocess",)),
    ("body-size-neg", {"RUNTAP_MAX_BODY_BYTES": "-1M"}, "RUNTAP_MAX_BODY_BYTES", ("inprocess",)),
    ("db-memory-0", {"RUNTAP_DB_MEMORY_LIMIT": "0MB"}, "RUNTAP_DB_MEMORY_LIMIT", ("process",)),
    ("db-memory-huge", {"RUNTAP_DB_MEMORY_LIMIT": "99999999TB"}, "RUNTAP_DB_MEMORY_LIMIT", ("inprocess",)),
    ("capture-mode", {"RUNTAP_CAPTURE_MODE": "thread"}, "RUNTAP_CAPTURE_MODE", ("inprocess",)),
    ("idle-trim-nan", {"RUNTAP_IDLE_TRIM": "nan"}, "RUNTAP_IDLE_TRIM", ("inprocess",)),
]
# Rows whose value `resolve` refuses, the first thing `runtap serve` does with its flags and variables, on
# the way every one of them takes to its one line and exit 2: two of them run as real processes (one per
# capture mode), the rest are checked against `resolve` in-process (test_resolve_refuses_...).
RESOLVED = ("listen-empty", "admin-port-neg", "upstream-port", "timeout-huge", "timeout-neg", "timeout-empty",
            "queue-0", "workers-huge", "connections-nan", "body-size-neg", "db-memory-0", "db-memory-huge",
            "capture-mode", "idle-trim-nan")
ROWS = [pytest.param(env, needle, mode, id=f"{name}-{mode}") for name, env, needle, modes in CASES for mode in modes
        if name not in RESOLVED]
ROW_TEST = "test_a_hostile_value_is_one_line_and_exit_2"
# Rows run this many `runtap serve` processes at a time: on a machine with idle cores the table takes a
# fraction of the time; on a busy one (every process is CPU-bound: imports) it takes as long as in sequence.
CONCURRENT = 4


def _command(tmp_path: Path, variables: dict[str, str], mode: str) -> tuple[list[str], dict[str, str]]:
    """`runtap serve`'s arguments and environment for a row: its variables, and a flag for every setting
    the row leaves alone."""
    (tmp_path / "f.txt").write_text("not a directory")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "RUNTAP_"))}
    env.update({k: v.format(tmp=tmp_path) for k, v in variables.items()})
    flags = {"--capture-mode": mode, "--listen": "127.0.0.1:0", "--admin": "127.0.0.1:0", "--upstream": "http://127.0.0.1:9",
             "--db": str(tmp_path / "r.duckdb")}
    argv = [a for flag, value in flags.items() if "RUNTAP_" + flag[2:].upper().replace("-", "_") not in env
            for a in (flag, value)]
    return ["serve", *argv], env


def _serve(tmp_path: Path, variables: dict[str, str], mode: str) -> subprocess.CompletedProcess[str]:
    argv, env = _command(tmp_path, variables, mode)
    return subprocess.run([sys.executable, "-m", "runtap.proxy", *argv],
                          env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False)


@pytest.fixture(scope="module")
def serve_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               ) -> dict[str, Future[subprocess.CompletedProcess[str]]]:
    """The `runtap serve` process of every selected row, run CONCURRENT at a time, by row id; each row's
    test then checks its own (a row whose process failed to run raises in that row's test only)."""
    selected = {item.callspec.id for item in request.session.items
                if getattr(item, "originalname", None) == ROW_TEST and hasattr(item, "callspec")}
    with ThreadPoolExecutor(CONCURRENT) as pool:
        return {str(row.id): pool.submit(_serve, tmp_path_factory.mktemp(str(row.id)), row.values[0], row.values[2])
                for row in ROWS if row.id in selected}


@pytest.mark.slow  # a runtap process per row
@pytest.mark.timeout(300)  # the first row's test waits for the table's processes (each still has 60 s)
@pytest.mark.parametrize(("variables", "needle", "mode"), ROWS)
def test_a_hostile_value_is_one_line_and_exit_2(serve_runs: dict[str, Future[subprocess.CompletedProcess[str]]],
                                                 request: pytest.FixtureRequest, variables: dict[str, str],
                                                 needle: str, mode: str) -> None:
    done = serve_runs[request.node.callspec.id].result()
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("runtap: error: invalid "), lines[0]
    assert needle in lines[0], lines[0]
    assert SECRET not in done.stderr


@pytest.mark.parametrize(("variables", "needle", "mode"), [
    pytest.param(env, needle, mode, id=f"{name}-{mode}") for name, env, needle, modes in CASES for mode in modes
    if name in RESOLVED])
def test_resolve_refuses_the_value_serve_would_exit_on(tmp_path: Path, variables: dict[str, str], needle: str,
                                                      mode: str) -> None:
    argv, env = _command(tmp_path, variables, mode)
    with pytest.raises(ConfigError) as raised:
        resolve(vars(build_parser("serve").parse_args(argv)), environ=env)
    assert str(raised.value).startswith("invalid ") and needle in str(raised.value), raised.value
    assert "\n" not in str(raised.value)


def test_a_listener_that_cannot_bind_names_both_addresses(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "RUNTAP_"))}
    done = subprocess.run([sys.executable, "-m", "runtap.proxy", "serve", "--listen", "127.0.0.1:0", "--admin",
                           "no-such-host.invalid:0", "--db", str(tmp_path / "r.duckdb")],
                          env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False)
    errors = [ln for ln in done.stderr.splitlines() if " ERROR " in ln or "Traceback" in ln]
    assert done.returncode == 1, done.stderr
    assert len(errors) == 1 and "--admin no-such-host.invalid:0" in errors[0], done.stderr


@pytest.mark.parametrize(("variables", "needle"), [(env, needle) for _, env, needle, _ in CASES
                                                   if any(k.startswith("OTEL_") for k in env)])
def test_check_env_names_the_variable(variables: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as raised:
        check_env(variables)
    assert SECRET not in str(raised.value)


@pytest.mark.parametrize("variables", [
    {}, {"OTEL_BSP_MAX_QUEUE_SIZE": "abc"},  # tracing off: nothing reads it
    {"OTEL_SDK_DISABLED": "true", **TRACING, "OTEL_BSP_MAX_QUEUE_SIZE": "abc"},
    {**TRACING, "OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100",
     "OTEL_BSP_SCHEDULE_DELAY": "500", "OTEL_BSP_EXPORT_TIMEOUT": "0", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "unset",
     "OTEL_EXPORTER_OTLP_TIMEOUT": "2.5", "OTEL_EXPORTER_OTLP_COMPRESSION": "GZIP",
     "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer x, x-tenant=a%20b,", "OTEL_TRACES_SAMPLER": "TraceIdRatio",
     "OTEL_TRACES_SAMPLER_ARG": " 0.25 ", "OTEL_RESOURCE_ATTRIBUTES": "service.name=a, k = v ,",
     "OTEL_SERVICE_NAME": "", "OTEL_SDK_DISABLED": "False"},
])
def test_check_env_lets_good_values_pass(variables: dict[str, str]) -> None:
    check_env(variables)
