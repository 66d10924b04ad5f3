"""Request spans through runtap's deferred export path (records in the batch queue, encoded on the
export thread) are the spans the SDK path produces: same ids, names, attributes, links, statuses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from runtap.analytics.ingest.records import Exchange
from runtap.proxy.addons.otlp_encode import encode_request
from runtap.proxy.addons.request_span import DeferredBatchSpanProcessor, RequestSpan
from runtap.proxy.addons.tracing import Tracing


class _Counting(IdGenerator):
    def __init__(self) -> None:
        self.n = 0

    def generate_span_id(self) -> int:
        self.n += 1
        return self.n

    def generate_trace_id(self) -> int:
        self.n += 1
        return (0xABC << 64) + self.n


class _Collect(SpanExporter):
    def __init__(self) -> None:
        self.items: list[Any] = []

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self.items.extend(spans)
        return SpanExportResult.SUCCESS


_CASES = [  # (method, path, operation)
    ("POST", "/v1/threads/thread_1/runs", "runs.create"),
    ("GET", "/v1/threads/thread_1/runs/run_9", "runs.retrieve"),
    ("GET", "/v1/threads/thread_1/runs/run_9/steps/step_3", "runs.steps.retrieve"),
    ("POST", "/api/projects/p/threads/t/runs/run_2/submit_tool_outputs", "runs.submit_tool_outputs"),
    ("POST", "/v1/responses", "responses.create"),
    ("GET", "/v1/models", "other"),
]
_OPERATIONS = {"runs.steps.retrieve": "steps.retrieve"}


def _tracing(processor: Any, limit: int | None) -> tuple[Tracing, TracerProvider]:
    provider = TracerProvider(resource=Resource.create({"service.name": "runtap"}), id_generator=_Counting(),
                              span_limits=SpanLimits(max_span_attribute_length=limit), shutdown_on_exit=False)
    provider.add_span_processor(processor)
    return Tracing(provider, upstream="http://127.0.0.1:9/base"), provider


def _one(tracing: Tracing, case: int, traceparent: str | None, injected: bool, status: int | None,
         error: str | None) -> None:
    method, path, operation = _CASES[case]
    op = _OPERATIONS.get(operation, operation)
    headers = {"Host": "127.0.0.1:8080", "User-Agent": "OpenAI/Python 1.99 " + "x" * 40}
    if traceparent:
        headers["traceparent"] = traceparent
        headers["tracestate"] = "vendor=v1"
    request = make_mocked_request(method, path, headers=headers)
    exchange = Exchange(id="e1", method=method, path=path, operation=None if op == "other" else op,
                        api_version="v2", key_fingerprint=None, started_at=0.0, api_provider="openai")
    span = tracing.start_request(request, op, exchange)
    if injected:
        tracing.inject(span, CIMultiDict())
    tracing.end_request(span, status, error)


def _timeless(data: bytes) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest.FromString(data)
    for resource in message.resource_spans:
        for scope in resource.scope_spans:
            for span in scope.spans:
                span.start_time_unix_nano = span.end_time_unix_nano = 0
    return message


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.integers(0, len(_CASES) - 1),
       traceparent=st.sampled_from([None, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]),
       injected=st.booleans(), status=st.sampled_from([None, 200, 404, 429, 500, 502]),
       error=st.sampled_from([None, "client_disconnected", "upstream_timeout", "upstream_connect"]),
       limit=st.sampled_from([None, 12]))
def test_deferred_request_spans_equal_the_sdk_paths_spans(case: int, traceparent: str | None, injected: bool,
                                                           status: int | None, error: str | None,
                                                           limit: int | None) -> None:
    collected = _Collect()
    deferred, deferred_provider = _tracing(DeferredBatchSpanProcessor(collected), limit)
    sdk_spans = _Collect()
    plain, _ = _tracing(SimpleSpanProcessor(sdk_spans), limit)
    _one(deferred, case, traceparent, injected, status, error)
    _one(plain, case, traceparent, injected, status, error)
    deferred_provider.force_flush()
    (record,) = collected.items
    assert isinstance(record, RequestSpan)
    spans: list[ReadableSpan] = sdk_spans.items
    assert len(spans) == (2 if injected else 1)
    ours = _timeless(encode_request([record]))
    assert ours == _timeless(encode_spans(spans).SerializeToString())
    assert ours == _timeless(encode_spans(record.readable_spans()).SerializeToString())  # the exporter's fallback
    times = [(s.start_time, s.end_time) for s in record.readable_spans()]
    assert all(start and end and start <= end for start, end in times)
    deferred_provider.shutdown()


def test_runtaps_export_pipeline_takes_records_and_others_get_readable_spans(monkeypatch: Any) -> None:
    from runtap.proxy.addons.tracing import provider_from_env
    for var in ("OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    provider = provider_from_env()
    assert provider is not None
    tracing = Tracing(provider, upstream="http://127.0.0.1:9", owned=True)
    assert tracing._emit is not None  # noqa: SLF001 - the deferred path is the one `runtap serve` runs
    tracing.shutdown()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp,console")
    both = provider_from_env()
    assert both is not None
    assert Tracing(both, upstream="http://127.0.0.1:9", owned=True)._emit is None  # noqa: SLF001 - console needs spans
    both.shutdown()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console,otlp")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")  # otlp is left out: console alone
    console = provider_from_env()
    assert console is not None
    assert Tracing(console, upstream="http://127.0.0.1:9", owned=True)._emit is None  # noqa: SLF001 - as above
    console.shutdown()
