"""Which ids a table may hold: a Bloom filter that lets the store skip reading back ids it never stored.

Before merging, the store reads the current row of every object of a batch that is not in its LRU
cache. Most of those objects are new (a run's first snapshot, a step's first event), and the read-back
of an id that is not there costs a statement (2-8 ms CPU a batch) and, once the table is large, an
index probe per id (~10 us each). The filter answers "certainly not stored" for those without asking
DuckDB; "maybe" (a stored id, or a false positive: ~1% when full) still goes to the read-back, so the merge sees
exactly what it saw before.

Exactness rests on two things: the filter starts from every id in the table (read on first use),
and every id the store inserts is added once its batch has committed. The read of a table past
SYNC_LOAD rows runs on a thread of its own, on a reader connection (~1.5 s CPU a million ids, which used
to stall the first batch after a start): until it is done the table has no filter and every miss is
read back, as without one; ids committed while it reads are kept aside and added when it is installed
(the read's snapshot may or may not hold them: adding twice is harmless, missing one is not possible).
Rows deleted by ``runtap
purge`` stay in the filter, which only costs them a read-back. A row inserted behind the store's back
(another tool on its connection) makes the batch's INSERT fail on the key: the store then forgets the
filters and merges the batch again reading back every id, so even then the result is exact.

Bits come from Python's ``hash`` of the id (already computed: the ids are dict keys), so the filter
means nothing outside this process and is never stored. 12 bits an id and 3 probes; the filter is
rebuilt at twice the size from the table when it holds more ids than it was sized for (the full one
answers meanwhile: it only says "maybe" more often).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator

log = logging.getLogger(__name__)

BITS_PER_ID = 12
MIN_CAPACITY = 1 << 15
# Building reads every id (~1.5 s CPU a million, on its own thread but under the GIL beside the writer): a
# table past this goes without a filter (read back as before) rather than hold capture back for longer.
MAX_LOAD = 2_000_000
# A table this small is read on the writer's thread (<~0.1 s): a thread would only make the batch that
# starts it read back every id it misses, which for a new store's first batch costs more than the read.
SYNC_LOAD = 50_000


class KnownIds:
    """A Bloom filter of ids, with its capacity."""

    __slots__ = ("_bits", "_mask", "capacity", "count")

    def __init__(self, capacity: int) -> None:
        capacity = max(MIN_CAPACITY, capacity)
        nbits = 1 << (capacity * BITS_PER_ID - 1).bit_length()
        self._bits = bytearray(nbits >> 3)
        self._mask = nbits - 1
        self.capacity = capacity
        self.count = 0

    def add_all(self, ids: Iterable[str]) -> None:
        bits = self._bits
        mask = self._mask
        n = 0
        for key in ids:
            h = hash(key)
            step = (h >> 32) | 1
            for i in (h & mask, (h + step) & mask, (h + 2 * step) & mask):
                bits[i >> 3] |= 1 << (i & 7)
            n += 1
        self.count += n

    def unknown(self, ids: Iterable[str]) -> set[str]:
        """The ids certainly not added."""
        bits = self._bits
        mask = self._mask
        out: set[str] = set()
        for key in ids:
            h = hash(key)
            step = (h >> 32) | 1
            i = h & mask
            if bits[i >> 3] >> (i & 7) & 1:
                i = (h + step) & mask
                if bits[i >> 3] >> (i & 7) & 1:
                    i = (h + 2 * step) & mask
                    if bits[i >> 3] >> (i & 7) & 1:
                        continue
            out.add(key)
        return out

    @property
    def full(self) -> bool:
        return self.count > self.capacity


class _Build:
    """One filter being read from its table on a thread of its own; ids committed meanwhile wait in ``pending``."""

    __slots__ = ("done", "pending", "result", "stop")

    def __init__(self) -> None:
        self.pending: list[str] = []
        self.result: KnownIds | None = None
        self.done = threading.Event()
        self.stop = threading.Event()  # the store is closing or forgetting: give up between chunks


class TableIds:
    """The filters of a store's tables, each built from its table on first use (so a store opened only
    to read, purge or export never reads the ids), and rebuilt from it when full. Builds run on a thread
    of their own; only the writer's thread calls the methods."""

    def __init__(self, read_ids: Callable[[str], Iterator[list[str]]], rows: Callable[[str], int]) -> None:
        """``read_ids(table)`` is called on the writer's thread and iterated on the build's: it must open
        its own cursor when called (a generator would open it on the build's thread, too late)."""
        self._read_ids = read_ids
        self._rows = rows
        self._filters: dict[str, KnownIds | None] = {}  # None: the table goes without (too large, or a read failed)
        self._builds: dict[str, _Build] = {}

    def unknown(self, table: str, ids: Iterable[str]) -> set[str]:
        """Ids certainly not in ``table`` (call it between batches: the filter is built from the table)."""
        self._install(table)
        if table not in self._filters and table not in self._builds:
            self._start(table)
            self._install(table)  # a small table's is read inline: in place already
        if table not in self._filters:
            return set()  # still being read: every id may be stored
        known = self._filters[table]
        return set() if known is None else known.unknown(ids)

    def added(self, table: str, ids: list[str]) -> None:
        """``ids`` were inserted into ``table`` and committed."""
        if not ids:
            return
        build = self._builds.get(table)
        if build is not None:
            build.pending += ids
        known = self._filters.get(table)
        if known is None:
            return
        known.add_all(ids)
        if known.full and build is None:
            self._start(table)  # sized for twice what the table holds: rebuilt at amortised O(1) per id

    def _start(self, table: str) -> None:
        rows = self._rows(table)
        if rows > MAX_LOAD:
            self._filters[table] = None  # the table goes without
            return
        try:
            chunks = self._read_ids(table)
        except Exception:  # noqa: BLE001 - a filter is an optimisation; go without
            log.warning("cannot read the ids of %s; its batches read back every new id", table, exc_info=True)
            self._filters[table] = None
            return
        build = self._builds[table] = _Build()

        def run() -> None:
            try:
                known = KnownIds(2 * rows)
                for chunk in chunks:
                    if build.stop.is_set():
                        return
                    known.add_all(chunk)
                build.result = known
            except Exception:  # noqa: BLE001 - as above
                log.warning("cannot read the ids of %s; its batches read back every new id", table, exc_info=True)
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()  # the reader's cursor, on the thread that used it
                build.done.set()

        if rows > SYNC_LOAD:
            threading.Thread(target=run, name=f"runtap-known-ids-{table}", daemon=True).start()
        else:
            run()

    def _install(self, table: str) -> None:
        build = self._builds.get(table)
        if build is None or not build.done.is_set():
            return
        del self._builds[table]
        known = build.result
        if known is not None:
            known.add_all(build.pending)
        self._filters[table] = known

    def wait(self) -> None:
        """Let running builds finish and install them."""
        for table, build in list(self._builds.items()):
            build.done.wait()
            self._install(table)

    def forget(self) -> None:
        """Rows may have been inserted behind the store's back: rebuild every filter on its next use."""
        self.stop()
        self._filters.clear()

    def stop(self) -> None:
        """Abandon running builds and wait for their threads to let go of their cursors (before the
        store closes the connection they were made from): at most one chunk of ids each."""
        for build in self._builds.values():
            build.stop.set()
        for build in self._builds.values():
            build.done.wait()
        self._builds.clear()
