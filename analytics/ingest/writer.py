"""The capture writer: one thread that owns the DuckDB store, fed by a bounded queue.

The event loop only calls `submit` (O(1), never blocks, never raises). The thread takes batches from
the bounded queue (batching.py), decodes them (decode.py), and applies each batch to the Store in one
transaction. When the store cannot be opened or a write fails, the batch goes to the spool instead and
is replayed once the store is back (failover.py), so a locked or broken database loses nothing until
the spool's own bound is reached. Every event is counted once, in `health` (health.py), which the
Prometheus collector reads at scrape time.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

import duckdb

from ...settings.config import spool_path_for
from .batching import BatchQueue, batch_bytes
from .decode import CaptureDecoder
from .failover import SpoolFailover
from .faults import Faults, cause
from .health import DECODE, STORE_MEMORY, CaptureHealth, Kind
from .isolate import Isolated, apply_isolating, data_fault, split
from .merge import Effect
from .records import CaptureItem, RequestRecord, Snapshot
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

OnEffects = Callable[[list[Effect]], None]


@dataclass(frozen=True, slots=True)
class WriterConfig:
    db_path: str
    spool_path: str | None = None  # default: settings.config.spool_path_for(db_path)
    spool_max_bytes: int = 256 << 20
    spool_memory_bytes: int = 64 << 20  # held in memory when the spool file cannot be written (hold.py)
    queue_size: int = 100_000
    queue_max_bytes: int = 512 << 20
    batch_max: int = 5_000
    flush_interval_s: float = 0.2
    reopen_interval_s: float = 5.0
    max_event_bytes: int = 1 << 20
    store_prompts: bool = False
    db_memory_limit: str | None = None

    def __post_init__(self) -> None:
        if self.queue_size < 1 or self.queue_max_bytes < 1 or self.batch_max < 1:
            raise ValueError("queue_size, queue_max_bytes and batch_max must be positive")
        if self.flush_interval_s < 0 or self.reopen_interval_s <= 0:
            raise ValueError("flush_interval_s must be >= 0 and reopen_interval_s > 0")

    @property
    def spool(self) -> str:
        return spool_path_for(self.db_path, self.spool_path or "")


@dataclass(frozen=True, slots=True)
class WriterHooks:
    """Called on the writer thread (on_sse_events per batch, the others after its commit); a hook that
    raises is counted and logged, never raised into capture."""

    on_effects: OnEffects | None = None  # what the batch changed (run and response metrics, spans)
    on_sse_events: Callable[[Mapping[str, int]], None] | None = None  # events decoded since the last call
    on_capture_lag: Callable[[list[float]], None] | None = None  # per request: last byte -> its commit


@contextlib.contextmanager
def automatic_gc_paused() -> Iterator[None]:
    """No automatic cyclic collection while a batch is processed.

    A batch holds thousands of freshly built dicts and lists at once, so it pushes the collector's
    young-generation count over its threshold, and each collection then walks the whole batch while
    holding the GIL: 5-50 ms pauses of the event loop, measured with gc.callbacks under bench load.
    What a batch allocates is freed by reference counting when it ends; the count of what survives
    is unchanged, so collections resume as soon as the batch is done.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class CaptureWriter:
    def __init__(self, config: WriterConfig, *, hooks: WriterHooks | None = None,
                 health: CaptureHealth | None = None, store_factory: Callable[[], Store] | None = None) -> None:
        self.config = config
        self.health = health if health is not None else CaptureHealth()
        self._hooks = hooks or WriterHooks()
        self._faults = Faults(self.health, log)
        self._factory: Callable[[], Store] = store_factory or (
            lambda: Store(config.db_path, store_prompts=config.store_prompts, memory_limit=config.db_memory_limit))
        self._decoder = CaptureDecoder(max_event_bytes=config.max_event_bytes, store_prompts=config.store_prompts)
        self._queue = BatchQueue(maxsize=config.queue_size, max_bytes=config.queue_max_bytes,
                                 batch_max=config.batch_max, interval_s=config.flush_interval_s)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self._closing = False
        self.submitted = 0  # by the submitting thread only
        # Writer-thread state below.
        self._store: Store | None = None
        self._failover = SpoolFailover(config.spool, max_bytes=config.spool_max_bytes,
                                       memory_bytes=config.spool_memory_bytes, retry_s=config.reopen_interval_s,
                                       faults=self._faults, target=config.db_path)
        self._next_open = 0.0
        self._failures = 0
        self._open_failed = False
        self._next_sample = 0.0
        self._memory_logged_at: float | None = None
        self._memory_unlogged = 0
        self._reported_skips: Counter[str] = Counter()
        self._reported_events: Counter[str] = Counter()

    # --- any thread --------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stopped:
                return
            self._thread = threading.Thread(target=self._run, name="runtap-capture-writer", daemon=True)
            self._thread.start()

    def submit(self, item: CaptureItem) -> bool:
        try:
            if self._closing:
                self._faults.dropped("stopped")
                return False
            refused = self._queue.put(item)
        except Exception:  # the request path must never see a capture failure
            refused = "submit_error"
        if refused is not None:
            self._faults.dropped(refused)
            return False
        self.submitted += 1
        return True

    @property
    def stats(self) -> dict[str, int]:
        """Totals so far (from `health`, which a shared registry's writers may share)."""
        return {"submitted": self.submitted, **self.health.stats()}

    @property
    def spool_path(self) -> str:
        return self._failover.path

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A read connection of the caller's own on the open capture database (Store.reader)."""
        store = self._store
        if store is None:
            raise StoreError("capture store is not open")
        return store.reader()

    def depth(self) -> int:
        return self._queue.qsize()

    def healthy(self) -> bool:
        thread = self._thread
        return self._store is not None and thread is not None and thread.is_alive()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every item submitted before this call has been written or spooled."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return self._queue.empty()
        deadline = None if timeout is None else time.monotonic() + timeout
        marker = threading.Event()
        if not self._queue.put_marker(marker, timeout):
            return False
        while True:
            wait = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if marker.wait(max(wait, 0.0)):
                return True
            # The thread may have exited between the liveness check and the put (stop() racing).
            if not thread.is_alive():
                return marker.is_set() or self._queue.empty()
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def stop(self, timeout: float = 30.0) -> None:
        """Drain the queue into the store (or the spool), then close the store. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            thread = self._thread
        self._closing = True
        if thread is not None:
            deadline = time.monotonic() + timeout
            if not self._queue.put_stop(timeout):
                log.error("capture writer did not drain its queue within %.0fs", timeout)
                return
            thread.join(max(deadline - time.monotonic(), 0.0))
            if thread.is_alive():
                log.error("capture writer still busy after %.0fs; %d items not written", timeout,
                          self.depth())
                return
        # Items that raced past the stop marker after the final drain, or were never going to be
        # written because the writer was never started.
        self._faults.dropped("stopped", self._queue.qsize(), log=False)

    # --- writer thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._failover.open()
            self._open_store()
        except Exception as exc:
            self._faults.failed("internal", exc, stack=True)
        while True:
            items: list[CaptureItem] = []
            markers: list[threading.Event] = []
            stop = False
            size = 0
            try:
                stop = self._queue.collect(items, markers, self._idle_timeout())
                size = batch_bytes(items)
                if not items:
                    self._maintain()
                with automatic_gc_paused():
                    try:
                        batch_max = self._queue.batch_max
                        for i in range(0, len(items), batch_max):
                            self._batch(items[i:i + batch_max])
                    finally:
                        items.clear()  # freed by reference counting before collection resumes
            except Exception as exc:  # one bad batch must not end capture for good
                self._faults.failed("internal", exc, stack=True)
            finally:
                self._queue.done(size)
                for marker in markers:
                    marker.set()
            if stop:
                break
        self._release_hold(final=True)
        self._close_store()

    def _idle_timeout(self) -> float | None:
        failover = self._failover
        now = time.monotonic()
        if failover.held():
            return max(failover.next_hold_retry - now, 0.0)
        if self._store is None:
            return max(self._next_open - now, 0.0)
        if failover.pending:
            return max(failover.next_replay - now, 0.0)
        return None

    def _maintain(self) -> None:
        failover = self._failover
        now = time.monotonic()
        if self._store is None and now >= self._next_open:
            self._open_store()
        elif self._store is not None and failover.pending and now >= failover.next_replay:
            self._replay(self._store)
        if failover.held() and now >= failover.next_hold_retry:
            self._release_hold()

    def _release_hold(self, *, final: bool = False) -> None:
        """Write what was held in memory (to the store, else the spool); at stop, what still cannot be
        written is dropped and counted."""
        if not self._failover.held():
            return
        self._write(*split(self._failover.take_held()))
        if final:
            self._failover.drop_held()

    def _batch(self, items: list[CaptureItem]) -> None:
        snapshots: list[Snapshot] = []
        requests: list[RequestRecord] = []
        decode = self._decoder.decode
        for item in items:
            if isinstance(item, RequestRecord):
                requests.append(item)
            snapshots.extend(decode(item))
        self._report_skips()
        self._report_events()
        if snapshots or requests:
            self._write(snapshots, requests)

    def _write(self, snapshots: list[Snapshot], requests: list[RequestRecord]) -> None:
        self._maintain()
        store = self._store
        if store is not None:
            try:
                effects = store.apply(snapshots, requests)
            except Exception as exc:
                if data_fault(exc):
                    self._isolate(store, snapshots, requests)
                    return
                self._store_failed(exc)
                # When only the write failed the store hands back what the batch changed: emit it
                # now, since the spool replay emits nothing.
                self._emit(exc.effects if isinstance(exc, StoreError) else [])
            else:
                self._failures = 0
                self._written(snapshots, requests)
                self._emit(effects)
                self._sample_memory(store)
                return
        self._failover.put(snapshots, requests)

    def _store_failed(self, exc: Exception) -> None:
        store = self._store
        if store is not None and store.poisoned is not None:
            self._store_broken(exc)
            return
        self._faults.failed("store", exc)
        self._failures += 1
        if isinstance(cause(exc), _FATAL) or self._failures >= _REOPEN_AFTER:
            self._close_store()
            self._next_open = time.monotonic() + self.config.reopen_interval_s
        else:
            self._failover.retry_later()

    def _store_broken(self, exc: BaseException) -> None:
        """The store's DuckDB instance ran out of memory or failed FATAL and must not be used again
        (Store._poison_if_broken): close it without a checkpoint and open the file again after the
        reopen interval. The file and its WAL hold every commit; what failed is in the spool."""
        err = cause(exc)
        store = self._store
        if out_of_memory(err) or (store is not None and store.out_of_memory):
            self.health.failed(STORE_MEMORY, type(err).__name__)
            self._log_out_of_memory(store.poisoned if store is not None and store.poisoned else str(err))
        else:
            self._faults.failed("store", exc)
        self._close_store()
        self._failures = 0
        self._next_open = time.monotonic() + self.config.reopen_interval_s

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
            self.config.db_path, self.config.db_memory_limit or "DuckDB's default", times, self.spool_path,
            said)

    def _sample_memory(self, store: Store, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_sample:
            return
        self._next_sample = now + MEMORY_SAMPLE_S
        try:
            self.health.db_memory = store.memory()
        except Exception:  # a gauge, not capture: never a capture failure
            log.debug("cannot sample DuckDB memory", exc_info=True)

    def _isolate(self, store: Store, snapshots: list[Snapshot], requests: list[RequestRecord]) -> None:
        """The batch failed for what one of its items holds: keep every other item (isolate.py)."""
        done: Isolated = apply_isolating(store.apply, [*snapshots, *requests])
        self._failures = 0
        self._written(*split(done.applied))
        self._emit(done.effects)
        if done.rejected:
            self._failover.reject(done)
        if done.error is not None:
            self._failover.put(*split(done.pending))
            if store.poisoned is not None:
                self._store_broken(done.error)
                return
            self._faults.failed("store", done.error)
            self._failures += 1
            self._failover.retry_later()

    def _emit(self, effects: list[Effect]) -> None:
        on_effects = self._hooks.on_effects
        if effects and on_effects is not None:
            try:
                on_effects(effects)
            except Exception as exc:
                self._faults.failed("on_effects", exc, stack=True)

    def _written(self, snapshots: list[Snapshot], requests: list[RequestRecord]) -> None:
        runs = sum(1 for s in snapshots if s.kind == "run")
        responses = sum(1 for s in snapshots if s.kind == "response")
        add = self.health.add
        add(Kind.WRITTEN, "runs", runs)
        add(Kind.WRITTEN, "steps", len(snapshots) - runs - responses)
        add(Kind.WRITTEN, "responses", responses)
        add(Kind.WRITTEN, "requests", len(requests))
        self._lag(requests)

    def _lag(self, requests: list[RequestRecord]) -> None:
        """Each request's time from its last byte to the commit just made (wall clock: the records
        carry their start as epoch seconds)."""
        on_capture_lag = self._hooks.on_capture_lag
        if on_capture_lag is None or not requests:
            return
        now = time.time()
        try:
            on_capture_lag([now - r.started_at - r.duration_ms / 1000.0 for r in requests])
        except Exception as exc:
            self._faults.failed("on_capture_lag", exc)

    def _open_store(self) -> None:
        try:
            store = self._factory()
        except Exception as exc:
            self._faults.failed("store_open", exc)
            self._open_failed = True
            self._next_open = time.monotonic() + self.config.reopen_interval_s
            return
        self._store = store
        self._failures = 0
        self.health.store(opened=True)
        if self._open_failed:
            self._open_failed = False
            log.info("capture store %s open again", self.config.db_path)
        # The spool's back-off holds across reopens: a replay that ran the database out of memory closes
        # the store, and replaying again at each reopen would re-read the whole spool every interval.
        if self._failover.pending and time.monotonic() >= self._failover.next_replay:
            self._replay(store)
        if self._store is not None:
            self._sample_memory(self._store, force=True)

    def _replay(self, store: Store) -> None:
        self._failover.replay(store)  # counts its own failure
        if store.poisoned is not None:
            self._store_broken(store.broken_by or StoreError(store.poisoned))

    def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is None:
            return
        self.health.store(opened=False)
        try:
            store.close()
        except Exception as exc:
            self._faults.failed("store_close", exc)

    def _report_skips(self) -> None:
        reported = self._reported_skips
        for reason, total in self._decoder.skipped.items():
            delta = total - reported[reason]
            if delta:
                reported[reason] = total
                self.health.add(Kind.ERRORS, f"{DECODE}:{reason}", delta)

    def _report_events(self) -> None:
        """SSE events relayed since the last batch, by name (the decoder keeps running totals)."""
        on_sse_events = self._hooks.on_sse_events
        if on_sse_events is None:
            return
        reported = self._reported_events
        delta = {n: t - reported[n] for n, t in self._decoder.events_seen.items() if t != reported[n]}
        if delta:
            reported.update(delta)
            try:
                on_sse_events(delta)
            except Exception as exc:
                self._faults.failed("on_sse_events", exc)
