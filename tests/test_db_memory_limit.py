"""--db-memory-limit bounds DuckDB's buffer pool in the capture database; DuckDB spills beside the file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from runtap.proxy.app import build_runtime
from runtap.settings.config import Settings, resolve

ROOT = Path(__file__).resolve().parents[1]


def duckdb_settings(settings: Settings) -> tuple[str, str]:
    runtime = build_runtime(settings, registry=CollectorRegistry(), tracer_provider=TracerProvider())
    writer = runtime.writer
    assert writer is not None
    writer.start()
    try:
        assert writer.flush(timeout=60)  # the store is open once the first flush is through
        con = writer.reader()
        got = con.execute("SELECT current_setting('memory_limit'), current_setting('temp_directory')").fetchone()
        con.close()
    finally:
        writer.stop()
    assert got is not None
    return got


@pytest.mark.parametrize(("env", "limit"), [({}, "488.2 MiB"), ({"RUNTAP_DB_MEMORY_LIMIT": "100MB"}, "95.3 MiB")])
def test_the_setting_reaches_duckdb_and_spills_go_beside_the_file(tmp_path: Path, env: dict[str, str],
                                                                   limit: str) -> None:
    db = tmp_path / "capture.duckdb"
    memory_limit, temp_directory = duckdb_settings(resolve({"db": str(db)}, environ=env))
    assert memory_limit == limit  # DuckDB reports 512MB (10^6 bytes) in MiB
    assert temp_directory == f"{db}.tmp"


def test_a_bad_limit_is_one_line_and_a_nonzero_exit() -> None:
    proc = subprocess.run([sys.executable, "-m", "runtap.proxy", "serve", "--db-memory-limit", "lots"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("runtap: error: invalid --db-memory-limit / RUNTAP_DB_MEMORY_LIMIT")
