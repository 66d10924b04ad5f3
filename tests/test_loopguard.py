"""The loop guard itself: it must name proxy code that blocks the loop, and leave tests' own waits alone."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtap.analytics.ingest.sse import SSEParser
from runtap.analytics.ingest.store import Store
from runtap.analytics.ingest.writer import CaptureWriter, WriterConfig

from tests.loopguard import LoopGuard


@pytest.fixture
def guard() -> Iterator[LoopGuard]:
    g = LoopGuard(0.1)
    g.install()
    try:
        yield g
    finally:
        g.uninstall()


@pytest.mark.allow_loop_blocking
async def test_proxy_code_blocking_the_loop_is_reported_with_its_line(guard: LoopGuard, tmp_path: Path) -> None:
    opened = threading.Event()

    def slow_store() -> Store:
        opened.wait(0.4)  # the writer thread takes its time: whoever waits on it on the loop blocks
        return Store(str(tmp_path / "db.duckdb"))

    writer = CaptureWriter(WriterConfig(db_path=str(tmp_path / "db.duckdb")), store_factory=slow_store)
    writer.start()
    try:
        loop = asyncio.get_running_loop()
        # Called straight from the loop, as a handler would: CaptureWriter.flush is a blocking wait.
        loop.call_soon(writer.flush, 5.0)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    finally:
        writer.stop()
    blocks = guard.take()
    assert len(blocks) == 1, blocks
    block = blocks[0]
    assert block.seconds >= 0.1
    assert block.owner is not None and block.owner.startswith("analytics/ingest/writer.py:")
    assert block.owner.endswith("in flush")
    assert any("analytics/ingest/writer.py" in line and "in flush" in line for line in block.stack)
    assert "analytics/ingest/writer.py" in block.describe()


async def test_a_test_waiting_on_its_own_loop_is_not_blamed(guard: LoopGuard) -> None:
    time.sleep(0.15)  # a test may block its own loop (reading DuckDB, flushing): not the proxy's fault
    await asyncio.sleep(0)  # the guard records a callback once it returns
    assert guard.take() == []
    assert guard.ignored and guard.ignored[0].owner is not None
    assert guard.ignored[0].owner.startswith("tests/test_loopguard.py:")


async def test_short_callbacks_are_not_reported(guard: LoopGuard) -> None:
    for _ in range(200):
        await asyncio.sleep(0)
    assert guard.take() == [] and guard.ignored == []


def test_install_twice_is_refused(guard: LoopGuard) -> None:
    with pytest.raises(RuntimeError):
        guard.install()


@pytest.mark.allow_loop_blocking
async def test_proxy_code_computing_on_the_loop_is_reported(guard: LoopGuard) -> None:
    parser = SSEParser()
    data = b": keep-alive\n" * 2_000_000  # parsing 26 MB on the loop is a long computation
    loop = asyncio.get_running_loop()
    loop.call_soon(parser.feed, data)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    [block] = guard.take()
    assert block.owner is not None and block.owner.startswith("analytics/ingest/sse.py:")
