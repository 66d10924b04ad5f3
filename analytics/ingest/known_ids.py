"""Which ids a table may hold: a Bloom filter that lets the store skip reading back ids it never stored.

Before merging, the store reads the current row of every object of a batch that is not in its LRU
cache. Most of those objects are new (a run's first snapshot, a step's first event), and the read-back
of an id that is not there costs a statement (2-8 ms CPU a batch) and, once the table is large, an
index probe per id (~10 us each). The filter answers "certainly not stored" for those without asking
DuckDB; "maybe" (a stored id, or a false positive: ~1% when full) still goes to the read-back, so the merge sees
exactly what it saw before.

Exactness rests on two things: the filter starts from every id in the table (read on first use),
and every id the store inserts is added once its batch has committed. Rows deleted by ``runtap
purge`` stay in the filter, which only costs them a read-back. A row inserted behind the store's back
(another tool on its connection) makes the batch's INSERT fail on the key: the store then forgets the
filters and merges the batch again reading back every id, so even then the result is exact.

Bits come from Python's ``hash`` of the id (already computed: the ids are dict keys), so the filter
means nothing outside this process and is never stored. 12 bits an id and 3 probes; the filter is
rebuilt at twice the size from the table when it holds more ids than it was sized for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

log = logging.getLogger(__name__)

BITS_PER_ID = 12
MIN_CAPACITY = 1 << 15
# Building reads every id on the write thread (~1.5 s CPU a million): a table past this goes without a
# filter (read back as before) rather than stall capture for longer.
MAX_LOAD = 2_000_000


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


def load(rows: int, chunks: Callable[[], Iterator[list[str]]]) -> KnownIds:
    """A filter sized for twice ``rows`` ids, holding every id ``chunks`` yields (a table's id column)."""
    known = KnownIds(2 * rows)
    for chunk in chunks():
        known.add_all(chunk)
    return known


class TableIds:
    """The filters of a store's tables, each built from its table on first use (so a store opened only
    to read, purge or export never reads the ids), and rebuilt from it when full."""

    def __init__(self, read_ids: Callable[[str], Iterator[list[str]]], rows: Callable[[str], int]) -> None:
        self._read_ids = read_ids
        self._rows = rows
        self._filters: dict[str, KnownIds | None] = {}  # None: the table goes without (a rebuild failed)

    def unknown(self, table: str, ids: Iterable[str]) -> set[str]:
        """Ids certainly not in ``table`` (call it between batches: the filter is built from the table)."""
        if table not in self._filters:
            self._filters[table] = self._build(table)
        known = self._filters[table]
        return set() if known is None else known.unknown(ids)

    def added(self, table: str, ids: list[str]) -> None:
        """``ids`` were inserted into ``table`` and committed."""
        known = self._filters.get(table)
        if known is None or not ids:
            return
        known.add_all(ids)
        if known.full:
            # sized for twice what the table holds: rebuilt at amortised O(1) per id
            try:
                self._filters[table] = self._build(table)
            except Exception:  # noqa: BLE001 - after a commit nothing may fail the batch; go without
                log.warning("cannot re-read the ids of %s; its batches read back every new id", table, exc_info=True)
                self._filters[table] = None

    def _build(self, table: str) -> KnownIds | None:
        rows = self._rows(table)
        return None if rows > MAX_LOAD else load(rows, lambda: self._read_ids(table))

    def forget(self) -> None:
        """Rows may have been inserted behind the store's back: rebuild every filter on its next use."""
        self._filters.clear()
