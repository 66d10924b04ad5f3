"""The relay's end of `--capture-mode process`: capture items go over a Unix socket to the capture process.

`submit` is what CaptureWriter.submit is for the in-process mode: O(1) (a list append), never blocks,
never raises. A timer a few milliseconds later encodes the batch as one frame (wire.py) and hands it to
the socket's transport without waiting. Two bounds keep the relay's memory flat: items waiting for the
next frame, and bytes the transport has not yet handed to the kernel. Beyond either the item is dropped
and counted (runtap_capture_dropped_total{stage="channel_full"}), as the in-process queue does.

While the capture process is down (a crash, a restart), items wait here up to the same bounds and go
out once the connection is back; only what exceeds the bounds is dropped, and counted. The capture
process confirms, about every half second, how many of a connection's items it has written, spooled or
counted; when it dies, what it had not confirmed is counted as capture_unconfirmed (at most that many
lost: some may have been written after its last confirmation).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Final

from ..analytics.ingest import wire
from ..analytics.ingest.batching import ITEM_OVERHEAD, item_size, refusable
from ..analytics.ingest.records import CaptureItem, Exchange
from ..analytics.ingest.wire import ChunkRun, Entry, entry_items

log = logging.getLogger("runtap.capture_channel")

CHANNEL_FULL: Final = "channel_full"
STOPPED: Final = "stopped"
UNCONFIRMED: Final = "capture_unconfirmed"
# Items gather this long before they are encoded as one frame: one syscall per frame, not per item, and
# one wake-up of the capture process per frame (on a shared core it preempts the relay each time).
FLUSH_INTERVAL_S: Final = 0.05
FRAME_MAX_ITEMS: Final = 2_000
RECONNECT_S: Final = 0.1
_DROP_LOG_S: Final = 10.0

# What a chunk adds to its stream's run besides its payload: its bytes object's header, its arrival
# time and the two list slots. The run itself, like any other item, counts ITEM_OVERHEAD: with both,
# the byte bound bounds memory even when a stream sends one-byte chunks.
CHUNK_OVERHEAD: Final = 80

OnDropped = Callable[[str, int], None]


def _entry_size(entry: Entry) -> int:
    if isinstance(entry, ChunkRun):
        return entry.size + ITEM_OVERHEAD + CHUNK_OVERHEAD * (len(entry.parts) - 1)
    return item_size(entry) + ITEM_OVERHEAD


class _Sink(asyncio.Protocol):
    """One connection: counts what it sent and what the capture process confirmed (wire.ACK)."""

    def __init__(self, channel: CaptureChannel) -> None:
        self._channel = channel
        self._buf = b""
        self.sent = 0
        self.acked = 0

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data
        size = wire.ACK.size
        whole = len(buf) - len(buf) % size
        if whole:
            (self.acked,) = wire.ACK.unpack_from(buf, whole - size)  # running totals: the last one counts
        self._buf = buf[whole:]

    def connection_lost(self, exc: Exception | None) -> None:
        self._channel._lost(self)


class CaptureChannel:
    def __init__(self, path: str, *, max_items: int = 100_000, max_bytes: int = 64 << 20,
                 on_dropped: OnDropped | None = None) -> None:
        self._path = path
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._on_dropped = on_dropped
        self._items: list[Entry] = []
        self._count = 0  # capture items in _items (a ChunkRun holds several)
        # The open ChunkRun of each stream in the frame being gathered; emptied when a frame is cut.
        self._runs: dict[str, ChunkRun] = {}
        self._bytes = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.WriteTransport | None = None
        self._sink: _Sink | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._connector: asyncio.Task[None] | None = None
        self._closing = False
        self._drop_logged_at = 0.0
        self.stats: dict[str, int] = dict.fromkeys(("submitted", "dropped", "sent", "frames", "connects"), 0)
        # Items the last connection carried that the capture process had not confirmed when it closed:
        # what is lost, at most, if the capture process then fails to drain them (app.py says so).
        self.unconfirmed_at_close = 0

    # --- event loop --------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._connector = self._loop.create_task(self._connect())

    def submit(self, item: CaptureItem) -> bool:
        try:
            if self._closing or self._loop is None:
                self._dropped(STOPPED, 1)
                return False
            items = self._items
            payload = item_size(item)
            size = payload + ITEM_OVERHEAD
            if self._count >= self._max_items or (refusable(item, payload) and self._bytes + size > self._max_bytes):
                self._dropped(CHANNEL_FULL, 1)
                return False
            items.append(item)
            self._count += 1
            self._bytes += size
            self.stats["submitted"] += 1
            if self._timer is None and self._transport is not None:
                self._timer = self._loop.call_later(FLUSH_INTERVAL_S, self._flush)
            return True
        except Exception:  # the request path must never see a capture failure
            log.exception("capture channel submit failed")
            return False

    def submit_chunk(self, exchange: Exchange, data: bytes, at: float) -> bool:
        """submit(StreamChunk(exchange, data, at)), but a stream's chunks within one frame share one
        entry: per chunk two list appends here, and one tuple per stream when the frame is encoded."""
        try:
            run = self._runs.get(exchange.id)
            payload = len(data)
            size = payload + CHUNK_OVERHEAD
            if run is not None and len(run.parts) < FRAME_MAX_ITEMS and self._count < self._max_items \
                    and self._bytes + size <= self._max_bytes:
                # The common case, inline: every chunk of a stream after its first in this frame.
                run.parts.append(data)
                run.times.append(at)
                run.size += payload
                self._count += 1
                self._bytes += size
                self.stats["submitted"] += 1
                return True
            if run is not None and len(run.parts) < FRAME_MAX_ITEMS:  # the channel is full
                self._dropped(CHANNEL_FULL, 1)
                return False
            if self._closing or self._loop is None:
                self._dropped(STOPPED, 1)
                return False
            if not self._admit(payload + ITEM_OVERHEAD):
                return False
            self._runs[exchange.id] = run = ChunkRun(exchange, data, at)
            self._items.append(run)
            if self._timer is None and self._transport is not None:
                self._timer = self._loop.call_later(FLUSH_INTERVAL_S, self._flush)
            return True
        except Exception:  # the request path must never see a capture failure
            log.exception("capture channel submit failed")
            return False

    def _admit(self, size: int) -> bool:
        if self._count >= self._max_items or self._bytes + size > self._max_bytes:
            self._dropped(CHANNEL_FULL, 1)
            return False
        self._count += 1
        self._bytes += size
        self.stats["submitted"] += 1
        return True

    def depth(self) -> int:
        """Items not yet handed to the socket."""
        return self._count

    @property
    def connected(self) -> bool:
        return self._transport is not None

    async def close(self, timeout: float = 10.0) -> None:
        """Send what is waiting and let the socket drain (the relay has finished its requests by now)."""
        deadline = time.monotonic() + timeout
        while self._items and self._transport is None and time.monotonic() < deadline:
            await asyncio.sleep(RECONNECT_S)  # the capture process is restarting: wait for it, bounded
        self._closing = True
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._items and self._transport is not None:
            self._flush()
        transport = self._transport
        if transport is not None:
            while transport.get_write_buffer_size() and not transport.is_closing() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)  # no drain() on a bare transport; bounded by the deadline
            if self._sink is not None:
                self.unconfirmed_at_close = max(self._sink.sent - self._sink.acked, 0)
            transport.close()
        if self._items:
            self._dropped(STOPPED, self._count)
            self._items.clear()
            self._runs.clear()
            self._count = self._bytes = 0
        log.info("capture channel closed: %s, unconfirmed=%d",
                 ", ".join(f"{k}={v}" for k, v in self.stats.items()), self.unconfirmed_at_close)

    # --- internals ---------------------------------------------------------------------------------

    def _flush(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or not self._items:
            return
        # A frame holds at most FRAME_MAX_ITEMS items, counted in chunks (a run is at most that many):
        # after a backlog (the capture process restarting) one flush must not encode it all at once on
        # the relay's loop, nor make one frame too big to send.
        end = n = 0
        for entry in self._items:
            k = entry_items(entry)
            if end and n + k > FRAME_MAX_ITEMS:
                break
            n += k
            end += 1
        batch = self._items[:end]
        del self._items[:end]
        self._runs.clear()  # a run cut into this frame takes no more chunks; the next chunk opens another
        self._count -= n
        self._bytes = sum(map(_entry_size, self._items)) if self._items else 0
        try:
            frame = wire.encode(batch)
        except Exception:
            log.exception("capture channel could not encode %d item(s)", n)
            self._dropped("encode_error", n)
            return
        if transport.get_write_buffer_size() + len(frame) > self._max_bytes:
            self._dropped(CHANNEL_FULL, n)
        else:
            transport.write(frame)
            if self._sink is not None:
                self._sink.sent += n
            self.stats["sent"] += n
            self.stats["frames"] += 1
        if self._items and self._loop is not None:
            self._timer = self._loop.call_soon(self._flush)  # type: ignore[assignment]

    async def _connect(self) -> None:
        assert self._loop is not None  # noqa: S101 - set by start()
        while not self._closing:
            try:
                transport, sink = await self._loop.create_unix_connection(lambda: _Sink(self), self._path)
            except OSError:
                await asyncio.sleep(RECONNECT_S)  # the capture process is not listening (yet, or again)
                continue
            self._transport, self._sink = transport, sink
            self.stats["connects"] += 1
            if self._items and self._timer is None:
                self._timer = self._loop.call_soon(self._flush)  # type: ignore[assignment]
            return

    def _lost(self, sink: _Sink) -> None:
        self._transport = self._sink = None
        unconfirmed = sink.sent - sink.acked
        if unconfirmed > 0 and not self._closing:
            # Handed to a capture process that ended before confirming them: at most this many lost
            # (some may be in DuckDB, written after its last confirmation).
            self._dropped(UNCONFIRMED, unconfirmed)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._closing and self._loop is not None:
            log.warning("capture process connection lost; buffering up to %d items until it is back",
                        self._max_items)
            self._connector = self._loop.create_task(self._connect())

    def _dropped(self, reason: str, n: int) -> None:
        self.stats["dropped"] += n
        if self._on_dropped is not None:
            with contextlib.suppress(Exception):
                self._on_dropped(reason, n)
        now = time.monotonic()
        if now >= self._drop_logged_at + _DROP_LOG_S:
            self._drop_logged_at = now
            log.warning("capture channel dropped %d item(s): %s (runtap_capture_dropped_total counts them all)",
                        n, reason)
