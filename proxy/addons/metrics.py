"""Prometheus metrics on an injected registry: request path, capture health, and (via RunMetrics) runs.

Request-path metrics are updated by the forwarder on the event loop, run/step metrics from the writer
thread (prometheus-client is thread-safe); capture health is read at scrape time (capture_health.py).
Labels are bounded: no run, thread, step or message id is ever a label, and every label whose values
come from the upstream goes through a LabelValues cap (see run_metrics.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ...analytics.ingest.health import CaptureHealth, Kind
from ...analytics.ingest.merge import Effect
from ..tap import CLIENT_DISCONNECTED, CLIENT_TIMEOUT, Flow
from .capture_health import CaptureHealthCollector
from .request_series import Buckets, Count, CounterSeries, HistogramSeries, SeriesCollector
from .response_metrics import ResponseMetrics
from .run_metrics import EFFECT_ERROR, LabelValues, RunMetrics

# Latency of one HTTP exchange: proxied JSON calls take milliseconds to seconds (a run create or a
# poll), streams last as long as the run, minutes for tool-heavy ones; read_timeout defaults to 600 s.
REQUEST_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
                          120, 300, 600)
# runtap's own time per request: sub-millisecond is the goal, so the resolution sits there.
OVERHEAD_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)

# Event-loop lag: healthy is well under a millisecond; the bar is 10 ms; GC pauses and
# saturation reach tens to hundreds of ms, so the buckets resolve the 1-10 ms range and then coarsen.
LAG_BUCKETS: Final = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

# Capture lag (request done -> its row committed): the writer aims at 0.5 s, the bar is 1 s, so the
# buckets resolve 0.1-3 s finely (a p99 of 1.1 s must not read as "<= 1.5 s", nor 2.1 s as "<= 3 s");
# a backlog or a reopening store shows as seconds to minutes.
CAPTURE_LAG_BUCKETS: Final = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1, 1.1, 1.25, 1.5, 1.75, 2, 2.5,
                              3, 4, 5, 10, 30, 60, 300)

def _flag(stream: bool) -> str:
    return "true" if stream else "false"


class Metrics:
    """Every runtap metric. Method names are what the forwarder and the capture writer call."""

    def __init__(self, registry: CollectorRegistry | None = None, *, label_assistant: bool = False) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # The per-request families: plain counters written by the event loop (request_series.py).
        self.requests = CounterSeries("runtap_requests", "Proxied requests (operation `other` for non-Runs calls).",
                                      ["operation", "code", "stream"])
        self.request_duration = HistogramSeries(
            "runtap_request_duration_seconds", "First byte in to last byte out, as the client sees it.",
            ["operation", "stream"], REQUEST_BUCKETS)
        self.upstream_ttfb = HistogramSeries(
            "runtap_upstream_ttfb_seconds", "Request sent upstream to first response byte.",
            ["operation", "stream"], REQUEST_BUCKETS)
        self.proxy_overhead = HistogramSeries(
            "runtap_proxy_overhead_seconds", "Time spent in runtap itself (total minus upstream wait).",
            ["operation"], OVERHEAD_BUCKETS)
        SeriesCollector([self.requests, self.request_duration, self.upstream_ttfb, self.proxy_overhead], r)
        self.upstream_errors = Counter("runtap_upstream_errors", "Upstream failures by reason.", ["reason"],
                                       registry=r)
        self.client_timeouts = Counter(
            "runtap_client_timeouts", "Client connections closed for sending too slowly (--client-timeout): "
            "phase headers (no complete request in time; idle keep-alive too) or body (a body read; 408).",
            ["phase"], registry=r)
        self.sse_events = Counter("runtap_sse_events",
                                  "SSE events relayed on Runs and Responses streams, by event name.",
                                  ["event"], registry=r)
        self.capture_queue_depth = Gauge("runtap_capture_queue_depth", "Snapshots waiting to be written.",
                                         registry=r)
        # runtap_capture_written/dropped/errors/skipped/spooled/replayed/store_open: built at scrape
        # time from the one set of counters the capture writer (or the capture channel) records into.
        self.capture_health = CaptureHealth()
        self.capture_health_collector = CaptureHealthCollector(self.capture_health)
        r.register(self.capture_health_collector)
        self.capture_lag = Histogram(
            "runtap_capture_lag_seconds", "From a proxied request's last byte to the commit that made its rows "
            "(its requests row, and the runs and steps it showed) visible in DuckDB; spooled ones are not observed.",
            buckets=CAPTURE_LAG_BUCKETS, registry=r)
        # Whether this scrape holds every family this target exports: always in-process; in
        # --capture-mode process the relay sets it per scrape (capture_admin.py), and only it exports it.
        self.capture_metrics_up = Gauge(
            "runtap_capture_metrics_up", "1 when this scrape holds the capture writer's own families; 0 when "
            "the capture process (--capture-mode process) did not answer in time and the relay's registry "
            "stands in for them.", registry=r)
        self.capture_metrics_up.set(1)
        self.loop_lag = Histogram(
            "runtap_event_loop_lag_seconds", "How late a 100 ms timer on the proxy's event loop fires: the "
            "delay any proxied byte would have had at that moment.", buckets=LAG_BUCKETS, registry=r)
        # SSE event names come from upstream data; cap them like every other such label.
        self._events = LabelValues(128)
        self.runs = RunMetrics(r, label_assistant=label_assistant, on_skip=self.capture_skipped)
        self.responses = ResponseMetrics(r, runs=self.runs)
        self._effect_handlers = {**self.runs.handlers(), **self.responses.handlers()}
        # Children per (operation, code, stream), found with one lookup per proxied request. Operations
        # and codes are bounded, so this dict is too.
        self._request_children: dict[tuple[str, str, bool], tuple[Count, Buckets, Buckets, Buckets]] = {}

    # --- request path (event loop): the tap's hooks --------------------------------------------------

    def error(self, flow: Flow, reason: str) -> None:
        if reason == CLIENT_TIMEOUT:
            self.client_timeout("body")
        elif reason != CLIENT_DISCONNECTED:
            self.upstream_error(reason)

    def done(self, flow: Flow) -> None:
        duration = flow.duration
        self.observe_request(flow.op_label, str(flow.status) if flow.status is not None else "000", flow.streamed,
                             duration, flow.ttfb, max(duration - flow.upstream_wait, 0.0))

    def observe_request(self, operation: str, code: str, stream: bool, duration: float,
                        ttfb: float | None, overhead: float) -> None:
        key = (operation, code, stream)
        children = self._request_children.get(key)
        if children is None:
            s = _flag(stream)
            children = (self.requests.labels(operation, code, s),
                        self.request_duration.labels(operation, s),
                        self.upstream_ttfb.labels(operation, s),
                        self.proxy_overhead.labels(operation))
            self._request_children[key] = children
        requests, request_duration, upstream_ttfb, proxy_overhead = children
        requests.value += 1
        request_duration.observe(duration)
        if ttfb is not None:
            upstream_ttfb.observe(ttfb)
        proxy_overhead.observe(overhead)

    def client_timeout(self, phase: str) -> None:
        self.client_timeouts.labels(phase).inc()

    def upstream_error(self, reason: str) -> None:
        self.upstream_errors.labels(reason).inc()

    def capture_skipped(self, reason: str, n: int = 1) -> None:
        self.capture_health.add(Kind.SKIPPED, reason, n)

    # --- capture writer thread ---------------------------------------------------------------------

    def on_effects(self, effects: list[Effect]) -> None:
        """Runs' and responses' effects in one pass, one handler call each; an effect that raises is
        counted (metrics_effect_error) and costs no other effect its metrics."""
        handlers = self._effect_handlers
        for e in effects:
            handle = handlers.get(type(e))
            if handle is not None:
                try:
                    handle(e)
                except Exception:
                    self.capture_skipped(EFFECT_ERROR)

    def on_capture_lag(self, lags: Sequence[float]) -> None:
        observe = self.capture_lag.observe
        for lag in lags:
            observe(max(lag, 0.0))

    def on_sse_events(self, counts: Mapping[str, int]) -> None:
        """Events decoded since the last call, by event name (the writer passes deltas)."""
        for name, n in counts.items():
            if n > 0:
                self.sse_events.labels(self._events(name)).inc(n)
