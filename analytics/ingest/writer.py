"""The capture writer: coordinates the bounded queue, the store's write thread and the spool failover.

The event loop only calls `submit` (O(1), never blocks, never raises). The store's single write thread
(store_thread.py) takes batches from the bounded queue (batching.py), decodes them (decode.py), and
applies each batch to the Store in one transaction. When the store cannot be opened or a write fails,
the batch goes to the spool instead and is replayed once the store is back (failover.py), so a locked
or broken database loses nothing until the spool's own bound is reached. Every event is counted once,
in `health` (health.py), which the Prometheus collector reads at scrape time.
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

import duckdb

from ...settings.config import spool_path_for
from .batching import BatchQueue, batch_bytes
from .decode import CaptureDecoder
from .failover import SpoolFailover
from .faults import Faults
from .health import DECODE, CaptureHealth, Kind
from .isolate import Isolated, apply_isolating, data_fault, split
from .merge import Effect
from .records import CaptureItem, RequestRecord, Snapshot
from .store import Store, StoreError
from .store_thread import StoreThread

log = logging.getLogger("runtap.writer")

OnEffects = Callable[[list[Effect]], None]


@dataclass(frozen=True, slots=True)
class WriterConfig:
    db_path: str
    spool_path: str | None = None  # default: settings.config.spool_path_for(db_path)
    spool_max_bytes: int = 256 << 20
    spool_memory_bytes: int = 64 << 20  # held in memory when the spool file cannot be written (hold.py)
    queue_size: int = 100_000
    queue_max_bytes: int = 64 << 20  # settings.queue_max_bytes
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
        factory: Callable[[], Store] = store_factory or (
            lambda: Store(config.db_path, store_prompts=config.store_prompts, memory_limit=config.db_memory_limit))
        self._decoder = CaptureDecoder(max_event_bytes=config.max_event_bytes, store_prompts=config.store_prompts)
        self._queue = BatchQueue(maxsize=config.queue_size, max_bytes=config.queue_max_bytes,
                                 batch_max=config.batch_max, interval_s=config.flush_interval_s)
        self._lock = threading.Lock()
        self._stopped = False
        self._closing = False
        self._drained = False  # stop() is past its final drain: nothing put now will be written
        self.submitted = 0  # by the submitting thread only
        self._owner = StoreThread(factory, db_path=config.db_path, memory_limit=config.db_memory_limit,
                                  reopen_interval_s=config.reopen_interval_s, spool_path=config.spool,
                                  faults=self._faults)
        # Write-thread state below.
        self._failover = SpoolFailover(config.spool, max_bytes=config.spool_max_bytes,
                                       memory_bytes=config.spool_memory_bytes, retry_s=config.reopen_interval_s,
                                       faults=self._faults, target=config.db_path)
        self._reported_skips: Counter[str] = Counter()
        self._reported_events: Counter[str] = Counter()

    # --- any thread --------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._owner.started() or self._stopped:
                return
            self._owner.start(self._begin, self._cycle, self._end)

    def submit(self, item: CaptureItem) -> bool:
        try:
            if self._closing:
                self._faults.dropped("stopped")
                return False
            refused = self._queue.put(item)
            if refused is None and self._drained:
                # stop() (another thread) counted what was left after the final drain before this put:
                # whoever takes an item out counts it, so it is counted once (see _count_left).
                self._count_left()
                return False
        except Exception:  # the request path must never see a capture failure
            refused = "submit_error"
        if refused is not None:
            self._faults.dropped(refused)
            return False
        self.submitted += 1
        return True

    def _count_left(self) -> None:
        left = self._queue.take_all()
        if left:
            self._faults.dropped("stopped", left, log=False)

    @property
    def stats(self) -> dict[str, int]:
        """Totals so far (from `health`, which a shared registry's writers may share)."""
        return {"submitted": self.submitted, **self.health.stats()}

    @property
    def spool_path(self) -> str:
        return self._failover.path

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A read connection of the caller's own on the open capture database (Store.reader)."""
        return self._owner.reader()

    def depth(self) -> int:
        return self._queue.qsize()

    def held(self) -> int:
        """Items kept in memory because the spool file cannot be written (lost if this process dies)."""
        return self._failover.held()

    def healthy(self) -> bool:
        return self._owner.healthy()

    def flush(self, timeout: float | None = None, *, close_batch: bool = True) -> bool:
        """Wait until every item submitted before this call has been written or spooled. close_batch=False
        waits for the batch being gathered to close by itself (its interval) rather than cutting it short:
        for a caller that polls (each cut is one more transaction, a fixed cost of tens of ms)."""
        owner = self._owner
        if not owner.alive():
            return self._queue.empty()
        deadline = None if timeout is None else time.monotonic() + timeout
        marker = threading.Event()
        if not self._queue.put_marker(marker, timeout, close=close_batch):
            return False
        while True:
            wait = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if marker.wait(max(wait, 0.0)):
                return True
            # The thread may have exited between the liveness check and the put (stop() racing).
            if not owner.alive():
                return marker.is_set() or self._queue.empty()
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def stop(self, timeout: float = 30.0) -> None:
        """Drain the queue into the store (or the spool), then close the store. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            started = self._owner.started()
        self._closing = True
        if started:
            deadline = time.monotonic() + timeout
            if not self._queue.put_stop(timeout):
                log.error("capture writer did not drain its queue within %.0fs", timeout)
                return
            if not self._owner.join(deadline - time.monotonic()):
                log.error("capture writer still busy after %.0fs; %d items not written", timeout,
                          self.depth())
                return
        # Items that raced past the stop marker after the final drain, or were never going to be
        # written because the writer was never started. Set before the count: a submit that puts
        # after it sees the flag and counts its item itself.
        self._drained = True
        self._count_left()

    # --- the store's write thread (StoreThread runs these) ---------------------------------------------

    def _begin(self) -> None:
        self._failover.open()
        self._open_store()

    def _cycle(self) -> bool:
        """Take one batch from the queue and write it; True when stop was requested."""
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
        return stop

    def _end(self) -> None:
        self._release_hold(final=True)

    def _idle_timeout(self) -> float | None:
        failover = self._failover
        now = time.monotonic()
        if failover.held():
            return max(failover.next_hold_retry - now, 0.0)
        if self._owner.store is None:
            return max(self._owner.next_open - now, 0.0)
        if failover.pending:
            return max(failover.next_replay - now, 0.0)
        return None

    def _maintain(self) -> None:
        failover = self._failover
        now = time.monotonic()
        store = self._owner.store
        if store is None and now >= self._owner.next_open:
            self._open_store()
        elif store is not None and failover.replay_due(now):
            self._replay(store)
        if failover.held() and now >= failover.next_hold_retry:
            self._release_hold()

    def _release_hold(self, *, final: bool = False) -> None:
        """Write what was held in memory (to the store, else the spool); at stop, what still cannot be
        written is dropped and counted."""
        if not self._failover.held():
            return
        for items, emit in self._failover.take_held():
            self._write(*split(items), emit=emit)
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

    def _write(self, snapshots: list[Snapshot], requests: list[RequestRecord], *, emit: bool = True) -> None:
        """``emit=False``: the batch's effects were emitted already (held after a failed write)."""
        self._maintain()
        owner = self._owner
        store = owner.store
        if store is not None:
            try:
                effects = store.apply(snapshots, requests, emit=emit)
            except Exception as exc:
                if data_fault(exc):
                    self._isolate(store, snapshots, requests, emit)
                    return
                if owner.failed(exc):
                    self._failover.retry_later()
                # When only the write failed the store hands back what the batch changed: emit it
                # now, and the spool replay emits nothing. When the merge did not run there is
                # nothing to emit yet: the replay emits it.
                emitted = exc.effects if isinstance(exc, StoreError) else []
                if emit:
                    self._emit(emitted)
                self._failover.put(snapshots, requests, emit=emit and not emitted)
                return
            owner.wrote()
            self._written(snapshots, requests)
            self._emit(effects)
            owner.sample_memory()
            return
        self._failover.put(snapshots, requests, emit=emit)

    def _isolate(self, store: Store, snapshots: list[Snapshot], requests: list[RequestRecord], emit: bool) -> None:
        """The batch failed for what one of its items holds: keep every other item (isolate.py)."""
        done: Isolated = apply_isolating(lambda s, r: store.apply(s, r, emit=emit), [*snapshots, *requests])
        self._owner.wrote()
        self._written(*split(done.applied))
        self._emit(done.effects)
        if done.rejected:
            self._failover.reject(done)
        if done.error is not None:
            # The failed segment's effects were emitted when the store handed them back; the
            # segments never tried owe theirs to the replay.
            emitted = done.pending[:done.emitted]
            if emitted:
                self._failover.put(*split(emitted))
            self._failover.put(*split(done.pending[done.emitted:]), emit=emit)
            if self._owner.failed_again(done.error):
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
        store = self._owner.open()
        if store is None:
            return
        # The spool's back-off holds across reopens: a replay that ran the database out of memory closes
        # the store, and replaying again at each reopen would re-read the whole spool every interval.
        if self._failover.replay_due(time.monotonic()):
            self._replay(store)
        self._owner.sample_memory(force=True)

    def _replay(self, store: Store) -> None:
        self._failover.replay(store, self._emit)  # counts its own failure
        if store.poisoned is not None:
            self._owner.broken(store.broken_by or StoreError(store.poisoned))

    def _report_skips(self) -> None:
        reported = self._reported_skips
        for reason, total in self._decoder.skipped.items():
            delta = total - reported[reason]
            if delta:
                reported[reason] = total
                self.health.error(DECODE, reason, delta)

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
