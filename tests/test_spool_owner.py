"""A second runtap on the same database and spool stops at start-up with one line naming the first one;
with its own --spool it may start (and spools, the database being held); a database held by something
that is not a runtap still means "serve and spool"."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from runtap.proxy.owner import SpoolInUse, claim_spool

from tests.fault_helpers import ROOT, get_json, locked, sim, start_runtap, terminate

pytestmark = pytest.mark.allow_loop_blocking


def _second(db: Path, upstream: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runtap.proxy", "serve", "--upstream", upstream, "--listen",
                           "127.0.0.1:0", "--admin", "127.0.0.1:0", "--db", str(db), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


async def test_a_second_runtap_on_the_same_db_exits_naming_the_first(tmp_path: Path) -> None:
    db = tmp_path / "capture.duckdb"
    async with sim() as upstream:
        first = await start_runtap(upstream, db, tmp_path / "first.log")
        try:
            second = await asyncio.to_thread(_second, db, upstream)
            assert second.returncode == 2, second.stderr
            lines = [line for line in second.stderr.splitlines() if line.strip()]
            assert len(lines) == 1, second.stderr
            assert lines[0].startswith("runtap: error: another runtap (pid ")
            assert f"pid {first.popen.pid})" in lines[0] and str(db) in lines[0] and "--spool" in lines[0]
            # the first one's spool was never touched, and it still serves and captures
            assert not Path(f"{db}.spool.jsonl").exists()
            status, body = await get_json(first.admin_url + "/readyz")
            assert status == 200 and body["store"] == "open"
        finally:
            assert await terminate(first) == 0


async def test_with_its_own_spool_a_second_runtap_serves_and_spools_there(tmp_path: Path) -> None:
    db = tmp_path / "capture.duckdb"
    own = tmp_path / "second.spool.jsonl"
    async with sim() as upstream:
        first = await start_runtap(upstream, db, tmp_path / "first.log")
        try:
            second = await start_runtap(upstream, db, tmp_path / "second.log", "--spool", str(own))
            try:
                status, body = await get_json(second.admin_url + "/readyz")
                assert status == 503 and body["store"] == "unavailable (spooling)"
            finally:
                assert await terminate(second) == 0
        finally:
            assert await terminate(first) == 0


async def test_a_db_locked_by_a_non_runtap_process_still_means_serve_and_spool(tmp_path: Path) -> None:
    db = tmp_path / "capture.duckdb"
    async with sim() as upstream:
        with locked(db):
            proc = await start_runtap(upstream, db, tmp_path / "runtap.log")
            try:
                status, body = await get_json(proc.admin_url + "/readyz")
                assert status == 503 and body["store"] == "unavailable (spooling)"
            finally:
                assert await terminate(proc) == 0


def test_the_claim_is_exclusive_and_released_with_the_process_or_on_release(tmp_path: Path) -> None:
    spool = str(tmp_path / "s.spool.jsonl")
    claim = claim_spool(spool, db_path="db")
    with pytest.raises(SpoolInUse, match=f"pid {os.getpid()}"):
        claim_spool(spool, db_path="db")
    claim.release()
    claim_spool(spool, db_path="db").release()
    # a holder that was killed leaves the lock file, not the lock
    code = ("import sys, os, signal; from runtap.proxy.owner import claim_spool; "
            "c = claim_spool(sys.argv[1], db_path='db'); os.kill(os.getpid(), signal.SIGKILL)")
    subprocess.run([sys.executable, "-c", code, spool], cwd=ROOT, check=False, timeout=60)
    claim_spool(spool, db_path="db").release()
