"""Running out of DuckDB memory while the store opens (replaying the WAL a poisoned instance left, the
start-up CHECKPOINT) is the same condition as running out while writing: counted as a memory failure, with
the line that says what to do, the instance never checkpointed, and the reopen backed off rather than
replaying the whole WAL again every interval. Real DuckDB files; the only stand-in is the limit's size."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
from runtap.analytics.ingest.health import CaptureHealth, Kind
from runtap.analytics.ingest.store import Store
from runtap.analytics.ingest.writer import CaptureWriter, WriterConfig

from tests.test_store_memory import PREFILL, TINY, memory_failures, poison
from tests.test_writer import rows

TOO_SMALL = "1MB"  # less than the WAL below needs to be checkpointed


def wal_left_by_a_poisoned_instance(db: Path) -> None:
    store = Store(str(db), memory_limit=TINY)
    poison(store)
    store.close()  # no checkpoint: the commits are in the WAL
    assert os.path.getsize(f"{db}.wal") > 0


def test_running_out_of_memory_while_opening_is_a_memory_failure_backed_off_and_loses_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "capture.duckdb"
    wal_left_by_a_poisoned_instance(db)
    health = CaptureHealth()
    writer = CaptureWriter(WriterConfig(db_path=str(db), db_memory_limit=TOO_SMALL, reopen_interval_s=5.0),
                           health=health)
    owner = writer._owner
    with caplog.at_level(logging.ERROR, logger="runtap.writer"):
        waits = []
        for _ in range(3):
            assert owner.open() is None
            waits.append(owner.next_open - time.monotonic())
    assert memory_failures(health) == 3
    assert health.total(Kind.ERRORS, "store_open:OutOfMemoryException") == 0
    lines = [r.getMessage() for r in caplog.records if "ran out of memory" in r.getMessage()]
    assert len(lines) == 1 and "--db-memory-limit 1MB" in lines[0], lines
    assert 5.0 < waits[1] <= 10.0 and 10.0 < waits[2] <= 20.0, waits  # 5, 10, 20: not every 5 s
    assert os.path.getsize(f"{db}.wal") > 0  # the failed instance was never checkpointed
    # What the operator does: a larger limit. Every committed row is there.
    assert len(rows(db, "SELECT id FROM runs")) == PREFILL
