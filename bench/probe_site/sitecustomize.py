"""Bench-only knobs for `bench.rss_tree` and `bench.rss_breakdown`, in every process of the tree (the relay
and the capture process it starts): PYTHONPATH=bench/probe_site makes Python import this at start-up.
Nothing happens unless a RUNTAP_PROBE_* variable is set, and nothing is imported until runtap imports the
store itself (so a relay that never loads DuckDB still does not).

    RUNTAP_PROBE_CACHE_ROWS=N      the store's merge-cache bound (Store cache_rows)
    RUNTAP_PROBE_DUCKDB_SQL="S1; S2"  statements run on the writer's connection once it is open
    RUNTAP_PROBE_BATCH_MAX=N       the capture writer's largest batch (WriterConfig batch_max, 5,000)
    RUNTAP_PROBE_IDLE_CHECKPOINT=1 the capture process's idle trim first runs CHECKPOINT on a reader
                                   cursor (to measure what an idle checkpoint would return)
    RUNTAP_PROBE_OUT=FILE          on SIGUSR2 each runtap process appends one JSON line to FILE: where its
                                   RSS goes (probe_memory.snapshot: smaps_rollup, glibc's mallinfo2,
                                   Python's blocks, threads) and, while FILE.trim exists, the RSS after one
                                   malloc_trim(0)
    RUNTAP_PROBE_TRIM_EVERY=S      a thread calls malloc_trim(0) every S seconds, load or not (to measure
                                   what trimming under load returns and costs)
    RUNTAP_PROBE_TRACEMALLOC=1     also trace Python's allocations (slows runtap several times): the
                                   top lines by size go into each SIGUSR2 line
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from types import ModuleType
from typing import Any

_STORE = "runtap.analytics.ingest.store"
_CAPTURE = "runtap.proxy.capture_process"


def _patch_capture(capture: ModuleType) -> None:
    made = capture.idle_trimmer

    def idle_trimmer(settings: Any, ingest: Any) -> Any:
        trimmer = made(settings, ingest)
        if trimmer is None:
            return None
        trim = trimmer.trim

        def checkpoint_then_trim() -> object:
            try:
                con = ingest.writer.reader()
                try:
                    con.execute("CHECKPOINT")
                finally:
                    con.close()
            except Exception as exc:  # noqa: BLE001 - a probe: report and go on
                print(f"probe: idle CHECKPOINT failed: {exc}", file=sys.stderr)
            return trim()

        trimmer.trim = checkpoint_then_trim
        return trimmer

    capture.__dict__["idle_trimmer"] = idle_trimmer


def _patch(store: ModuleType) -> None:
    rows = os.environ.get("RUNTAP_PROBE_CACHE_ROWS")
    if rows is not None:
        defaults = store.Store.__init__.__kwdefaults__
        defaults["cache_rows"] = int(rows)
    sql = os.environ.get("RUNTAP_PROBE_DUCKDB_SQL")
    if sql:
        opened = store.Store.__init__

        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            opened(self, *args, **kwargs)
            if kwargs.get("memory_limit") is not None:  # the writer's store
                for statement in sql.split(";"):
                    if statement.strip():
                        self.connection.execute(statement)

        store.Store.__init__ = init


def _patch_writer(writer: ModuleType) -> None:
    import dataclasses

    batch_max = int(os.environ["RUNTAP_PROBE_BATCH_MAX"])
    made = writer.CaptureWriter.__init__

    def init(self: Any, config: Any, *args: Any, **kwargs: Any) -> None:
        made(self, dataclasses.replace(config, batch_max=batch_max), *args, **kwargs)

    writer.CaptureWriter.__init__ = init


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, patches: dict[str, Any]) -> None:
        self.patches = patches

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        patch = self.patches.pop(name, None)
        if patch is None:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            if self.patches:
                sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        run = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            patch(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _probe(out: str) -> None:
    import json
    import signal

    from probe_memory import snapshot

    if os.environ.get("RUNTAP_PROBE_TRACEMALLOC") == "1":
        import tracemalloc

        tracemalloc.start(1)
    role = "capture" if _CAPTURE in _command_line() else "relay"

    def dump(_sig: int, _frame: Any) -> None:
        with open(out, "a") as f:
            f.write(json.dumps({"role": role, "trims": _TRIMS[1], "trim_cpu_s": _TRIMS[0],
                                **snapshot(os.path.exists(out + ".trim"))}) + "\n")

    signal.signal(signal.SIGUSR2, dump)


def _command_line() -> str:
    try:  # sys.argv is not final yet under `python -m` while site runs
        with open("/proc/self/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


_TRIMS = [0.0, 0]  # CPU seconds spent in RUNTAP_PROBE_TRIM_EVERY's trims, and how many


def _trim_every(seconds: float) -> None:
    import ctypes
    import threading
    import time

    trim = ctypes.CDLL("libc.so.6").malloc_trim
    spent = _TRIMS

    def run() -> None:
        while True:
            time.sleep(seconds)
            t0 = time.thread_time()
            trim(0)
            spent[0] += time.thread_time() - t0
            spent[1] += 1

    threading.Thread(target=run, daemon=True, name="probe-trim").start()


if os.environ.get("RUNTAP_PROBE_TRIM_EVERY") and "runtap" in _command_line():
    _trim_every(float(os.environ["RUNTAP_PROBE_TRIM_EVERY"]))
if os.environ.get("RUNTAP_PROBE_OUT") and "runtap" in _command_line():
    _probe(os.environ["RUNTAP_PROBE_OUT"])

_PATCHES: dict[str, Any] = {}
if any(k in os.environ for k in ("RUNTAP_PROBE_CACHE_ROWS", "RUNTAP_PROBE_DUCKDB_SQL")):
    _PATCHES[_STORE] = _patch
if os.environ.get("RUNTAP_PROBE_BATCH_MAX"):
    _PATCHES["runtap.analytics.ingest.writer"] = _patch_writer
if os.environ.get("RUNTAP_PROBE_IDLE_CHECKPOINT") == "1":
    _PATCHES[_CAPTURE] = _patch_capture
if _PATCHES:
    import importlib.util

    sys.meta_path.insert(0, _Finder(_PATCHES))
