"""How the store writes changed rows: an UPDATE in place, and the upsert when a row was not there."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runtap.analytics.ingest.merge import Effect
from runtap.analytics.ingest.records import Snapshot
from runtap.analytics.ingest.store import Store

from tests.test_merge import T0, USAGE, run_obj, snap, step_obj


def test_a_cached_row_deleted_behind_the_stores_back_is_written_again(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "c.duckdb"))
    try:
        store.apply([snap(run_obj("queued"), T0)], [])
        store.connection.execute("DELETE FROM runs")  # the cache still holds run_1 as stored
        store.apply([snap(run_obj("in_progress", metadata={"k": "v"}), T0 + 1)], [])
        got = store.connection.execute("SELECT id, status, metadata->>'k', raw->>'status' FROM runs").fetchall()
    finally:
        store.close()
    assert got == [("run_1", "in_progress", "v", "in_progress")]


def test_an_update_keeps_stored_structures_the_batch_did_not_bring(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "c.duckdb"), cache_rows=0)
    try:
        store.apply([snap(run_obj("queued", metadata={"k": "v"}), T0)], [])
        later = run_obj("in_progress")
        del later["metadata"]
        store.apply([snap(later, T0 + 1)], [])
        got = store.connection.execute("SELECT status, metadata->>'k' FROM runs").fetchall()
    finally:
        store.close()
    assert got == [("in_progress", "v")]


def _streams(runs: int) -> list[Snapshot]:
    """``runs`` streams interleaved as the capture writer receives them: each run queued, in progress,
    a step created and completed, the run completed with usage."""
    per_run: list[list[Snapshot]] = []
    for r in range(runs):
        rid, sid, t = f"run_{r}", f"step_{r}", T0 + r / 10
        per_run.append([
            snap(run_obj("queued", id=rid), t),
            snap(run_obj("in_progress", id=rid), t + 0.1),
            snap(step_obj("in_progress", id=sid, run_id=rid), t + 0.2, kind="step"),
            snap(step_obj("completed", id=sid, run_id=rid), t + 0.3, kind="step"),
            snap(run_obj("completed", id=rid, usage=USAGE), t + 0.4),
        ])
    out: list[Snapshot] = []
    for k in range(5):  # stream order within a run, the runs' events interleaved
        out += [seq[k] for seq in per_run]
    return out


def _tables(store: Store) -> list[list[tuple[Any, ...]]]:
    con = store.connection
    return [con.execute(f"SELECT {t}::VARCHAR FROM {t} ORDER BY {order}").fetchall()  # noqa: S608 - constants
            for t, order in (("runs", "id"), ("run_steps", "id"), ("run_events", "run_id, observed_at"))]


def _canonical(effect: Effect) -> str:
    """An effect as text that does not depend on how its row was last held: a row read back from DuckDB
    is in column order and has its epoch times as floats, one merged in memory has them as the object gave them."""

    def number(v: Any) -> Any:
        return float(v) if type(v) in (int, float) else v

    fields = {k: {c: number(x) for c, x in v.items()} if type(v) is dict else number(v)
              for k, v in dataclasses.asdict(effect).items()}
    return f"{type(effect).__name__}{json.dumps(fields, sort_keys=True, default=repr)}"


@settings(max_examples=25, deadline=None)
@given(runs=st.integers(1, 4), cuts=st.lists(st.integers(1, 19), max_size=5), cache_rows=st.sampled_from([0, 50_000]))
def test_any_cut_of_interleaved_lifecycles_into_batches_ends_as_one_batch(
    tmp_path_factory: pytest.TempPathFactory, runs: int, cuts: list[int], cache_rows: int
) -> None:
    """A stream that spans two writer batches ends with the same rows, the same transitions and the same
    effects as one that fits in one batch (where each object is merged in memory and written once)."""
    snaps = _streams(runs)
    edges = [0, *sorted(c for c in set(cuts) if c < len(snaps)), len(snaps)]
    outcomes = []
    for batches in ([snaps], [snaps[a:b] for a, b in zip(edges, edges[1:], strict=False)]):
        store = Store(str(tmp_path_factory.mktemp("cut") / "capture.duckdb"), cache_rows=cache_rows)
        try:
            effects = [e for batch in batches for e in store.apply(batch, [])]
            outcomes.append((_tables(store), sorted(map(_canonical, effects))))
        finally:
            store.close()
    assert outcomes[1] == outcomes[0]
    tables, _ = outcomes[0]
    assert [len(t) for t in tables] == [runs, runs, 3 * runs]  # NULL -> queued -> in_progress -> completed


def test_new_rows_keep_a_value_only_one_row_of_the_batch_has(tmp_path: Path) -> None:
    """A small batch's INSERT names only the columns some new row has a value in: every one must count."""
    plain = run_obj("queued", id="run_a", metadata=None, max_prompt_tokens=None)
    rich = run_obj("failed", id="run_b", metadata={"k": "v"}, max_prompt_tokens=77, failed_at=T0 + 5,
                   last_error={"code": "server_error", "message": "boom"})
    store = Store(str(tmp_path / "c.duckdb"))
    try:
        store.apply([snap(plain, T0), snap(rich, T0 + 1)], [])
        got = store.connection.execute(
            "SELECT id, status, metadata->>'k', max_prompt_tokens, epoch(failed_at), last_error_code, "
            "last_error_message, finished_counted FROM runs ORDER BY id").fetchall()
    finally:
        store.close()
    assert got == [("run_a", "queued", None, None, None, None, None, False),
                   ("run_b", "failed", "v", 77, T0 + 5, "server_error", "boom", True)]
