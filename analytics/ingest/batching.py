"""The capture queue: bounded in items and bytes, filled by the event loop, emptied in batches by the
writer thread. A batch closes when it is full, when the flush interval since its oldest item could have
arrived is over, when a flush() marker arrives, or at stop (then the whole queue is drained into it).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Final

from .records import CaptureItem, RequestBody, RequestRecord, ResponseBody, StreamChunk

QUEUE_FULL: Final = "queue_full"
QUEUE_BYTES_FULL: Final = "queue_bytes_full"


class _Stop:
    pass


class _Passive:
    """A flush marker that waits for the batch it falls in to be written without closing it early."""

    __slots__ = ("marker",)

    def __init__(self, marker: threading.Event) -> None:
        self.marker = marker


_QueueItem = CaptureItem | threading.Event | _Passive | _Stop


def item_size(item: CaptureItem) -> int:
    """What an item holds beyond its fixed fields, for the byte bounds of the queue and the channel."""
    if isinstance(item, StreamChunk):
        return len(item.data)
    if isinstance(item, ResponseBody | RequestBody):
        return len(item.body)
    if isinstance(item, RequestRecord):
        return record_size(item)
    return 0


def record_size(record: RequestRecord) -> int:
    """A request record's strings the client chose the length of: its path, and with a relayed span
    (relay_tracing.py) the tracestate, host and user agent, each up to --max-header-bytes."""
    n = len(record.path) + len(record.error or "")
    span = record.span
    if span is not None:
        n += sum(len(v) for v in span if type(v) is str)
    return n


# A request record makes its request's row and is small, unless its client sized its strings (a long
# path, tracestate, user agent): a full byte bound refuses it only then, a chunk or body always.
RECORD_ALLOWANCE: Final = 512


def refusable(item: CaptureItem, size: int) -> bool:
    """Whether a full byte bound refuses ``item`` of ``item_size`` ``size``."""
    return size > RECORD_ALLOWANCE if isinstance(item, RequestRecord) else size > 0


# What a queued item holds beyond its payload: the record object, its bytes object, the floats and
# strings it carries (tracemalloc over decoded frames: a stream chunk ~140 B, an end or a body ~300 B
# with its exchange, a request record ~350 B). Counted so that the byte bound bounds memory, and the
# items without a payload (records, ends) use up their share of it too.
ITEM_OVERHEAD: Final = 200


def batch_bytes(items: list[CaptureItem]) -> int:
    return sum(item_size(item) for item in items) + ITEM_OVERHEAD * len(items)


class BatchQueue:
    def __init__(self, *, maxsize: int, max_bytes: int, batch_max: int, interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        # A deque, not a queue.Queue: its put takes a lock and signals a condition for every item (per
        # SSE chunk, on the event loop), while a deque's append and popleft are atomic under the GIL.
        # The writer never waits on the items themselves: only for the first one when idle (_arrived)
        # and for a flush or stop (_wake).
        self._items: deque[_QueueItem] = deque()
        self._maxsize = maxsize
        self._max_bytes = max_bytes
        self.batch_max = batch_max
        self._interval = interval_s
        self._clock = clock
        # Set by flush markers and stop to end the writer's wait for a batch to fill (see collect).
        self._wake = threading.Event()
        self._arrived = threading.Event()
        self._idle = False  # the writer waits on _arrived for an item
        # Bytes waiting, as two counters each written by one thread only (no lock on the event loop):
        # the submitter adds, the writer subtracts (done()).
        self._bytes_in = 0
        self._bytes_out = 0
        # Writer-thread state: when the last batch with items closed, and how long writing it took.
        self._closed_at = 0.0
        self._busy = 0.0
        self._wrote = False

    # --- submitting side (event loop) ----------------------------------------------------------------

    def put(self, item: CaptureItem) -> str | None:
        """Enqueue without blocking: None, or why the item was refused. A stream's end, and a request
        record of ordinary size, are never refused for bytes, only for the count (see refusable)."""
        payload = item_size(item)
        size = payload + ITEM_OVERHEAD
        if refusable(item, payload) and self._bytes_in - self._bytes_out + size > self._max_bytes:
            return QUEUE_BYTES_FULL
        if len(self._items) >= self._maxsize:
            return QUEUE_FULL
        self._bytes_in += size
        self._push(item)
        return None

    def _push(self, item: _QueueItem) -> None:
        self._items.append(item)
        # Checked after the append, while the writer publishes _idle before it looks at the items:
        # one of the two always sees the other.
        if self._idle:
            self._idle = False
            self._arrived.set()

    def put_marker(self, marker: threading.Event, timeout: float | None, *, close: bool = True) -> bool:
        """Queue a flush marker behind everything submitted so far; the writer sets it when there.
        Markers and stop are never refused for a full queue: one more entry, and the writer's cue.
        close=False: the marker rides in whatever batch reaches it, which closes when it would anyway."""
        if not close:
            self._push(_Passive(marker))
            return True
        self._push(marker)
        self._wake.set()
        return True

    def put_stop(self, timeout: float) -> bool:
        self._push(_Stop())
        self._wake.set()
        return True

    def take_all(self) -> int:
        """Empty the queue (after the writer has stopped); return how many items it held. Each popleft
        is atomic, so two threads emptying it at once count every item once. Flush markers are not
        items and are dropped."""
        items: list[CaptureItem] = []
        self._drain(items, [])
        return len(items)

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    # --- writer thread ---------------------------------------------------------------------------------

    def done(self, size: int) -> None:
        """Account a taken batch of `size` bytes (batch_bytes) as gone from the queue."""
        self._bytes_out += size

    def _first(self, timeout: float | None) -> bool:
        """Wait up to `timeout` (None: for ever) for an item; True when there is one."""
        if self._items:
            return True
        self._arrived.clear()
        self._idle = True
        if not self._items:
            self._arrived.wait(timeout)
        self._idle = False
        return bool(self._items)

    def collect(self, items: list[CaptureItem], markers: list[threading.Event], idle_timeout: float | None) -> bool:
        """Fill one batch; True when stop was requested (then the whole queue is drained)."""
        entered = self._clock()
        if self._wrote:  # the time since the last batch closed went into writing it
            self._busy = entered - self._closed_at
        waiting = bool(self._items)
        try:
            return self._collect(items, markers, idle_timeout, waiting)
        finally:
            self._wrote = bool(items)
            if items:  # an empty batch (a flush marker alone) leaves the estimate and the window be
                self._closed_at = self._clock()

    def _collect(self, items: list[CaptureItem], markers: list[threading.Event], idle_timeout: float | None,
                 waiting: bool) -> bool:
        if not self._first(idle_timeout):
            return False
        queued = self._items
        now = self._clock()
        # The interval bounds an item's wait for its batch to close plus the batch's write (estimated as
        # the last one's), counted from when the item could have arrived: items already waiting when the
        # writer comes back arrived after the last batch closed. A writer that is behind (its last write
        # took half the interval or more) so writes what is waiting at once, instead of gathering for
        # another interval on top of the backlog's age; one that keeps up gathers for the interval.
        opened = min(now, self._closed_at) if waiting else now
        deadline = opened + max(self._interval - self._busy, 0.0)
        while True:
            try:
                pending = queued.popleft()
            except IndexError:
                # Sleep out the interval rather than wait per item: waking this thread on every submit
                # would be a GIL hand-off with the event loop per captured item.
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return False
                self._wake.wait(remaining)
                self._wake.clear()
                continue
            if isinstance(pending, _Stop):
                self._drain(items, markers)
                return True
            if isinstance(pending, threading.Event):
                markers.append(pending)
                return False  # a flush is waiting: write what is here now
            if isinstance(pending, _Passive):
                markers.append(pending.marker)
                continue
            items.append(pending)
            if len(items) >= self.batch_max:
                return False

    def _drain(self, items: list[CaptureItem], markers: list[threading.Event]) -> None:
        queued = self._items
        while True:
            try:
                item = queued.popleft()
            except IndexError:
                return
            if isinstance(item, threading.Event):
                markers.append(item)
            elif isinstance(item, _Passive):
                markers.append(item.marker)
            elif not isinstance(item, _Stop):
                items.append(item)
