"""A batch spooled before its effects were emitted gets them from its replay: once, never zero.

Effects (run transitions, finishes, tokens) reach the metrics when a batch is first processed. A batch the
store could not even merge (running out of memory while loading the rows it updates, or a store that is
not open) has no effects to emit then; its replay must emit them, or a persisted change never reaches
the metrics. A batch whose effects were emitted before its write failed replays without emitting again.
The writer's thread is driven step by step here (not started), as it runs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from runtap.analytics.ingest.health import CaptureHealth, Kind
from runtap.analytics.ingest.merge import Effect, RunFinished, Transition
from runtap.analytics.ingest.records import CaptureItem, ResponseBody
from runtap.analytics.ingest.store import Store
from runtap.analytics.ingest.writer import CaptureWriter, WriterConfig, WriterHooks

from tests.test_writer import exchange, record, rows, run


def retrieved(xid: str, rid: str, status: str) -> list[CaptureItem]:
    return [ResponseBody(exchange(xid), 200, orjson.dumps(run(rid, status)), truncated=False), record(xid)]


def transitions(effects: list[Effect]) -> list[tuple[str | None, str]]:
    return [(e.from_status, e.to_status) for e in effects if isinstance(e, Transition)]


def finished(effects: list[Effect]) -> int:
    return sum(1 for e in effects if isinstance(e, RunFinished))


def writer_for(db: Path, effects: list[Effect], health: CaptureHealth) -> CaptureWriter:
    # No row cache, so the update's load reads the database (what a months-old file does for most ids).
    return CaptureWriter(WriterConfig(db_path=str(db), reopen_interval_s=60.0), health=health,
                         hooks=WriterHooks(on_effects=effects.extend),
                         store_factory=lambda: Store(str(db), cache_rows=0))


def test_running_out_of_memory_while_loading_rows_still_counts_the_transition_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "capture.duckdb"
    effects: list[Effect] = []
    health = CaptureHealth()
    writer = writer_for(db, effects, health)
    writer._begin()
    try:
        writer._batch(retrieved("req_1", "run_1", "in_progress"))
        assert transitions(effects) == [(None, "in_progress")]

        real_fetch = Store._fetch

        def out_of_memory_once(self: Store, *args: Any) -> Any:
            monkeypatch.setattr(Store, "_fetch", real_fetch)
            raise duckdb.OutOfMemoryException("Out of Memory Error: failed to pin block of size 256.0 KiB")

        monkeypatch.setattr(Store, "_fetch", out_of_memory_once)
        writer._batch(retrieved("req_2", "run_1", "completed"))  # the load runs out: poisoned, spooled
        assert writer._owner.store is None and health.total(Kind.SPOOLED) == 2
        writer._open_store()  # the reopen replays the spool
        assert health.total(Kind.REPLAYED) == 2
        # the same snapshot again, live: already stored, nothing new to count
        writer._batch(retrieved("req_3", "run_1", "completed"))
    finally:
        writer._owner.close()
    assert rows(db, "SELECT status FROM runs") == [("completed",)]
    assert transitions(effects) == [(None, "in_progress"), ("in_progress", "completed")]
    assert finished(effects) == 1


def test_a_failed_write_held_in_memory_is_not_counted_again_when_it_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk fails the commit (after the merge: its effects are emitted then) and the spool file too,
    so the batch is held in memory (hold.py); written later, it must not emit the same effects again."""
    db = tmp_path / "capture.duckdb"
    spool_dir = Path(f"{db}.spool.jsonl")
    effects: list[Effect] = []
    health = CaptureHealth()
    writer = writer_for(db, effects, health)
    writer._begin()
    try:
        writer._batch(retrieved("req_1", "run_1", "in_progress"))
        spool_dir.mkdir()  # every write to the spool fails, as on a full disk
        real_write_rows = Store._write_rows

        def disk_full_once(self: Store, *args: Any) -> Any:
            monkeypatch.setattr(Store, "_write_rows", real_write_rows)
            raise duckdb.IOException("IO Error: Could not write file: No space left on device")

        monkeypatch.setattr(Store, "_write_rows", disk_full_once)
        writer._batch(retrieved("req_2", "run_1", "completed"))
        assert writer._failover.held() == 2 and writer._owner.store is None
        assert transitions(effects) == [(None, "in_progress"), ("in_progress", "completed")]
        spool_dir.rmdir()  # space returns
        writer._open_store()
        writer._release_hold()
        assert writer._failover.held() == 0 and health.total(Kind.WRITTEN, "runs") == 2
    finally:
        writer._owner.close()
    assert rows(db, "SELECT status FROM runs") == [("completed",)]
    assert transitions(effects) == [(None, "in_progress"), ("in_progress", "completed")]
    assert finished(effects) == 1
