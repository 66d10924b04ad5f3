"""DuckDB faults: the proxy keeps forwarding, snapshots go to the spool, and the spool is replayed once
the database can be written again (at the next start at the latest) with nothing lost; past the spool's
bound, what is dropped is counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from runtap.analytics.ingest.store import Store
from runtap.demo import workload as w

from tests.fault_helpers import (
    API_KEY,
    Proxy,
    flushed_stats,
    get_json,
    locked,
    proxy_to,
    query,
    requests_total,
    sim,
    start_runtap,
    terminate,
)


def _runs(db: Path) -> dict[str, str]:
    return dict(query(db, "SELECT id, status FROM runs"))


async def _workload(px: Proxy) -> w.WorkloadResult:
    result = await w.run_workload(px.running.proxy_url + "/v1", api_key=API_KEY)
    assert len(result.runs) == 11 and result.errors["unexpected_success"] == 0
    return result


def _spool_lines(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


async def test_locked_db_keeps_the_proxy_serving_and_the_spool_replays_at_restart(tmp_path: Path) -> None:
    db = tmp_path / "runtap.duckdb"
    async with sim() as upstream:
        with locked(db):
            async with proxy_to(tmp_path, upstream) as px:
                result = await _workload(px)  # every call answered while DuckDB is unavailable
                status, ready = await get_json(px.running.admin_url + "/readyz")
                assert status == 503 and ready["store"] == "unavailable (spooling)"
                assert px.writer.flush(30)
                served = requests_total(px)
                stats: dict[str, Any] = dict(px.writer.stats)
            assert stats["written"] == 0 and stats["spool_dropped"] == 0 and stats["dropped"] == 0
            assert stats["spooled"] == _spool_lines(px.settings.spool_path) > served
        # Writable again: the next start replays the spool before anything new.
        async with proxy_to(tmp_path, upstream) as px2:
            assert px2.writer.flush(30)
            assert px2.health.total("replayed", "items") == stats["spooled"]
            status, ready = await get_json(px2.running.admin_url + "/readyz")
            assert status == 200
    assert _runs(db) == result.runs  # every run, with the final status the app saw
    assert query(db, "SELECT count(*) FROM requests")[0][0] == served
    assert os.path.getsize(px.settings.spool_path) == 0


async def test_unwritable_db_path_spools_elsewhere_and_replays_once_writable(tmp_path: Path) -> None:
    # As root, permissions cannot make a directory unwritable; a file where the directory should be
    # makes the path just as impossible to create.
    blocked = tmp_path / "data"
    blocked.write_text("not a directory")
    db = blocked / "runtap.duckdb"
    spool = tmp_path / "spool" / "runtap.spool.jsonl"
    async with sim() as upstream:
        async with proxy_to(tmp_path, upstream, db=str(db), spool=str(spool)) as px:
            result = await _workload(px)
            assert px.writer.flush(30)
            assert px.health.total("errors", "store_open:IOException") >= 1
            spooled = px.writer.stats["spooled"]
        assert spooled == _spool_lines(str(spool)) > 0
        blocked.unlink()
        blocked.mkdir()
        async with proxy_to(tmp_path, upstream, db=str(db), spool=str(spool)) as px2:
            assert px2.writer.flush(30)
            assert px2.health.total("replayed", "items") == spooled
    assert _runs(db) == result.runs


async def test_spool_bound_drops_and_counts_what_does_not_fit(tmp_path: Path) -> None:
    db = tmp_path / "runtap.duckdb"
    bound = 16 << 10
    async with sim() as upstream:
        with locked(db):
            async with proxy_to(tmp_path, upstream, spool_max_bytes=bound) as px:
                result = await _workload(px)
                assert px.writer.flush(30)
                stats = dict(px.writer.stats)
            size = os.path.getsize(px.settings.spool_path)
        assert 0 < size <= bound
        assert stats["spool_dropped"] > 0
        assert px.health.total("dropped", "spool_full") == stats["spool_dropped"]
        async with proxy_to(tmp_path, upstream) as px2:
            assert px2.writer.flush(30)
            replayed = px2.health.total("replayed", "items")
    # What fit was replayed whole; what did not is counted above, and the runs it held are missing.
    assert replayed == stats["spooled"] > 0
    runs = _runs(db)
    assert runs and set(runs) < set(result.runs)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_disk_full_keeps_the_proxy_serving_and_what_was_spooled_is_replayed(tmp_path: Path) -> None:
    db = tmp_path / "runtap.duckdb"
    Store(str(db)).close()  # the database exists; then its disk fills up
    limit = 100_000  # bytes any one file of the process may reach: the WAL hits it first
    saw: dict[str, str] = {}
    async with sim() as upstream:
        proc = await start_runtap(upstream, db, tmp_path / "full.log", file_size_limit=limit)
        try:
            async with w.client_for(proc.url + "/v1", API_KEY) as client:
                # One run at a time until the WAL write fails, then one more: the spool (as limited as
                # every other file) must hold what comes after the failure.
                after_failure = 0
                for i in range(200):
                    result = w.WorkloadResult()
                    await w.polled_run(client, result, model="gpt-4o", scenario=("complete", "fail")[i % 2],
                                       headers=w.V2)
                    saw.update(result.runs)  # every call answered while the disk is full
                    if "File too large" in proc.text():
                        after_failure += 1
                        if after_failure == 2:
                            break
                else:
                    pytest.fail("the WAL never outgrew the file size limit")
            assert await terminate(proc) == 0
        finally:
            proc.kill()
        full = flushed_stats(proc.text())
        assert full["spooled"] > 0 and full["spool_dropped"] == 0, full
        proc2 = await start_runtap(upstream, db, tmp_path / "after.log")
        assert await terminate(proc2) == 0
    assert flushed_stats(proc2.text())["replayed"] == full["spooled"]
    assert _runs(db) == saw


_SPOOL_ON_A_FULL_DISK = """
import json, resource, sys
from runtap.analytics.ingest.spool import Spool
from runtap.analytics.ingest.store import Store
from runtap.analytics.ingest.records import RequestRecord

def records(prefix, n):
    return [RequestRecord(id=f"{prefix}{i}", started_at=1.7e9, method="GET", path="/v1/x" + "y" * 200,
                          operation=None, status_code=200, streamed=False, duration_ms=1.0,
                          upstream_ttfb_ms=1.0, bytes_in=0, bytes_out=10, upstream_request_id=None,
                          key_fingerprint=None, error=None) for i in range(n)]

spool = Spool(sys.argv[1] + ".spool", max_bytes=1 << 30)
assert spool.append([], records("a", 5)) == 0
# The disk fills up: the next batch can be written only in part.
resource.setrlimit(resource.RLIMIT_FSIZE, (spool.size + 700, resource.RLIM_INFINITY))
try:
    spool.append([], records("b", 10))
    failed = False
except OSError:
    failed = True
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
assert spool.append([], records("c", 5)) == 0  # space again
store = Store(sys.argv[1])
replayed = spool.replay(store)
ids = sorted(r[0] for r in store.connection.execute("SELECT id FROM requests").fetchall())
store.close()
print(json.dumps({"failed": failed, "replayed": replayed, "skipped": spool.skipped_lines, "ids": ids}))
"""


def test_a_spool_write_cut_short_by_a_full_disk_leaves_no_fragment(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _SPOOL_ON_A_FULL_DISK, str(tmp_path / "db.duckdb")],
                         capture_output=True, check=True, cwd=Path(__file__).resolve().parent.parent,
                         timeout=60)
    result = json.loads(out.stdout)
    # The cut batch is reported failed as a whole (the writer counts all of it dropped) and leaves no
    # partial line behind that would swallow the next batch's first item at replay.
    assert result["failed"] is True
    assert result["skipped"] == 0
    assert result["ids"] == sorted([f"a{i}" for i in range(5)] + [f"c{i}" for i in range(5)])
    assert result["replayed"] == 10
