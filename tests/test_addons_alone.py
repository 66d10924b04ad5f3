"""The metrics and tracing addons, each alone behind a Tap and driven by a fake relay (no sockets, no
capture): what the relay's hooks give them is all they need (tests/test_tap.py does the same for capture)."""

from __future__ import annotations

from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from runtap.analytics.ingest.records import Exchange
from runtap.proxy.addons.metrics import Metrics
from runtap.proxy.addons.tracing import Tracing
from runtap.proxy.tap import CLIENT_DISCONNECTED, Flow, Tap

PATH = "/v1/threads/thread_1/runs/run_1"
APP_TRACE = "0af7651916cd43dd8448eb211c80319c"


def flow(operation: str = "runs.retrieve") -> Flow:
    exchange = Exchange(id="x1", method="GET", path=PATH, operation=operation, api_version="v2",
                        key_fingerprint="fp", started_at=1.0)
    return Flow(exchange, operation, 0.0)


def relay(tap: Tap, f: Flow, status: int | None, *, fail: str | None = None) -> None:
    """What Forwarder does after sending upstream, minus the sockets."""
    f.status = status
    if status is not None:
        f.ttfb = f.upstream_wait = 0.1
        tap.response_headers(f)
        tap.chunk(f, b"{}")
    if fail is None:
        tap.end(f)
    else:
        f.error = fail
        tap.error(f, fail)
    f.duration = 0.25
    tap.done(f)


def test_the_metrics_addon_counts_what_the_relay_reports() -> None:
    registry = CollectorRegistry()
    tap = Tap([Metrics(registry)])
    relay(tap, flow(), 200)
    relay(tap, flow(), 502, fail="connect_error")
    relay(tap, flow(), 200, fail=CLIENT_DISCONNECTED)

    def requests(code: str) -> float | None:
        return registry.get_sample_value("runtap_requests_total",
                                         {"operation": "runs.retrieve", "code": code, "stream": "false"})

    assert requests("200") == 2 and requests("502") == 1
    assert registry.get_sample_value("runtap_upstream_errors_total", {"reason": "connect_error"}) == 1
    # a client that left is not an upstream failure
    assert registry.get_sample_value("runtap_upstream_errors_total", {"reason": CLIENT_DISCONNECTED}) is None
    assert registry.get_sample_value("runtap_proxy_overhead_seconds_count", {"operation": "runs.retrieve"}) == 3


def test_the_tracing_addon_continues_the_apps_trace_and_ends_the_span_with_the_status() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tap = Tap([Tracing(provider, upstream="http://127.0.0.1:9")])
    f = flow()
    app_parent = f"00-{APP_TRACE}-b7ad6b7169203331-01"
    tap.request(f, make_mocked_request("GET", PATH, headers={"traceparent": app_parent, "Host": "runtap:8080"}))
    upstream = CIMultiDict[str]()
    tap.upstream_request(f, upstream)
    relay(tap, f, 503, fail="upstream_closed")
    # the upstream sees the app's trace, continued by runtap's span, not the app's own parent span
    version, trace_id, parent_id, _ = upstream["traceparent"].split("-")
    assert (version, trace_id) == ("00", APP_TRACE) and parent_id != "b7ad6b7169203331"
    server = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert len(server) == 1
    (span,) = server
    assert span.name == "GET /v1/threads/{thread_id}/runs/{run_id}"
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 503
    assert span.attributes["error.type"] == "upstream_closed"
    assert span.attributes["openai.run.id"] == "run_1"
    assert format(span.context.trace_id, "032x") == APP_TRACE
    provider.shutdown()
