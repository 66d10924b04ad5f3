"""Captured items kept in memory while neither the database nor the spool file can take them.

With the spool beside the database, a full disk fails both at once. Rather than drop what the spool
cannot write, the capture writer keeps it here, in order, up to a byte bound (`--spool-memory-bytes`),
and retries on its reopen interval: a short full-disk episode then loses nothing. What does not fit
is dropped and counted as before. Sizes are the items' encoded length, an estimate of what they hold.
Items are kept in the groups they came in, with whether their effects were emitted (spool.py's "e").
"""

from __future__ import annotations

import orjson

from .records import RequestRecord, Snapshot

Item = Snapshot | RequestRecord


def _size(item: Item) -> int:
    try:
        return len(orjson.dumps(item))
    except TypeError:  # too deep to encode: the spool sets it aside anyway; count it generously
        return 1 << 16


class MemoryHold:
    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self._max = max_bytes
        self._groups: list[tuple[list[Item], bool]] = []  # (items, emit: their effects are still owed)
        self._count = 0
        self.bytes = 0

    def __len__(self) -> int:
        return self._count

    def add(self, items: list[Item], *, emit: bool = False) -> int:
        """Keep items in order until the first that does not fit; return how many did not."""
        kept: list[Item] = []
        for item in items:
            size = _size(item)
            if self.bytes + size > self._max:
                break
            kept.append(item)
            self.bytes += size
        if kept:
            self._groups.append((kept, emit))
            self._count += len(kept)
        return len(items) - len(kept)

    def take(self) -> list[tuple[list[Item], bool]]:
        groups, self._groups, self._count, self.bytes = self._groups, [], 0, 0
        return groups
