"""`--capture-mode process` keeps DuckDB and the analytics code out of the relay process (issue 16).

The relay only forwards and hands bytes to the capture process; a relay that maps libduckdb pays ~55 MB
of RSS per process for nothing (and --workers N pays it N times). Checked on the real program: the
relay's /proc/PID/maps after it served requests, beside the capture process's, which must map it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.fault_helpers import API_KEY, start_runtap, terminate
from tests.test_workers import _ready

HEADERS = {"Authorization": f"Bearer {API_KEY}", "OpenAI-Beta": "assistants=v2"}
# Modules only the capture process (or an analytics command) needs.
CAPTURE_ONLY = ("duckdb", "_duckdb", "pyarrow", "pandas", "numpy", "runtap.analytics.ingest.store",
                "runtap.analytics.ingest.writer", "runtap.analytics.ingest.decode", "runtap.analytics.ingest.spool",
                "runtap.analytics.reports", "runtap.analytics.lake", "runtap.proxy.admin_reports")


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    return [int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps (Linux)")
@pytest.mark.timeout(90)
async def test_the_relay_process_maps_no_duckdb_and_the_capture_process_does(
        tmp_path: Path, sim_upstream: str) -> None:
    proc = await start_runtap(sim_upstream, tmp_path / "runtap.duckdb", tmp_path / "runtap.log",
                              "--capture-mode", "process")
    try:
        async with aiohttp.ClientSession() as client:
            async with client.post(f"{proc.url}/v1/assistants", json={"model": "gpt-4o"},
                                   headers=HEADERS) as r:
                assert r.status == 200
                aid = (await r.json())["id"]
            async with client.post(f"{proc.url}/v1/threads/runs", json={"assistant_id": aid},
                                   headers=HEADERS) as r:
                assert r.status == 200
            async with client.get(proc.admin_url + "/metrics") as r:  # merged from the capture process
                assert r.status == 200
        await _ready(proc.admin_url + "/readyz")  # asks the capture process whether its store is open
        relay = proc.popen.pid
        capture = _children(relay)
        assert len(capture) == 1
        assert "duckdb" in _maps(capture[0])
        assert "duckdb" not in _maps(relay)
    finally:
        assert await terminate(proc) == 0


def test_a_process_mode_relay_imports_nothing_only_the_capture_process_needs(tmp_path: Path) -> None:
    # What `runtap serve --capture-mode process` builds in the relay (parser, runtime, admin app), in a
    # fresh interpreter so the test process's own imports do not count.
    code = f"""
import sys
from runtap.proxy.__main__ import build_parser
from runtap.proxy.admin import create_admin_app, configured_prices
from runtap.proxy.app import build_runtime, close_unstarted, create_app
from runtap.settings.config import resolve
args = build_parser("serve").parse_args(["serve", "--capture-mode", "process", "--db", {str(tmp_path / "x.duckdb")!r}])
settings = resolve(vars(args))
configured_prices(settings)
rt = build_runtime(settings)
create_app(settings, runtime=rt)
create_admin_app(rt)
close_unstarted(rt)
print(" ".join(m for m in {CAPTURE_ONLY!r} if m in sys.modules))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTAP_", "OTEL_"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                         check=True)
    assert out.stdout.split() == []


@pytest.mark.parametrize("argv", [["-h", "serve"], ["--help", "report"]])
def test_help_before_a_command_lists_every_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # Only the named command's module is imported for `runtap serve ...`; `runtap -h serve` is the
    # top-level help all the same, and must not read as if serve were the only command.
    from runtap.proxy.__main__ import main
    from runtap.proxy.commands import COMMANDS

    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    listed = capsys.readouterr().out
    assert all(re.search(rf"^    {name}\s", listed, re.M) for name in COMMANDS), listed
