"""Run `runtap` with a memory probe: on SIGUSR2 it writes where its RSS goes to $RUNTAP_PROBE_OUT.

    RUNTAP_PROBE_OUT=/tmp/probe.jsonl python -m bench.rss_probe serve --upstream ... (runtap's own arguments)

Each SIGUSR2 appends one JSON line: RSS split by /proc/self/smaps_rollup (anonymous vs file-backed),
thread count, Python's allocated blocks, the top tracemalloc lines when RUNTAP_PROBE_TRACEMALLOC=1
(tracing slows runtap and costs memory itself: use it for the breakdown run only), and, when
the file $RUNTAP_PROBE_OUT.trim exists, the RSS after one glibc malloc_trim(0). RUNTAP_PROBE_CACHE_ROWS=N
sets the store's merge-cache bound (Store cache_rows); RUNTAP_PROBE_DUCKDB_SQL runs one statement on the
writer's connection once it is open. A bench tool: runtap itself never loads it.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import tracemalloc
from types import FrameType
from typing import Any


def rollup() -> dict[str, int]:
    out: dict[str, int] = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) << 10
    return out


def snapshot(trim: bool) -> dict[str, Any]:
    r = rollup()
    rec: dict[str, Any] = {"rss": r.get("Rss", 0), "anon": r.get("Anonymous", 0),
                           "file": r.get("Rss", 0) - r.get("Anonymous", 0),
                           "threads": threading.active_count(), "os_threads": len(os.listdir("/proc/self/task")),
                           "py_blocks": sys.getallocatedblocks()}
    if tracemalloc.is_tracing():
        cur, peak = tracemalloc.get_traced_memory()
        rec["traced"], rec["traced_peak"] = cur, peak
        top = tracemalloc.take_snapshot().statistics("filename")[:15]
        rec["top"] = [(str(s.traceback), s.size, s.count) for s in top]
    if trim:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        rec["rss_after_trim"] = rollup().get("Rss", 0)
    return rec


def main() -> int:
    out = os.environ["RUNTAP_PROBE_OUT"]
    if os.environ.get("RUNTAP_PROBE_TRACEMALLOC") == "1":
        tracemalloc.start(1)

    def on_usr2(_sig: int, _frame: FrameType | None) -> None:
        with open(out, "a") as f:
            f.write(json.dumps(snapshot(os.path.exists(out + ".trim"))) + "\n")

    signal.signal(signal.SIGUSR2, on_usr2)
    rows = os.environ.get("RUNTAP_PROBE_CACHE_ROWS")
    if rows is not None:  # the store's merge cache bound, to measure what it holds
        from runtap.analytics.ingest.store import Store

        defaults = Store.__init__.__kwdefaults__
        assert defaults is not None
        defaults["cache_rows"] = int(rows)
    sql = os.environ.get("RUNTAP_PROBE_DUCKDB_SQL")
    if sql:  # e.g. SET allocator_flush_threshold = '8MB': run on the writer's connection after it opens
        from runtap.analytics.ingest.store import Store

        opened = Store.__init__

        def init(self: Store, *args: Any, **kwargs: Any) -> None:
            opened(self, *args, **kwargs)
            self.connection.execute(sql)

        Store.__init__ = init  # type: ignore[method-assign]
    from runtap.proxy.__main__ import main as runtap_main

    return runtap_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
