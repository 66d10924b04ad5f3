"""Every private OpenTelemetry SDK field runtap's tracing reads, in one place.

Tracing's fast path builds finished spans and encodes them to OTLP itself (otlp_encode.py,
run_spans.py): the SDK's public properties copy attributes, events and links on every access and its
live spans validate every attribute, which cost more than the spans are worth on the request path;
otlp_export.py's exporter runs the SDK exporter's own export steps around that encoder. Those
shortcuts read fields the SDK does not promise to keep. They are all named here, and
`incompatibilities()` (run by tests/test_otel_adapter.py against the installed SDK) says loudly
which one an SDK release changed, so the package can declare a version range instead of a pin.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, Final

from opentelemetry.exporter.otlp.proto.common._internal import (
    _encode_instrumentation_scope,
    _encode_resource,
    _encode_value,
)
from opentelemetry.exporter.otlp.proto.http._common import _is_request_too_large
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

__all__ = ["EXPORTER_FIELDS", "SAMPLER_DELEGATES", "SPAN_FIELDS", "batch_emit", "encode_instrumentation_scope",
           "encode_resource", "encode_value", "exporter_fields", "incompatibilities", "instrumentation_scope",
           "is_request_too_large", "root_sampler", "span_fields", "span_limits", "span_processors"]

# The samplers a ParentBased sampler delegates to (tracing reads them to know a decision in advance).
SAMPLER_DELEGATES: Final = ("_root", "_remote_parent_sampled", "_remote_parent_not_sampled",
                            "_local_parent_sampled", "_local_parent_not_sampled")

encode_instrumentation_scope = _encode_instrumentation_scope
encode_resource = _encode_resource
encode_value = _encode_value
is_request_too_large = _is_request_too_large

# OTLPSpanExporter's state its export() reads, which otlp_export.FastOTLPSpanExporter.export reads the
# same way: (shut down, export metrics, max request size, HTTP client).
EXPORTER_FIELDS: Final = ("_shutdown", "_metrics", "_max_request_size", "_client")
exporter_fields: Final = operator.attrgetter(*EXPORTER_FIELDS)

# ReadableSpan's own fields, in the order span_fields returns them; each one's public twin.
SPAN_FIELDS: Final = (
    ("_context", "context"), ("_parent", "parent"), ("_name", "name"), ("_kind", "kind"),
    ("_start_time", "start_time"), ("_end_time", "end_time"), ("_attributes", "attributes"),
    ("_events", "events"), ("_links", "links"), ("_status", "status"),
)
# (context, parent, name, kind, start_time, end_time, attributes, events, links, status), in C.
span_fields: Final = operator.attrgetter(*(private for private, _ in SPAN_FIELDS))


def instrumentation_scope(tracer: Any) -> InstrumentationScope | None:
    """The scope ReadableSpan's last constructor argument takes; the SDK Tracer keeps it private."""
    scope: InstrumentationScope | None = tracer._instrumentation_scope  # noqa: SLF001 - see module doc
    return scope


def span_limits(tracer: Any) -> SpanLimits:
    limits: SpanLimits = tracer._span_limits  # noqa: SLF001 - see module doc
    return limits


def span_processors(tracer: Any) -> tuple[Any, ...] | None:
    """The processors an SDK tracer's spans go to (its provider's SynchronousMultiSpanProcessor's list);
    None when the tracer's processor is of another kind."""
    processors = getattr(tracer.span_processor, "_span_processors", None)
    return processors if isinstance(processors, tuple) else None


def batch_emit(processor: BatchSpanProcessor) -> Callable[[Any], None]:
    """A BatchSpanProcessor's queue append (what its on_end calls once the span is known sampled)."""
    emit: Callable[[Any], None] = processor._batch_processor.emit  # noqa: SLF001 - see module doc
    return emit


def root_sampler(sampler: Any) -> Any:
    """A ParentBased sampler's root sampler (None for any other sampler)."""
    return getattr(sampler, "_root", None)


def delegates(sampler: Any) -> list[Any]:
    return [getattr(sampler, d) for d in SAMPLER_DELEGATES if hasattr(sampler, d)]


def incompatibilities() -> list[str]:
    """What the installed SDK no longer provides as this module expects (empty: all good)."""
    problems: list[str] = []
    tracer = TracerProvider().get_tracer("runtap.otel_private.check", "1")
    try:
        scope = instrumentation_scope(tracer)
        if not isinstance(scope, InstrumentationScope) or scope.name != "runtap.otel_private.check":
            problems.append(f"Tracer._instrumentation_scope is {scope!r}, not the tracer's InstrumentationScope")
    except AttributeError as exc:
        problems.append(f"Tracer._instrumentation_scope: {exc}")
    with tracer.start_as_current_span("check", attributes={"a": 1}) as live:
        live.add_event("e", {"b": 2})
    span: ReadableSpan = live  # type: ignore[assignment]  # the SDK's Span is a ReadableSpan
    try:
        values = span_fields(span)
    except AttributeError as exc:
        return [*problems, f"ReadableSpan field: {exc}"]
    for (private, public), value in zip(SPAN_FIELDS, values, strict=True):
        expected = getattr(span, public)
        if private in ("_attributes", "_events", "_links"):
            same = list(value.items() if private == "_attributes" else value) == list(
                expected.items() if private == "_attributes" else expected)
            if not hasattr(value, "dropped") and private != "_links":
                problems.append(f"ReadableSpan.{private} has no `dropped` count")
        else:
            same = value is expected or value == expected
        if not same:
            problems.append(f"ReadableSpan.{private} is not what .{public} returns")
    try:
        ReadableSpan(span.name, span.context, span.parent, tracer.resource, {}, (), (), span.kind,  # type: ignore[attr-defined]
                     tracer.instrumentation_info, span.status, 1, 2, instrumentation_scope(tracer))  # type: ignore[attr-defined]
    except TypeError as exc:
        problems.append(f"ReadableSpan's positional constructor changed: {exc}")
    if not isinstance(getattr(tracer, "_span_limits", None), SpanLimits):
        problems.append("Tracer._span_limits is not a SpanLimits")
    problems += _processor_incompatibilities()
    parent_based = sampling.ParentBased(sampling.ALWAYS_ON)
    if root_sampler(parent_based) is not sampling.ALWAYS_ON or len(delegates(parent_based)) != len(SAMPLER_DELEGATES):
        problems.append(f"ParentBased no longer keeps its samplers in {SAMPLER_DELEGATES}")
    return problems + _exporter_incompatibilities()


def _exporter_incompatibilities() -> list[str]:
    exporter = OTLPSpanExporter(endpoint="http://127.0.0.1:4318/v1/traces")  # connects nowhere until export
    try:
        shut_down, metrics, max_size, client = exporter_fields(exporter)
    except AttributeError as exc:
        return [f"OTLPSpanExporter field: {exc}"]
    problems = []
    if shut_down is not False:
        problems.append(f"OTLPSpanExporter._shutdown is {shut_down!r} on a new exporter, not False")
    if not callable(getattr(metrics, "export_operation", None)):
        problems.append("OTLPSpanExporter._metrics has no export_operation(n)")
    if not isinstance(max_size, int) or isinstance(max_size, bool):
        problems.append(f"OTLPSpanExporter._max_request_size is {max_size!r}, not a byte count")
    if not callable(getattr(client, "export", None)):
        problems.append("OTLPSpanExporter._client has no export(data)")
    if not is_request_too_large(b"xx", 1) or is_request_too_large(b"x", 1) or is_request_too_large(b"xx", 0):
        problems.append("_is_request_too_large(data, limit) no longer means 0 < limit < len(data)")
    exporter.shutdown()
    if exporter_fields(exporter)[0] is not True:
        problems.append("OTLPSpanExporter.shutdown() no longer sets _shutdown")
    return problems


class _Collect(SpanExporter):
    def __init__(self) -> None:
        self.items: list[Any] = []

    def export(self, spans: Any) -> SpanExportResult:
        self.items.extend(spans)
        return SpanExportResult.SUCCESS


def _processor_incompatibilities() -> list[str]:
    collect = _Collect()
    processor = BatchSpanProcessor(collect)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    try:
        if span_processors(provider.get_tracer("runtap.otel_private.check")) != (processor,):
            return ["Tracer.span_processor._span_processors is not the provider's processors"]
        record = object()
        try:
            batch_emit(processor)(record)
        except AttributeError as exc:
            return [f"BatchSpanProcessor._batch_processor.emit: {exc}"]
        processor.force_flush()
        if collect.items != [record]:
            return ["BatchSpanProcessor._batch_processor.emit does not hand the item to the exporter"]
        return []
    finally:
        provider.shutdown()
