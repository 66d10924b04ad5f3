"""Merge rules (analytics/ingest/merge.py): the stored row depends on the set of snapshots, not their order."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtap.analytics.ingest.merge import (
    Effect,
    Row,
    RunEvent,
    RunFinished,
    StepFinished,
    ToolTurnaround,
    Transition,
    UsageKnown,
    merge_run,
    merge_step,
)
from runtap.analytics.ingest.records import Snapshot

T0 = 1_700_000_000
USAGE = {"prompt_tokens": 812, "completion_tokens": 97, "total_tokens": 909}


def run_obj(status: str, **over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": "run_1",
        "object": "thread.run",
        "created_at": T0,
        "thread_id": "thread_1",
        "assistant_id": "asst_1",
        "status": status,
        "model": "gpt-4o",
        "instructions": "be terse",
        "tools": [{"type": "function", "function": {"name": "lookup"}}],
        "metadata": {},
        "usage": None,
        "started_at": None if status == "queued" else T0 + 1,
        "expires_at": None if status == "completed" else T0 + 600,
        "completed_at": T0 + 9 if status == "completed" else None,
        "failed_at": None,
        "cancelled_at": None,
        "last_error": None,
        "incomplete_details": None,
        "max_prompt_tokens": 4000,
        "max_completion_tokens": None,
        "temperature": 1.0,
        "top_p": 1.0,
        "tool_choice": "auto",
        "response_format": "auto",
        "truncation_strategy": {"type": "auto", "last_messages": None},
        "parallel_tool_calls": True,
    }
    obj.update(over)
    return obj


def snap(
    obj: dict[str, Any],
    t: float,
    *,
    source: str = "stream",
    op: str = "runs.create",
    kind: str = "run",
    request_id: str = "req_1",
) -> Snapshot:
    return Snapshot(kind, obj, t, source, op, "v2", "fp_abc", request_id)  # type: ignore[arg-type]


def lifecycle() -> list[Snapshot]:
    """One run with a tool round, as the stream and a polling client see it (with stale polls)."""
    return [
        snap(run_obj("queued"), T0 + 0.0),
        snap(run_obj("in_progress"), T0 + 0.5),
        snap(run_obj("requires_action"), T0 + 1.0),
        snap(
            run_obj("in_progress"),
            T0 + 3.0,
            source="response",
            op="runs.submit_tool_outputs",
            request_id="r2",
        ),
        snap(run_obj("completed", usage=USAGE), T0 + 9.0),
        # polls: observed_at is the send time, any of them may land after the stream's last event
        snap(run_obj("queued"), T0 + 0.1, source="response", op="runs.retrieve", request_id="p1"),
        snap(run_obj("requires_action"), T0 + 2.0, source="response", op="runs.retrieve", request_id="p2"),
        snap(run_obj("in_progress"), T0 + 4.0, source="response", op="runs.retrieve", request_id="p3"),
        snap(
            run_obj("completed", usage=USAGE),
            T0 + 9.5,
            source="response",
            op="runs.retrieve",
            request_id="p4",
        ),
    ]


def merge_all(
    snaps: list[Snapshot], row: Row | None = None, *, emit: bool = True, store_prompts: bool = False
) -> tuple[Row, list[RunEvent], list[Effect]]:
    events: list[RunEvent] = []
    effects: list[Effect] = []
    for s in snaps:
        row = merge_run(row, s, events=events, effects=effects, emit=emit, store_prompts=store_prompts)
    assert row is not None
    return row, events, effects


def tokens_counted(effects: list[Effect]) -> int:
    total = 0
    for e in effects:
        if isinstance(e, RunFinished) and e.row["total_tokens"] is not None:
            total += e.row["total_tokens"]
        elif isinstance(e, UsageKnown):
            total += e.total_tokens
    return total


FINAL = {
    "status": "completed",
    "prompt_tokens": 812,
    "completion_tokens": 97,
    "total_tokens": 909,
    "created_at": T0,
    "started_at": T0 + 1,
    "completed_at": T0 + 9,
    "expires_at": T0 + 600,  # filled from earlier snapshots: the completed object has none
    "ended_at": T0 + 9,
    "first_seen_at": T0 + 0.0,
    "last_seen_at": T0 + 9.5,
    "status_observed_at": T0 + 9.0,
    "finished_counted": True,
    "usage_counted": True,
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.permutations(range(9)), dups=st.lists(st.integers(0, 8), max_size=6))
def test_any_arrival_order_and_duplicates_end_in_the_same_row_with_effects_once(
    order: list[int], dups: list[int]
) -> None:
    base = lifecycle()
    snaps = [base[i] for i in order] + [base[i] for i in dups]
    row, events, effects = merge_all(snaps)

    assert {k: row[k] for k in FINAL} == FINAL
    assert [type(e) for e in effects].count(RunFinished) == 1
    assert tokens_counted(effects) == 909
    assert len([e for e in effects if isinstance(e, ToolTurnaround)]) <= 1
    # every change of the stored status is one event and one Transition, and they chain
    transitions = [e for e in effects if isinstance(e, Transition)]
    assert [(e.from_status, e.to_status) for e in events] == [(t.from_status, t.to_status) for t in transitions]
    assert events[0].from_status is None
    assert all(a.to_status == b.from_status for a, b in zip(events, events[1:], strict=False))
    assert events[-1].to_status == "completed"


def test_stream_order_records_every_status_change_once() -> None:
    row, events, effects = merge_all(lifecycle())
    assert [(e.from_status, e.to_status, e.source, e.operation, e.request_id) for e in events] == [
        (None, "queued", "stream", "runs.create", "req_1"),
        ("queued", "in_progress", "stream", "runs.create", "req_1"),
        ("in_progress", "requires_action", "stream", "runs.create", "req_1"),
        ("requires_action", "in_progress", "response", "runs.submit_tool_outputs", "r2"),
        ("in_progress", "completed", "stream", "runs.create", "req_1"),
    ]
    assert [e.observed_at - T0 for e in events] == [0.0, 0.5, 1.0, 3.0, 9.0]
    turnaround = [e for e in effects if isinstance(e, ToolTurnaround)]
    assert turnaround == [ToolTurnaround("run_1", "gpt-4o", 2.0)]
    finished = [e for e in effects if isinstance(e, RunFinished)]
    assert finished[0].row["total_tokens"] == 909
    assert finished[0].row["max_prompt_tokens"] == 4000
    assert "raw" not in finished[0].row and "instructions" not in finished[0].row


def test_stale_snapshot_does_not_move_status_back() -> None:
    row, events, _ = merge_all([snap(run_obj("requires_action"), T0 + 5), snap(run_obj("queued"), T0 + 1)])
    assert row["status"] == "requires_action"
    assert len(events) == 1
    assert row["first_seen_at"] == T0 + 1


def test_terminal_is_final_even_when_a_newer_snapshot_says_otherwise() -> None:
    row, events, _ = merge_all([snap(run_obj("cancelled"), T0 + 5), snap(run_obj("in_progress"), T0 + 8)])
    assert row["status"] == "cancelled"
    assert [e.to_status for e in events] == ["cancelled"]


def test_earliest_terminal_wins_in_either_order() -> None:
    failed = snap(run_obj("failed", failed_at=T0 + 4, last_error={"code": "server_error", "message": "x"}), T0 + 5)
    cancelled = snap(run_obj("cancelled", cancelled_at=T0 + 6), T0 + 6)
    for order in ([failed, cancelled], [cancelled, failed]):
        row, _, effects = merge_all(order)
        assert row["status"] == "failed"
        assert row["ended_at"] == T0 + 4
        assert row["last_error_code"] == "server_error"
        assert [type(e) for e in effects].count(RunFinished) == 1


def test_usage_is_never_erased_by_a_later_null() -> None:
    row, _, _ = merge_all(
        [snap(run_obj("completed", usage=USAGE), T0 + 5), snap(run_obj("completed", usage=None), T0 + 7)]
    )
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (812, 97, 909)


def test_usage_arriving_after_the_terminal_snapshot_is_emitted_once() -> None:
    row, _, effects = merge_all(
        [
            snap(run_obj("completed"), T0 + 5),
            snap(run_obj("completed", usage=USAGE), T0 + 6),
            snap(run_obj("completed", usage=USAGE), T0 + 7),
        ]
    )
    finished = [e for e in effects if isinstance(e, RunFinished)]
    assert finished[0].row["total_tokens"] is None
    assert [e for e in effects if isinstance(e, UsageKnown)] == [
        UsageKnown("run_1", "gpt-4o", "asst_1", 812, 97, 909, max_prompt_tokens=4000)]
    assert tokens_counted(effects) == 909
    assert row["usage_counted"] is True


def test_a_metadata_update_after_completion_is_kept() -> None:
    row, _, _ = merge_all(
        [
            snap(run_obj("completed", metadata={"v": "2"}), T0 + 20, source="response", op="runs.update"),
            snap(run_obj("completed", metadata={"v": "1"}), T0 + 9),
            snap(run_obj("in_progress", metadata={"v": "0"}), T0 + 3),
        ]
    )
    assert row["metadata"] == {"v": "2"}
    assert row["status_observed_at"] == T0 + 9  # earliest sighting of the final status


def test_one_tool_turnaround_per_round() -> None:
    submit = "runs.submit_tool_outputs"
    _, _, effects = merge_all(
        [
            snap(run_obj("requires_action"), T0 + 1),
            snap(run_obj("queued"), T0 + 4, source="response", op=submit),
            snap(run_obj("queued"), T0 + 4, source="response", op=submit),  # delivered twice
            snap(run_obj("in_progress"), T0 + 4.5, op=submit),  # the same submit's stream
            snap(run_obj("requires_action"), T0 + 6, op=submit),  # a second round, inside that stream
            snap(run_obj("in_progress"), T0 + 6.25, source="response", op=submit),
        ]
    )
    assert [e.seconds for e in effects if isinstance(e, ToolTurnaround)] == [3.0, 0.25]


def test_replay_emits_nothing_but_remembers_what_was_emitted() -> None:
    row, events, effects = merge_all(lifecycle(), emit=False)
    assert effects == []
    assert len(events) == 5  # the database still gets its history
    assert row["finished_counted"] is True
    _, _, later = merge_all([snap(run_obj("completed", usage=USAGE), T0 + 30)], row=row)
    assert later == []


def test_prompts_are_kept_only_when_asked() -> None:
    obj = run_obj("queued")
    extra = {"additional_messages": [{"role": "user", "content": "hi"}], "additional_instructions": "x"}
    s = Snapshot("run", obj, T0, "response", "runs.create", "v2", None, "r", extra)
    row, _, _ = merge_all([s])
    assert row.get("instructions") is None and row.get("additional_messages") is None
    row, _, _ = merge_all([s], store_prompts=True)
    assert row["instructions"] == "be terse"
    assert row["additional_messages"] == extra["additional_messages"]
    assert row["additional_instructions"] == "x"


def test_malformed_values_become_null_instead_of_failing_the_batch() -> None:
    row, _, _ = merge_all(
        [
            snap(
                run_obj("completed", created_at="yesterday", usage={"total_tokens": "many"}, temperature=True),
                T0,
            )
        ]
    )
    assert row["status"] == "completed"
    assert row["created_at"] is None and row["total_tokens"] is None and row["temperature"] is None


def step_obj(status: str, **over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": "step_1",
        "object": "thread.run.step",
        "created_at": T0 + 2,
        "run_id": "run_1",
        "assistant_id": "asst_1",
        "thread_id": "thread_1",
        "type": "tool_calls",
        "status": status,
        "completed_at": T0 + 3 if status == "completed" else None,
        "cancelled_at": None,
        "failed_at": None,
        "expired_at": None,
        "last_error": None,
        "step_details": {
            "type": "tool_calls",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}},
                {"id": "c2", "type": "code_interpreter", "code_interpreter": {"input": "", "outputs": []}},
                {"id": "c3", "type": "function", "function": {"name": "lookup", "arguments": "{}"}},
            ]
            if status == "completed"
            else [],
        },
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12} if status == "completed" else None,
    }
    obj.update(over)
    return obj


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.permutations(range(4)))
def test_steps_follow_the_same_rules(order: list[int]) -> None:
    base = [
        snap(step_obj("in_progress"), T0 + 2, kind="step"),
        snap(step_obj("completed"), T0 + 3, kind="step"),
        snap(step_obj("in_progress"), T0 + 2.5, kind="step", source="response"),
        snap(step_obj("completed", usage=None), T0 + 4, kind="step", source="response"),
    ]
    row: Row | None = None
    effects: list[Effect] = []
    for i in order:
        row = merge_step(row, base[i], effects=effects)
    assert row is not None
    assert (row["status"], row["total_tokens"], row["completed_at"]) == ("completed", 12, T0 + 3)
    assert row["tool_types"] == ["function", "code_interpreter"]
    assert row["tool_names"] == ["lookup"]
    assert len(effects) == 1 and isinstance(effects[0], StepFinished)
    assert effects[0].row["run_id"] == "run_1"
