"""Pure decoding of captured bytes into run and step snapshots: no I/O, no threads, never raises.

Runs on the capture writer thread. Every input the hot path hands over (a whole JSON body, one SSE
chunk, the end of a stream) turns into zero or more `Snapshot`s; anything that cannot be decoded is
counted in `skipped` under a bounded reason and otherwise ignored, because a capture failure must never
reach the request path.

Ordering rule (what `Snapshot.observed_at` means):
- a JSON response reflects upstream state at or after the moment the request was sent, so its
  snapshots carry `exchange.started_at`. Two responses therefore order by when their requests left,
  which never puts an older state after a newer one that was fetched later;
- an SSE event reflects upstream state when its chunk arrived, so it carries `chunk.received_at`.
analytics/ingest/merge.py resolves conflicts with this key (plus the status order), not arrival order.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final

import orjson

from . import operations as response_routes
from .bounds import cap_label
from .operations import RUNS_LIST, STEPS_LIST
from .records import (
    CaptureItem,
    Exchange,
    Kind,
    RequestBody,
    RequestRecord,
    ResponseBody,
    Snapshot,
    Source,
    StreamChunk,
    StreamEnd,
)
from .redact import redact_run_secrets
from .response_capture import ResponseDecoding, ResponseStream
from .sse import SSEParser

log = logging.getLogger("runtap.capture")

RUN_OBJECT: Final = "thread.run"
STEP_OBJECT: Final = "thread.run.step"
# The documented event names (openapi.yaml, RunStreamEvent / RunStepStreamEvent). Classification is by
# prefix so a run-status event added upstream later is still captured; the payload's own `object` field
# is checked in every case, so a new non-object event under these prefixes is counted, not stored.
RUN_EVENTS: Final = frozenset({
    "thread.run.created", "thread.run.queued", "thread.run.in_progress", "thread.run.requires_action",
    "thread.run.completed", "thread.run.incomplete", "thread.run.failed", "thread.run.cancelling",
    "thread.run.cancelled", "thread.run.expired",
})
STEP_EVENTS: Final = frozenset({
    "thread.run.step.created", "thread.run.step.in_progress", "thread.run.step.completed",
    "thread.run.step.failed", "thread.run.step.cancelled", "thread.run.step.expired",
})
_RUN_PREFIX: Final = "thread.run."
_STEP_PREFIX: Final = "thread.run.step."
_STEP_DELTA: Final = "thread.run.step.delta"
# On these paths the body is a page of objects whatever its `object` says (an upstream that omits it or
# names it otherwise): the items are taken when `data` is a list.
_LIST_OPERATIONS: Final = frozenset({RUNS_LIST, STEPS_LIST})

# Request fields that are prompt content: only kept with --store-prompts. `thread` is the
# create_and_run request's initial thread (its messages).
PROMPT_FIELDS: Final = ("instructions", "additional_instructions", "additional_messages", "thread")

# Event names come from the upstream: cap the distinct names counted so a misbehaving server cannot
# grow the counter (and any metric fed from it) without bound.
_MAX_EVENT_NAMES: Final = 64
_OTHER_EVENT: Final = "other"
_EVENT_NAME: Final = itemgetter(0)
_INFLATE_STEP: Final = 1 << 20
# A stream with no byte for this long is over even if its end never came (its StreamEnd and request
# record dropped by a full queue or channel, or lost with a relay worker): the openai SDK's read timeout
# is 600 s. Such streams make room for new ones once max_open_streams are open, instead of keeping every
# later stream out for the life of the process.
STREAM_IDLE_S: Final = 900.0


class _InflateError(Exception):
    def __init__(self, coding: str) -> None:
        super().__init__(f"corrupt {coding} data")
        self.reason = "bad_gzip" if coding == "gzip" else "bad_deflate"


class _Inflater:
    """Incremental gzip/deflate decoder whose output arrives in bounded pieces."""

    def __init__(self, encoding: str) -> None:
        self.coding = encoding
        self._gzip = encoding == "gzip"
        self._obj: Any = zlib.decompressobj(16 + zlib.MAX_WBITS) if self._gzip else None
        self._head = b""

    def _start_deflate(self, data: bytes) -> bytes:
        # RFC 9110 says "deflate" is zlib-wrapped, but some servers send raw deflate: tell them apart by
        # the zlib header check (RFC 1950 §2.2), which needs the first two bytes.
        data = self._head + data
        if len(data) < 2:
            self._head = data
            return b""
        zlib_wrapped = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
        self._obj = zlib.decompressobj(zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS)
        self._head = b""
        return data

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Yield the output piece by piece, so a small compressed chunk cannot inflate all at once."""
        if self._obj is None:
            data = self._start_deflate(data)
            if self._obj is None:
                return
        try:
            while data:
                piece = self._obj.decompress(data, _INFLATE_STEP)
                if piece:
                    yield piece
                if self._obj.eof:
                    rest = self._obj.unused_data
                    if not rest:
                        break
                    if not self._gzip:
                        raise _InflateError(self.coding)  # data after the end of a deflate stream
                    # A gzip body may be several concatenated members (RFC 1952 §2.2).
                    self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    data = rest
                else:
                    data = self._obj.unconsumed_tail
        except zlib.error as exc:
            raise _InflateError(self.coding) from exc

    def finished(self) -> bool:
        return self._obj is not None and bool(self._obj.eof)


def _encodings(header: str | None) -> list[str] | None:
    """The codings to undo, outermost first; None when one of them is not supported."""
    if not header:
        return []
    out: list[str] = []
    for token in header.split(","):
        coding = token.strip().lower()
        if coding in ("", "identity"):
            continue
        if coding == "x-gzip":
            coding = "gzip"
        if coding not in ("gzip", "deflate"):
            return None
        out.append(coding)
    out.reverse()  # RFC 9110 §8.4: listed in the order they were applied
    return out


def _inflate(inflaters: list[_Inflater], data: bytes) -> Iterator[bytes]:
    if not inflaters:
        yield data
        return
    for piece in _inflate(inflaters[:-1], data):
        yield from inflaters[-1].feed(piece)


@dataclass(slots=True)
class _Stream:
    parser: SSEParser
    inflaters: list[_Inflater]
    last_at: float
    broken: bool = False
    oversized: int = 0
    invalid_utf8: int = 0
    responses: ResponseStream | None = None  # set for a Responses stream


class CaptureDecoder:
    """One per writer thread. `skipped` reasons (a bounded set, safe as metric labels):
    upstream_error_status, truncated, unsupported_encoding, bad_gzip, bad_deflate, oversized_body,
    malformed_json, not_run_object, not_response_object, missing_id, oversized_event, invalid_utf8, too_many_streams,
    request_truncated, request_malformed_json, prompt_evicted, stream_evicted, internal_error.
    """

    def __init__(self, *, max_event_bytes: int = 1 << 20, store_prompts: bool = False,
                 max_open_streams: int = 10_000, max_body_bytes: int = 64 << 20) -> None:
        if max_open_streams < 1 or max_body_bytes < 1:
            raise ValueError("max_open_streams and max_body_bytes must be positive")
        self._max_event_bytes = max_event_bytes
        self._store_prompts = store_prompts
        self._max_streams = max_open_streams
        self._max_body = max_body_bytes
        self._streams: dict[str, _Stream] = {}
        self._next_sweep = 0.0  # stream time before which a full table is not searched for idle streams again
        self._pending_extra: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.skipped: Counter[str] = Counter()
        self.events_seen: Counter[str] = Counter()
        self.streams_incomplete = 0
        self._logged: set[str] = set()
        self._responses = ResponseDecoding(store_prompts=store_prompts, skipped=self.skipped,
                                           pending=self._pending_extra, max_pending=max_open_streams)

    def open_streams(self) -> int:
        return len(self._streams)

    def decode(self, item: CaptureItem) -> list[Snapshot]:
        try:
            if isinstance(item, StreamChunk):
                return self._chunk(item)
            if isinstance(item, ResponseBody):
                try:
                    return self._response(item)
                finally:
                    self._pending_extra.pop(item.exchange.id, None)
            if isinstance(item, StreamEnd):
                return self._end(item)
            if isinstance(item, RequestBody):
                self._request(item)
            elif isinstance(item, RequestRecord):
                # The request's own record comes last: whatever is still pending for it is orphaned.
                self._pending_extra.pop(item.id, None)
                self._streams.pop(item.id, None)
            return []
        except Exception as exc:  # decoding must never raise into the writer loop
            self.skipped["internal_error"] += 1
            key = f"{type(exc).__name__}: {exc}"[:200]
            if key not in self._logged and len(self._logged) < 100:
                self._logged.add(key)
                log.error("capture decoder bug, item skipped: %s", key, exc_info=True)
            return []

    # --- whole JSON bodies -------------------------------------------------------------------------

    def _response(self, item: ResponseBody) -> list[Snapshot]:
        if not 200 <= item.status < 300:
            self.skipped["upstream_error_status"] += 1
            return []
        if item.truncated:
            self.skipped["truncated"] += 1
            return []
        body = self._decompress(item.body, item.exchange.content_encoding)
        if body is None:
            return []
        value = self._loads(body)
        if value is None:
            return []
        ex = item.exchange
        if ex.operation in response_routes.OPERATIONS:
            return self._responses.body(value, ex)
        if isinstance(value, dict) and (value.get("object") == "list" or (
                ex.operation in _LIST_OPERATIONS and isinstance(value.get("data"), list))):
            items = value.get("data")
            if not isinstance(items, list):
                self.skipped["not_run_object"] += 1
                return []
            out = []
            for obj in items:
                snap = self._snapshot(obj, ex, ex.started_at, "response")
                if snap is not None:
                    out.append(snap)
            return out
        snap = self._snapshot(value, ex, ex.started_at, "response")
        return [] if snap is None else [snap]

    def _decompress(self, body: bytes, header: str | None) -> bytes | None:
        codings = _encodings(header)
        if codings is None:
            self.skipped["unsupported_encoding"] += 1
            return None
        for coding in codings:
            inflater = _Inflater(coding)
            size = 0
            parts: list[bytes] = []
            try:
                for piece in inflater.feed(body):
                    size += len(piece)
                    if size > self._max_body:
                        self.skipped["oversized_body"] += 1
                        return None
                    parts.append(piece)
            except _InflateError as exc:
                self.skipped[exc.reason] += 1
                return None
            if not inflater.finished():
                self.skipped[_InflateError(coding).reason] += 1  # truncated: it never reached its end
                return None
            body = b"".join(parts)
        return body

    def _loads(self, data: bytes | str) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            self.skipped["malformed_json"] += 1
            return None

    def _request(self, item: RequestBody) -> None:
        if item.exchange.operation == response_routes.RESPONSES_CREATE:
            self._responses.request(item)
            return
        if not self._store_prompts:
            return
        if item.truncated:
            self.skipped["request_truncated"] += 1
            return
        try:
            value = orjson.loads(item.body) if item.body else None
        except orjson.JSONDecodeError:
            self.skipped["request_malformed_json"] += 1
            return
        if not isinstance(value, dict):
            return
        extra = {k: value[k] for k in PROMPT_FIELDS if value.get(k) is not None}
        if not extra:
            return
        pending = self._pending_extra
        if len(pending) >= self._max_streams:
            # Exchanges that never ended (a lost item) must not accumulate: forget the oldest.
            pending.popitem(last=False)
            self.skipped["prompt_evicted"] += 1
        pending[item.exchange.id] = extra

    # --- objects -----------------------------------------------------------------------------------

    def _snapshot(self, obj: Any, ex: Exchange, observed_at: float, source: Source,
                  want: Kind | None = None) -> Snapshot | None:
        kind: Kind
        if not isinstance(obj, dict):
            self.skipped["not_run_object"] += 1
            return None
        tag = obj.get("object")
        if tag == RUN_OBJECT:
            kind = "run"
        elif tag == STEP_OBJECT:
            kind = "step"
        else:
            self.skipped["not_run_object"] += 1
            return None
        if want is not None and kind != want:
            self.skipped["not_run_object"] += 1
            return None
        oid = obj.get("id")
        if not isinstance(oid, str) or not oid:
            self.skipped["missing_id"] += 1
            return None
        extra: dict[str, Any] = {}
        if kind == "run":
            obj = redact_run_secrets(obj)
            if not self._store_prompts and obj.get("instructions") is not None:
                obj["instructions"] = None  # prompt content, kept only with --store-prompts
            if self._pending_extra:
                extra = self._pending_extra.pop(ex.id, {})
        return Snapshot(
            kind=kind, obj=obj, observed_at=observed_at,
            source=source,
            operation=ex.operation, api_version=ex.api_version, key_fingerprint=ex.key_fingerprint,
            request_id=ex.id, extra=extra, api_provider=ex.api_provider,
        )

    # --- SSE streams -------------------------------------------------------------------------------

    def _open(self, ex: Exchange, at: float) -> _Stream | None:
        stream = self._streams.get(ex.id)
        if stream is not None:
            return stream
        if len(self._streams) >= self._max_streams and not self._evict_idle(at):
            self.skipped["too_many_streams"] += 1
            return None
        codings = _encodings(ex.content_encoding)
        stream = _Stream(SSEParser(max_event_bytes=self._max_event_bytes),
                         [_Inflater(c) for c in codings or ()], ex.started_at)
        if codings is None:
            self.skipped["unsupported_encoding"] += 1
            stream.broken = True  # kept open so each later chunk is not counted again
        if ex.operation in response_routes.OPERATIONS:
            stream.responses = self._responses.open_stream(ex)
        self._streams[ex.id] = stream
        return stream

    def _evict_idle(self, now: float) -> bool:
        """Forget the streams idle for STREAM_IDLE_S (counted as stream_evicted); True if any was. The
        table is searched at most once a second of stream time, so a full table of live streams costs
        no scan per refused chunk."""
        if now < self._next_sweep:
            return False
        self._next_sweep = now + 1.0
        idle = [xid for xid, s in self._streams.items() if now - s.last_at > STREAM_IDLE_S]
        for xid in idle:
            del self._streams[xid]
            self._pending_extra.pop(xid, None)
        if idle:
            self.skipped["stream_evicted"] += len(idle)
        return bool(idle)

    def _chunk(self, item: StreamChunk) -> list[Snapshot]:
        stream = self._open(item.exchange, item.received_at)
        if stream is None or stream.broken:
            return []
        stream.last_at = item.received_at
        events: list[tuple[str, str]] = []
        try:
            if stream.inflaters:
                for piece in _inflate(stream.inflaters, item.data):
                    events += stream.parser.feed_pairs(piece)
            else:
                events = stream.parser.feed_pairs(item.data)
        except _InflateError as exc:
            self.skipped[exc.reason] += 1
            stream.broken = True  # what decoded before the corruption is still returned
        return self._events(events, stream, item.exchange, item.received_at)

    def _end(self, item: StreamEnd) -> list[Snapshot]:
        stream = self._streams.pop(item.exchange.id, None)
        self._pending_extra.pop(item.exchange.id, None)
        if stream is None or stream.broken:
            return []
        if not item.complete:
            self.streams_incomplete += 1
        # A stream that broke mid-event leaves a partial event behind: the parser decides (per the SSE
        # spec an unterminated event is dropped), and a partial JSON payload is counted as malformed.
        # What was decoded before the break has already been returned.
        return self._events([(e.event, e.data) for e in stream.parser.close()], stream, item.exchange,
                            stream.last_at)

    def _events(self, events: list[tuple[str, str]], stream: _Stream, ex: Exchange,
                received_at: float) -> list[Snapshot]:
        """Events are (name, data): most of a stream (message and text deltas) is counted by name only."""
        parser = stream.parser
        if parser.oversized != stream.oversized:
            self.skipped["oversized_event"] += parser.oversized - stream.oversized
            stream.oversized = parser.oversized
        if parser.invalid_utf8 != stream.invalid_utf8:
            self.skipped["invalid_utf8"] += parser.invalid_utf8 - stream.invalid_utf8
            stream.invalid_utf8 = parser.invalid_utf8
        if not events:
            return []
        self._count_events(events)
        if stream.responses is not None:
            return self._responses.events(events, stream.responses, ex, received_at, self._loads)
        out: list[Snapshot] = []
        for name, data in events:
            if not name.startswith(_RUN_PREFIX) or name == _STEP_DELTA:
                continue  # messages, deltas, thread.created, done, error: not run state
            want: Kind = "step" if name.startswith(_STEP_PREFIX) else "run"
            obj = self._loads(data)
            if obj is None:
                continue
            snap = self._snapshot(obj, ex, received_at, "stream", want)
            if snap is not None:
                out.append(snap)
        return out

    def _count_events(self, events: list[tuple[str, str]]) -> None:
        seen = self.events_seen
        if len(events) == 1 and events[0][0] in seen:  # a chunk per event: a stream with gaps between tokens
            seen[events[0][0]] += 1
            return
        # A chunk's events take a handful of names: a long run is counted per name, not per event.
        for name, n in (Counter(map(_EVENT_NAME, events)).items() if len(events) > 16 else
                        [(name, 1) for name, _ in events]):
            if name not in seen:  # every key is its own cap_label: the common case skips the call
                name = cap_label(name)  # a key kept for the process's life, and a label value later
                if name not in seen and len(seen) >= _MAX_EVENT_NAMES:
                    name = _OTHER_EVENT
            seen[name] += n
