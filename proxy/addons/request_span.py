"""One proxied request's two spans (server, and the client span of the upstream call) as plain values.

The event loop records a request's span values and its end (a few attribute stores); everything else
(the client span's attributes, statuses, the SpanContexts and ReadableSpans, OTLP bytes) is derived
from them later. With runtap's own export pipeline (`DeferredBatchSpanProcessor` around the OTLP
exporter) the finished record itself goes into the batch queue and the export thread encodes both
spans straight to OTLP; with any other span processor the loop hands it the ReadableSpans the SDK
would have produced. Both give the same spans: tests/test_request_span.py checks the bytes parse to
the SDK encoder's output for the ReadableSpans.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode

from ...analytics.ingest.records import Exchange
from . import otel_private
from .otlp_encode import encode_parts
from .run_spans import UNSET, truncate_strings

# Errors the forwarder reports after the upstream answered (the client span has a status code).
_AFTER_RESPONSE: Final = ("upstream_", "client_disconnected")


@dataclass(frozen=True, slots=True)
class SpanSpec:
    """What every request span of one tracer shares."""

    resource: Resource
    scope: InstrumentationScope | None
    instrumentation_info: Any
    max_value: int | None  # the SDK's attribute value length limit (None: unlimited)
    upstream: str
    upstream_host: str
    upstream_port: int


class RequestSpan:
    """A request's spans as values: set on the loop (`start`, `inject`, `finish`), derived elsewhere."""

    __slots__ = ("attrs", "client_id", "client_start", "context", "end", "error", "exchange", "links", "name",
                 "parent", "runs_call", "sampled", "spec", "start", "status")

    def __init__(self, context: SpanContext, parent: SpanContext | None, sampled: bool, name: str,
                 attrs: dict[str, Any], links: list[Link], exchange: Exchange, runs_call: bool,
                 spec: SpanSpec | None) -> None:
        self.context = context
        self.parent = parent
        self.sampled = sampled
        self.name = name
        self.attrs = attrs
        self.links = links
        self.exchange = exchange
        self.runs_call = runs_call
        self.spec = spec
        self.start = time.time_ns()
        self.client_id = 0
        self.client_start = 0  # 0: the upstream call never started, so there is no client span
        self.end = 0
        self.status: int | None = None
        self.error: str | None = None

    # A record in the batch queue is grouped with the SDK's spans by these two (otlp_encode.encode_request).
    @property
    def resource(self) -> Resource:
        assert self.spec is not None  # noqa: S101 - only sampled spans of an SDK tracer are finished
        return self.spec.resource

    @property
    def instrumentation_scope(self) -> InstrumentationScope | None:
        assert self.spec is not None  # noqa: S101 - as above
        return self.spec.scope

    def outcome(self) -> tuple[dict[str, Any] | None, Status, dict[str, Any], Status]:
        """(client attributes or None without a client span, client status, server attributes, server
        status): OTel HTTP conventions, error.type and status as the forwarder's outcome says."""
        spec, status, error = self.spec, self.status, self.error
        assert spec is not None  # noqa: S101 - as above
        client_attrs: dict[str, Any] | None = None
        client_status = UNSET
        if self.client_start:
            ex = self.exchange
            client_attrs = {"http.request.method": ex.method, "server.address": spec.upstream_host,
                            "server.port": spec.upstream_port, "url.full": spec.upstream + ex.path}
            answered = error is None or error.startswith(_AFTER_RESPONSE)
            if answered and status is not None:
                client_attrs["http.response.status_code"] = status
            if error is not None or (status is not None and status >= 400):
                kind = error or str(status)
                client_attrs["error.type"] = kind
                client_status = Status(StatusCode.ERROR, kind)
        attrs = self.attrs
        server_status = UNSET
        if status is not None:
            attrs["http.response.status_code"] = status
        failed = status is not None and status >= 500
        if error is not None:
            attrs["error.type"] = error
        elif failed:
            attrs["error.type"] = str(status)
        if failed or (error is not None and error != "client_disconnected"):
            server_status = Status(StatusCode.ERROR, error or str(status))
        if spec.max_value is not None:
            truncate_strings(attrs, spec.max_value)
            if client_attrs is not None:
                truncate_strings(client_attrs, spec.max_value)
        return client_attrs, client_status, attrs, server_status

    def client_context(self) -> SpanContext:
        server = self.context
        return SpanContext(server.trace_id, self.client_id, is_remote=False, trace_flags=server.trace_flags,
                           trace_state=server.trace_state)

    def readable_spans(self) -> list[ReadableSpan]:
        """The ReadableSpans an SDK tracer would have finished: client (when there is one), then server."""
        spec = self.spec
        assert spec is not None  # noqa: S101 - as above
        client_attrs, client_status, attrs, server_status = self.outcome()
        out = []
        if client_attrs is not None:
            out.append(ReadableSpan(self.name, self.client_context(), self.context, spec.resource, client_attrs, (),
                                    (), SpanKind.CLIENT, spec.instrumentation_info, client_status,
                                    self.client_start, self.end, spec.scope))
        out.append(ReadableSpan(self.name, self.context, self.parent, spec.resource, attrs, (), self.links,
                                SpanKind.SERVER, spec.instrumentation_info, server_status, self.start, self.end,
                                spec.scope))
        return out

    def encode(self) -> list[bytes]:
        """Both spans' OTLP `Span` messages, as otlp_encode.encode_span writes the readable_spans()."""
        client_attrs, client_status, attrs, server_status = self.outcome()
        ctx = self.context
        out = []
        if client_attrs is not None:
            out.append(encode_parts(ctx.trace_id, self.client_id, ctx.trace_state, ctx, self.name, SpanKind.CLIENT,
                                    self.client_start, self.end, client_attrs, (), client_status))
        out.append(encode_parts(ctx.trace_id, ctx.span_id, ctx.trace_state, self.parent, self.name, SpanKind.SERVER,
                                self.start, self.end, attrs, self.links, server_status))
        return out


class DeferredBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor whose queue also takes finished `RequestSpan` records, for an exporter
    that knows them (otlp_export.FastOTLPSpanExporter): the loop's share of a request's spans is then
    one queue append (`otel_private.batch_emit`)."""


def deferred_processor(tracer: Any) -> DeferredBatchSpanProcessor | None:
    """The tracer's one span processor when it is a DeferredBatchSpanProcessor (runtap's own export
    pipeline); None otherwise: then every processor gets ReadableSpans."""
    processors = otel_private.span_processors(tracer)
    if processors is not None and len(processors) == 1 and type(processors[0]) is DeferredBatchSpanProcessor:
        return processors[0]
    return None
