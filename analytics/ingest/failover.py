"""Where a batch goes when the store cannot take it, and how it gets back.

First the append-only spool file (spool.py), bounded; when the spool file itself cannot be written (a
full disk takes the database and the spool at once) memory (hold.py), bounded too. The spool is
replayed into the store once it is open again (and at the next start), backing off while replay keeps
failing, since every attempt re-reads the whole file. Every item is written, spooled, held, set aside
as rejected or dropped, and counted as exactly one of these. Used by the writer thread only.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from .faults import Faults
from .health import ITEMS, Kind
from .hold import Item, MemoryHold
from .isolate import Isolated
from .records import RequestRecord, Snapshot
from .spool import OnEffects, Spool
from .store import Store

# Replaying a spool that keeps failing re-reads it every time: back off up to this long.
MAX_REPLAY_BACKOFF_S: Final = 300.0
SPOOL_FULL: Final = "spool_full"
SPOOL_ERROR: Final = "spool_error"

log = logging.getLogger("runtap.writer")


class SpoolFailover:
    def __init__(self, path: str, *, max_bytes: int, memory_bytes: int, retry_s: float, faults: Faults,
                 target: str) -> None:
        self.path = path
        self._max_bytes = max_bytes
        self._retry_s = retry_s
        self._faults = faults
        self._target = target  # the database, for the log
        self._spool: Spool | None = None
        self._hold = MemoryHold(memory_bytes)
        self._backoff = retry_s
        self.pending = False  # the spool file holds items the store has not had yet
        self.next_replay = 0.0
        self.next_hold_retry = 0.0

    def open(self) -> None:
        """At start: a spool left by a previous run goes into the store before anything new."""
        spool = self._ensure()
        self.pending = spool is not None and spool.pending()

    def held(self) -> int:
        return len(self._hold)

    def take_held(self) -> list[tuple[list[Item], bool]]:
        return self._hold.take()

    def retry_later(self) -> None:
        self.next_replay = time.monotonic() + self._retry_s

    def put(self, snapshots: list[Snapshot], requests: list[RequestRecord], *, emit: bool = False) -> None:
        """Spool what the store could not take; hold in memory what the spool could not. ``emit``: the
        batch's effects were never emitted (its merge did not run), so its replay emits them."""
        n = len(snapshots) + len(requests)
        spool = self._ensure()
        failed = spool is None
        if spool is None:
            dropped = n
        else:
            rejected_before = spool.rejected_lines
            try:
                dropped = spool.append(snapshots, requests, emit=emit)
            except Exception as exc:
                self._faults.failed("spool", exc)
                dropped = n
                failed = True
            else:
                self.pending = True
            rejected = spool.rejected_lines - rejected_before
            if rejected:
                n -= rejected  # not lost: in the spool's rejected file; neither spooled nor dropped
                self._faults.rejected("spool", rejected)
        self._faults.health.add(Kind.SPOOLED, ITEMS, n - dropped)
        if dropped and failed:
            # The spool file could not be written (a full disk): keep what fits in memory and retry.
            # (failed: nothing of the batch reached the file, so dropped is all of it)
            held = dropped - self._hold.add([*snapshots, *requests], emit=emit)
            if held:
                self._faults.health.add(Kind.HELD, ITEMS, held)
                self.next_hold_retry = time.monotonic() + self._retry_s
                dropped -= held
        self._faults.dropped(SPOOL_ERROR if failed else SPOOL_FULL, dropped, log=False)

    def drop_held(self) -> None:
        """At stop: what is still held cannot be written anywhere."""
        self._faults.dropped(SPOOL_ERROR, sum(len(items) for items, _ in self._hold.take()), log=False)

    def reject(self, done: Isolated) -> None:
        """Items of a live batch the store refused for their data: to the spool's rejected file."""
        rejected = done.rejected
        n = len(rejected)
        self._faults.rejected("store", n, rejected[0][1])
        spool = self._ensure()
        try:
            if spool is None:
                raise OSError("no spool")
            spool.reject(rejected)
        except Exception as exc:
            self._faults.failed("spool", exc)
            self._faults.dropped(SPOOL_ERROR, n, log=False)

    def replay_due(self, now: float) -> bool:
        """The spool holds items and its back-off has passed (monotonic `now`)."""
        return self.pending and now >= self.next_replay

    def replay(self, store: Store, on_effects: OnEffects | None = None) -> None:
        spool = self._ensure()
        if spool is None:
            return
        rejected_before = spool.rejected_lines
        try:
            n = spool.replay(store, on_effects)
            self.pending = spool.pending()
        except Exception as exc:
            self._faults.failed("replay", exc)
            self.next_replay = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, MAX_REPLAY_BACKOFF_S)
            return
        self._backoff = self._retry_s
        rejected = spool.rejected_lines - rejected_before
        if rejected:
            # Not lost: kept in the spool's rejected file (logged there), and counted here.
            self._faults.rejected("replay", rejected)
        if n:
            self._faults.health.add(Kind.REPLAYED, ITEMS, n)
            log.info("capture replayed %d spooled items into %s", n, self._target)

    def _ensure(self) -> Spool | None:
        if self._spool is None:
            try:
                self._spool = Spool(self.path, max_bytes=self._max_bytes)
            except Exception as exc:
                self._faults.failed("spool", exc)
        return self._spool
