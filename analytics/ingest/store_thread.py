"""The capture store and its single write thread (datasette's `Database` shape).

The thread is started and joined here, and only it opens, writes, reopens and closes the Store; other
threads get a read connection of their own (`reader`). What the thread does each cycle (take a batch,
decode, write, fail over) is the writer's (writer.py): this module decides when the store is open, when
a failure reopens it, and what its memory is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final

import duckdb

from .faults import Faults, cause
from .health import STORE_MEMORY, CaptureHealth
from .store import Store, StoreError, out_of_memory

log = logging.getLogger("runtap.writer")

# Errors after which a DuckDB connection is unusable ("database has been invalidated") or the file is
# gone: reopen instead of retrying on the same connection.
_FATAL: Final = (duckdb.FatalException, duckdb.ConnectionException, duckdb.IOException, OSError)
# Any error repeated this many times in a row also reopens the store; a one-off keeps it open.
_REOPEN_AFTER: Final = 3
# The buffer pool is sampled for runtap_capture_db_memory_bytes at most this often, after a write.
MEMORY_SAMPLE_S: Final = 1.0
# The out-of-memory line is repeated at most this often while it keeps happening (each one is counted).
MEMORY_LOG_S: Final = 600.0
# An open that runs out of memory replays the whole WAL each time: back off, doubling, up to this long.
MAX_OPEN_BACKOFF_S: Final = 300.0


class StoreThread:
    def __init__(self, factory: Callable[[], Store], *, db_path: str, memory_limit: str | None,
                 reopen_interval_s: float, spool_path: str, faults: Faults) -> None:
        self._factory = factory
        self._db_path = db_path
        self._memory_limit = memory_limit
        self._reopen_s = reopen_interval_s
        self._spool_path = spool_path  # for the out-of-memory line
        self._faults = faults
        self._thread: threading.Thread | None = None
        # Write-thread state below.
        self.store: Store | None = None
        self.next_open = 0.0
        self._failures = 0
        self._open_failed = False
        self._open_backoff = 0.0
        self._next_sample = 0.0
        self._memory_logged_at: float | None = None
        self._memory_unlogged = 0

    @property
    def health(self) -> CaptureHealth:
        return self._faults.health

    # --- any thread --------------------------------------------------------------------------------

    def start(self, begin: Callable[[], None], cycle: Callable[[], bool], end: Callable[[], None]) -> None:
        """Run the write thread: `begin`, then `cycle` until it returns True (stop), then `end`; the
        store is closed last. Called once (the writer's lock sees to that)."""
        self._thread = threading.Thread(target=self._run, args=(begin, cycle, end), name="runtap-capture-writer",
                                        daemon=True)
        self._thread.start()

    def started(self) -> bool:
        return self._thread is not None

    def alive(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end; True when it has (or never started)."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(max(timeout, 0.0))
        return not thread.is_alive()

    def healthy(self) -> bool:
        return self.store is not None and self.alive()

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A read connection of the caller's own on the open capture database (Store.reader)."""
        store = self.store
        if store is None:
            raise StoreError("capture store is not open")
        return store.reader()

    # --- write thread --------------------------------------------------------------------------------

    def _run(self, begin: Callable[[], None], cycle: Callable[[], bool], end: Callable[[], None]) -> None:
        try:
            begin()
        except Exception as exc:
            self._faults.failed("internal", exc, stack=True)
        while not cycle():
            pass
        end()
        self.close()

    def open(self) -> Store | None:
        """Open the store; on failure count it, and try again after the reopen interval."""
        try:
            store = self._factory()
        except Exception as exc:
            err = cause(exc)
            delay = self._reopen_s
            if out_of_memory(err):
                self.health.failed(STORE_MEMORY, type(err).__name__)
                self._log_out_of_memory(str(err))
                self._open_backoff = min(self._open_backoff * 2, MAX_OPEN_BACKOFF_S) if self._open_backoff else delay
                delay = self._open_backoff
            else:
                self._faults.failed("store_open", exc)
            self._open_failed = True
            self.next_open = time.monotonic() + delay
            return None
        self.store = store
        self._failures = 0
        self._open_backoff = 0.0
        self.health.store(opened=True)
        if self._open_failed:
            self._open_failed = False
            log.info("capture store %s open again", self._db_path)
        return store

    def close(self) -> None:
        store, self.store = self.store, None
        if store is None:
            return
        self.health.store(opened=False)
        try:
            store.close()
        except Exception as exc:
            self._faults.failed("store_close", exc)

    def wrote(self) -> None:
        self._failures = 0

    def failed(self, exc: Exception) -> bool:
        """A write failed: True when the store stays open (retry later), False when it was closed."""
        if not self.failed_again(exc):
            return False
        if isinstance(cause(exc), _FATAL) or self._failures >= _REOPEN_AFTER:
            self.close()
            self.next_open = time.monotonic() + self._reopen_s
            return False
        return True

    def failed_again(self, exc: BaseException) -> bool:
        """Part of a batch failed after the rest was written: count it. True when the store stays open
        (it does unless its DuckDB instance is broken)."""
        store = self.store
        if store is not None and store.poisoned is not None:
            self.broken(exc)
            return False
        self._faults.failed("store", exc)
        self._failures += 1
        return True

    def broken(self, exc: BaseException) -> None:
        """The store's DuckDB instance ran out of memory or failed FATAL and must not be used again
        (Store._poison_if_broken): close it without a checkpoint and open the file again after the
        reopen interval. The file and its WAL hold every commit; what failed is in the spool."""
        err = cause(exc)
        store = self.store
        if out_of_memory(err) or (store is not None and store.out_of_memory):
            self.health.failed(STORE_MEMORY, type(err).__name__)
            self._log_out_of_memory(store.poisoned if store is not None and store.poisoned else str(err))
        else:
            self._faults.failed("store", exc)
        self.close()
        self._failures = 0
        self.next_open = time.monotonic() + self._reopen_s

    def _log_out_of_memory(self, said: str) -> None:
        self._memory_unlogged += 1
        now = time.monotonic()
        if self._memory_logged_at is not None and now < self._memory_logged_at + MEMORY_LOG_S:
            return
        self._memory_logged_at = now
        times, self._memory_unlogged = self._memory_unlogged, 0
        log.error(
            "capture database %s ran out of memory (--db-memory-limit %s; %d time(s) since the last such line): "
            "DuckDB keeps the primary-key index of every stored run, step and response in memory, ~90 bytes an "
            "id. Nothing committed is lost: the store is reopened from its file, and batches wait in the spool "
            "%s (bounded by --spool-max-bytes) until they fit. Raise --db-memory-limit, or export old rows "
            "(runtap export) and delete them (runtap purge --before DATE --rows), and restart. DuckDB said: %s",
            self._db_path, self._memory_limit or "DuckDB's default", times, self._spool_path, said)

    def sample_memory(self, *, force: bool = False) -> None:
        store = self.store
        now = time.monotonic()
        if store is None or (not force and now < self._next_sample):
            return
        self._next_sample = now + MEMORY_SAMPLE_S
        try:
            self.health.db_memory = store.memory()
        except Exception:  # a gauge, not capture: never a capture failure
            log.debug("cannot sample DuckDB memory", exc_info=True)
