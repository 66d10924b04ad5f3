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
"""

from __future__ import annotations

import threading
from collections.abc import Callable
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
