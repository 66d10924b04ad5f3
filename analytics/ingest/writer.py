"""The capture writer: one thread that owns the DuckDB store, fed by a bounded queue.

The event loop only calls `submit` (O(1), never blocks, never raises). The thread takes batches from
the bounded queue (batching.py), decodes them (decode.py), and applies each batch to the Store in one
transaction. When the store cannot be opened or a write fails, the batch goes to an append-only spool
file instead and is replayed once the store is back (also at the next start), so a locked or broken
database loses nothing until the spool's own bound is reached. Every loss is counted.

Health events reported through `on_health(what, label, n)` (called from the writer thread, except
"dropped" for queue overflow, which is reported from the submitting thread):
  ("dropped", "queue_full" | "queue_bytes_full" | "stopped" | "spool_full" | "spool_error", n)
  ("errors", "decode:<reason>", n)                 reasons: see CaptureDecoder.skipped
  ("errors", "<where>:<ExceptionType>", 1)   where: store_open, store, replay, spool, on_effects, internal
  ("errors", "replay:rejected", n)   spooled items the store refused for their data, moved aside
  ("errors", "store:rejected", n)   items of a live batch the store refused for their data (the batch was
                                    bisected, the rest written), moved to the spool's rejected file
  ("errors", "spool:rejected", n)   items the spool could not encode, moved to its rejected file
  ("written", "runs" | "steps" | "responses" | "requests", n)
  ("spooled", "items", n)   ("replayed", "items", n)   ("store", "opened" | "closed", 1)
  ("held", "items", n)   kept in memory: neither the store nor the spool could take them (analytics/ingest/hold.py)
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

import duckdb

from .batching import BatchQueue, batch_bytes
from .decode import CaptureDecoder
from .hold import MemoryHold
from .isolate import Isolated, apply_isolating, data_fault, split
from .records import CaptureItem, RequestRecord, Snapshot
from .spool import Spool
from .store import Store, StoreError

log = logging.getLogger("runtap.writer")

# Errors after which a DuckDB connection is unusable ("database has been invalidated") or the file is
# gone: reopen instead of retrying on the same connection.
_FATAL: Final = (duckdb.FatalException, duckdb.ConnectionException, duckdb.IOException, OSError)
# Any error repeated this many times in a row also reopens the store; a one-off keeps it open.
_REOPEN_AFTER: Final = 3
# Replaying a spool that keeps failing re-reads it every time: back off up to this long.
_MAX_REPLAY_BACKOFF_S: Final = 300.0
_MAX_LOGGED: Final = 256
_DROP_LOG_S: Final = 10.0

OnEffects = Callable[[list[Any]], None]
OnHealth = Callable[[str, str, int], None]



def _cause(exc: BaseException) -> BaseException:
    # StoreError wraps the DuckDB or OS error that says what actually went wrong.
    return exc.__cause__ or exc


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
    def __init__(self, *, db_path: str, spool_path: str | None = None, spool_max_bytes: int = 256 << 20,
                 queue_size: int = 100_000, queue_max_bytes: int = 512 << 20, batch_max: int = 5_000,
                 flush_interval_s: float = 0.2, reopen_interval_s: float = 5.0,
                 max_event_bytes: int = 1 << 20, store_prompts: bool = False, db_memory_limit: str | None = None,
                 on_effects: OnEffects | None = None, on_health: OnHealth | None = None,
                 on_sse_events: Callable[[Mapping[str, int]], None] | None = None,
                 on_capture_lag: Callable[[list[float]], None] | None = None,
                 store_factory: Callable[[], Store] | None = None, spool_memory_bytes: int = 64 << 20) -> None:
        if queue_size < 1 or queue_max_bytes < 1 or batch_max < 1:
            raise ValueError("queue_size, queue_max_bytes and batch_max must be positive")
        if flush_interval_s < 0 or reopen_interval_s <= 0:
            raise ValueError("flush_interval_s must be >= 0 and reopen_interval_s > 0")
        self._db_path = db_path
        self._spool_path = spool_path or f"{db_path}.spool.jsonl"
        self._spool_max = spool_max_bytes
        self._reopen_s = reopen_interval_s
        self._on_effects = on_effects
        self._on_health = on_health
        self._on_sse_events = on_sse_events
        self._on_capture_lag = on_capture_lag
        self._reported_events: Counter[str] = Counter()
        self._factory: Callable[[], Store] = store_factory or (
            lambda: Store(db_path, store_prompts=store_prompts, memory_limit=db_memory_limit))
        self._decoder = CaptureDecoder(max_event_bytes=max_event_bytes, store_prompts=store_prompts)
        self._queue = BatchQueue(maxsize=queue_size, max_bytes=queue_max_bytes, batch_max=batch_max,
                                 interval_s=flush_interval_s)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self._closing = False
        # Writer-thread state below.
        self._store: Store | None = None
        self._spool: Spool | None = None
        self._spool_pending = False
        self._hold = MemoryHold(spool_memory_bytes)
        self._next_hold_retry = 0.0
        self._next_open = 0.0
        self._next_replay = 0.0
        self._replay_backoff = reopen_interval_s
        self._failures = 0
        self._open_failed = False
        self._reported_skips: Counter[str] = Counter()
        self._drops_unlogged: dict[str, int] = {}  # by the submitting thread, as "dropped" is
        self._drop_logged_at: dict[str, float] = {}
        self._logged: set[str] = set()
        # Keys never added later, so readers on other threads can iterate safely. Each key has one
        # writing thread: "submitted"/"dropped" the submitter, the rest the writer thread.
        self.stats: dict[str, int] = dict.fromkeys(
            ("submitted", "dropped", "written", "spooled", "spool_dropped", "replayed", "rejected", "errors",
             "decode_skipped", "held"), 0)

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
                self._dropped("stopped")
                return False
            refused = self._queue.put(item)
        except Exception:  # the request path must never see a capture failure
            refused = "submit_error"
        if refused is not None:
            self._dropped(refused)
            return False
        self.stats["submitted"] += 1
        return True

    @property
    def spool_path(self) -> str:
        return self._spool_path

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A read connection of the caller's own on the open capture database (Store.reader)."""
        store = self._store
        if store is None:
            raise StoreError("capture store is not open")
        return store.reader()

    cursor = reader  # the earlier name

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
        left = self._queue.qsize()
        if left:
            self.stats["dropped"] += left
            self._health("dropped", "stopped", left)

    def _dropped(self, reason: str) -> None:
        self.stats["dropped"] += 1
        self._health("dropped", reason, 1)
        # Logged at the first drop and then at most every _DROP_LOG_S with the count since, so an
        # overload shows in the log without a line per request.
        pending = self._drops_unlogged[reason] = self._drops_unlogged.get(reason, 0) + 1
        now = time.monotonic()
        if now >= self._drop_logged_at.get(reason, 0.0) + _DROP_LOG_S:
            self._drop_logged_at[reason] = now
            self._drops_unlogged[reason] = 0
            log.warning("capture dropped %d snapshot item(s): %s (runtap_capture_dropped_total counts them all)",
                        pending, reason)

    def _health(self, what: str, label: str, n: int) -> None:
        if self._on_health is None:
            return
        try:
            self._on_health(what, label, n)
        except Exception as exc:
            self._log_once("on_health", exc)

    def _log_once(self, where: str, exc: BaseException, *, stack: bool = False) -> None:
        key = f"{where}:{type(exc).__name__}"
        if len(self._logged) < _MAX_LOGGED:
            key += f":{str(exc)[:200]}"  # distinct messages while there are few; types only after
        if key in self._logged:
            return
        self._logged.add(key)
        log.error("capture %s failed: %s: %s (logged once)", where, type(exc).__name__, exc, exc_info=stack)

    # --- writer thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            # A spool left by a previous run goes in before anything new.
            spool = self._ensure_spool()
            self._spool_pending = spool is not None and spool.pending()
            self._open_store()
        except Exception as exc:
            self._error("internal", exc, stack=True)
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
                self._error("internal", exc, stack=True)
            finally:
                self._queue.done(size)
                for marker in markers:
                    marker.set()
            if stop:
                break
        self._release_hold(final=True)
        self._close_store()

    def _idle_timeout(self) -> float | None:
        if len(self._hold):
            return max(self._next_hold_retry - time.monotonic(), 0.0)
        now = time.monotonic()
        if self._store is None:
            return max(self._next_open - now, 0.0)
        if self._spool_pending:
            return max(self._next_replay - now, 0.0)
        return None

    def _maintain(self) -> None:
        now = time.monotonic()
        if self._store is None and now >= self._next_open:
            self._open_store()
        elif self._store is not None and self._spool_pending and now >= self._next_replay:
            self._replay()
        if len(self._hold) and now >= self._next_hold_retry:
            self._release_hold()

    def _release_hold(self, *, final: bool = False) -> None:
        """Write what was held in memory (to the store, else the spool); at stop, what still cannot be
        written is dropped and counted."""
        if not len(self._hold):
            return
        self._write(*split(self._hold.take()))
        if final and len(self._hold):
            n = len(self._hold.take())
            self.stats["spool_dropped"] += n
            self._health("dropped", "spool_error", n)

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
                self._error("store", exc)
                self._failures += 1
                if isinstance(_cause(exc), _FATAL) or self._failures >= _REOPEN_AFTER:
                    self._close_store()
                    self._next_open = time.monotonic() + self._reopen_s
                else:
                    self._next_replay = time.monotonic() + self._reopen_s
                # When only the write failed the store hands back what the batch changed: emit it
                # now, since the spool replay emits nothing.
                self._emit(exc.effects if isinstance(exc, StoreError) else [])
            else:
                self._failures = 0
                self._written(snapshots, requests)
                self._lag(requests)
                self._emit(effects)
                return
        self._to_spool(snapshots, requests)

    def _isolate(self, store: Store, snapshots: list[Snapshot], requests: list[RequestRecord]) -> None:
        """The batch failed for what one of its items holds: keep every other item (analytics/ingest/isolate.py)."""
        done: Isolated = apply_isolating(store.apply, [*snapshots, *requests])
        applied_snaps, applied_reqs = split(done.applied)
        self._failures = 0
        self._written(applied_snaps, applied_reqs)
        self._lag(applied_reqs)
        self._emit(done.effects)
        if done.rejected:
            self._reject(done.rejected)
        if done.error is not None:
            self._error("store", done.error)
            self._failures += 1
            self._next_replay = time.monotonic() + self._reopen_s
            self._to_spool(*split(done.pending))

    def _reject(self, rejected: list[tuple[Snapshot | RequestRecord, Exception]]) -> None:
        n = len(rejected)
        self._log_once("store", rejected[0][1])
        self.stats["errors"] += 1
        self.stats["rejected"] += n
        self._health("errors", "store:rejected", n)
        spool = self._ensure_spool()
        try:
            if spool is None:
                raise OSError("no spool")
            spool.reject(rejected)
        except Exception as exc:
            self._error("spool", exc)
            self.stats["spool_dropped"] += n
            self._health("dropped", "spool_error", n)

    def _emit(self, effects: list[Any]) -> None:
        if effects and self._on_effects is not None:
            try:
                self._on_effects(effects)
            except Exception as exc:
                self._error("on_effects", exc, stack=True)

    def _lag(self, requests: list[RequestRecord]) -> None:
        """Each request's time from its last byte to the commit just made (wall clock: the records
        carry their start as epoch seconds)."""
        if self._on_capture_lag is None:
            return
        now = time.time()
        lags = [now - r.started_at - r.duration_ms / 1000.0 for r in requests]
        if lags:
            try:
                self._on_capture_lag(lags)
            except Exception as exc:
                self._error("on_capture_lag", exc)

    def _written(self, snapshots: list[Snapshot], requests: list[RequestRecord]) -> None:
        runs = sum(1 for s in snapshots if s.kind == "run")
        responses = sum(1 for s in snapshots if s.kind == "response")
        self.stats["written"] += len(snapshots) + len(requests)
        for label, n in (("runs", runs), ("steps", len(snapshots) - runs - responses), ("responses", responses),
                         ("requests", len(requests))):
            if n:
                self._health("written", label, n)

    def _to_spool(self, snapshots: list[Snapshot], requests: list[RequestRecord]) -> None:
        n = len(snapshots) + len(requests)
        spool = self._ensure_spool()
        failed = spool is None
        if spool is None:
            dropped = n
        else:
            rejected_before = spool.rejected_lines
            try:
                dropped = spool.append(snapshots, requests)
            except Exception as exc:
                self._error("spool", exc)
                dropped = n
                failed = True
            else:
                self._spool_pending = True
            rejected = spool.rejected_lines - rejected_before
            if rejected:
                # Not lost: in the spool's rejected file; neither spooled nor dropped.
                n -= rejected
                self.stats["errors"] += 1
                self.stats["rejected"] += rejected
                self._health("errors", "spool:rejected", rejected)
        if n - dropped:
            self.stats["spooled"] += n - dropped
            self._health("spooled", "items", n - dropped)
        if dropped and failed:
            # The spool file could not be written (a full disk): keep what fits in memory and retry.
            # (failed: nothing of the batch reached the file, so dropped is all of it)
            held = dropped - self._hold.add([*snapshots, *requests])
            if held:
                self.stats["held"] += held
                self._health("held", "items", held)
                self._next_hold_retry = time.monotonic() + self._reopen_s
                dropped -= held
        if dropped:
            self.stats["spool_dropped"] += dropped
            self._health("dropped", "spool_error" if failed else "spool_full", dropped)

    def _ensure_spool(self) -> Spool | None:
        if self._spool is None:
            try:
                self._spool = Spool(self._spool_path, max_bytes=self._spool_max)
            except Exception as exc:
                self._error("spool", exc)
        return self._spool

    def _open_store(self) -> None:
        try:
            store = self._factory()
        except Exception as exc:
            self._error("store_open", exc)
            self._open_failed = True
            self._next_open = time.monotonic() + self._reopen_s
            return
        self._store = store
        self._failures = 0
        self._health("store", "opened", 1)
        if self._open_failed:
            self._open_failed = False
            log.info("capture store %s open again", self._db_path)
        if self._spool_pending:
            self._replay()

    def _replay(self) -> None:
        spool = self._ensure_spool()
        store = self._store
        if spool is None or store is None:
            return
        rejected_before = spool.rejected_lines
        try:
            n = spool.replay(store)
            self._spool_pending = spool.pending()
        except Exception as exc:
            self._error("replay", exc)
            self._next_replay = time.monotonic() + self._replay_backoff
            self._replay_backoff = min(self._replay_backoff * 2, _MAX_REPLAY_BACKOFF_S)
            return
        self._replay_backoff = self._reopen_s
        rejected = spool.rejected_lines - rejected_before
        if rejected:
            # Not lost: kept in the spool's rejected file (logged there), and counted here.
            self.stats["errors"] += 1
            self.stats["rejected"] += rejected
            self._health("errors", "replay:rejected", rejected)
        if n:
            self.stats["replayed"] += n
            self._health("replayed", "items", n)
            log.info("capture replayed %d spooled items into %s", n, self._db_path)

    def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is None:
            return
        self._health("store", "closed", 1)
        try:
            store.close()
        except Exception as exc:
            self._error("store_close", exc)

    def _report_skips(self) -> None:
        reported = self._reported_skips
        for reason, total in self._decoder.skipped.items():
            delta = total - reported[reason]
            if delta:
                reported[reason] = total
                self.stats["decode_skipped"] += delta
                self._health("errors", f"decode:{reason}", delta)

    def _report_events(self) -> None:
        """SSE events relayed since the last batch, by name (the decoder keeps running totals)."""
        if self._on_sse_events is None:
            return
        reported = self._reported_events
        delta = {n: t - reported[n] for n, t in self._decoder.events_seen.items() if t != reported[n]}
        if delta:
            reported.update(delta)
            try:
                self._on_sse_events(delta)
            except Exception as exc:
                self._error("on_sse_events", exc)

    def _error(self, where: str, exc: BaseException, *, stack: bool = False) -> None:
        self.stats["errors"] += 1
        self._health("errors", f"{where}:{type(_cause(exc)).__name__}", 1)
        self._log_once(where, exc, stack=stack)
