"""The store's shortcuts stay exact: ids it calls new (known_ids.py) and staging files it rewrites in place."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runtap.analytics.ingest import known_ids
from runtap.analytics.ingest.known_ids import KnownIds, TableIds
from runtap.analytics.ingest.merge import RunFinished, Transition, quantize
from runtap.analytics.ingest.staging import StagingFile
from runtap.analytics.ingest.store import Store

from tests.test_merge import T0, USAGE, run_obj, snap
from tests.test_store import request

ids = st.text(min_size=1, max_size=40)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "capture.duckdb"))
    yield s
    s.close()


@settings(max_examples=200, deadline=None)
@given(added=st.lists(ids, max_size=300), others=st.lists(ids, max_size=300), capacity=st.integers(0, 64))
def test_an_added_id_is_never_called_unknown(added: list[str], others: list[str], capacity: int) -> None:
    known = KnownIds(capacity)  # overfull filters included: they only answer "maybe" more often
    known.add_all(added)
    unknown = known.unknown(added + others)
    assert not unknown & set(added)
    assert unknown <= set(others)


def test_most_ids_never_added_are_called_unknown() -> None:
    known = KnownIds(10_000)
    known.add_all(f"run_{i}" for i in range(10_000))
    unknown = known.unknown(f"step_{i}" for i in range(10_000))
    assert len(unknown) > 9_000  # <= ~1% false positives at 12 bits an id; a broken filter says "maybe" to all


def test_a_filter_is_read_off_the_writers_thread_and_keeps_the_ids_committed_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(known_ids, "SYNC_LOAD", 0)  # the ids of any table are read on a thread
    stored = [f"run_{i}" for i in range(1_000)]
    release = threading.Event()
    opened: list[str] = []

    def read_ids(table: str) -> Iterator[list[str]]:
        opened.append(threading.current_thread().name)  # the query starts on the writer's thread

        def chunks() -> Iterator[list[str]]:
            release.wait(timeout=30)
            yield stored[:500]
            yield stored[500:]

        return chunks()

    ids = TableIds(read_ids, lambda table: len(stored))
    new = [f"new_{i}" for i in range(1_000)]
    # while the read is held up the writer goes on: nothing is called new, so every id is read back
    assert ids.unknown("runs", stored[:10] + new) == set()
    assert opened == [threading.current_thread().name]
    ids.added("runs", new[:100])  # committed while the filter was being read
    assert ids.unknown("runs", new) == set()
    release.set()
    ids.wait()
    unknown = ids.unknown("runs", stored + new)
    assert not unknown & set(stored + new[:100])
    assert len(unknown) > 850  # the other 900 new ids: <= ~1% false positives
    ids.stop()


def test_a_closing_store_abandons_a_filter_still_being_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(known_ids, "SYNC_LOAD", 0)  # the ids of any table are read on a thread
    started, release = threading.Event(), threading.Event()
    closed: list[bool] = []

    def read_ids(table: str) -> Iterator[list[str]]:
        def chunks() -> Iterator[list[str]]:
            try:
                for _ in range(100_000):  # bounded: a read nobody stops ends by itself
                    started.set()
                    release.wait(timeout=30)
                    yield ["run_x"]
            finally:
                closed.append(True)

        return chunks()

    ids = TableIds(read_ids, lambda table: 10)
    assert ids.unknown("runs", ["run_y"]) == set()
    started.wait(timeout=30)
    release.set()
    ids.stop()  # returns once the read let go of its cursor
    assert closed == [True]
    assert ids.unknown("runs", ["run_y"]) == set()  # a later use starts a new read
    ids.stop()
    assert closed == [True, True]


def test_rows_inserted_behind_the_stores_back_after_its_filter_was_built_are_merged(store: Store) -> None:
    store.apply([snap(run_obj("queued", id="run_0"), T0)], [])  # the runs filter is built from the table now
    store._ids.wait()  # noqa: SLF001 - the filter must be in place before the row goes in behind its back
    store.connection.execute("INSERT INTO runs (id, status, model) VALUES ('run_1', 'in_progress', 'gpt-4o')")
    effects = store.apply(
        [snap(run_obj("in_progress"), T0 + 1), snap(run_obj("completed", usage=USAGE), T0 + 9)], [request("req_1")]
    )
    assert [(type(e), getattr(e, "from_status", None)) for e in effects] == [
        (Transition, "in_progress"),
        (RunFinished, None),
    ]
    assert store.connection.execute("SELECT id, status FROM runs ORDER BY id").fetchall() == [
        ("run_0", "queued"),
        ("run_1", "completed"),
    ]
    assert store.connection.execute("SELECT id FROM requests").fetchall() == [("req_1",)]


def test_full_filters_are_rebuilt_and_every_later_merge_reads_back_what_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(known_ids, "MIN_CAPACITY", 4)  # rebuilt every few batches
    path = str(tmp_path / "capture.duckdb")
    store = Store(path, cache_rows=0)  # every stored row comes back from DuckDB, none from the cache
    for b in range(10):
        store.apply([snap(run_obj("queued", id=f"run_{b}_{i}"), T0 + b) for i in range(5)], [])
    done = [snap(run_obj("completed", id=f"run_{b}_{i}", usage=USAGE), T0 + 20) for b in range(10) for i in range(5)]
    assert sum(type(e) is RunFinished for e in store.apply(done[:25], [])) == 25
    store.close()
    store = Store(path, cache_rows=0)
    assert sum(type(e) is RunFinished for e in store.apply(done, [])) == 25  # the other 25 were already final
    con = store.connection
    assert con.execute("SELECT count(*), count(*) FILTER (status = 'completed') FROM runs").fetchone() == (50, 50)
    assert con.execute("SELECT count(*) FROM run_events").fetchone() == (100,)  # NULL -> queued -> completed, once
    store.close()


def test_a_staging_file_holds_exactly_the_last_content(tmp_path: Path) -> None:
    staged = StagingFile(str(tmp_path / "runs.json"))
    (tmp_path / "runs.json").write_bytes(b"x" * 100)  # left by a crashed process
    for data in (b"[1, 2, 3]", b"[" + b"7, " * 5_000 + b"8]", b"[]", b"[4]"):
        staged.write(data)
        assert (tmp_path / "runs.json").read_bytes() == data
    staged.close()


def test_a_small_batch_after_a_large_one_reads_only_its_own_rows(store: Store) -> None:
    store.apply([], [request(f"req_{i}") for i in range(500)])
    store.apply([], [request("req_last")])
    store.apply([snap(run_obj("queued", id=f"run_{i}"), T0) for i in range(300)], [])
    store.apply([snap(run_obj("queued", id="run_last"), T0)], [])
    con = store.connection
    assert con.execute("SELECT count(*) FROM requests").fetchone() == (501,)
    assert con.execute("SELECT count(*) FROM runs").fetchone() == (301,)


@settings(max_examples=50, deadline=None)
@given(times=st.lists(st.floats(0, 1e11, exclude_max=True), min_size=1, max_size=50))
def test_stored_times_are_the_merges_own_microseconds(tmp_path_factory: pytest.TempPathFactory,
                                                       times: list[float]) -> None:
    store = Store(str(tmp_path_factory.mktemp("times") / "capture.duckdb"))
    try:
        store.apply([snap(run_obj("queued", id=f"run_{i}", created_at=t), T0) for i, t in enumerate(times)], [])
        got = dict(store.connection.execute("SELECT id, epoch_us(created_at) FROM runs").fetchall())
        assert got == {f"run_{i}": round(quantize(t) * 1_000_000) for i, t in enumerate(times)}
    finally:
        store.close()


def test_a_table_too_large_for_a_quick_filter_is_read_back_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(known_ids, "MAX_LOAD", 3)
    monkeypatch.setattr(known_ids, "MIN_CAPACITY", 2)
    store = Store(str(tmp_path / "capture.duckdb"), cache_rows=0)
    try:
        for b in range(3):  # the filter is dropped once the table passes MAX_LOAD and full
            store.apply([snap(run_obj("queued", id=f"run_{b}_{i}"), T0 + b) for i in range(3)], [])
        store.apply([snap(run_obj("completed", id=f"run_{b}_{i}", usage=USAGE), T0 + 9)
                     for b in range(3) for i in range(3)], [])
        assert store.connection.execute("SELECT count(*), count(*) FILTER (status = 'completed') FROM runs"
                                        ).fetchone() == (9, 9)
    finally:
        store.close()


_STATUSES = ["queued", "in_progress", "requires_action", "in_progress", "completed"]
_SNAPSHOT = st.tuples(
    st.integers(0, 3),  # which run
    st.integers(0, 4),  # how far along its life
    st.sampled_from([None, {"tenant": "a"}, {"tenant": "b"}]),  # metadata, changed on the way
    st.sampled_from(["gpt-4o", "gpt-4o-mini"]),
    st.booleans(),  # with usage
)


@settings(max_examples=30, deadline=None)
@given(seen=st.lists(_SNAPSHOT, min_size=1, max_size=14), cuts=st.lists(st.integers(1, 13), max_size=4),
       cache_rows=st.sampled_from([0, 50_000]))
def test_rows_updated_batch_by_batch_end_as_one_batch_writes_them(
    tmp_path_factory: pytest.TempPathFactory, seen: list[tuple[int, int, Any, str, bool]], cuts: list[int],
    cache_rows: int
) -> None:
    """The UPDATE sets only the columns some row of the batch changed; every column must still end right."""
    snaps = []
    for n, (run, step, metadata, model, usage) in enumerate(seen):
        status = _STATUSES[step]
        obj = run_obj(status, id=f"run_{run}", model=model, usage=USAGE if usage and status == "completed" else None)
        if metadata is not None:
            obj["metadata"] = metadata
        snaps.append(snap(obj, T0 + step + n / 100))
    cols = ("id, status, model, metadata, raw, total_tokens, epoch_us(started_at), epoch_us(completed_at), "
            "epoch_us(last_seen_at), epoch_us(status_observed_at), finished_counted, usage_counted")
    edges = [0, *sorted(cuts), len(snaps)]
    tables = []
    for batches in ([snaps], [snaps[a:b] for a, b in zip(edges, edges[1:], strict=False)]):
        store = Store(str(tmp_path_factory.mktemp("batched") / "capture.duckdb"), cache_rows=cache_rows)
        try:
            for batch in batches:
                store.apply(batch, [])
            tables.append(store.connection.execute(f"SELECT {cols} FROM runs ORDER BY id").fetchall())
        finally:
            store.close()
    assert tables[1] == tables[0]


def test_a_small_tables_filter_answers_the_batch_that_asks_for_it_first() -> None:
    reads: list[str] = []

    def read_ids(table: str) -> Iterator[list[str]]:
        reads.append(table)
        return iter([["run_0", "run_1"]])

    ids = TableIds(read_ids, lambda table: 2)
    assert ids.unknown("runs", ["run_0", "run_1", "run_2"]) == {"run_2"}  # no read-back of a new store's new ids
    assert reads == ["runs"]


@pytest.mark.parametrize("rows", [2, known_ids.MAX_LOAD + 1])
def test_a_table_whose_ids_cannot_be_read_goes_without_a_filter_for_good(rows: int) -> None:
    reads: list[str] = []

    def read_ids(table: str) -> Iterator[list[str]]:
        reads.append(table)
        raise RuntimeError("the table cannot be read")

    ids = TableIds(read_ids, lambda table: rows)
    assert ids.unknown("runs", ["run_0", "run_1"]) == set()  # every id may be stored: all read back
    ids.added("runs", ["run_0"])
    assert ids.unknown("runs", ["run_0", "run_2"]) == set()
    ids.wait()
    assert ids.unknown("runs", ["run_2"]) == set()
    assert reads == ([] if rows > known_ids.MAX_LOAD else ["runs"])  # tried once, never read again
