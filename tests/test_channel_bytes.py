"""The capture channel's byte bound counts what a request record holds: a client chooses the length of
its path, and (with tracing in --capture-mode process) of the tracestate and user agent its relayed span
carries, each up to --max-header-bytes. Counted as 0, a flood of such requests held unbounded memory
while the capture process was away."""

from __future__ import annotations

from pathlib import Path

from runtap.analytics.ingest.batching import item_size
from runtap.analytics.ingest.records import RequestRecord
from runtap.proxy.addons.relay_tracing import RELAYED_FIELDS
from runtap.proxy.capture_channel import CaptureChannel

HEADER = 16 << 10  # --max-header-bytes' default


def _record(i: int) -> RequestRecord:
    span = (1, 2, 1, 0, 0, "vendor=" + "s" * (HEADER - 8), 3, 10, 11, 12, "runs.create", "http", "1.1",
            "127.0.0.1:8080", "127.0.0.1", "agent/" + "u" * (HEADER - 7))
    assert len(span) == RELAYED_FIELDS
    return RequestRecord(f"req_{i}", 1.0, "POST", "/v1/threads/runs", "runs.create", 200, False, 1.0, 1.0, 0, 0,
                         None, None, None, span=span)


def test_a_request_records_strings_count_against_the_bound() -> None:
    assert item_size(_record(0)) >= 2 * HEADER - 16


async def test_records_beyond_the_byte_bound_are_dropped_and_counted(tmp_path: Path) -> None:
    dropped: list[tuple[str, int]] = []
    # Nothing listens: the channel keeps what it is given, up to its bounds.
    channel = CaptureChannel(str(tmp_path / "none.sock"), max_items=1_000, max_bytes=10 * HEADER,
                             on_dropped=lambda reason, n: dropped.append((reason, n)))
    await channel.start()
    try:
        kept = sum(channel.submit(_record(i)) for i in range(20))
    finally:
        await channel.close(timeout=0.1)
    assert kept == 4  # 2 headers' worth each, and a little more: 5 would pass 10 headers
    assert dropped[:16] == [("channel_full", 1)] * 16
