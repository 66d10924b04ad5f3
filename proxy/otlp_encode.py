"""OTLP/protobuf encoding of finished spans, written out by hand.

The SDK's encoder builds a protobuf object per span, per attribute and per attribute value before
serialising; for runtap's two request spans that was ~40 µs of CPU per request, as much as the
rest of tracing. Here each span becomes bytes directly, and the encoding of a (key, value) attribute
pair is cached, since most of them (method, route, host, user agent, model...) repeat on every
request. The output parses to the same ExportTraceServiceRequest as the SDK's `encode_spans`
(tests/test_otlp_encode.py checks that on real and generated spans); values of types this module
does not know are encoded by the SDK's own value encoder.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any, Final

from opentelemetry.exporter.otlp.proto.common._internal import (
    _encode_instrumentation_scope,
    _encode_resource,
    _encode_value,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Link, SpanContext, SpanKind, Status

# Field tags: (field number << 3) | wire type (0 varint, 1 fixed64, 2 length-delimited, 5 fixed32).
_LEN: Final = 2
_KIND: Final = {SpanKind.INTERNAL: 1, SpanKind.SERVER: 2, SpanKind.CLIENT: 3, SpanKind.PRODUCER: 4,
                SpanKind.CONSUMER: 5}
# SpanFlags: the "is remote" bit is known (0x100), and set when the parent came from another process.
_HAS_IS_REMOTE: Final = 0x100
_IS_REMOTE: Final = 0x200
_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack
_pack_double = struct.Struct("<d").pack
_MAX_CACHE: Final = 8192
_attr_cache: dict[tuple[int, str, type, Any], bytes] = {}


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return bytes((tag,)) + _varint(len(payload)) + payload


def _any_value(value: Any) -> bytes:
    """An AnyValue message's bytes; the oneof field is written even when it holds a default."""
    if isinstance(value, str):
        return _field(0x0A, value.encode())
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int) and -(1 << 63) <= value < (1 << 63):
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        array = b"".join(_field(0x0A, _any_value(v)) for v in value)
        return _field(0x2A, array)
    return bytes(_encode_value(value).SerializeToString())


def _attributes(tag: int, attributes: Mapping[str, Any] | None) -> bytes:
    """Repeated KeyValue under `tag`; each field cached by (tag, key, type, value)."""
    if not attributes:
        return b""
    cache = _attr_cache
    parts = []
    for key, value in attributes.items():
        try:
            ck = (tag, key, type(value), value)
            hit = cache.get(ck)
        except TypeError:  # an unhashable value (a list): encode it every time
            ck, hit = None, None
        if hit is None:
            try:
                pair = _field(0x0A, key.encode()) + _field(0x12, _any_value(value))
            except Exception:  # noqa: S112 - as the SDK's encoder does: a value it cannot encode is left out
                continue
            hit = bytes((tag,)) + _varint(len(pair)) + pair
            if ck is not None:
                if len(cache) >= _MAX_CACHE:
                    cache.clear()
                cache[ck] = hit
        parts.append(hit)
    return b"".join(parts)


def _flags(parent: SpanContext | None) -> int:
    return _HAS_IS_REMOTE | _IS_REMOTE if parent is not None and parent.is_remote else _HAS_IS_REMOTE


def _status(status: Status | None) -> bytes:
    if status is None:
        return b""
    body = b""
    if status.description:
        body += _field(0x12, status.description.encode())
    if status.status_code.value:
        body += b"\x18" + _varint(status.status_code.value)
    return _field(0x7A, body)


def _link(link: Link) -> bytes:
    ctx = link.context
    body = (_field(0x0A, ctx.trace_id.to_bytes(16, "big")) + _field(0x12, ctx.span_id.to_bytes(8, "big"))
            + _attributes(0x22, link.attributes))
    if link.dropped_attributes:
        body += b"\x28" + _varint(link.dropped_attributes)
    body += b"\x35" + _pack_fixed32(_flags(ctx))
    return _field(0x6A, body)


def encode_span(span: ReadableSpan) -> bytes:
    """One `Span` message (without its field tag)."""
    ctx = span.get_span_context()
    assert ctx is not None  # noqa: S101 - every ReadableSpan the SDK or runtap builds has one
    parts = [_field(0x0A, ctx.trace_id.to_bytes(16, "big")), _field(0x12, ctx.span_id.to_bytes(8, "big"))]
    state = ctx.trace_state
    if state:
        parts.append(_field(0x1A, ",".join(f"{k}={v}" for k, v in state.items()).encode()))
    parent = span.parent
    if parent:
        parts.append(_field(0x22, parent.span_id.to_bytes(8, "big")))
    if span.name:
        parts.append(_field(0x2A, span.name.encode()))
    parts.append(b"\x30" + _varint(_KIND[span.kind]))
    if span.start_time:
        parts.append(b"\x39" + _pack_fixed64(span.start_time))
    if span.end_time:
        parts.append(b"\x41" + _pack_fixed64(span.end_time))
    parts.append(_attributes(0x4A, span.attributes))
    if span.dropped_attributes:
        parts.append(b"\x50" + _varint(span.dropped_attributes))
    for event in span.events:
        body = b""
        if event.timestamp:
            body += b"\x09" + _pack_fixed64(event.timestamp)
        if event.name:
            body += _field(0x12, event.name.encode())
        body += _attributes(0x1A, event.attributes)
        if event.dropped_attributes:
            body += b"\x20" + _varint(event.dropped_attributes)
        parts.append(_field(0x5A, body))
    if span.dropped_events:
        parts.append(b"\x60" + _varint(span.dropped_events))
    for link in span.links:
        parts.append(_link(link))
    if span.dropped_links:
        parts.append(b"\x70" + _varint(span.dropped_links))
    parts.append(_status(span.status))
    parts.append(b"\x85\x01" + _pack_fixed32(_flags(parent)))
    return b"".join(parts)


def encode_request(spans: Sequence[ReadableSpan]) -> bytes:
    """An ExportTraceServiceRequest: spans grouped by resource, then by instrumentation scope."""
    # Resource.__hash__ JSON-dumps the attributes on every call (1-2% of runtap's CPU when grouping
    # by it per span); every span of a provider shares one Resource object, so group by identity
    # and hash only once per distinct object (equal distinct objects still share a group, as in the SDK).
    groups: list[tuple[Any, dict[Any, list[bytes]]]] = []
    by_id: dict[int, dict[Any, list[bytes]]] = {}
    for span in spans:
        res = span.resource
        scopes = by_id.get(id(res))
        if scopes is None:
            scopes = next((g for r, g in groups if r == res), None)
            if scopes is None:
                scopes = {}
                groups.append((res, scopes))
            by_id[id(res)] = scopes
        scopes.setdefault(span.instrumentation_scope or None, []).append(encode_span(span))
    out = []
    for resource, scopes in groups:
        body = _field(0x0A, bytes(_encode_resource(resource).SerializeToString()))
        for scope, encoded in scopes.items():
            scope_body = _field(0x0A, bytes(_encode_instrumentation_scope(scope).SerializeToString()))
            scope_body += b"".join(_field(0x12, s) for s in encoded)
            if scope is not None and scope.schema_url:
                scope_body += _field(0x1A, scope.schema_url.encode())
            body += _field(0x12, scope_body)
        if resource.schema_url:
            body += _field(0x1A, resource.schema_url.encode())
        out.append(_field(0x0A, body))
    return b"".join(out)
