"""The capture queue: bounded in items and bytes, filled by the event loop, emptied in batches by the
writer thread. A batch closes when it is full, when the flush interval since its first item is over,
when a flush() marker arrives, or at stop (then the whole queue is drained into it).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Final

from .records import CaptureItem, RequestBody, ResponseBody, StreamChunk

QUEUE_FULL: Final = "queue_full"
QUEUE_BYTES_FULL: Final = "queue_bytes_full"


class _Stop:
    pass


_QueueItem = CaptureItem | threading.Event | _Stop


def item_size(item: CaptureItem) -> int:
    if isinstance(item, StreamChunk):
        return len(item.data)
    if isinstance(item, ResponseBody | RequestBody):
        return len(item.body)
    return 0


def batch_bytes(items: list[CaptureItem]) -> int:
    return sum(item_size(item) for item in items)


class BatchQueue:
    def __init__(self, *, maxsize: int, max_bytes: int, batch_max: int, interval_s: float) -> None:
        self._queue: queue.Queue[_QueueItem] = queue.Queue(maxsize=maxsize)
        self._max_bytes = max_bytes
        self.batch_max = batch_max
        self._interval = interval_s
        # Set by flush markers and stop to end the writer's wait for a batch to fill (see collect).
        self._wake = threading.Event()
        # Bytes waiting, as two counters each written by one thread only (no lock on the event loop):
        # the submitter adds, the writer subtracts (done()).
        self._bytes_in = 0
        self._bytes_out = 0

    # --- submitting side (event loop) ----------------------------------------------------------------

    def put(self, item: CaptureItem) -> str | None:
        """Enqueue without blocking: None, or why the item was refused."""
        size = item_size(item)
        if size and self._bytes_in - self._bytes_out + size > self._max_bytes:
            return QUEUE_BYTES_FULL
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            return QUEUE_FULL
        self._bytes_in += size
        return None

    def put_marker(self, marker: threading.Event, timeout: float | None) -> bool:
        """Queue a flush marker behind everything submitted so far; the writer sets it when there."""
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        self._wake.set()
        return True

    def put_stop(self, timeout: float) -> bool:
        try:
            self._queue.put(_Stop(), timeout=timeout)
        except queue.Full:
            return False
        self._wake.set()
        return True

    def qsize(self) -> int:
        return self._queue.qsize()

    def empty(self) -> bool:
        return self._queue.empty()

    # --- writer thread ---------------------------------------------------------------------------------

    def done(self, size: int) -> None:
        """Account a taken batch of `size` bytes (batch_bytes) as gone from the queue."""
        self._bytes_out += size

    def collect(self, items: list[CaptureItem], markers: list[threading.Event], idle_timeout: float | None) -> bool:
        """Fill one batch; True when stop was requested (then the whole queue is drained)."""
        try:
            pending = self._queue.get(timeout=idle_timeout)
        except queue.Empty:
            return False
        deadline = time.monotonic() + self._interval
        while True:
            if isinstance(pending, _Stop):
                self._drain(items, markers)
                return True
            if isinstance(pending, threading.Event):
                markers.append(pending)
                return False  # a flush is waiting: write what is here now
            items.append(pending)
            if len(items) >= self.batch_max:
                return False
            while True:
                try:
                    pending = self._queue.get_nowait()
                    break
                except queue.Empty:
                    # Sleep out the interval rather than block in get(): a blocked get() wakes this
                    # thread on every submit, a GIL hand-off with the event loop per captured item.
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._wake.wait(remaining)
                    self._wake.clear()

    def _drain(self, items: list[CaptureItem], markers: list[threading.Event]) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, threading.Event):
                markers.append(item)
            elif not isinstance(item, _Stop):
                items.append(item)
