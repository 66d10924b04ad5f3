"""Prometheus metric definitions, on an injected registry.

Request-path metrics are updated by the forwarder; run/step metrics from capture Effects on the
writer thread (prometheus-client is thread-safe). Labels are bounded: no run, thread, step or message id
is ever a label.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Latency of one HTTP exchange: proxied JSON calls take ms to s, streams up to minutes.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
                   600)
# runtap's own time per request: sub-millisecond is the goal, so resolution sits there.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter("runtap_requests", "Proxied requests (operation `other` for non-Runs calls).",
                                ["operation", "code", "stream"], registry=r)
        self.request_duration = Histogram(
            "runtap_request_duration_seconds", "First byte in to last byte out, as the client sees it.",
            ["operation", "stream"], buckets=REQUEST_BUCKETS, registry=r)
        self.upstream_ttfb = Histogram(
            "runtap_upstream_ttfb_seconds", "Request sent upstream to first response byte.",
            ["operation", "stream"], buckets=REQUEST_BUCKETS, registry=r)
        self.proxy_overhead = Histogram(
            "runtap_proxy_overhead_seconds", "Time spent in runtap itself (total minus upstream wait).",
            ["operation"], buckets=OVERHEAD_BUCKETS, registry=r)
        self.upstream_errors = Counter("runtap_upstream_errors", "Upstream failures by reason.", ["reason"],
                                       registry=r)
        self.capture_skipped_total = Counter(
            "runtap_capture_skipped", "Bodies or events relayed but not captured, by reason.", ["reason"],
            registry=r)
        self.capture_queue_depth = Gauge("runtap_capture_queue_depth", "Snapshots waiting to be written.",
                                         registry=r)

    def observe_request(self, operation: str, code: str, stream: bool, duration: float,
                        ttfb: float | None, overhead: float) -> None:
        s = "true" if stream else "false"
        self.requests.labels(operation, code, s).inc()
        self.request_duration.labels(operation, s).observe(duration)
        if ttfb is not None:
            self.upstream_ttfb.labels(operation, s).observe(ttfb)
        self.proxy_overhead.labels(operation).observe(overhead)

    def upstream_error(self, reason: str) -> None:
        self.upstream_errors.labels(reason).inc()

    def capture_skipped(self, reason: str, n: int = 1) -> None:
        self.capture_skipped_total.labels(reason).inc(n)

    def on_effects(self, effects: list[Any]) -> None:
        """Run/step metrics from capture effects; filled in by the metrics work."""

    def on_health(self, what: str, label: str, n: int) -> None:
        """Capture health counters from the writer thread."""
