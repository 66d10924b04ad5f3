"""Capture health, counted once: what capture wrote, spooled, replayed, held, dropped, skipped or failed.

The capture writer (and, with --capture-mode process, the relay's capture channel and the capture
process's frame reader) record each event here, once; the Prometheus collector
(proxy/addons/capture_health.py) builds the runtap_capture_* samples from these counters at scrape
time, and `CaptureWriter.stats` sums them. Labels:
  DROPPED   queue_full | queue_bytes_full | stopped | submit_error | spool_full | spool_error
            (and the channel's own reasons in a relay of --capture-mode process)
  ERRORS    a stage and a detail, kept apart (Event.label, Event.detail): decode + <reason> (see
            CaptureDecoder.skipped), <where> + <ExceptionType> (where: store_open, store, store_close,
            replay, spool, on_effects, internal, channel...), store | replay | spool + rejected (items
            set aside in the rejected file); `counts` and `total` spell them "<stage>:<detail>"
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
from typing import Final, NamedTuple

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
# A capture failure for the database running out of memory (--db-memory-limit): ERRORS stage store_memory
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


class Event(NamedTuple):
    """A counter's key: the kind, its label (for ERRORS the stage) and, for ERRORS only, what failed
    there (an exception type, a decode reason, "rejected")."""

    kind: Kind
    label: str
    detail: str | None = None

    @property
    def text(self) -> str:
        return self.label if self.detail is None else f"{self.label}:{self.detail}"


class CaptureHealth:
    """Thread-safe counters by (kind, label), plus the number of capture failures logged and of stores
    open. Events are rare next to the items themselves (one per batch, per drop, per failure), so a
    lock per event costs nothing the request path would notice."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._counts: dict[Event, int] = {}
        self._labels: dict[Kind, int] = dict.fromkeys(Kind, 0)
        self.failures = 0  # incidents (a failed write, a rejected batch), however many items each held
        self.stores_open = 0
        self.db_memory: DbMemory | None = None  # replaced whole by the writer thread, read by scrapes

    def add(self, kind: Kind, label: str, n: int = 1, *, detail: str | None = None) -> None:
        if n <= 0:
            return
        with self._cond:
            key = Event(kind, label, detail)
            if key not in self._counts:
                if self._labels[kind] >= MAX_LABELS:
                    key = Event(kind, label, OTHER) if detail is not None else Event(kind, OTHER)
                if key not in self._counts:
                    self._labels[kind] += 1
            self._counts[key] = self._counts.get(key, 0) + n
            self._cond.notify_all()

    def error(self, stage: str, detail: str, n: int = 1) -> None:
        """`n` items lost to capture at `stage` for `detail`, not a failure of capture itself (a body
        that does not decode)."""
        self.add(Kind.ERRORS, stage, n, detail=detail)

    def failed(self, stage: str, detail: str, n: int = 1) -> None:
        """One capture failure at `stage`, affecting `n` items (1 unless items were set aside)."""
        with self._cond:
            self.failures += 1
        self.error(stage, detail, n)

    def store(self, *, opened: bool) -> None:
        with self._cond:
            self.stores_open += 1 if opened else -1
            self._cond.notify_all()

    def events(self) -> dict[Event, int]:
        with self._cond:
            return dict(self._counts)

    def counts(self) -> dict[tuple[Kind, str], int]:
        """By kind and label as one string ("<stage>:<detail>" for ERRORS)."""
        return {(ev.kind, ev.text): n for ev, n in self.events().items()}

    def total(self, kind: Kind | str, label: str | None = None) -> int:
        with self._cond:
            return self._total(Kind(kind), label)

    def _total(self, kind: Kind, label: str | None) -> int:
        return sum(n for ev, n in self._counts.items() if ev.kind is kind and (label is None or ev.text == label))

    def wait_for(self, kind: Kind | str, label: str, n: int, timeout: float = 30.0) -> bool:
        """Block until the count of (kind, label) reaches n; False after `timeout` seconds."""
        k = Kind(kind)
        with self._cond:
            return self._cond.wait_for(lambda: self._total(k, label) >= n, timeout)

    def stats(self) -> dict[str, int]:
        """The writer's summary (CaptureWriter.stats, logged at shutdown), derived from the counters."""
        counts = self.events()

        def total(kind: Kind, keep: Callable[[Event], bool] = lambda _: True) -> int:
            return sum(n for ev, n in counts.items() if ev.kind is kind and keep(ev))

        return {
            "dropped": total(Kind.DROPPED, lambda ev: ev.label not in SPOOL_DROPS),
            "spool_dropped": total(Kind.DROPPED, lambda ev: ev.label in SPOOL_DROPS),
            "written": total(Kind.WRITTEN), "spooled": total(Kind.SPOOLED), "replayed": total(Kind.REPLAYED),
            "held": total(Kind.HELD), "errors": self.failures,
            "rejected": total(Kind.ERRORS, lambda ev: ev.detail == "rejected"),
            "decode_skipped": total(Kind.ERRORS, lambda ev: ev.label == DECODE),
        }
