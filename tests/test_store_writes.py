"""How the store writes changed rows: an UPDATE in place, and the upsert when a row was not there."""

from __future__ import annotations

from pathlib import Path

from runtap.analytics.ingest.store import Store

from tests.test_merge import T0, run_obj, snap


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
