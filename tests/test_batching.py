"""The capture queue on its own: bounds in items and bytes, and what closes a batch."""

from __future__ import annotations

import threading

from runtap.analytics.ingest.batching import ITEM_OVERHEAD, QUEUE_BYTES_FULL, QUEUE_FULL, BatchQueue, batch_bytes
from runtap.analytics.ingest.records import Exchange, StreamChunk

EXCHANGE = Exchange(id="x", method="POST", path="/v1/threads/runs", operation="runs.create", api_version=None,
                    key_fingerprint=None, started_at=0.0)


def chunk(n: int) -> StreamChunk:
    return StreamChunk(EXCHANGE, b"x" * n, 0.0)


def test_items_and_bytes_are_bounded_and_the_bytes_come_back_when_a_batch_is_done() -> None:
    q = BatchQueue(maxsize=3, max_bytes=100 + ITEM_OVERHEAD, batch_max=10, interval_s=0.0)
    assert q.put(chunk(60)) is None
    assert q.put(chunk(60)) == QUEUE_BYTES_FULL
    items: list[StreamChunk] = []
    q.collect(items, [], idle_timeout=0)  # type: ignore[arg-type]
    assert len(items) == 1
    q.done(batch_bytes(items))  # type: ignore[arg-type]
    assert q.put(chunk(60)) is None
    assert q.put(chunk(0)) is None and q.put(chunk(0)) is None
    assert q.put(chunk(0)) == QUEUE_FULL


def test_the_byte_bound_counts_what_each_item_holds_beyond_its_payload() -> None:
    # 10 chunks of 10 bytes are 100 bytes of payload but ~10 x ITEM_OVERHEAD of memory: a bound of
    # 5 items' worth refuses the sixth, however small the payloads.
    q = BatchQueue(maxsize=100, max_bytes=5 * (10 + ITEM_OVERHEAD), batch_max=100, interval_s=0.0)
    assert [q.put(chunk(10)) for _ in range(6)] == [None] * 5 + [QUEUE_BYTES_FULL]
    items: list[StreamChunk] = []
    q.collect(items, [], idle_timeout=0)  # type: ignore[arg-type]
    assert batch_bytes(items) == 5 * (10 + ITEM_OVERHEAD)  # type: ignore[arg-type]
    q.done(batch_bytes(items))  # type: ignore[arg-type]
    assert q.put(chunk(10)) is None


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


HOUR = 3600.0


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_writer_that_is_behind_writes_what_is_waiting_without_gathering_for_another_interval() -> None:
    clock = _Clock()
    q = BatchQueue(maxsize=100, max_bytes=1 << 20, batch_max=2, interval_s=HOUR, clock=clock)
    for _ in range(2):
        q.put(chunk(1))
    first: list[object] = []
    q.collect(first, [], idle_timeout=0)  # type: ignore[arg-type]
    assert len(first) == 2  # closed by batch_max
    q.put(chunk(1))  # arrives while that batch is written ...
    clock.now += 0.6 * HOUR  # ... which takes over half the interval: waiting + writing the next would exceed it
    second: list[object] = []
    # Were the interval counted from the collect call, this would wait an hour for a second item
    # (the suite times out first).
    assert q.collect(second, [], idle_timeout=0) is False  # type: ignore[arg-type]
    assert len(second) == 1


def test_a_lone_flush_marker_does_not_reopen_the_window_of_items_already_waiting() -> None:
    clock = _Clock()
    q = BatchQueue(maxsize=100, max_bytes=1 << 20, batch_max=1, interval_s=HOUR, clock=clock)
    q.put(chunk(1))
    q.collect([], [], idle_timeout=0)  # closed at t0 by batch_max
    clock.now += 0.6 * HOUR  # written slowly
    marker = threading.Event()
    q.put_marker(marker, timeout=1)
    markers: list[threading.Event] = []
    items: list[object] = []
    q.collect(items, markers, idle_timeout=0)  # type: ignore[arg-type]
    assert items == [] and markers == [marker]
    q.put(chunk(1))
    clock.now += 1.0
    # Still writing's pace from before the marker: what waits is written now, not after the interval.
    assert q.collect(items, [], idle_timeout=0) is False  # type: ignore[arg-type]
    assert len(items) == 1


def test_a_passive_flush_marker_rides_in_the_batch_without_closing_it() -> None:
    q = BatchQueue(maxsize=100, max_bytes=1 << 20, batch_max=2, interval_s=HOUR)
    q.put(chunk(1))
    marker = threading.Event()
    q.put_marker(marker, timeout=1, close=False)
    q.put(chunk(1))
    items: list[object] = []
    markers: list[threading.Event] = []
    q.collect(items, markers, idle_timeout=0)  # type: ignore[arg-type]
    # A closing marker would have ended the batch at one item; this one closed by size, marker inside.
    assert len(items) == 2 and markers == [marker]
    late = threading.Event()
    q.put_marker(late, timeout=1, close=False)
    assert q.put_stop(timeout=1)
    assert q.collect(items, markers, idle_timeout=0) is True  # type: ignore[arg-type]
    assert markers == [marker, late] and q.take_all() == 0
