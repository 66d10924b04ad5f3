"""proxy/exposition.py renders what prometheus-client's generate_latest renders, byte for byte, scrape
after scrape (its cache of series prefixes must never show a stale or another series' line)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from runtap.proxy.addons.metrics import Metrics
from runtap.proxy.exposition import TextRenderer
from runtap.proxy.scrape_split import RELAY_FAMILIES, Families

hostile = st.text(st.characters(codec="utf-8"), max_size=12)
amounts = st.floats(min_value=0, max_value=1e12, allow_nan=False) | st.just(math.inf)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(hostile, hostile, amounts), min_size=1, max_size=12))
def test_any_labels_and_values_render_as_generate_latest_does(rows: list[tuple[str, str, float]]) -> None:
    registry = CollectorRegistry()
    c = Counter("t_calls", 'Calls "quoted" \\ and\nnewline.', ["a", "b"], registry=registry)
    g = Gauge("t_level", "Level.", ["a"], registry=registry)
    h = Histogram("t_seconds", "Seconds.", ["b"], buckets=(0.5, 1, 10), registry=registry)
    renderer = TextRenderer()
    for a, b, v in rows:
        c.labels(a, b).inc(v)
        g.labels(a).set(-v)
        h.labels(b).observe(v)
        # again after every change: cached prefixes with fresh values
        assert renderer.render(registry) == generate_latest(registry)


def test_the_relays_families_render_as_generate_latest_does() -> None:
    metrics = Metrics(CollectorRegistry())
    relay = Families(metrics.registry, RELAY_FAMILIES, keep=True)
    renderer = TextRenderer()
    assert renderer.render(relay) == generate_latest(relay)
    for op, code, stream in (("runs.create", "200", False), ("responses.create", "200", True),
                             ("other", "000", False)):
        metrics.observe_request(op, code, stream, 0.3, 0.002, 0.0004)
    metrics.loop_lag.observe(0.003)
    metrics.upstream_error("refused")
    metrics.client_timeout("headers")
    first = renderer.render(relay)
    assert first == generate_latest(relay)
    metrics.observe_request("runs.create", "200", False, 7.0, None, 0.0001)
    second = renderer.render(relay)
    assert second == generate_latest(relay) and second != first
    assert b"runtap_requests_total{" in second and b"runtap_run_transitions" not in second


def test_a_whole_registry_with_collector_families_renders_as_generate_latest_does() -> None:
    # in-process mode's admin and the capture process render everything through it
    metrics = Metrics(CollectorRegistry())
    metrics.capture_skipped("body_too_large", 3)
    metrics.capture_health.error("decode", 'bad "json"\n')
    metrics.on_sse_events({"thread.run.created": 2, "done": 1})
    metrics.on_capture_lag([0.2, 0.7])
    renderer = TextRenderer()
    for _ in range(2):
        assert renderer.render(metrics.registry) == generate_latest(metrics.registry)
