"""Capture health, counted once: what capture wrote, spooled, replayed, held, dropped, skipped or failed.

The capture writer (and, with --capture-mode process, the relay's capture channel and the capture
process's frame reader) record each event here, once; the Prometheus collector
(proxy/addons/capture_health.py) builds the runtap_capture_* samples from these counters at scrape
time, and `CaptureWriter.stats` sums them. Labels:
  DROPPED   queue_full | queue_bytes_full | stopped | submit_error | spool_full | spool_error
            (and the channel's own reasons in a relay of --capture-mode process)
  ERRORS    "<stage>:<detail>": decode:<reason> (see CaptureDecoder.skipped), <where>:<ExceptionType>
            (where: store_open, store, store_close, replay, spool, on_effects, internal, channel...),
            store:rejected | replay:rejected | spool:rejected (items set aside in the rejected file)
  WRITTEN   runs | steps | responses | requests
  SKIPPED   <reason>: relayed but not captured (a body too large, an implausible token count...)
  SPOOLED, REPLAYED, HELD   items
`db_memory` is the capture database's buffer pool as the writer last sampled it (at most once a second
while it writes): the collector exports it as runtap_capture_db_memory_bytes / _limit_bytes.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

# Labels come from code (reasons, stages, exception type names), but an exception type is open-ended:
# keep the series count bounded anyway.
MAX_LABELS: Final = 64
OTHER: Final = "other"
ITEMS: Final = "items"
DECODE: Final = "decode"


class Kind(StrEnum):
    WRITTEN = "written"
    DROPPED = "dropped"
    ERRORS = "errors"
    SKIPPED = "skipped"
    SPOOLED = "spooled"
    REPLAYED = "replayed"
    HELD = "held"


SPOOL_DROPS: Final = frozenset(("spool_full", "spool_error"))
# A capture failure for the database running out of memory (--db-memory-limit): ERRORS "store_memory:<type>"
STORE_MEMORY: Final = "store_memory"
_UNITS: Final = {"bytes": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
                 "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_SIZE: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")


def parse_size(text: str) -> int:
    """Bytes in a size as DuckDB prints it ("488.2 MiB", "0 bytes"); 0 when it is no size."""
    m = _SIZE.fullmatch(text)
    if m is None or m.group(2).lower() not in _UNITS:
        return 0
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


@dataclass(frozen=True, slots=True)
class DbMemory:
    by_tag: dict[str, int]  # duckdb_memory()'s tags, lower case: art_index, in_memory_table, base_table...
    limit: int  # memory_limit in bytes (0 if unknown)


class CaptureHealth:
    """Thread-safe counters by (kind, label), plus the number of capture failures logged and of stores
    open. Events are rare next to the items themselves (one per batch, per drop, per failure), so a
    lock per event costs nothing the request path would notice."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._counts: dict[tuple[Kind, str], int] = {}
        self._labels: dict[Kind, int] = dict.fromkeys(Kind, 0)
        self.failures = 0  # incidents (a failed write, a rejected batch), however many items each held
        self.stores_open = 0
        self.db_memory: DbMemory | None = None  # replaced whole by the writer thread, read by scrapes

    def add(self, kind: Kind, label: str, n: int = 1) -> None:
        if n <= 0:
            return
        with self._cond:
            key = (kind, label)
            if key not in self._counts:
                if self._labels[kind] >= MAX_LABELS:
                    stage, sep, _ = label.partition(":")
                    key = (kind, f"{stage}:{OTHER}" if sep else OTHER)
                if key not in self._counts:
                    self._labels[kind] += 1
            self._counts[key] = self._counts.get(key, 0) + n
            self._cond.notify_all()

    def failed(self, stage: str, detail: str, n: int = 1) -> None:
        """One capture failure at `stage`, affecting `n` items (1 unless items were set aside)."""
        with self._cond:
            self.failures += 1
        self.add(Kind.ERRORS, f"{stage}:{detail}", n)

    def store(self, *, opened: bool) -> None:
        with self._cond:
            self.stores_open += 1 if opened else -1
            self._cond.notify_all()

    def counts(self) -> dict[tuple[Kind, str], int]:
        with self._cond:
            return dict(self._counts)

    def total(self, kind: Kind | str, label: str | None = None) -> int:
        with self._cond:
            return self._total(Kind(kind), label)

    def _total(self, kind: Kind, label: str | None) -> int:
        return sum(n for (k, lab), n in self._counts.items() if k is kind and (label is None or lab == label))

    def wait_for(self, kind: Kind | str, label: str, n: int, timeout: float = 30.0) -> bool:
        """Block until the count of (kind, label) reaches n; False after `timeout` seconds."""
        k = Kind(kind)
        with self._cond:
            return self._cond.wait_for(lambda: self._total(k, label) >= n, timeout)

    def stats(self) -> dict[str, int]:
        """The writer's summary (CaptureWriter.stats, logged at shutdown), derived from the counters."""
        counts = self.counts()

        def total(kind: Kind, keep: Callable[[str], bool] = lambda _: True) -> int:
            return sum(n for (k, lab), n in counts.items() if k is kind and keep(lab))

        return {
            "dropped": total(Kind.DROPPED, lambda lab: lab not in SPOOL_DROPS),
            "spool_dropped": total(Kind.DROPPED, lambda lab: lab in SPOOL_DROPS),
            "written": total(Kind.WRITTEN), "spooled": total(Kind.SPOOLED), "replayed": total(Kind.REPLAYED),
            "held": total(Kind.HELD), "errors": self.failures,
            "rejected": total(Kind.ERRORS, lambda lab: lab.endswith(":rejected")),
            "decode_skipped": total(Kind.ERRORS, lambda lab: lab.startswith(DECODE + ":")),
        }
