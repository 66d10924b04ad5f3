"""Response merge rules (analytics/ingest/response_merge.py): the run rules, over any arrival order, in
memory and through the DuckDB store across restarts."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import duckdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtap.analytics.ingest.records import Snapshot
from runtap.analytics.ingest.response_merge import (
    ResponseEvent,
    ResponseFinished,
    ResponseToolTurnaround,
    ResponseTransition,
    ResponseUsageKnown,
    merge_responses,
)
from runtap.analytics.ingest.store import Store

from tests import response_factory as rf

T0 = 1_760_000_000
USAGE = rf.usage(input_tokens=1200, cached=1024, output_tokens=300, reasoning=256)


def obj(status: str, **over: Any) -> dict[str, Any]:
    out = rf.response("resp_1", status, created_at=T0, output=[rf.function_call()] if status == "completed" else [],
                      background=True, max_output_tokens=2000, with_usage=False)
    out["usage"] = USAGE if status == "completed" else None
    out.update(over)
    return out


def snap(o: dict[str, Any], t: float, *, source: str = "response", op: str = "responses.retrieve",
         rid: str = "p", **extra: Any) -> Snapshot:
    return Snapshot("response", o, t, source, op, None, "fp_abc", rid, extra)  # type: ignore[arg-type]


def lifecycle() -> list[Snapshot]:
    """A background response: created (queued), polled, streamed via resume, with stale polls."""
    partial = dict(obj("in_progress"), output=[rf.function_call()])
    return [
        snap(obj("queued"), T0 + 0.0, op="responses.create", rid="c", request_started_at=T0 + 0.0, stream=False),
        snap(obj("in_progress"), T0 + 1.0, rid="p1"),
        snap(obj("in_progress"), T0 + 1.5, source="stream", rid="s"),
        snap(partial, T0 + 2.0, source="stream", rid="s"),
        snap(obj("completed"), T0 + 3.0, source="stream", rid="s"),
        snap(obj("queued"), T0 + 0.2, rid="p0"),  # a slow poll sent early, landing late
        snap(obj("in_progress"), T0 + 2.5, rid="p2"),
        snap(obj("completed"), T0 + 3.5, rid="p3"),
    ]


FINAL = {
    "status": "completed", "input_tokens": 1200, "cached_input_tokens": 1024, "output_tokens": 300,
    "reasoning_tokens": 256, "total_tokens": 1500, "max_output_tokens": 2000, "background": True,
    "stream": False, "created_at": T0, "completed_at": T0 + 2, "ended_at": T0 + 2,
    "queued_observed_at": T0 + 0.0, "in_progress_observed_at": T0 + 1.0, "status_observed_at": T0 + 3.0,
    "first_seen_at": T0, "last_seen_at": T0 + 3.5, "request_started_at": T0, "function_calls": 1,
    "finished_counted": True, "usage_counted": True, "tool_wait_at": T0 + 3.0,
}


def merge_all(snaps: list[Snapshot], *, emit: bool = True) -> tuple[dict[str, Any], list[ResponseEvent], list[Any]]:
    events: list[ResponseEvent] = []
    effects: list[Any] = []
    rows: dict[str, Any] = {}
    for s in snaps:  # one snapshot per batch: the hardest case for the once-rules
        rows.update(merge_responses(rows, [s], events=events, effects=effects, emit=emit))
    return rows["resp_1"], events, effects


def tokens_counted(effects: list[Any]) -> int:
    total = 0
    for e in effects:
        if isinstance(e, ResponseFinished) and e.row["total_tokens"] is not None:
            total += e.row["total_tokens"]
        elif isinstance(e, ResponseUsageKnown):
            total += e.total_tokens
    return total


def check_chain(events: list[Any]) -> None:
    assert events[0].from_status is None
    assert all(a.to_status == b.from_status for a, b in zip(events, events[1:], strict=False))
    assert events[-1].to_status == "completed"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.permutations(range(8)), dups=st.lists(st.integers(0, 7), max_size=6))
def test_any_arrival_order_and_duplicates_end_in_the_same_row_with_effects_once(
    order: list[int], dups: list[int]
) -> None:
    base = lifecycle()
    row, events, effects = merge_all([base[i] for i in order] + [base[i] for i in dups])
    # the stream alone sets `stream`; here the create was JSON (stream False) in every order
    assert {k: row[k] for k in FINAL} == FINAL
    assert [type(e) for e in effects].count(ResponseFinished) == 1
    assert tokens_counted(effects) == 1500
    transitions = [e for e in effects if isinstance(e, ResponseTransition)]
    assert [(e.from_status, e.to_status) for e in events] == [(t.from_status, t.to_status) for t in transitions]
    check_chain(events)


def test_arrival_in_order_records_each_status_once() -> None:
    row, events, effects = merge_all(lifecycle())
    assert [(e.from_status, e.to_status, e.operation) for e in events] == [
        (None, "queued", "responses.create"), ("queued", "in_progress", "responses.retrieve"),
        ("in_progress", "completed", "responses.retrieve")]
    finished = next(e for e in effects if isinstance(e, ResponseFinished))
    assert finished.row["reasoning_tokens"] == 256 and "raw" not in finished.row
    assert finished.row["tool_names"] == ["get_weather"]


def test_usage_after_the_terminal_snapshot_is_counted_once() -> None:
    done = obj("completed", usage=None)
    row, _, effects = merge_all([snap(done, T0 + 3), snap(obj("completed"), T0 + 4), snap(obj("completed"), T0 + 5)])
    assert [type(e) for e in effects].count(ResponseUsageKnown) == 1
    assert tokens_counted(effects) == 1500
    assert row["usage_counted"]


def test_null_never_erases_and_terminal_is_final() -> None:
    row, events, _ = merge_all([snap(obj("completed"), T0 + 3), snap(obj("in_progress", model=None), T0 + 9)])
    assert row["status"] == "completed" and row["model"] == rf.MODEL and row["total_tokens"] == 1500
    assert [e.to_status for e in events] == ["completed"]


def test_earliest_terminal_wins() -> None:
    for order in ([0, 1], [1, 0]):
        snaps = [snap(obj("cancelled"), T0 + 2), snap(obj("completed"), T0 + 3)]
        row, _, _ = merge_all([snaps[i] for i in order])
        assert row["status"] == "cancelled"


def test_a_tool_round_is_measured_once_from_the_answering_request() -> None:
    events: list[ResponseEvent] = []
    effects: list[Any] = []
    rows: dict[str, Any] = {}
    answer = rf.response("resp_2", "completed", created_at=T0 + 5, previous_response_id="resp_1")
    for s in [snap(obj("completed"), T0 + 3),
              snap(answer, T0 + 4.25, op="responses.create", answers=["resp_1"], request_started_at=T0 + 4.25),
              snap(answer, T0 + 4.25, op="responses.create", answers=["resp_1"], request_started_at=T0 + 4.25),
              snap(obj("completed"), T0 + 6)]:
        rows.update(merge_responses(rows, [s], events=events, effects=effects))
    assert [e for e in effects if isinstance(e, ResponseToolTurnaround)] == [
        ResponseToolTurnaround("resp_1", rf.MODEL, 1.25)]
    assert rows["resp_1"]["tool_wait_at"] is None


def test_replay_emits_nothing() -> None:
    _, events, effects = merge_all(lifecycle(), emit=False)
    assert effects == [] and len(events) == 3


def test_prompts_only_with_store_prompts() -> None:
    s = snap(obj("completed"), T0, op="responses.create", request_input=[{"role": "user", "content": "hi"}])
    plain = merge_responses({}, [s], events=[], effects=[])["resp_1"]
    kept = merge_responses({}, [s], events=[], effects=[], store_prompts=True)["resp_1"]
    assert "input" not in plain and "instructions" not in plain
    assert kept["input"] == [{"role": "user", "content": "hi"}] and kept["instructions"] == "Be terse."


def test_hostile_values_become_null() -> None:
    o = obj("completed", usage={"input_tokens": "12", "output_tokens": 1 << 70, "total_tokens": True,
                                "input_tokens_details": [], "output_tokens_details": {"reasoning_tokens": -1}},
            created_at=1e300, conversation=5, error="boom", output="nope", temperature=float("inf"))
    row = merge_responses({}, [snap(o, T0)], events=[], effects=[])["resp_1"]
    assert row["input_tokens"] is None and row["output_tokens"] is None and row["total_tokens"] is None
    assert row["reasoning_tokens"] == -1 and row["created_at"] is None and row["conversation_id"] is None
    assert row["tool_calls"] is None


# --- through the store --------------------------------------------------------------------------------

COLS = ("status", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens", "total_tokens",
        "epoch(ended_at)", "epoch(queued_observed_at)", "epoch(in_progress_observed_at)", "finished_counted",
        "usage_counted", "function_calls", "stream")


def stored(con: duckdb.DuckDBPyConnection) -> tuple[Any, ...]:
    got = con.execute(f"SELECT {', '.join(COLS)} FROM responses WHERE id = 'resp_1'").fetchone()
    assert got is not None
    return got


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.permutations(range(8)), cuts=st.lists(st.integers(1, 7), max_size=3), restart_at=st.integers(0, 3),
       cache_rows=st.sampled_from([0, 50_000]))
def test_batches_in_any_order_across_a_restart_end_the_same_and_emit_once(
    order: list[int], cuts: list[int], restart_at: int, cache_rows: int
) -> None:
    base = lifecycle()
    snaps = [base[i] for i in order]
    bounds = [0, *sorted(set(cuts)), len(snaps)]
    batches = [snaps[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if snaps[a:b]]
    effects: list[Any] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "capture.duckdb")
        store = Store(path, cache_rows=cache_rows)
        try:
            for n, batch in enumerate(batches):
                if n == restart_at:
                    store.close()
                    store = Store(path, cache_rows=cache_rows)
                effects += store.apply(batch, [])
            store.close()
            store = Store(path, cache_rows=cache_rows)
            assert store.apply(base, []) == []  # a re-delivery after a restart emits nothing
            con = store.connection
            assert stored(con) == ("completed", 1200, 1024, 300, 256, 1500, T0 + 2, T0, T0 + 1, True, True, 1, False)
            history = con.execute("SELECT from_status, to_status FROM response_events ORDER BY observed_at").fetchall()
            assert history[0][0] is None and history[-1][1] == "completed"
            assert all(a[1] == b[0] for a, b in zip(history, history[1:], strict=False))
            raw = con.execute("SELECT raw::VARCHAR, tool_names::VARCHAR FROM responses").fetchone()
            assert raw is not None and raw[1] == '["get_weather"]'
        finally:
            store.close()
    assert [type(e) for e in effects].count(ResponseFinished) == 1
    assert tokens_counted(effects) == 1500


def test_store_closes_a_tool_round_of_a_response_from_an_earlier_batch(tmp_path: Any) -> None:
    path = str(tmp_path / "c.duckdb")
    store = Store(path)
    store.apply([snap(obj("completed"), T0 + 3)], [])
    store.close()
    store = Store(path)  # after a restart: the wait is in the row
    answer = rf.response("resp_2", "completed", created_at=T0 + 5, previous_response_id="resp_1")
    effects = store.apply([snap(answer, T0 + 5, op="responses.create", answers=["resp_1"],
                                request_started_at=T0 + 5)], [])
    again = store.apply([snap(answer, T0 + 5, op="responses.create", answers=["resp_1"],
                              request_started_at=T0 + 5)], [])
    try:
        assert [e for e in effects if isinstance(e, ResponseToolTurnaround)] == [
            ResponseToolTurnaround("resp_1", rf.MODEL, 2.0)]
        assert not [e for e in again if isinstance(e, ResponseToolTurnaround)]
        got = store.connection.execute("SELECT count(*), count(tool_wait_at) FROM responses").fetchone()
        assert got == (2, 0)
    finally:
        store.close()


def test_spooled_response_snapshots_replay_once_and_keep_their_tool_round(tmp_path: Any) -> None:
    from runtap.analytics.ingest.spool import Spool

    store = Store(str(tmp_path / "c.duckdb"))
    spool = Spool(str(tmp_path / "spool.jsonl"), max_bytes=1 << 20)
    answer = rf.response("resp_2", "completed", created_at=T0 + 5, previous_response_id="resp_1")
    assert spool.append([*lifecycle(), snap(answer, T0 + 5, op="responses.create", answers=["resp_1"],
                                            request_started_at=T0 + 5)], []) == 0
    try:
        assert Spool(spool.path, max_bytes=1 << 20).replay(store) == 9
        assert stored(store.connection)[:6] == ("completed", 1200, 1024, 300, 256, 1500)
        # the round closed during replay (no effect emitted then) is not measured again by a live delivery
        again = store.apply([snap(answer, T0 + 5, op="responses.create", answers=["resp_1"],
                                  request_started_at=T0 + 5), *lifecycle()], [])
        assert again == []
    finally:
        store.close()
