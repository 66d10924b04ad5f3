"""`--capture-mode process` at SIGTERM: a capture process that dies while draining is not a silent loss.

Once the relay's channel has closed, nothing in the relay counts what the capture process still held
(its drops are counted while the connection is open). So if the capture process then dies before its
queue reaches DuckDB, runtap must say how much may be lost and exit non-zero, not log a clean exit.
Real processes: the simulated upstream, `runtap serve`, its capture process, DuckDB on disk.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.fault_helpers import eventually, start_runtap, terminate
from tests.test_capture_process import _assistant, _json, _run_ids, _thread_and_run, _until

LOST = re.compile(r"capture process exited with (-?\d+) while draining .*: up to (\d+) item")


@pytest.mark.timeout(120)
async def test_a_capture_process_killed_while_draining_is_reported_and_fails_the_exit(
        tmp_path: Path, sim_upstream: str) -> None:
    db = tmp_path / "runtap.duckdb"
    proc = await start_runtap(sim_upstream, db, tmp_path / "runtap.log", "--capture-mode", "process")
    pid = 0
    try:
        async with aiohttp.ClientSession() as client:
            assistant = await _assistant(client, proc.url)

            async def store_open() -> bool:  # the schema exists: the runs the test looks for have a table
                return (await _json(client, proc.admin_url + "/readyz")).get("store") == "open"

            await _until("the capture process's store open", store_open)
            pid = (await _json(client, proc.admin_url + "/readyz"))["capture_process"]["pid"]
            # Frozen, it reads nothing more: what the relay hands over waits in the socket.
            os.kill(pid, signal.SIGSTOP)
            runs = [await _thread_and_run(client, proc.url, assistant) for _ in range(10)]
        proc.signal(signal.SIGTERM)
        # The relay has closed its channel and now waits for the capture process to drain: it dies.
        # (Polled: another process's log has no other way to tell us.)
        await eventually(lambda: "stopping the capture process" in proc.text(), 30,
                         what="'stopping the capture process' logged")
        os.kill(pid, signal.SIGKILL)
        rc = await proc.wait(60)
    finally:
        if pid:
            with contextlib.suppress(ProcessLookupError):  # a failed assertion above: not left frozen
                os.kill(pid, signal.SIGKILL)
        await terminate(proc)
    missing = set(runs) - _run_ids(db)
    assert missing, "the killed capture process wrote everything: the test no longer kills it in time"
    assert rc != 0, proc.text()[-2000:]
    m = LOST.search(proc.text())
    assert m is not None, proc.text()[-2000:]
    assert int(m.group(1)) == -signal.SIGKILL
    # Each run is at least two items (its request record and its snapshot): the bound covers the loss.
    assert int(m.group(2)) >= 2 * len(missing)

