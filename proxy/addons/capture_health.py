"""The runtap_capture_* health metrics, built at scrape time from CaptureHealth's counters.

Like client_python's ProcessCollector: registered once on the injected registry, no counters of its
own, so an event the writer counted is exposed exactly once and cannot drift from the writer's stats.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ...analytics.ingest.health import DECODE, CaptureHealth, DbMemory, Event, Kind

_HELP = {
    "written": "Rows written to DuckDB, by table.",
    "dropped": "Captured items lost, by the stage that dropped them.",
    "errors": "Capture failures, by stage (decode, store, spool, replay...).",
    "skipped": "Bodies or events relayed but not captured, by reason.",
    "spooled": "Items written to the spool file because the store could not take them.",
    "replayed": "Spooled items replayed into the store.",
    "store_open": "1 while the capture writer holds the DuckDB store open.",
    "db_memory": "DuckDB buffer pool of the capture database in use, by duckdb_memory() tag (sampled by the writer).",
    "db_memory_limit": "The capture database's memory limit (--db-memory-limit), in bytes.",
}


def _labelled(name: str, label: str, values: Iterable[tuple[str, int]]) -> CounterMetricFamily:
    family = CounterMetricFamily(f"runtap_capture_{name}", _HELP[name], labels=[label])
    sums: dict[str, int] = defaultdict(int)
    for value, n in values:
        sums[value] += n
    for value, n in sums.items():
        family.add_metric([value], n)
    return family


class CaptureHealthCollector(Collector):
    def __init__(self, health: CaptureHealth) -> None:
        self._health = health
        # --capture-mode process: the relay's own counts (its channel's drops, its skips) as it last
        # reported them with a scrape (scrape_split.py); replaced whole, added to this process's.
        self.relayed: Mapping[Event, int] = {}

    def describe(self) -> Iterator[Metric]:
        return self._families({}, 0, None)

    def collect(self) -> Iterator[Metric]:
        counts = self._health.events()
        for event, n in self.relayed.items():
            counts[event] = counts.get(event, 0) + n
        return self._families(counts, self._health.stores_open, self._health.db_memory)

    def _families(self, counts: dict[Event, int], stores_open: int, memory: DbMemory | None) -> Iterator[Metric]:
        by_kind: dict[Kind, list[tuple[Event, int]]] = defaultdict(list)
        for event, n in counts.items():
            by_kind[event.kind].append((event, n))
        errors = by_kind[Kind.ERRORS]
        yield _labelled("written", "table", ((ev.label, n) for ev, n in by_kind[Kind.WRITTEN]))
        yield _labelled("dropped", "stage", ((ev.label, n) for ev, n in by_kind[Kind.DROPPED]))
        # An undecodable body or event is lost capture: an error for alerting (stage decode), and a
        # skip by reason for diagnosis.
        yield _labelled("errors", "stage", ((ev.label, n) for ev, n in errors))
        yield _labelled("skipped", "reason", [*((ev.label, n) for ev, n in by_kind[Kind.SKIPPED]), *(
            (ev.detail or "", n) for ev, n in errors if ev.label == DECODE)])
        for name, kind in (("spooled", Kind.SPOOLED), ("replayed", Kind.REPLAYED)):
            yield CounterMetricFamily(f"runtap_capture_{name}", _HELP[name],
                                      value=sum(n for _, n in by_kind[kind]))
        yield GaugeMetricFamily("runtap_capture_store_open", _HELP["store_open"], value=max(stores_open, 0))
        # No samples before the store first opened (no made-up zero), but the families are always there.
        used = GaugeMetricFamily("runtap_capture_db_memory_bytes", _HELP["db_memory"], labels=["tag"])
        limit = GaugeMetricFamily("runtap_capture_db_memory_limit_bytes", _HELP["db_memory_limit"], labels=[])
        if memory is not None:
            for tag, n in sorted(memory.by_tag.items()):
                used.add_metric([tag], n)
            limit.add_metric([], memory.limit)
        yield used
        yield limit
