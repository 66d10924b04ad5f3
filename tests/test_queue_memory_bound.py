"""--queue-max-bytes: what capture holds waiting for the writer is bounded in memory, in either capture
mode, and what the bound refuses is counted (never a failed request)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry
from runtap.analytics.ingest.batching import ITEM_OVERHEAD
from runtap.analytics.ingest.records import Exchange, StreamChunk
from runtap.proxy.app import build_runtime, close_unstarted
from runtap.proxy.capture_channel import CHUNK_OVERHEAD, CaptureChannel
from runtap.settings.config import resolve

EXCHANGE = Exchange(id="x", method="POST", path="/v1/threads/runs", operation="runs.create", api_version=None,
                    key_fingerprint=None, started_at=0.0)
CHUNK = 1000


def dropped(registry: CollectorRegistry, stage: str) -> float:
    return registry.get_sample_value("runtap_capture_dropped_total", {"stage": stage}) or 0.0


def test_the_default_bound_fits_a_sidecar_and_a_size_parses() -> None:
    assert resolve({}, {}).queue_max_bytes == 64 << 20
    assert resolve({}, {"RUNTAP_QUEUE_MAX_BYTES": "128M"}).queue_max_bytes == 128 << 20


def test_the_in_process_writer_queue_refuses_chunks_beyond_the_bound(tmp_path: Path) -> None:
    # The writer is not started, so nothing leaves the queue: 10 chunks' worth fit, the 11th does not.
    settings = resolve({"db": str(tmp_path / "r.duckdb"), "queue_max_bytes": str(10 * (CHUNK + ITEM_OVERHEAD))}, {})
    registry = CollectorRegistry()
    runtime = build_runtime(settings, registry=registry)
    writer = runtime.writer
    assert writer is not None
    try:
        taken = [writer.submit(StreamChunk(EXCHANGE, b"x" * CHUNK, 0.0)) for _ in range(11)]
        assert taken == [True] * 10 + [False]
        assert dropped(registry, "queue_bytes_full") == 1
    finally:
        writer.stop()
        close_unstarted(runtime)


async def test_the_relays_channel_refuses_chunks_beyond_the_bound(tmp_path: Path) -> None:
    # No capture process listens: the channel keeps what it was handed, up to the bound. One stream's
    # chunks share one entry (an item's overhead) and each adds its own smaller one.
    bound = 10 * CHUNK + ITEM_OVERHEAD + 9 * CHUNK_OVERHEAD
    settings = resolve({"db": str(tmp_path / "r.duckdb"), "capture_mode": "process",
                        "queue_max_bytes": str(bound)}, {})
    registry = CollectorRegistry()
    runtime = build_runtime(settings, registry=registry, capture_dir=str(tmp_path))
    channel = runtime.channel
    assert channel is not None
    await channel.start()
    try:
        taken = [channel.submit_chunk(EXCHANGE, b"x" * CHUNK, 0.0) for _ in range(11)]
        assert taken == [True] * 10 + [False]
        assert dropped(registry, "channel_full") == 1
    finally:
        await channel.close()
        close_unstarted(runtime)


async def test_one_byte_chunks_count_what_they_hold_not_just_their_byte(tmp_path: Path) -> None:
    """A stream of one-byte chunks while the capture process is away: each chunk holds ~80 bytes of
    Python objects, so a bound counted in payload alone would let the channel hold ~80x the bound."""
    bound = 64 << 10
    full: list[int] = []
    channel = CaptureChannel(str(tmp_path / "none.sock"), max_items=1_000_000, max_bytes=bound,
                             on_dropped=lambda reason, n: full.append(n) if reason == "channel_full" else None)
    await channel.start()
    try:
        kept = sum(channel.submit_chunk(EXCHANGE, b"x", float(i)) for i in range(bound))
    finally:
        await channel.close(timeout=0.1)
    assert 0 < kept <= bound // (1 + CHUNK_OVERHEAD) + 1
    assert sum(full) == bound - kept  # every refused chunk counted as channel_full
