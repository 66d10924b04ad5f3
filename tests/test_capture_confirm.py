"""What the capture process confirms to a relay, and what it counts when a relay vanishes mid-frame.

A confirmation tells the relay that the capture process has written, spooled or counted its items, so
the relay stops counting them as at risk. Items held in memory (the spool file cannot be written) die
with the capture process: confirming them would make a crash lose them uncounted. A relay that crashes
mid-frame takes its own count of what it sent with it: the capture process counts the torn frame.
Real writer, real DuckDB, a real socket pair; the relay's side is the frame bytes it would send."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from runtap.analytics.ingest import wire
from runtap.analytics.ingest.health import CaptureHealth, Kind
from runtap.analytics.ingest.records import CaptureItem
from runtap.analytics.ingest.store import Store, StoreError
from runtap.analytics.ingest.writer import CaptureWriter, WriterConfig
from runtap.proxy.capture_process import TORN_FRAME, Ingest, _Conn

from tests.test_writer import record

ITEMS: list[CaptureItem] = [record(f"req_{i}") for i in range(3)]


def disk_full_writer(tmp_path: Path) -> CaptureWriter:
    """Neither the database nor the spool can be written (the spool path is a directory)."""
    db = str(tmp_path / "c.duckdb")
    os.mkdir(db + ".spool.jsonl")

    def factory() -> Store:
        raise StoreError("cannot open: disk full (test)")

    return CaptureWriter(WriterConfig(db_path=db, reopen_interval_s=60.0), health=CaptureHealth(),
                         store_factory=factory)


@contextlib.asynccontextmanager
async def connected(ingest: Ingest) -> AsyncIterator[tuple[_Conn, socket.socket]]:
    ours, relay = socket.socketpair()
    _, conn = await asyncio.get_running_loop().connect_accepted_socket(ingest.protocol, ours)
    try:
        yield conn, relay
    finally:
        relay.close()
        await asyncio.wait_for(ingest.idle.wait(), 10)


@pytest.mark.parametrize("disk_full", [False, True])
async def test_items_held_in_memory_are_not_confirmed(tmp_path: Path, disk_full: bool) -> None:
    writer = disk_full_writer(tmp_path) if disk_full else CaptureWriter(WriterConfig(str(tmp_path / "c.duckdb")))
    writer.start()
    ingest = Ingest(writer, lambda _: None)
    try:
        async with connected(ingest) as (conn, _):
            conn.data_received(wire.encode(ITEMS))
            await ingest.confirm_once()
            assert writer.held() == (3 if disk_full else 0)
            assert conn.acked == (0 if disk_full else 3)
    finally:
        await asyncio.to_thread(writer.stop)


async def test_a_relay_that_ends_mid_frame_has_its_torn_frame_counted(tmp_path: Path) -> None:
    writer = CaptureWriter(WriterConfig(str(tmp_path / "c.duckdb")))
    writer.start()
    ingest = Ingest(writer, lambda _: None)
    try:
        async with connected(ingest) as (conn, _):
            conn.data_received(wire.encode(ITEMS[:1]))  # a whole frame
            frame = wire.encode(ITEMS)
            conn.data_received(frame[: len(frame) // 2])  # then the relay dies
        assert writer.health.total(Kind.DROPPED, TORN_FRAME) == 3
        assert writer.submitted == 1
    finally:
        await asyncio.to_thread(writer.stop)
