"""Capture: hands what the relay saw to the ingest path (CaptureWriter.submit is O(1), never raises).

Policy, per flow: calls the router does not know are not captured; an SSE answer is captured chunk by
chunk; a 2xx JSON body is captured whole up to capture_max_body; anything else is counted as skipped.
A request body (prompts, a Responses create's call ids) is kept up to capture_max_body too: the relay
copies no more than `request_body_limit`, which the tap reads from here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, Protocol

from ...analytics.ingest.records import (
    CaptureItem,
    Exchange,
    RequestBody,
    RequestRecord,
    ResponseBody,
    StreamChunk,
    StreamEnd,
)
from ..response_routes import RESPONSES_CREATE
from ..tap import Flow

_STREAM: Final = "stream"
# A stream one of whose chunks capture had to drop (a full queue or channel): its later chunks are not
# handed on. The parser would join the bytes before the gap to those after it, and two halves of two
# events can make one valid JSON object that no event held (a status "in_pleted" with the completed
# run's usage); what was decoded before the gap is kept, the stream ends as broken.
_GAP: Final = "gap"
STREAM_GAP: Final = "stream_gap"
_NOT_2XX: Final = "not_2xx"
_TOO_LARGE: Final = "too_large"


class Submitter(Protocol):
    """CaptureWriter (in process) or CaptureChannel (to the capture process): O(1), never raises."""

    def submit(self, item: CaptureItem) -> bool: ...


class _Body:
    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0


class Capture:
    def __init__(self, writer: Submitter, *, store_prompts: bool, capture_max_body: int,
                 on_skipped: Callable[[str], None]) -> None:
        self._submit = writer.submit
        # The channel to a capture process gathers a stream's chunks per frame (CaptureChannel.submit_chunk).
        submit_chunk: Callable[[Exchange, bytes, float], bool] | None = getattr(writer, "submit_chunk", None)
        self._submit_chunk = submit_chunk or (lambda ex, data, at: writer.submit(StreamChunk(ex, data, at)))
        self._store_prompts = store_prompts
        self._max_body = capture_max_body
        self.request_body_limit = capture_max_body
        self._on_skipped = on_skipped

    def keeps_request_body(self, flow: Flow) -> bool:
        # A Responses create's body is read for the call ids it answers (tool turnaround), not only for
        # prompts.
        operation = flow.exchange.operation
        return operation is not None and (self._store_prompts or operation == RESPONSES_CREATE)

    def request_body(self, flow: Flow, body: bytes, truncated: bool) -> None:
        if len(body) > self._max_body:  # another addon behind the tap keeps more than capture does
            body, truncated = body[:self._max_body], True
        self._submit(RequestBody(flow.exchange, body, truncated))

    def response_headers(self, flow: Flow) -> None:
        status = flow.status
        if flow.exchange.operation is None:
            flow.capture = None
        elif flow.streamed:
            flow.capture = _STREAM
        elif status is not None and 200 <= status < 300:
            flow.capture = _Body()
        elif status is not None and status >= 300:
            flow.capture = _NOT_2XX

    def chunk(self, flow: Flow, chunk: bytes) -> None:
        state = flow.capture
        if state is _STREAM:
            if not self._submit_chunk(flow.exchange, chunk, time.time()):
                flow.capture = _GAP  # the drop itself is counted by the queue or channel
                self._on_skipped(STREAM_GAP)
        elif isinstance(state, _Body):
            state.size += len(chunk)
            if state.size <= self._max_body:
                state.parts.append(chunk)
            else:
                flow.capture = _TOO_LARGE

    def end(self, flow: Flow) -> None:
        state = flow.capture
        flow.capture = None
        if state is _STREAM or state is _GAP:
            self._submit(StreamEnd(flow.exchange, complete=state is _STREAM))
        elif state is _NOT_2XX:
            self._on_skipped("upstream_error_status")
        elif state is _TOO_LARGE:
            self._on_skipped("body_too_large")
        elif isinstance(state, _Body):
            self._submit(ResponseBody(flow.exchange, flow.status or 0, b"".join(state.parts), False))

    def error(self, flow: Flow, reason: str) -> None:
        # The client sees its connection drop mid-stream: so does capture, not a clean ending.
        if flow.capture is _STREAM or flow.capture is _GAP:
            flow.capture = None
            self._submit(StreamEnd(flow.exchange, complete=False))

    def done(self, flow: Flow) -> None:
        ex = flow.exchange
        ttfb = flow.ttfb
        self._submit(RequestRecord(
            id=ex.id, started_at=ex.started_at, method=ex.method, path=ex.path, operation=ex.operation,
            status_code=flow.status, streamed=flow.streamed, duration_ms=flow.duration * 1000.0,
            upstream_ttfb_ms=None if ttfb is None else ttfb * 1000.0, bytes_in=flow.bytes_in,
            bytes_out=flow.bytes_out, upstream_request_id=flow.upstream_request_id,
            key_fingerprint=ex.key_fingerprint, error=flow.error, api_version=ex.api_version,
            api_provider=ex.api_provider,
            # relay_tracing.py leaves a sampled span's values here (a tuple) for the capture process
            span=flow.span if type(flow.span) is tuple else None,
        ))
