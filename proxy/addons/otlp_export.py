"""The OTLP/HTTP span exporter with runtap's encoder (proxy/addons/otlp_encode.py) in place of the SDK's.

Everything else is the SDK exporter's own: endpoint, headers, compression, timeout, TLS and retry
all come from the standard OTEL_EXPORTER_OTLP_* variables as before. `export` mirrors the SDK's
(opentelemetry-exporter-otlp-proto-http 1.45.x) step for step, with one line changed; the exporter
state it reads is private, so it reads it through otel_private (checked against the installed SDK).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from .otel_private import exporter_fields, is_request_too_large
from .otlp_encode import encode_request

log = logging.getLogger("runtap.tracing")


class FastOTLPSpanExporter(OTLPSpanExporter):
    takes_request_records = True  # request_span.RequestSpan items are encoded here (tracing.provider_from_env)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        # `spans` may also hold request_span.RequestSpan records (DeferredBatchSpanProcessor's queue).
        shut_down, metrics, max_request_size, client = exporter_fields(self)
        if shut_down:
            return SpanExportResult.FAILURE
        with metrics.export_operation(len(spans)) as result:
            try:
                data = encode_request(spans)
            except Exception as exc:  # the SDK's encoder is the reference; fall back to it
                log.warning("fast OTLP encoding failed (%s: %s); using the SDK encoder", type(exc).__name__, exc)
                try:
                    readable = [s for span in spans for s in (
                        (span,) if isinstance(span, ReadableSpan) else span.readable_spans())]
                    data = encode_spans(readable).SerializePartialToString()
                except Exception as error:
                    result.error = error
                    return SpanExportResult.FAILURE
            if is_request_too_large(data, max_request_size):
                log.warning("dropping a span batch of %d bytes: over the OTLP max request size", len(data))
                return SpanExportResult.FAILURE
            outcome = client.export(data)
            if not outcome.success:
                result.error = outcome.error
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS
