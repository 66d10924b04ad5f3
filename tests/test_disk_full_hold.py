"""Disk full with the spool beside the database: what neither can take is kept in memory (bounded by
--spool-memory-bytes) and written once space returns, so a short episode loses nothing; beyond the
bound, what cannot be kept is dropped and counted as before.

The full disk is played by a spool path that is a directory (every write to it fails with an OSError,
as ENOSPC would, and removing the directory is "space returns") and a store that cannot open."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
from runtap.analytics.ingest.health import CaptureHealth
from runtap.analytics.ingest.records import CaptureItem, ResponseBody
from runtap.analytics.ingest.store import Store, StoreError
from runtap.analytics.ingest.writer import CaptureWriter, WriterConfig

from tests.test_writer import exchange, record, run


class DiskFull:
    def __init__(self, tmp: Path, *, hold_bytes: int = 64 << 20) -> None:
        self.db = str(tmp / "capture.duckdb")
        self.spool = self.db + ".spool.jsonl"
        os.mkdir(self.spool)
        self.full = True
        self.health = CaptureHealth()

        def factory() -> Store:
            if self.full:
                raise StoreError("cannot open: disk full (test)")
            return Store(self.db)

        config = WriterConfig(db_path=self.db, spool_path=self.spool, flush_interval_s=60, reopen_interval_s=0.05,
                              spool_memory_bytes=hold_bytes)
        self.writer = CaptureWriter(config, health=self.health, store_factory=factory)
        self.writer.start()

    def space_returns(self) -> None:
        os.rmdir(self.spool)
        self.full = False


def items(n: int) -> list[CaptureItem]:
    out: list[CaptureItem] = []
    for i in range(n):
        xid = f"run_{i}"
        out += [ResponseBody(exchange(xid), 200, orjson.dumps(run(xid, "completed")), truncated=False), record(xid)]
    return out


def test_a_short_full_disk_episode_loses_nothing(tmp_path: Path) -> None:
    disk = DiskFull(tmp_path)
    try:
        for item in items(20):
            assert disk.writer.submit(item)
        assert disk.writer.flush(timeout=60)
        assert disk.health.total("held", "items") == 40
        assert disk.health.total("dropped") == 0
        disk.space_returns()
        assert disk.health.wait_for("written", "requests", 20, timeout=60)
        cur = disk.writer.reader()
        try:
            got = cur.execute("SELECT count(*), count(*) FILTER (status = 'completed') FROM runs").fetchone()
            assert got == (20, 20)
            assert cur.execute("SELECT count(*) FROM requests").fetchone() == (20,)
        finally:
            cur.close()
    finally:
        disk.writer.stop()
    assert disk.health.total("dropped") == 0


def test_beyond_the_memory_bound_items_are_dropped_and_counted(tmp_path: Path) -> None:
    disk = DiskFull(tmp_path, hold_bytes=2_000)  # a few items' worth
    try:
        for item in items(20):
            disk.writer.submit(item)
        assert disk.writer.flush(timeout=60)
        held = disk.health.total("held", "items")
        assert 0 < held < 40
        assert disk.health.total("dropped", "spool_error") == 40 - held
    finally:
        disk.writer.stop()
    # at stop, what is still held and cannot be written is counted too: nothing vanishes uncounted
    assert disk.health.total("dropped", "spool_error") == 40
