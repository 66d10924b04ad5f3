"""runtap's hand-written OTLP encoder against the SDK's: the same message for any span."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from runtap.proxy.addons.otlp_encode import encode_request

_text = st.text(max_size=12)
# values past 127 bytes take a two-byte length (the inline encoding's other branch)
_long_text = st.text(min_size=60, max_size=200)
_scalar = st.one_of(_text, _long_text, st.booleans(), st.integers(-(1 << 63), (1 << 63) - 1),
                    st.floats(allow_nan=False))
_value = st.one_of(_scalar, st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=3),
                   st.lists(_text, max_size=3).map(tuple))
# runtap's per-request keys (ids, paths, URLs) are encoded without the cache
_keys = st.one_of(st.text(min_size=1, max_size=8), st.sampled_from(["url.path", "url.full", "openai.run.id"]))
_attrs = st.dictionaries(_keys, _value, max_size=6)
_ids = st.integers(1, (1 << 64) - 1)
_trace_ids = st.integers(1, (1 << 128) - 1)


@st.composite
def _context(draw: Any, *, remote: bool | None = None) -> SpanContext:
    state = draw(st.sampled_from([TraceState(), TraceState([("vendor", "v1")]),
                                  TraceState([("a", "1"), ("b", "2")])]))
    return SpanContext(draw(_trace_ids), draw(_ids), draw(st.booleans()) if remote is None else remote,
                       TraceFlags(draw(st.sampled_from([0, 1, 3]))), state)


_resources = [Resource.create({"service.name": "runtap"}), Resource({"a": 1}, schema_url="https://s/1")]
_scopes = [None, InstrumentationScope("runtap.proxy"), InstrumentationScope("runtap.runs", "1.0", "https://s/2",
                                                                                {"k": "v"})]


@st.composite
def _span(draw: Any) -> ReadableSpan:
    events = [Event(draw(_text), draw(_attrs), timestamp=draw(st.integers(0, 1 << 63)))
              for _ in range(draw(st.integers(0, 3)))]
    links = [Link(draw(_context()), draw(_attrs)) for _ in range(draw(st.integers(0, 2)))]
    code = draw(st.sampled_from(list(StatusCode)))
    status = Status(code, draw(_text) if code == StatusCode.ERROR else None)
    return ReadableSpan(
        draw(_text), draw(_context(remote=False)), draw(st.one_of(st.none(), _context())),
        draw(st.sampled_from(_resources)), draw(_attrs), events, links, draw(st.sampled_from(list(SpanKind))),
        None, status, draw(st.integers(0, 1 << 63)), draw(st.integers(0, 1 << 63)),
        draw(st.sampled_from(_scopes)),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_span(), min_size=1, max_size=6))
def test_fast_encoding_parses_to_the_sdk_encoding(spans: list[ReadableSpan]) -> None:
    ours = ExportTraceServiceRequest.FromString(encode_request(spans))
    assert ours == encode_spans(spans)


def test_cached_attribute_pairs_keep_their_types() -> None:
    """1, 1.0 and True are equal as dict keys; each must still be encoded as its own type."""
    ctx = SpanContext(1, 2, False)
    spans = [ReadableSpan("s", ctx, attributes={"k": v}) for v in (1, 1.0, True, "1")]
    decoded = ExportTraceServiceRequest.FromString(encode_request(spans))
    values = [s.attributes[0].value for s in decoded.resource_spans[0].scope_spans[0].spans]
    assert [v.WhichOneof("value") for v in values] == ["int_value", "double_value", "bool_value", "string_value"]
    assert decoded == encode_spans(spans)


def test_dropped_counts_survive_a_limit_of_zero() -> None:
    """A span limit of 0 keeps nothing but still counts what it dropped (OTEL_SPAN_EVENT_COUNT_LIMIT=0
    and the like): the counts must be encoded though the containers are empty."""
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider

    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=0, max_events=0, max_links=0))
    span = provider.get_tracer("t").start_span(
        "s", attributes={"a": 1}, links=[Link(SpanContext(3, 4, False), {})])
    span.add_event("e", {"k": "v"})
    span.end()
    assert (span.dropped_attributes, span.dropped_events, span.dropped_links) == (1, 1, 1)
    decoded = ExportTraceServiceRequest.FromString(encode_request([span]))
    (out,) = decoded.resource_spans[0].scope_spans[0].spans
    assert (out.dropped_attributes_count, out.dropped_events_count, out.dropped_links_count) == (1, 1, 1)
    assert decoded == encode_spans([span])


def test_an_unencodable_string_leaves_out_that_attribute_only() -> None:
    """Header bytes that are not UTF-8 reach attributes as lone surrogates (aiohttp's parser): like
    the SDK's encoder, the attribute is left out and the rest of the span is kept."""
    # url.path: one of the per-request keys, encoded without the cache
    attrs = {"user_agent.original": "a\udcffb", "ok": "x", "url.path": "/v1/\udcff", "url.full": "http://u/v1"}
    spans = [ReadableSpan("s", SpanContext(1, 2, False), attributes=attrs)]
    decoded = ExportTraceServiceRequest.FromString(encode_request(spans))
    (out,) = decoded.resource_spans[0].scope_spans[0].spans
    assert [a.key for a in out.attributes] == ["ok", "url.full"]
    assert decoded == encode_spans(spans)
