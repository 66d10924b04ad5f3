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

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode

from .otel_private import encode_instrumentation_scope, encode_resource, encode_value, span_fields

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
_SMALL: Final = tuple(bytes((n,)) for n in range(0x80))  # the varint of a number below 128
_attr_cache: dict[tuple[int, str, type, Any], bytes] = {}
_str_cache: dict[int, dict[tuple[str, str], bytes]] = {}


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
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
    return bytes(encode_value(value).SerializeToString())


# Values that differ on every request (ids, paths, URLs): caching them only evicts the values that
# repeat, so they are encoded each time and never stored.
_UNIQUE_KEYS: Final = frozenset({"url.path", "url.full", "openai.run.id", "openai.run.step.id",
                                 "gen_ai.response.id"})
_key_fields: dict[str, bytes] = {}  # key -> its KeyValue.key field (keys are runtap's and the SDK's: few)


def _string_pair(tag: int, key: str, value: str) -> bytes:
    """A KeyValue with a string value under `tag` (the key's field cached): the miss path of _attributes."""
    key_field = _key_fields.get(key)
    if key_field is None:
        key_field = _field(0x0A, key.encode())
        if len(_key_fields) < _MAX_CACHE:
            _key_fields[key] = key_field
    pair = key_field + _field(0x12, _field(0x0A, value.encode()))  # value: AnyValue.string_value
    return bytes((tag,)) + _varint(len(pair)) + pair


def _attributes(tag: int, attributes: Mapping[str, Any] | None) -> bytes:
    """Repeated KeyValue under `tag`; each field cached by (tag, key, type, value).

    String values (nearly all of runtap's) take a cache keyed by (key, value) alone: a string never
    equals a value of another type, so the type is not needed to tell them apart. Values of
    _UNIQUE_KEYS are not cached.
    """
    if not attributes:
        return b""
    cache = _attr_cache
    strings = _str_cache.get(tag)
    if strings is None:
        strings = _str_cache[tag] = {}
    parts = []
    for key, value in attributes.items():
        if type(value) is str:
            try:
                if key in _UNIQUE_KEYS:
                    parts.append(_string_pair(tag, key, value))
                    continue
                sk = (key, value)
                hit = strings.get(sk)
                if hit is None:
                    hit = _string_pair(tag, key, value)
                    if len(strings) >= _MAX_CACHE:
                        strings.clear()
                    strings[sk] = hit
            except UnicodeEncodeError:  # a lone surrogate (undecodable header bytes): left out, as the SDK does
                continue
            parts.append(hit)
            continue
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


_KIND_FIELD: Final = {kind: b"\x30" + _varint(n) for kind, n in _KIND.items()}
_SERVER: Final = _KIND_FIELD[SpanKind.SERVER]
_CLIENT: Final = _KIND_FIELD[SpanKind.CLIENT]
_UNSET_FIELD: Final = b"\x7a\x00"  # an empty Status message: code UNSET, no description
_FLAGS_LOCAL: Final = b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE)
_FLAGS_REMOTE: Final = b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE | _IS_REMOTE)
_pack_times = struct.Struct("<BQBQ").pack  # start (field 7) and end (field 8), both fixed64
_name_cache: dict[str, bytes] = {}
_status_cache: dict[tuple[Any, str | None], bytes] = {}


def _name_field(name: str) -> bytes:
    hit = _name_cache.get(name)
    if hit is None:
        hit = _field(0x2A, name.encode())
        if len(_name_cache) < _MAX_CACHE:  # names are route templates: a handful
            _name_cache[name] = hit
    return hit


def _status_field(status: Status | None) -> bytes:
    if status is None:
        return b""
    if status.status_code is StatusCode.UNSET and not status.description:
        return _UNSET_FIELD
    key = (status.status_code, status.description)
    hit = _status_cache.get(key)
    if hit is None:
        hit = _status(status)
        if len(_status_cache) < _MAX_CACHE:
            _status_cache[key] = hit
    return hit


def _dropped(tag: int, container: Any) -> bytes:
    """The dropped-count field for a span's attributes, events or links (the SDK's bounded containers
    count what their limit refused). Written whether or not anything was kept: a limit of 0 leaves the
    container empty but counting."""
    dropped = getattr(container, "dropped", 0)
    return bytes((tag,)) + _varint(dropped) if dropped else b""


def encode_span(span: ReadableSpan) -> bytes:
    """One `Span` message (without its field tag).

    Reads the span's own fields (otel_private.span_fields) rather than its properties: those copy the
    attributes, events and links into new containers on every access, which was a third of the encoding time. The fixed
    parts (name, kind, status, flags) repeat on every request span and are cached as bytes.
    """
    ctx, parent, name, kind, start, end, attributes, events, links, status = span_fields(span)
    assert ctx is not None  # noqa: S101 - every ReadableSpan the SDK or runtap builds has one
    out = _head(ctx.trace_id, ctx.span_id, ctx.trace_state, parent, name, kind, start, end)
    out += _attributes(0x4A, attributes) + _dropped(0x50, attributes)
    for event in events:
        body = b""
        if event.timestamp:
            body += b"\x09" + _pack_fixed64(event.timestamp)
        if event.name:
            body += _field(0x12, event.name.encode())
        body += _attributes(0x1A, event.attributes)
        if event.dropped_attributes:
            body += b"\x20" + _varint(event.dropped_attributes)
        out += _field(0x5A, body)
    out += _dropped(0x60, events)
    for link in links:
        out += _link(link)
    out += _dropped(0x70, links)
    out += _status_field(status)
    return out + (_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)


def _head(trace_id: int, span_id: int, state: Any, parent: SpanContext | None, name: str, kind: SpanKind,
          start: int | None, end: int | None) -> bytes:
    """A Span message's ids, trace state, parent, name, kind and times: fields 1-8, in field order."""
    out = b"\x0a\x10" + trace_id.to_bytes(16, "big") + b"\x12\x08" + span_id.to_bytes(8, "big")
    if state:
        out += _field(0x1A, ",".join(f"{k}={v}" for k, v in state.items()).encode())
    if parent:
        out += b"\x22\x08" + parent.span_id.to_bytes(8, "big")
    if name:
        out += _name_field(name)
    out += _SERVER if kind is SpanKind.SERVER else _CLIENT if kind is SpanKind.CLIENT else _KIND_FIELD[kind]
    if start and end:
        out += _pack_times(0x39, start, 0x41, end)
    elif start:
        out += b"\x39" + _pack_fixed64(start)
    elif end:
        out += b"\x41" + _pack_fixed64(end)
    return out


def encode_parts(trace_id: int, span_id: int, state: Any, parent: SpanContext | None, name: str, kind: SpanKind,
                 start: int, end: int, attributes: Mapping[str, Any], links: Sequence[Link],
                 status: Status | None) -> bytes:
    """One `Span` message without events, from its values: what encode_span writes for a ReadableSpan
    with these fields and plain (uncounted) attribute and link containers (request_span.py)."""
    out = _head(trace_id, span_id, state, parent, name, kind, start, end)
    out += _attributes(0x4A, attributes)
    for link in links:
        out += _link(link)
    out += _status_field(status)
    return out + (_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)


def encode_request(spans: Sequence[Any]) -> bytes:
    """An ExportTraceServiceRequest: spans grouped by resource, then by instrumentation scope.

    An item that is not a ReadableSpan is a request_span.RequestSpan record: it writes its own spans."""
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
        encoded = scopes.setdefault(span.instrumentation_scope or None, [])
        if isinstance(span, ReadableSpan):
            encoded.append(encode_span(span))
        else:
            encoded.extend(span.encode())
    out = []
    for resource, scopes in groups:
        body = _field(0x0A, bytes(encode_resource(resource).SerializeToString()))
        for scope, encoded in scopes.items():
            scope_body = _field(0x0A, bytes(encode_instrumentation_scope(scope).SerializeToString()))
            scope_body += b"".join(_field(0x12, s) for s in encoded)
            if scope is not None and scope.schema_url:
                scope_body += _field(0x1A, scope.schema_url.encode())
            body += _field(0x12, scope_body)
        if resource.schema_url:
            body += _field(0x1A, resource.schema_url.encode())
        out.append(_field(0x0A, body))
    return b"".join(out)
