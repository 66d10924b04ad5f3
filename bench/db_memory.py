"""How many stored ids a DuckDB buffer pool (--db-memory-limit) holds before capture's commits fail.

    .venv/bin/python -m bench.db_memory --limit 256MB --ids 6000000

Inserts ids as runtap and the API make them into a real store: `requests` ids as the relay makes them
(a random per-process prefix and a counter, so each batch lands at one end of the index) and, for the
first half, random API-like ids (36 characters, as `run_...` ids are) into `runs`, ROWS ids a statement
(the writer's batch size), autocommitted, with the store's checkpoint threshold; then reopens the
store and merges 20 one-run batches. Prints where it failed, or the buffer pool in use at the end.
Bounded by --ids; writes a temporary file of ~200 bytes an id.
"""

from __future__ import annotations

import argparse
import os
import tempfile

from runtap.analytics.ingest.records import Snapshot
from runtap.analytics.ingest.store import Store


def fill(store: Store, ids: int, rows: int) -> int | None:
    """Insert; the number of requests rows stored when a statement failed, or None."""
    con = store.connection
    for k in range(0, ids, rows):
        try:
            con.execute(
                "INSERT INTO requests (id, started_at, method, path, status_code) "  # noqa: S608 - ints only
                f"SELECT printf('9f3c2a1b0d4e5f60%016x', i), now(), 'POST', '/v1/threads/t/runs', 200 "
                f"FROM range({k}, {k + rows}) t(i)"
            )
            if k < ids // 2:
                con.execute(
                    "INSERT INTO runs (id, status, finished_counted, usage_counted) "  # noqa: S608 - ints only
                    f"SELECT 'run_' || md5(i::VARCHAR), 'completed', true, true FROM range({k}, {k + rows}) t(i)"
                )
        except Exception as exc:
            print(f"  failed: {str(exc).splitlines()[0]}")
            return k
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", default="512MB", help="DuckDB memory_limit (default 512MB)")
    parser.add_argument("--ids", type=int, default=2_000_000, help="requests rows to insert (runs: half)")
    parser.add_argument("--rows", type=int, default=5_000, help="rows a statement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "db_memory.duckdb")
        store = Store(path, memory_limit=args.limit)
        failed = fill(store, args.ids, args.rows)
        if failed is not None:
            print(f"{args.limit}: commits failed after {failed:,} requests and {min(failed, args.ids // 2):,} runs")
        try:
            store.close()
        except Exception as exc:  # duckdb 1.5.5: a commit failed for memory can leave the instance unusable
            print(f"  close: {str(exc).splitlines()[0]}")
            return
        if failed is not None:
            return
        store = Store(path, memory_limit=args.limit)
        for i in range(20):
            obj = {"id": f"run_new_{i}", "object": "thread.run", "status": "queued", "created_at": 1_700_000_000}
            store.apply([Snapshot("run", obj, 1_700_000_000.0, "stream", "runs.create", "v2", None, None)], [])
        used = store.connection.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchone()
        store.close()
        mb = (used[0] if used else 0) / 2**20
        print(f"{args.limit}: {args.ids:,} requests and {args.ids // 2:,} runs stored; pool in use {mb:.0f} MB")


if __name__ == "__main__":
    main()
