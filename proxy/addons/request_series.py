"""The relay's per-request metric families as one collector of plain counters, exported exactly as
prometheus-client's Counter and Histogram would export them (same names, samples, `_created` series).

prometheus-client takes a lock per increment and scans the buckets in Python: a request's counter and
three histograms cost about a dozen locked increments. These series are written only by the relay's
event loop, so an observation here is a bisect and two additions; a scrape (from the admin thread)
copies each series' counts in one step, so a histogram's `_count` always equals its `+Inf` bucket.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

_INF: Final = float("inf")


class Count:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0
        self.created = time.time()


class Buckets:
    """One labelled histogram: counts per bucket (the last one is +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "created", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        if value != value:  # NaN: in no bucket and not counted, as prometheus-client does
            self.total += value
            return
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bucket whose bound is >= value
        self.total += value


class CounterSeries:
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name, self.documentation, self._labelnames = name, documentation, tuple(labelnames)
        self._children: dict[tuple[str, ...], Count] = {}

    def labels(self, *values: str) -> Count:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = Count()
        return child

    def collect(self) -> Metric:
        fam = Metric(self.name, self.documentation, "counter")
        for values, child in list(self._children.items()):
            labels = dict(zip(self._labelnames, values, strict=True))
            fam.add_sample(self.name + "_total", labels, float(child.value))
            fam.add_sample(self.name + "_created", labels, child.created)
        return fam


class HistogramSeries:
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 buckets: Sequence[float]) -> None:
        bounds = tuple(float(b) for b in buckets)
        if list(bounds) != sorted(set(bounds)) or _INF in bounds:
            raise ValueError(f"{name}: buckets must be finite and strictly increasing")
        self.name, self.documentation, self._labelnames = name, documentation, tuple(labelnames)
        self._bounds = bounds
        self._les = [floatToGoString(b) for b in bounds] + ["+Inf"]
        self._children: dict[tuple[str, ...], Buckets] = {}

    def labels(self, *values: str) -> Buckets:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = Buckets(self._bounds)
        return child

    def collect(self) -> Metric:
        fam = Metric(self.name, self.documentation, "histogram")
        name = self.name
        for values, child in list(self._children.items()):
            counts, total = child.counts[:], child.total
            labels = dict(zip(self._labelnames, values, strict=True))
            acc = 0
            for le, n in zip(self._les, counts, strict=True):
                acc += n
                fam.add_sample(name + "_bucket", {**labels, "le": le}, float(acc))
            fam.add_sample(name + "_count", labels, float(acc))
            fam.add_sample(name + "_sum", labels, total)
            fam.add_sample(name + "_created", labels, child.created)
        return fam


class SeriesCollector:
    """Registers a fixed list of series on a registry, in order."""

    def __init__(self, series: Sequence[CounterSeries | HistogramSeries],
                 registry: CollectorRegistry) -> None:
        self._series = tuple(series)
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        for series in self._series:
            yield series.collect()

    def describe(self) -> Iterator[Metric]:
        # Names only, so the registry refuses a duplicate at registration as it does for its own metrics.
        for series in self._series:
            yield Metric(series.name, series.documentation,
                         "counter" if isinstance(series, CounterSeries) else "histogram")
