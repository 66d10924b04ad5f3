"""The capture queue on its own: bounds in items and bytes, and what closes a batch."""

from __future__ import annotations

import threading

from runtap.analytics.ingest.batching import QUEUE_BYTES_FULL, QUEUE_FULL, BatchQueue, batch_bytes
from runtap.analytics.ingest.records import Exchange, StreamChunk

EXCHANGE = Exchange(id="x", method="POST", path="/v1/threads/runs", operation="runs.create", api_version=None,
                    key_fingerprint=None, started_at=0.0)


def chunk(n: int) -> StreamChunk:
    return StreamChunk(EXCHANGE, b"x" * n, 0.0)


def test_items_and_bytes_are_bounded_and_the_bytes_come_back_when_a_batch_is_done() -> None:
    q = BatchQueue(maxsize=3, max_bytes=100, batch_max=10, interval_s=0.0)
    assert q.put(chunk(60)) is None
    assert q.put(chunk(60)) == QUEUE_BYTES_FULL
    items: list[StreamChunk] = []
    q.collect(items, [], idle_timeout=0)  # type: ignore[arg-type]
    assert len(items) == 1
    q.done(batch_bytes(items))  # type: ignore[arg-type]
    assert q.put(chunk(60)) is None
    assert q.put(chunk(0)) is None and q.put(chunk(0)) is None
    assert q.put(chunk(0)) == QUEUE_FULL


def test_a_flush_marker_closes_the_batch_and_stop_drains_everything() -> None:
    q = BatchQueue(maxsize=100, max_bytes=1 << 20, batch_max=10, interval_s=60.0)
    q.put(chunk(1))
    marker = threading.Event()
    assert q.put_marker(marker, timeout=1)
    items: list[object] = []
    markers: list[threading.Event] = []
    assert q.collect(items, markers, idle_timeout=0) is False  # type: ignore[arg-type]
    assert len(items) == 1 and markers == [marker]  # without waiting out the 60 s interval
    for _ in range(3):
        q.put(chunk(1))
    assert q.put_stop(timeout=1)
    q.put(chunk(1))  # raced past the stop marker: drained too
    items.clear()
    assert q.collect(items, [], idle_timeout=0) is True  # type: ignore[arg-type]
    assert len(items) == 4 and q.empty()


def test_an_idle_writer_waiting_for_ever_wakes_for_the_first_item() -> None:
    q = BatchQueue(maxsize=10, max_bytes=1 << 20, batch_max=1, interval_s=60.0)
    items: list[object] = []
    writer = threading.Thread(target=q.collect, args=(items, [], None))
    writer.start()
    for _ in range(1000):  # whether the writer is already waiting or not, the item must reach it
        if q._idle:  # noqa: SLF001 - only to make the wake-up path the one tested, when it can be
            break
        writer.join(0.001)
    assert q.put(chunk(1)) is None
    writer.join(10)
    assert not writer.is_alive() and len(items) == 1
