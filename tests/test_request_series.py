"""The relay's request series scrape exactly as prometheus-client's Counter and Histogram would, for any
observations (request_series.py replaces them on the hot path)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from runtap.proxy.addons.metrics import OVERHEAD_BUCKETS, Metrics
from runtap.proxy.addons.request_series import CounterSeries, HistogramSeries, SeriesCollector

_CREATED = re.compile(rb"^(\S+_created\{[^}]*\}) \S+$", re.M)

values = (st.floats(min_value=0.0, max_value=2.0, allow_nan=False) | st.sampled_from(OVERHEAD_BUCKETS)
          | st.sampled_from([float("nan"), float("inf")]))  # NaN: in no bucket, as prometheus-client
observations = st.lists(st.tuples(st.sampled_from(["runs.create", "other"]), st.sampled_from(["200", "503"]),
                                  values), max_size=60)


def _without_created(text: bytes) -> bytes:
    return _CREATED.sub(rb"\1 T", text)


@given(observations)
def test_scrape_equals_prometheus_client(obs: list[tuple[str, str, float]]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counter = CounterSeries("t_requests", "Requests.", ["operation", "code"])
    hist = HistogramSeries("t_seconds", "Seconds.", ["operation"], OVERHEAD_BUCKETS)
    SeriesCollector([counter, hist], ours)
    ref_counter = Counter("t_requests", "Requests.", ["operation", "code"], registry=theirs)
    ref_hist = Histogram("t_seconds", "Seconds.", ["operation"], buckets=OVERHEAD_BUCKETS, registry=theirs)
    for op, code, v in obs:
        counter.labels(op, code).value += 1
        hist.labels(op).observe(v)
        ref_counter.labels(op, code).inc()
        ref_hist.labels(op).observe(v)
    assert _without_created(generate_latest(ours)) == _without_created(generate_latest(theirs))


def test_metrics_request_families_read_like_before() -> None:
    registry = CollectorRegistry()
    m = Metrics(registry)
    m.observe_request("runs.create", "200", False, 0.003, 0.002, 0.0004)
    m.observe_request("runs.create", "200", False, 7.0, None, 0.0001)
    get = registry.get_sample_value
    assert get("runtap_requests_total", {"operation": "runs.create", "code": "200", "stream": "false"}) == 2
    assert get("runtap_request_duration_seconds_count", {"operation": "runs.create", "stream": "false"}) == 2
    assert get("runtap_request_duration_seconds_sum", {"operation": "runs.create", "stream": "false"}) == 7.003
    assert get("runtap_upstream_ttfb_seconds_count", {"operation": "runs.create", "stream": "false"}) == 1
    assert get("runtap_proxy_overhead_seconds_bucket", {"operation": "runs.create", "le": "0.0001"}) == 1
    assert get("runtap_proxy_overhead_seconds_bucket", {"operation": "runs.create", "le": "0.0005"}) == 2


def test_a_second_family_of_the_same_name_is_refused() -> None:
    registry = CollectorRegistry()
    SeriesCollector([CounterSeries("t_requests", "Requests.", ["code"])], registry)
    with pytest.raises(ValueError, match="Duplicated"):
        Counter("t_requests", "Again.", ["code"], registry=registry)


def test_unordered_buckets_are_refused() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        HistogramSeries("t_seconds", "Seconds.", ["operation"], (0.5, 0.1))
