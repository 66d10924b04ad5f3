"""`runtap serve` as a subprocess, stopped the polite way (SIGTERM: streams finish, every snapshot lands in
DuckDB) and the hard way (SIGKILL: the next start opens the database from its WAL and replays the spool)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from runtap.demo import workload as w

from tests.fault_helpers import (
    API_KEY,
    flushed_stats,
    get_json,
    locked,
    query,
    sim,
    start_runtap,
    terminate,
)
from tests.fault_helpers import start_sim as start_sim_process
from tests.metrics_scrape import scrape

STREAMS = 50


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_sigterm_with_50_streams_in_flight_finishes_them_all_and_keeps_every_snapshot(
        tmp_path: Path) -> None:
    # Events 0.25 s apart: a stream lasts ~3 s, so on a loaded machine the first stream is still in
    # flight when the 50th has started (at 0.1 s a busy CI box could finish some before SIGTERM).
    sim_proc = await start_sim_process(tmp_path / "sim.log", "--stream-event-delay-s", "0.25")
    db = tmp_path / "runtap.duckdb"
    proc = await start_runtap(sim_proc.url, db, tmp_path / "runtap.log", "--grace-period", "30")
    try:
        client = w.client_for(proc.url + "/v1", API_KEY)
        assistant = await client.beta.assistants.create(model="gpt-4o", name="drain")
        threads = await asyncio.gather(*(client.beta.threads.create() for _ in range(STREAMS)))
        started = [asyncio.Event() for _ in range(STREAMS)]

        async def stream(i: int) -> tuple[Any, list[str]]:
            events: list[str] = []
            final = None
            s = await client.beta.threads.runs.create(thread_id=threads[i].id, assistant_id=assistant.id,
                                                      stream=True, metadata={"sim_scenario": "complete"})
            async for event in s:
                events.append(event.event)
                started[i].set()
                if event.event.startswith("thread.run.") and not event.event.startswith("thread.run.step"):
                    final = event.data
            return final, events

        tasks = [asyncio.create_task(stream(i)) for i in range(STREAMS)]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 60)
        assert not any(t.done() for t in tasks), "every stream must still be in flight at SIGTERM"
        proc.signal(15)
        results = await asyncio.wait_for(asyncio.gather(*tasks), 90)
        await client.close()
        assert await proc.wait(60) == 0
    finally:
        proc.kill()
        sim_proc.kill()
    finals = {run.id: run.status for run, _ in results}
    assert len(finals) == STREAMS and set(finals.values()) == {"completed"}
    assert all(events[-1] == "thread.run.completed" for _, events in results)
    # Every snapshot relayed during the drain is in the file: final status, each step, each transition.
    assert dict(query(db, "SELECT id, status FROM runs")) == finals
    steps = query(db, "SELECT run_id, count(*) FILTER (WHERE status = 'completed') FROM run_steps GROUP BY 1")
    assert {run_id for run_id, done in steps if done >= 1} == set(finals)
    reached = query(db, "SELECT DISTINCT run_id FROM run_events WHERE to_status = 'completed'")
    assert {r[0] for r in reached} == set(finals)
    stats = flushed_stats(proc.text())
    assert stats["dropped"] == 0 and stats["spooled"] == 0 and stats["errors"] == 0


async def _traffic(base: str, stop: asyncio.Event, done: dict[str, str], workers: int = 8) -> None:
    """Polled runs from several clients until `stop`; errors once runtap is killed are expected."""
    async def worker() -> None:
        async with w.client_for(base + "/v1", API_KEY) as client:
            while not stop.is_set():
                result = w.WorkloadResult()
                try:
                    await w.polled_run(client, result, model="gpt-4o", scenario="complete", headers=w.V2)
                except Exception:
                    if not stop.is_set():
                        raise
                    return
                done.update(result.runs)

    await asyncio.gather(*(worker() for _ in range(workers)))


async def _wait_for(cond: Any, timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)
    assert cond(), what


@pytest.mark.timeout(120)
async def test_sigkill_mid_write_then_the_next_start_opens_the_db_from_its_wal(tmp_path: Path) -> None:
    db = tmp_path / "runtap.duckdb"
    wal = Path(str(db) + ".wal")
    async with sim() as upstream:
        proc = await start_runtap(upstream, db, tmp_path / "killed.log")
        stop = asyncio.Event()
        before: dict[str, str] = {}
        traffic = asyncio.create_task(_traffic(proc.url, stop, before))
        try:
            # runtap checkpoints only when it closes: until then every commit lives in the WAL. The
            # finished-runs counter moves only after a batch has committed; the WAL's size is no proof
            # (a batch being written when the kill lands is in it too, uncommitted: an earlier version
            # of this test waited on the size and, 1 run in ~35, killed before the first commit).
            await _wait_committed_finished_runs(proc.admin_url, 10, 60)
            assert wal.exists() and wal.stat().st_size > 0
            stop.set()  # the clients' in-flight calls still run: their errors from here on are expected
            proc.popen.kill()  # SIGKILL while the writer commits and the clients keep going
            await proc.wait(30)
        finally:
            stop.set()
            await traffic
            proc.kill()
        proc2 = await start_runtap(upstream, db, tmp_path / "restarted.log")
        try:
            # Ready once the writer has opened the file (replaying its WAL), as a readiness probe sees it.
            await _wait_ready(proc2.admin_url, 30)
            after: dict[str, str] = {}
            async with w.client_for(proc2.url + "/v1", API_KEY) as client:
                result = w.WorkloadResult()
                await w.polled_run(client, result, model="gpt-4o", scenario="complete", headers=w.V2)
                after.update(result.runs)
            assert await terminate(proc2) == 0
        finally:
            proc2.kill()
    assert "store_open" not in proc2.text()
    runs = dict(query(db, "SELECT id, status FROM runs"))
    assert len(set(runs) & set(before)) >= 10, "work committed before the kill must survive it"
    assert all(runs[r] == s for r, s in after.items())
    # Each batch is one transaction: a run row and the transition that set its status commit together.
    reached = query(db, "SELECT run_id, list(to_status) FROM run_events GROUP BY 1")
    assert {r for r, statuses in reached if runs.get(r) in statuses} == set(runs)


async def _wait_committed_finished_runs(admin_url: str, n: int, timeout: float) -> None:
    """Until `runtap_runs_finished_total` (counted from committed batches only) reaches n."""
    async with asyncio.timeout(timeout):
        while (await scrape(admin_url)).get("runtap_runs_finished_total") < n:
            await asyncio.sleep(0.05)


async def _wait_ready(admin_url: str, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while True:
            status, ready = await get_json(admin_url + "/readyz")
            if status == 200:
                assert ready["store"] == "open"
                return
            await asyncio.sleep(0.05)


def _spooled_statuses(spool: Path) -> dict[str, str]:
    """Latest status per run id in the spool's snapshot lines (unreadable torn lines skipped)."""
    out: dict[str, str] = {}
    if not spool.exists():
        return out
    for line in spool.read_bytes().splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            item = orjson.loads(line)
            snap = item.get("s")
            if snap and snap.get("kind") == "run":
                out[snap["obj"]["id"]] = snap["obj"]["status"]
    return out


@pytest.mark.timeout(120)
async def test_sigkill_with_a_spool_pending_then_the_next_start_replays_it(tmp_path: Path) -> None:
    db = tmp_path / "runtap.duckdb"
    spool = Path(str(db) + ".spool.jsonl")
    async with sim() as upstream:
        with locked(db):
            proc = await start_runtap(upstream, db, tmp_path / "killed.log")
            first: dict[str, str] = {}
            try:
                async with w.client_for(proc.url + "/v1", API_KEY) as client:
                    for _ in range(5):
                        result = w.WorkloadResult()
                        await w.polled_run(client, result, model="gpt-4o", scenario="complete", headers=w.V2)
                        first.update(result.runs)
                # Every final status the app saw is on disk in the spool...
                await _wait_for(lambda: all(_spooled_statuses(spool).get(r) == s for r, s in first.items()),
                                30, "the first runs spooled")
                # ...then more traffic, and SIGKILL in the middle of it (perhaps mid-line).
                stop = asyncio.Event()
                more: dict[str, str] = {}
                traffic = asyncio.create_task(_traffic(proc.url, stop, more, workers=4))
                await _wait_for(lambda: len(more) >= 4, 60, "traffic after the first runs")
                stop.set()
                proc.popen.kill()
                await proc.wait(30)
                await traffic
            finally:
                proc.kill()
        assert os.path.getsize(spool) > 0
        proc2 = await start_runtap(upstream, db, tmp_path / "restarted.log")
        assert await terminate(proc2) == 0
    assert flushed_stats(proc2.text())["replayed"] > 0
    runs = dict(query(db, "SELECT id, status FROM runs"))
    assert {r: runs.get(r) for r in first} == first
    assert os.path.getsize(spool) == 0
