"""DuckDB running out of its buffer pool (--db-memory-limit) loses nothing committed and poisons no row.

A tiny limit stands in for a months-old capture file: the primary-key indexes of random API ids must
stay in the pool, and a commit that runs out leaves duckdb 1.5.5's instance inconsistent (later commits
store rows under another row's id; a checkpoint fails FATAL or persists ids of the failed batch).
Real writer, real store, real DuckDB file; the only stand-in is the size of the limit.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import duckdb
import orjson
import pytest
from runtap.analytics.ingest import spool
from runtap.analytics.ingest.health import STORE_MEMORY, CaptureHealth, Kind, parse_size
from runtap.analytics.ingest.records import CaptureItem, ResponseBody, Snapshot
from runtap.analytics.ingest.store import Store, StoreError, out_of_memory
from runtap.analytics.ingest.writer import CaptureWriter, WriterConfig

from tests.test_writer import exchange, record, rows, run

# Room for read_json's 32 MiB buffer and little else: fails after ~30k runs with their requests (runs not
# checkpointed yet, and the primary-key indexes, stay in the pool)
SMALL = "48MB"
TINY = "16MB"  # too small for any write through read_json: the first batch fails
CHUNK = 1_000
MAX_RUNS = 80_000  # bound: the first out-of-memory comes far earlier


def run_id(n: int) -> str:
    return "run_" + hashlib.md5(str(n).encode()).hexdigest()  # random, as the API's ids are  # noqa: S324


def chunk(start: int) -> tuple[list[CaptureItem], dict[str, str]]:
    """CHUNK retrieved runs; each run's assistant_id names the run it belongs to."""
    items: list[CaptureItem] = []
    expected: dict[str, str] = {}
    for n in range(start, start + CHUNK):
        rid = run_id(n)
        body = run(rid, "completed") | {"assistant_id": f"asst_{n}"}
        items.append(ResponseBody(exchange(f"req_{n}"), 200, orjson.dumps(body), truncated=False))
        items.append(record(f"req_{n}"))
        expected[rid] = f"asst_{n}"
    return items, expected


def submit(writer: CaptureWriter, items: list[CaptureItem]) -> None:
    assert all(writer.submit(item) for item in items)
    assert writer.flush(timeout=120)


def memory_failures(health: CaptureHealth) -> int:
    return sum(n for (kind, label), n in health.counts().items()
               if kind is Kind.ERRORS and label.startswith(STORE_MEMORY + ":"))


def test_out_of_memory_reopens_the_store_replays_the_spool_and_poisons_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # Replays in batches the size of the live ones, which the small pool takes (5,000 would not fit).
    monkeypatch.setattr(spool, "REPLAY_BATCH", 500)
    db = tmp_path / "capture.duckdb"
    health = CaptureHealth()
    config = WriterConfig(db_path=str(db), db_memory_limit=SMALL, reopen_interval_s=0.05, batch_max=500,
                          flush_interval_s=0.0)
    expected: dict[str, str] = {}
    writer = CaptureWriter(config, health=health)
    writer.start()
    written_at_oom = None
    try:
        with caplog.at_level(logging.ERROR, logger="runtap.writer"):
            for start in range(0, MAX_RUNS, CHUNK):
                items, want = chunk(start)
                expected |= want
                submit(writer, items)
                if memory_failures(health) and written_at_oom is None:
                    written_at_oom = health.total(Kind.WRITTEN, "runs")
                elif written_at_oom is not None and health.total(Kind.WRITTEN, "runs") > written_at_oom + 2 * CHUNK:
                    break  # the reopened store took more batches after the failure
        assert written_at_oom is not None, "the tiny limit never ran out: the test proves nothing"
        assert health.total(Kind.WRITTEN, "runs") > written_at_oom + 2 * CHUNK, "no working store after the failure"
        assert health.total(Kind.SPOOLED) > 0
        lines = [r.getMessage() for r in caplog.records if "ran out of memory" in r.getMessage()]
        assert len(lines) == 1, lines  # one clear line, not one a batch
        assert "--db-memory-limit 48MB" in lines[0] and "runtap purge" in lines[0]
    finally:
        writer.stop()
    # What the operator does: a larger limit and a restart. The spool goes in first.
    again = CaptureWriter(WriterConfig(db_path=str(db), db_memory_limit="256MB"), health=health)
    again.start()
    try:
        assert again.flush(timeout=120)
    finally:
        again.stop()
    stored = {str(rid): str(asst) for rid, asst in rows(db, "SELECT id, assistant_id FROM runs")}
    wrong = {rid: (got, expected.get(rid)) for rid, got in stored.items() if expected.get(rid) != got}
    assert not wrong, f"{len(wrong)} rows under another run's id, e.g. {next(iter(wrong.items()))}"
    assert stored.keys() == expected.keys()
    assert rows(db, "SELECT count(*), count(DISTINCT id) FROM requests") == [(len(expected), len(expected))]
    assert health.stats()["dropped"] == 0 and health.stats()["spool_dropped"] == 0
    assert health.total(Kind.REPLAYED) > 0


def snapshot(n: int) -> Snapshot:
    body = run(run_id(n), "completed") | {"assistant_id": f"asst_{n}"}
    return Snapshot("run", body, 1_700_000_000.0, "body", "runs.retrieve", "v2", None, None)


PREFILL = 5_000


def poison(store: Store) -> None:
    """Commit PREFILL runs (random ids, as SQL: no read_json buffer), then a batch the pool cannot take."""
    store.connection.execute(
        "INSERT INTO runs (id, assistant_id, status, finished_counted, usage_counted) "
        f"SELECT 'run_' || md5(i::VARCHAR), 'asst_' || i, 'completed', true, true FROM range({PREFILL}) t(i)")
    with pytest.raises(StoreError):
        store.apply([snapshot(n) for n in range(PREFILL, PREFILL + CHUNK)], [])
    assert store.poisoned is not None and store.out_of_memory


def test_a_poisoned_instance_is_never_written_again_and_readers_cannot_keep_it(tmp_path: Path) -> None:
    db = str(tmp_path / "capture.duckdb")
    store = Store(db, memory_limit=TINY)
    reader = store.reader()
    poison(store)
    with pytest.raises(StoreError, match="must be reopened"):
        store.apply([snapshot(10**9)], [])
    with pytest.raises(StoreError):
        store.reader()
    store.close()  # no checkpoint of the poisoned state; closes the reader made from it too
    with pytest.raises(duckdb.Error):
        reader.execute("SELECT 1")
    fresh = Store(db, memory_limit="256MB")  # a new instance, from the file and its WAL
    try:
        got = fresh.connection.execute("SELECT count(*), count(*) FILTER "
                                       "(WHERE id <> 'run_' || md5(substr(assistant_id, 6))) FROM runs").fetchone()
        assert got == (PREFILL, 0)
        fresh.apply([snapshot(n) for n in range(PREFILL, PREFILL + CHUNK)], [])  # none of it was left behind
        assert fresh.connection.execute("SELECT count(*) FROM runs").fetchone() == (PREFILL + CHUNK,)
    finally:
        fresh.close()


def test_a_connection_outside_the_store_cannot_hand_back_the_poisoned_instance(tmp_path: Path) -> None:
    db = str(tmp_path / "capture.duckdb")
    Store(db).close()
    outside = duckdb.connect(db)  # same process, same path: duckdb's client shares the instance
    store = Store(db, memory_limit=TINY)
    poison(store)
    store.close()
    with pytest.raises(StoreError):
        Store(db, memory_limit=TINY).close()
    outside.close()  # the last connection: the instance goes, without a checkpoint of its state
    reopened = Store(db, memory_limit=TINY)
    try:
        assert reopened.connection.execute("SELECT count(*) FROM runs").fetchone() == (PREFILL,)
    finally:
        reopened.close()


def test_the_writer_samples_the_buffer_pool_against_its_limit(tmp_path: Path) -> None:
    health = CaptureHealth()
    writer = CaptureWriter(WriterConfig(db_path=str(tmp_path / "c.duckdb"), db_memory_limit="64MB"), health=health)
    writer.start()
    try:
        submit(writer, chunk(0)[0])
    finally:
        writer.stop()
    memory = health.db_memory
    assert memory is not None
    assert memory.limit == parse_size("61.0 MiB")  # DuckDB prints 64MB as 61.0 MiB
    assert 0 < sum(memory.by_tag.values()) < memory.limit and "art_index" in memory.by_tag


@pytest.mark.parametrize(("text", "size"), [("488.2 MiB", int(488.2 * 2**20)), ("0 bytes", 0), ("1.5 GiB", 3 << 29),
                                            ("512MB", 512 * 10**6), ("lots", 0), ("", 0)])
def test_sizes_as_duckdb_prints_them(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_pinned_duckdb_still_poisons_an_instance_whose_commit_ran_out_of_memory(tmp_path: Path) -> None:
    """Why Store._poison_if_broken exists, on plain DuckDB: when a fixed version is pinned this fails,
    and the defence can be reconsidered (duckdb 2.0.1 stores the later rows correctly, 1.5.6 does not)."""
    con = duckdb.connect(str(tmp_path / "plain.duckdb"))
    con.execute(f"SET memory_limit = '{TINY}'")
    con.execute("SET threads = 1")
    con.execute("CREATE TABLE runs (id VARCHAR PRIMARY KEY, n BIGINT)")
    failed = None
    for k in range(0, 1_000_000, 500):
        try:
            con.execute(f"INSERT INTO runs SELECT 'run_' || md5(i::VARCHAR), i FROM range({k}, {k + 500}) t(i)")
        except duckdb.Error as exc:
            failed = exc
            break
    assert failed is not None and "Failed to commit" in str(failed) and out_of_memory(failed)
    con.execute("INSERT INTO runs VALUES ('run_after', -1)")
    got = con.execute("SELECT id FROM runs WHERE n = -1").fetchall()
    con.close()
    assert got != [("run_after",)], "this duckdb keeps rows under their own id after a failed commit"


def replays_tried(health: CaptureHealth) -> int:
    return sum(n for (kind, label), n in health.counts().items() if kind is Kind.ERRORS and label.startswith("replay:"))


def test_a_spool_that_runs_the_database_out_of_memory_is_not_reread_at_every_reopen(tmp_path: Path) -> None:
    """The spool's replay backs off while it keeps failing (failover.py: it re-reads the whole file, up to
    --spool-max-bytes). Running out of memory closes the store and reopens it after --reopen-interval; the
    reopen replayed the spool at once, so the back-off never applied: the file was re-read and re-applied,
    and the instance poisoned again, every reopen interval for as long as the database stayed too small.
    The writer's thread is driven step by step here (not started), as it runs them."""
    health = CaptureHealth()
    writer = CaptureWriter(WriterConfig(db_path=str(tmp_path / "c.duckdb"), db_memory_limit=TINY,
                                        reopen_interval_s=60.0), health=health)
    writer._failover.put([snapshot(n) for n in range(CHUNK)], [])  # what an earlier store could not take
    writer._open_store()  # the replay runs out of memory: the store is poisoned and closed
    assert writer._owner.store is None and replays_tried(health) == 1 and memory_failures(health) == 1
    writer._open_store()  # the reopen (called here without waiting out the interval)
    try:
        assert writer._owner.store is not None, "the reopened store was poisoned again by the same spool"
        assert replays_tried(health) == 1 and writer._failover.pending  # kept for its next turn, not lost
    finally:
        writer._owner.close()
