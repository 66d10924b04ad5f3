"""Store ingest throughput: run/step snapshots merged into DuckDB per second, one thread.

    .venv/bin/python bench/ingest_store.py [--sizes 10000 100000] [--batch 5000] [--shape realistic]

Shapes: ``realistic`` = each run is seen 5 times (queued, in_progress, requires_action, in_progress
after submit_tool_outputs, completed with usage) plus 2 steps seen twice each, in stream order,
split across batches as they come; ``distinct`` = every snapshot is a new completed run (the
worst case: one row written per snapshot); ``updates`` = the same runs re-polled every batch
(rows read back from DuckDB, cache disabled). Generation is not timed; the timed part is
Store.apply for every batch plus the final close (CHECKPOINT).
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from analytics.store import Store
from proxy.records import Snapshot

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
            "tool_calls": [
                {"id": f"call_{i}", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
            ],
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


def _batches(total: int, batch: int, shape: str) -> Iterator[list[Snapshot]]:
    if shape == "realistic":
        snaps = _realistic(total)
    elif shape == "distinct":
        snaps = _distinct(total)
    else:
        snaps = _updates(total, batch)
    while chunk := list(itertools.islice(snaps, batch)):
        yield chunk


def measure(total: int, batch: int, shape: str) -> float:
    """Snapshots/s; each batch is built just before it is applied, as the writer gets it from its
    queue, so the heap (and the garbage collector's work) is the writer's, not 100k snapshots."""
    elapsed = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(os.path.join(tmp, "bench.duckdb"), cache_rows=0 if shape == "updates" else 50_000)
        for chunk in _batches(total, batch, shape):
            start = time.perf_counter()
            store.apply(chunk, [])
            elapsed += time.perf_counter() - start
        start = time.perf_counter()
        store.close()
        elapsed += time.perf_counter() - start
    return total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--shape", choices=["realistic", "distinct", "updates"], default="realistic")
    args = parser.parse_args()
    for size in args.sizes:
        rate = measure(size, args.batch, args.shape)
        print(f"{args.shape:9s} {size:>8,d} snapshots, batch {args.batch}: {rate:,.0f} snapshots/s")


if __name__ == "__main__":
    main()
