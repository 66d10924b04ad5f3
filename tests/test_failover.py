"""Spool failover on its own (analytics/ingest/failover.py): a replay that keeps failing backs off,
doubling up to its bound, and a success resets it; every item ends counted exactly once."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, cast

import duckdb
from runtap.analytics.ingest.failover import MAX_REPLAY_BACKOFF_S, SpoolFailover
from runtap.analytics.ingest.faults import Faults
from runtap.analytics.ingest.health import CaptureHealth, Kind
from runtap.analytics.ingest.records import RequestRecord, Snapshot
from runtap.analytics.ingest.store import Store, StoreError

from tests.test_writer import record


class Flaky:
    """A store whose writes fail (the database is locked) until it is told to work."""

    def __init__(self) -> None:
        self.working = False
        self.applied: list[str] = []

    def apply(self, snapshots: list[Snapshot], requests: list[RequestRecord], **_: Any) -> list[Any]:
        if not self.working:
            raise StoreError("cannot write batch") from duckdb.IOException("database is locked")
        self.applied += [r.id for r in requests]
        return []


def test_a_failing_replay_backs_off_doubling_to_its_bound_and_success_resets_it(tmp_path: Path) -> None:
    health = CaptureHealth()
    failover = SpoolFailover(str(tmp_path / "c.spool.jsonl"), max_bytes=1 << 20, memory_bytes=1 << 20, retry_s=1.0,
                             faults=Faults(health, logging.getLogger("test")), target="c.duckdb")
    failover.put([], [record(f"req_{i}") for i in range(3)])
    assert failover.pending and health.total(Kind.SPOOLED) == 3
    store = Flaky()
    waits = []
    for _ in range(12):
        failover.replay(cast(Store, store))  # only apply() is used
        waits.append(failover.next_replay - time.monotonic())
    want = [min(2.0**i, MAX_REPLAY_BACKOFF_S) for i in range(12)]  # 1, 2, 4 ... 256, then the bound
    assert all(w - 0.5 < got <= w for got, w in zip(waits, want, strict=True)), waits
    assert health.total(Kind.ERRORS, "replay:IOException") == 12 and failover.pending
    assert not failover.replay_due(time.monotonic()) and failover.replay_due(failover.next_replay)
    store.working = True
    failover.replay(cast(Store, store))
    assert store.applied == ["req_0", "req_1", "req_2"] and not failover.pending
    assert health.total(Kind.REPLAYED) == 3
    # Back-off reset: the next failure waits the base interval again.
    failover.put([], [record("req_3")])
    store.working = False
    failover.replay(cast(Store, store))
    assert 0.5 < failover.next_replay - time.monotonic() <= 1.0
    assert health.stats()["dropped"] == health.stats()["spool_dropped"] == 0


def test_an_unwritable_spool_holds_in_memory_then_drops_what_it_cannot_keep(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    health = CaptureHealth()
    failover = SpoolFailover(str(blocker / "c.spool.jsonl"), max_bytes=1 << 20, memory_bytes=1 << 10, retry_s=1.0,
                             faults=Faults(health, logging.getLogger("test")), target="c.duckdb")
    failover.put([], [record(f"req_{i}") for i in range(10)])  # a few hundred bytes each: some fit in 1 KiB
    held = failover.held()
    assert 0 < held < 10
    assert health.total(Kind.HELD) == held and health.total(Kind.DROPPED, "spool_error") == 10 - held
    kept = [item for items, _ in failover.take_held() for item in items]
    assert [r.id for r in kept if isinstance(r, RequestRecord)] == [f"req_{i}" for i in range(held)]  # in order
