from __future__ import annotations

import dataclasses
import gc
import logging
import threading
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from runtap.analytics.ingest.batching import ITEM_OVERHEAD
from runtap.analytics.ingest.health import CaptureHealth
from runtap.analytics.ingest.merge import Transition
from runtap.analytics.ingest.records import (
    CaptureItem,
    Exchange,
    RequestRecord,
    ResponseBody,
    Snapshot,
    StreamChunk,
    StreamEnd,
)
from runtap.analytics.ingest.spool import Spool
from runtap.analytics.ingest.store import Store, StoreError
from runtap.analytics.ingest.writer import CaptureWriter, WriterConfig, WriterHooks

from tests.fault_helpers import locked


def exchange(xid: str, op: str = "runs.retrieve") -> Exchange:
    return Exchange(id=xid, method="GET", path=f"/v1/threads/thread_1/runs/{xid}", operation=op,
                    api_version="v2", key_fingerprint="fp0123456789", started_at=1_700_000_000.0)


def run(rid: str, status: str = "in_progress") -> dict[str, Any]:
    return {"id": rid, "object": "thread.run", "created_at": 1_700_000_000, "assistant_id": "asst_1",
            "thread_id": "thread_1", "status": status, "model": "gpt-4o", "instructions": None,
            "tools": [], "metadata": {}, "usage": None, "started_at": None, "completed_at": None,
            "failed_at": None, "cancelled_at": None, "expires_at": None, "last_error": None,
            "required_action": None, "incomplete_details": None}


def record(xid: str, *, streamed: bool = False) -> RequestRecord:
    return RequestRecord(id=xid, started_at=1_700_000_000.0, method="GET", path="/v1/threads/thread_1/runs",
                         operation="runs.retrieve", status_code=200, streamed=streamed, duration_ms=12.5,
                         upstream_ttfb_ms=10.0, bytes_in=0, bytes_out=100, upstream_request_id=None,
                         key_fingerprint="fp0123456789", error=None, api_version="v2")


def retrieved(n: int, prefix: str = "run") -> list[CaptureItem]:
    """n retrieve exchanges: a run body and the request's record each."""
    items: list[CaptureItem] = []
    for i in range(n):
        xid = f"{prefix}_{i}"
        items.append(ResponseBody(exchange(xid), 200, orjson.dumps(run(xid)), truncated=False))
        items.append(record(xid))
    return items


def streamed(xid: str, rid: str) -> list[CaptureItem]:
    ex = exchange(xid, "runs.create")
    body = b"".join(b"event: thread.run.%s\ndata: %s\n\n" % (name.encode(), orjson.dumps(run(rid, status)))
                    for name, status in (("created", "queued"), ("in_progress", "in_progress"),
                                         ("completed", "completed")))
    return [StreamChunk(ex, body[:50], 1_700_000_001.0), StreamChunk(ex, body[50:], 1_700_000_002.0),
            StreamEnd(ex, complete=True), record(xid, streamed=True)]


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def count(db: Path, table: str) -> int:
    return int(rows(db, f"select count(*) from {table}")[0][0])



@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "capture.duckdb"


def submit_all(writer: CaptureWriter, items: list[CaptureItem]) -> None:
    assert all(writer.submit(item) for item in items)


def test_items_reach_duckdb(db: Path) -> None:
    health = CaptureHealth()
    effects: list[Any] = []
    writer = CaptureWriter(WriterConfig(db_path=str(db)), hooks=WriterHooks(on_effects=effects.extend), health=health)
    writer.start()
    try:
        submit_all(writer, retrieved(3) + streamed("ex_s", "run_s"))
        assert writer.flush(timeout=30)
        assert writer.healthy()
    finally:
        writer.stop()
    assert count(db, "runs") == 4 and count(db, "requests") == 4
    assert rows(db, "select status from runs where id = 'run_s'") == [("completed",)]
    assert health.total("written", "runs") == 6  # 3 retrieves + 3 stream events
    assert health.total("written", "requests") == 4
    assert writer.stats["written"] == 10 and writer.stats["dropped"] == 0 and writer.stats["errors"] == 0
    assert effects  # the store reported what the batch changed
    assert not writer.healthy()


def test_a_flush_that_does_not_close_the_batch_still_waits_for_its_items(db: Path) -> None:
    writer = CaptureWriter(WriterConfig(db_path=str(db), flush_interval_s=0.05))
    writer.start()
    try:
        submit_all(writer, retrieved(3))
        assert writer.flush(timeout=30, close_batch=False)
        reader = writer.reader()
        try:  # written before flush returned, without a closing marker
            assert reader.execute("select count(*) from runs").fetchall() == [(3,)]
        finally:
            reader.close()
    finally:
        writer.stop()


def test_a_batch_triggers_no_cyclic_collection_in_the_writer(db: Path) -> None:
    """Each collection during a batch walks the batch's objects with the GIL held, pausing the event
    loop; the writer holds them off until the batch is done (here with a threshold that a batch of
    2,000 items crosses dozens of times)."""
    collected_by: list[str] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collected_by.append(threading.current_thread().name)

    writer = CaptureWriter(WriterConfig(db_path=str(db)))
    writer.start()
    assert writer.flush(timeout=30)  # the store is open
    items = retrieved(1000)
    thresholds = gc.get_threshold()
    gc.set_threshold(50, *thresholds[1:])
    gc.callbacks.append(on_gc)
    try:
        submit_all(writer, items)
        assert writer.flush(timeout=60)
    finally:
        gc.callbacks.remove(on_gc)
        gc.set_threshold(*thresholds)
        writer.stop()
    assert count(db, "runs") == 1000
    assert gc.isenabled()
    # What the batch leaves alive (cache entries, the test's own items) may trigger one collection as
    # soon as it ends; without the pause there are dozens during it.
    assert collected_by.count("runtap-capture-writer") <= 1


def test_full_queue_refuses_counts_and_logs(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    health = CaptureHealth()
    writer = CaptureWriter(WriterConfig(db_path=str(db), queue_size=2), health=health)
    items = retrieved(2)  # four items: two fit
    with caplog.at_level(logging.WARNING, logger="runtap.writer"):
        assert [writer.submit(item) for item in items] == [True, True, False, False]
    assert writer.depth() == 2 and writer.stats["dropped"] == 2
    assert health.total("dropped", "queue_full") == 2
    # The first drop is logged at once; the second waits for the next log interval (no line per drop).
    assert [r.getMessage() for r in caplog.records] == [
        "capture dropped 1 snapshot item(s): queue_full (runtap_capture_dropped_total counts them all)"]
    writer.start()
    writer.stop()
    assert count(db, "runs") == 1 and count(db, "requests") == 1


def test_queue_is_bounded_in_bytes_too(db: Path) -> None:
    health = CaptureHealth()
    writer = CaptureWriter(WriterConfig(db_path=str(db), queue_max_bytes=1000 + ITEM_OVERHEAD), health=health)
    ex = exchange("big")
    assert writer.submit(StreamChunk(ex, b"x" * 900, 1.0))
    assert not writer.submit(StreamChunk(ex, b"x" * 200, 1.0))
    assert writer.submit(record("big"))  # records carry no body: never refused for size
    assert health.total("dropped", "queue_bytes_full") == 1
    writer.stop()


def test_bad_input_is_counted_and_capture_goes_on(db: Path) -> None:
    health = CaptureHealth()
    writer = CaptureWriter(WriterConfig(db_path=str(db)), health=health)
    writer.start()
    try:
        assert writer.submit(ResponseBody(exchange("bad"), 200, b'{"id": "run_', truncated=False))
        submit_all(writer, retrieved(1))
        assert writer.flush(timeout=30)
    finally:
        writer.stop()
    assert health.total("errors", "decode:malformed_json") == 1
    assert count(db, "runs") == 1


def test_stop_writes_everything_submitted(db: Path) -> None:
    writer = CaptureWriter(WriterConfig(db_path=str(db), batch_max=100))
    writer.start()
    items = retrieved(500)
    for i in range(20):
        items += streamed(f"ex_s{i}", f"run_s{i}")
    submit_all(writer, items)
    writer.stop()
    writer.stop()  # idempotent
    assert count(db, "runs") == 520 and count(db, "requests") == 520
    assert not writer.submit(record("late"))
    assert writer.stats["dropped"] == 1


def test_locked_db_spools_then_next_start_replays(db: Path) -> None:
    items = retrieved(5) + streamed("ex_s", "run_s")
    health = CaptureHealth()
    with locked(db):
        writer = CaptureWriter(WriterConfig(db_path=str(db)), health=health)
        writer.start()
        submit_all(writer, items)
        assert writer.flush(timeout=30)
        assert not writer.healthy()
        writer.stop()
    assert writer.stats["spooled"] == 14 and writer.stats["written"] == 0
    assert any(kind == "errors" and lab.startswith("store_open:") for kind, lab in health.counts())
    assert Path(f"{db}.spool.jsonl").stat().st_size > 0

    again = CaptureWriter(WriterConfig(db_path=str(db)))
    again.start()
    assert again.flush(timeout=30)
    again.stop()
    assert again.stats["replayed"] == 14
    assert count(db, "runs") == 6 and count(db, "requests") == 6
    assert rows(db, "select status from runs where id = 'run_s'") == [("completed",)]


def test_store_that_comes_back_gets_the_spool_while_running(db: Path) -> None:
    health = CaptureHealth()
    writer = CaptureWriter(WriterConfig(db_path=str(db), reopen_interval_s=0.1), health=health)
    with locked(db):
        writer.start()
        submit_all(writer, retrieved(3))
        assert writer.flush(timeout=30)
        assert writer.stats["spooled"] == 6
    try:
        # The writer retries on its own; nothing new needs to arrive.
        assert health.wait_for("replayed", "items", 6)
        assert writer.healthy()
        submit_all(writer, retrieved(2, prefix="later"))
        assert writer.flush(timeout=30)
    finally:
        writer.stop()
    assert count(db, "runs") == 5 and count(db, "requests") == 5


def test_unwritable_path_spools_and_a_writable_one_replays(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file where a directory should be")
    spool = tmp_path / "capture.spool.jsonl"
    writer = CaptureWriter(WriterConfig(db_path=str(blocker / "capture.duckdb"), spool_path=str(spool)))
    writer.start()
    submit_all(writer, retrieved(4))
    assert writer.flush(timeout=30)
    writer.stop()
    assert writer.stats["spooled"] == 8

    db = tmp_path / "capture.duckdb"
    again = CaptureWriter(WriterConfig(db_path=str(db), spool_path=str(spool)))
    again.start()
    again.stop()
    assert count(db, "runs") == 4 and count(db, "requests") == 4


SEEN = Transition(run_id="run_0", model="gpt-4o", assistant_id="asst_1", from_status=None,
                  to_status="in_progress", observed_at=1_700_000_000.0, source="response")


class FailingOnce(Store):
    """The real store, except that its first write fails (a disk hiccup) after merging."""

    failed = False

    def apply(self, *args: Any, **kwargs: Any) -> Any:
        if not FailingOnce.failed:
            FailingOnce.failed = True
            # What Store does when only the write fails: it hands back what the batch changed.
            raise StoreError("cannot write batch", effects=[SEEN]) from duckdb.IOException("disk full")
        return super().apply(*args, **kwargs)


def test_failed_write_is_spooled_and_replayed(db: Path) -> None:
    health = CaptureHealth()
    effects: list[Any] = []
    FailingOnce.failed = False
    writer = CaptureWriter(WriterConfig(db_path=str(db), reopen_interval_s=0.1), health=health,
                           hooks=WriterHooks(on_effects=effects.extend), store_factory=lambda: FailingOnce(str(db)))
    submit_all(writer, retrieved(3))  # queued before the thread starts: one batch, the failing one
    writer.start()
    try:
        assert writer.flush(timeout=30)
        assert health.wait_for("replayed", "items", 6)
    finally:
        writer.stop()
    assert health.total("errors", "store:IOException") == 1
    assert count(db, "runs") == 3 and count(db, "requests") == 3
    # Metrics saw the batch once: when it failed, not again when the spool was replayed.
    assert effects == [SEEN]


def seen(rid: str) -> Snapshot:
    return Snapshot(kind="run", obj=run(rid), observed_at=1_700_000_000.0, source="response",
                    operation="runs.retrieve", api_version="v2", key_fingerprint="fp0123456789")


def test_a_spooled_batch_the_merge_cannot_take_is_set_aside_and_the_rest_replayed(db: Path) -> None:
    spool = Spool(f"{db}.spool.jsonl", max_bytes=1 << 20)
    spool.append([seen("run_a0"), seen("run_a1")], [record("req_a")])
    # Left by a buggy or older writer: an observed_at the merge cannot order fails every replay.
    poison = [dataclasses.replace(seen(f"run_p{i}"), observed_at="yesterday") for i in range(2)]
    spool.append(poison, [])
    spool.append([seen("run_b0"), seen("run_b1")], [record("req_b")])
    health = CaptureHealth()
    writer = CaptureWriter(WriterConfig(db_path=str(db)), health=health)
    writer.start()
    try:
        assert writer.flush(timeout=30)
        assert writer.healthy()
    finally:
        writer.stop()
    assert rows(db, "select id from runs order by id") == [("run_a0",), ("run_a1",), ("run_b0",), ("run_b1",)]
    assert rows(db, "select id from requests order by id") == [("req_a",), ("req_b",)]
    assert Path(spool.path).stat().st_size == 0
    rejected = Path(spool.rejected_path).read_bytes().splitlines()
    assert [orjson.loads(line)["s"]["obj"]["id"] for line in rejected] == ["run_p0", "run_p1"]
    assert writer.stats["rejected"] == 2 and writer.stats["errors"] == 1 and writer.stats["replayed"] == 6
    assert health.total("errors", "replay:rejected") == 2
    assert health.total("replayed", "items") == 6

    # Nothing is left to replay at the next start, and the rejected items stay where they are.
    again = CaptureWriter(WriterConfig(db_path=str(db)))
    again.start()
    again.stop()
    assert again.stats["replayed"] == 0 and again.stats["rejected"] == 0
    assert Path(spool.rejected_path).read_bytes().splitlines() == rejected
