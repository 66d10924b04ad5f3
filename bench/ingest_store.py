"""Store ingest throughput: run/step snapshots merged into DuckDB per second, one thread.

    .venv/bin/python -m bench.ingest_store [--sizes 10000 100000] [--batch 5000] [--shape realistic]
                                           [--threads N (0: DuckDB's default)]
    .venv/bin/python -m bench.ingest_store --write-paths 2000   # why the store writes via read_json

Shapes: ``realistic`` = each run is seen 5 times (queued, in_progress, requires_action, in_progress
after submit_tool_outputs, completed with usage) plus 2 steps seen twice each, in stream order,
split across batches as they come; ``distinct`` = every snapshot is a new completed run (the
worst case: one row written per snapshot); ``updates`` = the same runs re-polled every batch
(rows read back from DuckDB, cache disabled); ``create`` = every snapshot is a new queued run from a
runs.create response, with its request record (what the capture process gets from a create workload;
run it with a batch of a few hundred, what the writer's 0.2 s cycle gives at a few thousand requests/s).
Generation is not timed; the timed part is
Store.apply for every batch plus the final close (CHECKPOINT), run as the capture writer runs it:
the process tuned as `runtap serve` tunes it (frozen start-up heap, young-GC threshold) and automatic
GC paused around each batch (analytics/ingest/writer.py), so the figure is the writer's, not CPython's defaults'
(those cost ~5% more: 46.1k vs 49.2k realistic, 22.3k vs 24.5k distinct snapshots/s, one run each).
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import orjson
from runtap.analytics.ingest.merge import Row, merge_run
from runtap.analytics.ingest.records import RequestRecord, Snapshot
from runtap.analytics.ingest.store import Store
from runtap.analytics.ingest.writer import automatic_gc_paused
from runtap.proxy.commands.serve import tune_runtime

T0 = 1_700_000_000


def _run(i: int, status: str, usage: bool) -> dict[str, Any]:
    return {
        "id": f"run_{i:010d}",
        "object": "thread.run",
        "created_at": T0 + i,
        "assistant_id": f"asst_{i % 50}",
        "thread_id": f"thread_{i:010d}",
        "status": status,
        "started_at": None if status == "queued" else T0 + i + 1,
        "expires_at": T0 + i + 600,
        "cancelled_at": None,
        "failed_at": None,
        "completed_at": T0 + i + 9 if status == "completed" else None,
        "required_action": None,
        "last_error": None,
        "model": "gpt-4o-mini",
        "instructions": "You are a helpful assistant. " * 8,
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        "metadata": {"tenant": f"t{i % 7}"},
        "incomplete_details": None,
        "usage": {"prompt_tokens": 812, "completion_tokens": 97, "total_tokens": 909} if usage else None,
        "temperature": 1.0,
        "top_p": 1.0,
        "max_prompt_tokens": None,
        "max_completion_tokens": None,
        "truncation_strategy": {"type": "auto", "last_messages": None},
        "response_format": "auto",
        "tool_choice": "auto",
        "parallel_tool_calls": True,
    }


def _step(i: int, n: int, status: str) -> dict[str, Any]:
    tool = n == 0
    details: dict[str, Any] = (
        {
            "type": "tool_calls",
            "tool_calls": [{"id": f"call_{i}", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}],
        }
        if tool
        else {"type": "message_creation", "message_creation": {"message_id": f"msg_{i}"}}
    )
    done = status == "completed"
    return {
        "id": f"step_{i:010d}_{n}",
        "object": "thread.run.step",
        "created_at": T0 + i + 2 + n,
        "run_id": f"run_{i:010d}",
        "assistant_id": f"asst_{i % 50}",
        "thread_id": f"thread_{i:010d}",
        "type": details["type"],
        "status": status,
        "cancelled_at": None,
        "completed_at": T0 + i + 3 + n if done else None,
        "expired_at": None,
        "failed_at": None,
        "last_error": None,
        "step_details": details,
        "usage": {"prompt_tokens": 400, "completion_tokens": 40, "total_tokens": 440} if done else None,
    }


def _snap(kind: str, obj: dict[str, Any], t: float, op: str) -> Snapshot:
    return Snapshot(kind, obj, t, "stream", op, "v2", "fp_0123456789ab", f"req_{obj['id']}")  # type: ignore[arg-type]


def _realistic(total: int) -> Iterator[Snapshot]:
    i = 0
    n = 0
    while True:
        t = float(T0 + i)
        seq = [
            _snap("run", _run(i, "queued", False), t, "runs.create"),
            _snap("run", _run(i, "in_progress", False), t + 0.1, "runs.create"),
            _snap("step", _step(i, 0, "in_progress"), t + 0.2, "runs.create"),
            _snap("run", _run(i, "requires_action", False), t + 0.3, "runs.create"),
            _snap("run", _run(i, "in_progress", False), t + 1.0, "runs.submit_tool_outputs"),
            _snap("step", _step(i, 0, "completed"), t + 1.1, "runs.submit_tool_outputs"),
            _snap("step", _step(i, 1, "in_progress"), t + 1.2, "runs.submit_tool_outputs"),
            _snap("step", _step(i, 1, "completed"), t + 2.0, "runs.submit_tool_outputs"),
            _snap("run", _run(i, "completed", True), t + 2.1, "runs.submit_tool_outputs"),
        ]
        for s in seq:
            yield s
            n += 1
            if n == total:
                return
        i += 1


def _distinct(total: int) -> Iterator[Snapshot]:
    for i in range(total):
        yield _snap("run", _run(i, "completed", True), float(T0 + i), "runs.retrieve")


def _updates(total: int, batch: int) -> Iterator[Snapshot]:
    for n in range(total):
        i = n % batch
        yield _snap("run", _run(i, "in_progress", False), float(T0 + n), "runs.retrieve")


def _created(total: int) -> Iterator[Snapshot]:
    for i in range(total):
        yield Snapshot("run", _run(i, "queued", False), float(T0 + i), "response", "runs.create", "v2",
                       "fp_0123456789ab", f"req_{i:010d}")


def _request(snap: Snapshot) -> RequestRecord:
    return RequestRecord(id=snap.request_id or "", started_at=snap.observed_at, method="POST",
                         path=f"/v1/threads/{snap.obj['thread_id']}/runs", operation="runs.create", status_code=200,
                         streamed=False, duration_ms=12.5, upstream_ttfb_ms=11.0, bytes_in=120, bytes_out=1900,
                         upstream_request_id=None, key_fingerprint="fp_0123456789ab", error=None, api_version="v2")


def _batches(total: int, batch: int, shape: str) -> Iterator[list[Snapshot]]:
    if shape == "create":
        snaps = _created(total)
    elif shape == "realistic":
        snaps = _realistic(total)
    elif shape == "distinct":
        snaps = _distinct(total)
    else:
        snaps = _updates(total, batch)
    while chunk := list(itertools.islice(snaps, batch)):
        yield chunk


def _prefill(store: Store, rows: int) -> None:
    """``rows`` completed runs of other ids, checkpointed: a store that has been capturing for a while."""
    for start in range(0, rows, 5_000):
        chunk = []
        for i in range(start, min(rows, start + 5_000)):
            obj = _run(i, "completed", True)
            obj["id"] = f"old_{i:010d}"
            chunk.append(_snap("run", obj, float(T0 + i), "runs.retrieve"))
        store.apply(chunk, [])
    store._ids.wait()  # noqa: SLF001 - the id filters' reads (own threads) belong to the untimed part
    store.connection.execute("CHECKPOINT")


def measure(total: int, batch: int, shape: str, threads: int | None, prefill: int = 0) -> tuple[float, float]:
    """(snapshots per wall second, per CPU second of the process). Each batch is built just before
    it is applied, as the writer gets it from its queue, so the heap (and the garbage collector's
    work) is the writer's, not that of 100k snapshots held at once. CPU time is the steadier figure
    on a shared machine; with DuckDB on one thread it is the single-core cost."""
    elapsed = cpu = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(
            os.path.join(tmp, "bench.duckdb"), cache_rows=0 if shape == "updates" else 50_000, threads=threads or None
        )
        _prefill(store, prefill)
        for chunk in [*_batches(total, batch, shape), None]:
            requests = [_request(s) for s in chunk] if chunk and shape == "create" else []
            start, start_cpu = time.perf_counter(), time.process_time()
            if chunk is None:
                store.close()
            else:
                with automatic_gc_paused():
                    store.apply(chunk, requests)
            elapsed += time.perf_counter() - start
            cpu += time.process_time() - start_cpu
    return total / elapsed, total / cpu


def _rows(n: int) -> list[Row]:
    """n merged run rows as the store writes them."""
    rows: list[Row] = []
    for i in range(n):
        row = merge_run(None, _snap("run", _run(i, "completed", True), float(T0 + i), "x"), events=[], effects=[])
        row["raw"] = {k: v for k, v in row["raw"].items() if k != "instructions"}
        rows.append(row)
    return rows


def compare_write_paths(n: int) -> None:
    """Insert n run rows into a fresh `runs` table by each way DuckDB offers without pandas/pyarrow."""
    rows = _rows(n)
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, size) in enumerate(
            (
                ("executemany INSERT OR REPLACE", min(n, 200)),
                ("multi-row VALUES INSERT OR REPLACE", min(n, 500)),
                ("staging file + read_json INSERT", n),
                ("staging file + read_json upsert", n),
            )
        ):
            store = Store(os.path.join(tmp, f"paths{k}.duckdb"))
            con = store.connection
            table = store._tables["runs"]  # the Store's own statements
            types = dict(
                con.execute(
                    "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'runs'"
                ).fetchall()
            )
            cols = list(table.columns)
            marks = "(" + ", ".join("make_timestamptz(?)" if types[c].startswith("TIMESTAMP") else "?" for c in cols)
            marks += ")"

            def params(row: Row, cols: list[str] = cols, types: dict[str, str] = types) -> list[Any]:
                out: list[Any] = []
                for c in cols:
                    v = row.get(c)
                    if types[c] == "JSON" and v is not None:
                        v = orjson.dumps(v).decode()
                    elif types[c].startswith("TIMESTAMP") and v is not None:
                        v = round(v * 1_000_000)
                    out.append(v)
                return out

            batch = rows[:size]
            if k == 3:
                store._stage("runs", batch)  # the rows exist: every row is an update
                con.execute(table.write_sql)
            start = time.perf_counter()
            con.execute("BEGIN")
            if k == 0:
                con.executemany(f"INSERT OR REPLACE INTO runs VALUES {marks}", [params(r) for r in batch])
            elif k == 1:
                flat = [v for r in batch for v in params(r)]
                con.execute(f"INSERT OR REPLACE INTO runs VALUES {', '.join([marks] * len(batch))}", flat)
            elif k == 3:
                store._stage(table.changed_staging_name, batch)
                con.execute(table.upsert_sql)
            else:
                store._stage("runs", batch)
                con.execute(table.write_sql)
            con.execute("COMMIT")
            print(f"  {name:36s} {size / (time.perf_counter() - start):>10,.0f} rows/s ({size} rows)")
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--shape", choices=["realistic", "distinct", "updates", "create"], default="realistic")
    parser.add_argument("--threads", type=int, default=1, help="DuckDB threads (Store's default 1; 0: DuckDB's)")
    parser.add_argument("--prefill", type=int, default=0, metavar="ROWS",
                        help="store ROWS other completed runs first (not timed): a table that has grown")
    parser.add_argument(
        "--write-paths",
        type=int,
        metavar="ROWS",
        default=0,
        help="instead: compare DuckDB write paths on ROWS run rows",
    )
    args = parser.parse_args()
    if args.write_paths:
        compare_write_paths(args.write_paths)
        return
    tune_runtime()
    for size in args.sizes:
        wall, cpu = measure(size, args.batch, args.shape, args.threads, args.prefill)
        print(
            f"{args.shape:9s} {size:>8,d} snapshots, batch {args.batch}, prefill {args.prefill:,d}: "
            f"{wall:,.0f} snapshots/s "
            f"({cpu:,.0f} per CPU second)"
        )


if __name__ == "__main__":
    main()
