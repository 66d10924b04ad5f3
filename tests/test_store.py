"""Store and Spool against real DuckDB files."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from runtap.analytics.ingest.merge import Effect, RunFinished, StepFinished, Transition, UsageKnown
from runtap.analytics.ingest.records import RequestRecord, Snapshot
from runtap.analytics.ingest.spool import Spool
from runtap.analytics.ingest.store import SCHEMA_VERSION, Store, StoreError
from runtap.proxy.addons.metrics import Metrics

from tests.test_merge import FINAL, T0, USAGE, lifecycle, run_obj, snap, step_obj, tokens_counted

RUN_COLS = (
    "status, prompt_tokens, completion_tokens, total_tokens, epoch(created_at), epoch(started_at), "
    "epoch(completed_at), epoch(expires_at), epoch(ended_at), epoch(first_seen_at), epoch(last_seen_at), "
    "epoch(status_observed_at), finished_counted, usage_counted"
)


def final_row(con: duckdb.DuckDBPyConnection, run_id: str = "run_1") -> dict[str, Any]:
    got = con.execute(f"SELECT {RUN_COLS} FROM runs WHERE id = ?", [run_id]).fetchone()
    assert got is not None
    keys = [
        "status",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "created_at",
        "started_at",
        "completed_at",
        "expires_at",
        "ended_at",
        "first_seen_at",
        "last_seen_at",
        "status_observed_at",
        "finished_counted",
        "usage_counted",
    ]
    return dict(zip(keys, got, strict=True))


def events(con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    return con.execute("SELECT from_status, to_status FROM run_events ORDER BY observed_at, to_status").fetchall()


def request(rid: str, **over: Any) -> RequestRecord:
    rec = RequestRecord(
        id=rid,
        started_at=T0 + 0.25,
        method="POST",
        path="/v1/threads/thread_1/runs",
        operation="runs.create",
        status_code=200,
        streamed=True,
        duration_ms=950.5,
        upstream_ttfb_ms=120.0,
        bytes_in=210,
        bytes_out=4096,
        upstream_request_id="req_up_1",
        key_fingerprint="fp_abc",
        error=None,
        api_version="v2",
    )
    for k, v in over.items():
        setattr(rec, k, v)
    return rec


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "capture.duckdb"))
    yield s
    s.close()


def test_a_batch_becomes_rows_events_and_requests(store: Store) -> None:
    snaps = lifecycle()
    effects = store.apply(snaps, [request("req_1")])
    con = store.connection
    assert final_row(con) == FINAL
    assert snaps[-1].obj["instructions"] == "be terse"  # kept out of the database, not out of the caller's object
    assert len(events(con)) == 5
    assert [type(e) for e in effects].count(RunFinished) == 1
    raw, tools, tool_choice, meta = con.execute("SELECT raw, tools, tool_choice, metadata FROM runs").fetchone() or (
        None,
        None,
        None,
        None,
    )
    assert orjson.loads(raw)["id"] == "run_1" and "instructions" not in orjson.loads(raw)
    assert orjson.loads(tools) == [{"type": "function", "function": {"name": "lookup"}}]
    assert orjson.loads(tool_choice) == "auto" and orjson.loads(meta) == {}
    assert con.execute(
        "SELECT id, epoch(started_at), operation, status_code, streamed, duration_ms, bytes_out, api_version "
        "FROM requests"
    ).fetchall() == [("req_1", T0 + 0.25, "runs.create", 200, True, 950.5, 4096, "v2")]


def test_steps_are_stored_with_their_tools(store: Store) -> None:
    effects = store.apply(
        [
            snap(step_obj("in_progress"), T0 + 2, kind="step"),
            snap(step_obj("completed"), T0 + 3, kind="step"),
        ],
        [],
    )
    got = store.connection.execute(
        "SELECT run_id, type, status, total_tokens, tool_types::VARCHAR[], tool_names::VARCHAR[], epoch(completed_at), "
        "step_details->>'$.tool_calls[0].id' FROM run_steps"
    ).fetchall()
    assert got == [("run_1", "tool_calls", "completed", 12, ["function", "code_interpreter"], ["lookup"], T0 + 3, "c1")]
    assert [type(e) for e in effects] == [StepFinished]


def reopen(path: str, store: Store, cache_rows: int) -> Store:
    store.close()
    return Store(path, cache_rows=cache_rows)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    order=st.permutations(range(9)),
    cuts=st.lists(st.integers(1, 8), max_size=3),
    restart_at=st.integers(0, 4),
    dups=st.lists(st.integers(0, 8), max_size=4),
    cache_rows=st.sampled_from([0, 50_000]),
)
def test_batches_in_any_order_across_a_restart_end_the_same_and_emit_once(
    order: list[int], cuts: list[int], restart_at: int, dups: list[int], cache_rows: int
) -> None:
    base = lifecycle()
    snaps = [base[i] for i in order] + [base[i] for i in dups]
    bounds = [0, *sorted(set(cuts)), len(snaps)]
    batches = [snaps[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if snaps[a:b]]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "capture.duckdb")
        store = Store(path, cache_rows=cache_rows)
        effects: list[Effect] = []
        try:
            for n, batch in enumerate(batches):
                if n == restart_at:
                    store = reopen(path, store, cache_rows)
                effects += store.apply(batch, [])
            # a full re-delivery after a restart (e.g. a spool replayed twice) changes nothing
            store = reopen(path, store, cache_rows)
            assert store.apply(base, []) == []
            con = store.connection
            assert final_row(con) == FINAL
            history = events(con)
            assert history[0][0] is None and history[-1][1] == "completed"
            assert all(a[1] == b[0] for a, b in zip(history, history[1:], strict=False))
            assert len(history) == len([e for e in effects if isinstance(e, Transition)])
        finally:
            store.close()
    assert [type(e) for e in effects].count(RunFinished) == 1
    assert tokens_counted(effects) == 909


def test_stored_structures_survive_a_later_merge_that_did_not_read_them(tmp_path: Path) -> None:
    """JSON columns are not read back; a later row update must keep them, or replace them when new."""
    path = str(tmp_path / "capture.duckdb")
    store = Store(path, cache_rows=0)
    try:
        store.apply([snap(run_obj("completed", usage=USAGE, started_at=None, metadata={"v": "1"}), T0 + 9)], [])
        # a stale poll fills started_at: the row is rewritten without its JSON in memory
        store.apply([snap(run_obj("in_progress", metadata={"v": "0"}), T0 + 2, source="response")], [])
        got = store.connection.execute("SELECT epoch(started_at), metadata, raw->>'status', tools FROM runs")
        started, meta, raw_status, tools = got.fetchone() or (None, None, None, None)
        assert started == T0 + 1
        assert orjson.loads(meta) == {"v": "1"} and raw_status == "completed" and tools is not None
        # a metadata update after completion replaces the stored value
        store.apply([snap(run_obj("completed", usage=USAGE, metadata={"v": "2"}), T0 + 30, op="runs.update")], [])
        assert store.connection.execute("SELECT metadata->>'v' FROM runs").fetchall() == [("2",)]
    finally:
        store.close()


@pytest.mark.parametrize("cache_rows", [50_000, 0], ids=["cached", "from-db"])
def test_usage_after_restart_is_counted_once_with_the_runs_caps(tmp_path: Path, cache_rows: int) -> None:
    path = str(tmp_path / "capture.duckdb")
    store = Store(path)
    caps = {"max_prompt_tokens": 1_000, "max_completion_tokens": 100}
    first = store.apply([snap(run_obj("completed", **caps), T0 + 9)], [])
    store = reopen(path, store, cache_rows)
    later = store.apply([snap(run_obj("completed", usage=USAGE, **caps), T0 + 9.5)] * 2, [])
    store.close()
    assert [type(e) for e in first] == [Transition, RunFinished]
    assert later == [UsageKnown("run_1", "gpt-4o", "asst_1", 812, 97, 909, 1_000, 100)]
    # A fresh process's metrics (nothing in memory about the run) still see its budget use.
    registry = CollectorRegistry()
    Metrics(registry).on_effects(later)
    for kind, ratio in (("prompt", 0.812), ("completion", 0.97)):
        labels = {"model": "gpt-4o", "type": kind}
        assert registry.get_sample_value("runtap_token_budget_ratio_count", labels) == 1
        assert registry.get_sample_value("runtap_token_budget_ratio_sum", labels) == pytest.approx(ratio)


def test_replay_writes_everything_but_returns_no_effects(store: Store) -> None:
    assert store.apply(lifecycle(), [request("req_1")], replay=True) == []
    assert final_row(store.connection)["finished_counted"] is True
    assert len(events(store.connection)) == 5
    # the same batch replayed again (a crash before the spool was truncated) adds nothing
    assert store.apply(lifecycle(), [request("req_1")], replay=True) == []
    assert store.connection.execute("SELECT count(*) FROM requests").fetchone() == (1,)
    assert len(events(store.connection)) == 5
    assert store.apply(lifecycle(), []) == []


def test_a_failed_batch_writes_nothing_and_leaves_the_next_batch_unharmed(store: Store) -> None:
    bad = request("req_bad", status_code=1 << 40)  # does not fit the INTEGER column
    with pytest.raises(StoreError) as info:
        store.apply(lifecycle(), [bad])
    # the merge had run: the caller can emit these now and spool the batch
    assert [type(e) for e in info.value.effects].count(RunFinished) == 1
    con = store.connection
    assert con.execute("SELECT (SELECT count(*) FROM runs) + (SELECT count(*) FROM run_events)").fetchone() == (0,)
    effects = store.apply(lifecycle(), [request("req_1")])
    assert [type(e) for e in effects].count(RunFinished) == 1
    assert final_row(con) == FINAL


def test_snapshots_without_an_id_are_ignored(store: Store) -> None:
    assert store.apply([snap({"object": "thread.run", "status": "queued"}, T0)], []) == []
    assert store.connection.execute("SELECT count(*) FROM runs").fetchone() == (0,)


def test_store_prompts_keeps_instructions_and_additional_messages(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "p.duckdb"), store_prompts=True)
    try:
        extra = {"additional_messages": [{"role": "user", "content": "hi"}]}
        store.apply([Snapshot("run", run_obj("queued"), T0, "response", "runs.create", "v2", None, "r", extra)], [])
        got = store.connection.execute(
            "SELECT instructions, additional_messages->>'$[0].content', raw->>'instructions' FROM runs"
        ).fetchall()
        assert got == [("be terse", "hi", "be terse")]
    finally:
        store.close()


def test_open_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open DuckDB database"):
        Store(str(tmp_path / "missing-dir" / "x.duckdb"))
    path = str(tmp_path / "future.duckdb")
    Store(path).close()
    con = duckdb.connect(path)
    con.execute("INSERT INTO schema_version (version) VALUES (?)", [SCHEMA_VERSION + 1])
    con.close()
    with pytest.raises(StoreError, match="newer than this runtap"):
        Store(path)
    other = str(tmp_path / "other.duckdb")
    duckdb.connect(other).close()
    with pytest.raises(StoreError, match="not a runtap database"):
        Store(other, read_only=True)


def test_read_only_store_reads_but_refuses_batches(tmp_path: Path) -> None:
    path = str(tmp_path / "capture.duckdb")
    writer = Store(path)
    writer.apply(lifecycle(), [])
    writer.close()
    reader = Store(path, read_only=True)
    try:
        assert final_row(reader.connection) == FINAL
        with pytest.raises(StoreError, match="read-only"):
            reader.apply(lifecycle(), [])
    finally:
        reader.close()


def test_close_checkpoints_and_leaves_nothing_behind(tmp_path: Path) -> None:
    path = str(tmp_path / "capture.duckdb")
    os.makedirs(path + ".stage")  # what a killed process leaves: the next one reuses and removes it
    Path(path + ".stage", "runs.json").write_bytes(b"[]")
    store = Store(path)
    store.apply(lifecycle(), [])
    store.close()
    store.close()
    assert sorted(os.listdir(tmp_path)) == ["capture.duckdb"]
    with pytest.raises(StoreError, match="closed"):
        store.apply(lifecycle(), [])


# --- spool ---------------------------------------------------------------------------------------


def test_spool_round_trip_replays_into_the_store_once(tmp_path: Path, store: Store) -> None:
    spool = Spool(str(tmp_path / "spool" / "capture.jsonl"), max_bytes=1 << 20)
    assert not spool.pending()
    base = lifecycle()
    assert spool.append(base[:5], [request("req_1")]) == 0
    assert spool.append(base[5:], []) == 0
    assert spool.pending()
    # a restarted process finds the same file
    spool = Spool(spool.path, max_bytes=1 << 20)
    assert spool.pending()
    assert spool.replay(store) == 10
    assert not spool.pending() and os.path.getsize(spool.path) == 0
    assert final_row(store.connection) == FINAL
    assert store.connection.execute("SELECT id, bytes_in FROM requests").fetchall() == [("req_1", 210)]
    # replay emitted nothing, and a late live delivery does not emit RunFinished either
    assert [type(e) for e in store.apply(base, [])] == []


def test_spool_skips_a_torn_last_line(tmp_path: Path, store: Store) -> None:
    path = str(tmp_path / "capture.jsonl")
    spool = Spool(path, max_bytes=1 << 20)
    spool.append(lifecycle(), [])
    with open(path, "ab") as f:  # the process died in the middle of its next write
        f.write(b'{"s": {"kind": "run", "obj": {"id": "run_2", "sta')
    spool = Spool(path, max_bytes=1 << 20)
    spool.append([snap(run_obj("queued", id="run_3"), T0)], [])  # after the restart
    assert spool.replay(store) == 10
    assert spool.skipped_lines == 1
    assert store.connection.execute("SELECT id FROM runs ORDER BY id").fetchall() == [("run_1",), ("run_3",)]


def test_spool_bound_drops_and_counts(tmp_path: Path) -> None:
    one = len(orjson.dumps({"s": lifecycle()[0]})) + 1
    spool = Spool(str(tmp_path / "capture.jsonl"), max_bytes=one * 3 + one // 2)
    assert spool.append(lifecycle()[:2], []) == 0
    assert spool.append(lifecycle()[:2], [request("r")]) == 2  # one fits, the second and the request do not
    assert spool.append(lifecycle()[:1], []) == 1
    assert spool.size <= one * 3 + one // 2


def test_spool_keeps_its_file_when_the_store_fails(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "capture.jsonl"), max_bytes=1 << 20)
    spool.append(lifecycle(), [])
    store = Store(str(tmp_path / "capture.duckdb"))
    store.close()
    with pytest.raises(StoreError):
        spool.replay(store)
    assert spool.pending()
    store = Store(str(tmp_path / "capture.duckdb"))
    try:
        assert spool.replay(store) == 9
    finally:
        store.close()


def test_updates_happen_in_place_so_the_file_does_not_grow(store: Store) -> None:
    """DuckDB never vacuums deleted rows of a table with a primary key: updates must not delete."""
    con = store.connection
    for n in range(12):
        status = "completed" if n == 11 else "in_progress"
        store.apply(
            [
                snap(run_obj(status, metadata={"n": str(n)}), T0 + n),
                snap(step_obj(status, metadata={"n": str(n)}), T0 + n, kind="step"),
            ],
            [],
        )
        con.execute("CHECKPOINT")
    for table in ("runs", "run_steps"):
        stored = con.execute(
            f"SELECT sum(count) FROM pragma_storage_info('{table}') "
            "WHERE column_name = 'id' AND segment_type = 'VARCHAR'"
        ).fetchone()
        assert stored == (1,), table
    assert con.execute("SELECT metadata->>'n', tool_types FROM run_steps").fetchone() == (
        "11",
        '["function","code_interpreter"]',
    )


def test_large_tables_are_read_by_index_with_the_same_result(tmp_path: Path) -> None:
    path = str(tmp_path / "capture.duckdb")
    store = Store(path, cache_rows=0)
    try:
        many = [snap(run_obj("in_progress", id=f"run_{i:04d}"), T0 + 1) for i in range(1000)]
        store.apply(many, [])
        # 3 ids against 1000 stored rows: looked up through the primary key index
        effects = store.apply(
            [
                snap(run_obj("completed", id="run_0007", usage=USAGE), T0 + 9),
                snap(run_obj("queued", id="run_0008"), T0 + 0.5),  # stale
                snap(run_obj("queued", id="run_new"), T0 + 2),
            ],
            [],
        )
        assert [(type(e).__name__, getattr(e, "to_status", None)) for e in effects] == [
            ("Transition", "completed"),
            ("RunFinished", None),
            ("Transition", "queued"),
        ]
        got = store.connection.execute(
            "SELECT id, status, total_tokens FROM runs WHERE id IN ('run_0007', 'run_0008', 'run_new') ORDER BY id"
        ).fetchall()
        assert got == [
            ("run_0007", "completed", 909),
            ("run_0008", "in_progress", None),
            ("run_new", "queued", None),
        ]
        # an id that cannot be spliced into SQL takes the scan path
        odd = "run_'; DROP TABLE runs; --"
        store.apply([snap(run_obj("queued", id=odd), T0)], [])
        store.apply([snap(run_obj("completed", id=odd, usage=USAGE), T0 + 5)], [])
        assert store.connection.execute("SELECT status FROM runs WHERE id = ?", [odd]).fetchall() == [("completed",)]
        assert store.connection.execute("SELECT count(*) FROM runs").fetchone() == (1002,)
    finally:
        store.close()


def test_rows_written_by_other_tools_can_be_merged_into(store: Store) -> None:
    """Synthetic or imported rows lack the merge's bookkeeping columns; the merge treats them as oldest."""
    store.connection.execute("INSERT INTO runs (id, status, model) VALUES ('run_1', 'in_progress', 'gpt-4o')")
    effects = store.apply([snap(run_obj("in_progress"), T0 + 1), snap(run_obj("completed", usage=USAGE), T0 + 9)], [])
    assert [(type(e), getattr(e, "from_status", None)) for e in effects] == [
        (Transition, "in_progress"),
        (RunFinished, None),
    ]
    assert store.connection.execute("SELECT status, total_tokens, epoch(first_seen_at) FROM runs").fetchall() == [
        ("completed", 909, T0 + 1)
    ]
