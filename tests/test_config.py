from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from runtap.settings.config import SETTINGS, ConfigError, HostPort, resolve

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_match_the_documented_ones() -> None:
    s = resolve({}, environ={})
    assert s.upstream == "https://api.openai.com"
    assert s.listen == HostPort("127.0.0.1", 8080)
    assert s.admin == HostPort("127.0.0.1", 9464)
    assert s.db == "./runtap.duckdb"
    assert s.spool_path == "./runtap.duckdb.spool.jsonl"
    assert s.max_body_bytes == 32 << 20
    assert s.store_prompts is False


def test_flag_beats_env_beats_default() -> None:
    env = {"RUNTAP_LISTEN": "0.0.0.0:9000", "RUNTAP_DB": "/data/x.duckdb", "RUNTAP_STORE_PROMPTS": "yes"}
    s = resolve({"listen": "127.0.0.1:7000"}, environ=env)
    assert s.listen == HostPort("127.0.0.1", 7000)
    assert s.db == "/data/x.duckdb"
    assert s.store_prompts is True


@pytest.mark.parametrize(("env", "needle"), [
    ({"RUNTAP_LISTEN": "nope"}, "RUNTAP_LISTEN"),
    ({"RUNTAP_UPSTREAM": "ftp://x"}, "RUNTAP_UPSTREAM"),
    ({"RUNTAP_MAX_BODY_BYTES": "-1"}, "RUNTAP_MAX_BODY_BYTES"),
    ({"RUNTAP_CONNECT_TIMEOUT": "soon"}, "RUNTAP_CONNECT_TIMEOUT"),
    ({"RUNTAP_STORE_PROMPTS": "maybe"}, "RUNTAP_STORE_PROMPTS"),
    ({"RUNTAP_MAX_BODY_BYTES": "inf"}, "RUNTAP_MAX_BODY_BYTES"),
    ({"RUNTAP_CONNECT_TIMEOUT": "nan"}, "RUNTAP_CONNECT_TIMEOUT"),
    ({"RUNTAP_DB_MEMORY_LIMIT": "lots"}, "RUNTAP_DB_MEMORY_LIMIT"),
])
def test_bad_values_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        resolve({}, environ=env)


def test_bad_config_is_one_line_and_a_nonzero_exit() -> None:
    proc = subprocess.run([sys.executable, "-m", "runtap.proxy", "serve", "--listen", "localhost:http"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("runtap: error: invalid --listen / RUNTAP_LISTEN")


@pytest.mark.parametrize("mode", ["inprocess", "process"])
def test_a_bad_price_file_is_one_line_and_a_nonzero_exit_in_either_capture_mode(tmp_path: Path, mode: str) -> None:
    # In process mode the capture process also reads the price file: it must not be the one to find out.
    proc = subprocess.run([sys.executable, "-m", "runtap.proxy", "serve", "--listen", "127.0.0.1:0",
                           "--admin", "127.0.0.1:0", "--db", str(tmp_path / "r.duckdb"), "--capture-mode", mode,
                           "--prices", str(tmp_path / "missing.csv")],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("runtap: error: invalid --prices / RUNTAP_PRICES: cannot read price file")


def test_every_setting_is_documented_on_the_configuration_page() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    for s in SETTINGS:
        assert re.search(rf"`{re.escape(s.flag)}`", page), f"{s.flag} missing from docs/configuration.md"
        assert s.env in page, f"{s.env} missing from docs/configuration.md"


def test_help_documents_every_flag() -> None:
    proc = subprocess.run([sys.executable, "-m", "runtap.proxy", "serve", "--help"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0
    for s in SETTINGS:
        assert s.flag in proc.stdout and s.env in proc.stdout


@pytest.mark.parametrize("command", [[], ["serve"], ["export"], ["report"], ["sql"]])
def test_the_help_says_runtap_captures_responses_too(command: list[str]) -> None:
    # runtap captures runs, run steps and Responses API responses; help that names only the Runs API
    # (switched off by OpenAI on 2026-08-26) tells a new user it is the wrong tool.
    proc = subprocess.run([sys.executable, "-m", "runtap.proxy", *command, "--help"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0
    assert "respons" in proc.stdout.lower(), proc.stdout
    assert "Runs API traffic" not in proc.stdout


def test_an_empty_db_is_the_default_file_not_an_in_memory_database() -> None:
    # DuckDB opens an in-memory database for "": a sidecar would capture into nothing, silently.
    assert resolve({}, environ={"RUNTAP_DB": ""}).db == "./runtap.duckdb"
    assert resolve({"db": " "}, environ={}).db == "./runtap.duckdb"
