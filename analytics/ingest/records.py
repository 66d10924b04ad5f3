"""Plain data handed from the request path to the capture writer thread.

The hot path builds these and enqueues them; it never parses a body. Everything that costs CPU
(JSON decoding, SSE parsing, gzip, merging) happens on the writer thread, off the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Source = Literal["stream", "response"]
Kind = Literal["run", "step", "response"]


@dataclass(slots=True)
class Exchange:
    """What capture needs to know about one proxied request; shared by every item it produces."""

    id: str
    method: str
    path: str
    operation: str | None
    api_version: str | None  # as the client asked: see proxy/api_versions.py
    key_fingerprint: str | None
    started_at: float  # wall clock (epoch seconds) when the request reached runtap
    content_encoding: str | None = None  # of the upstream response, set once headers arrive
    api_provider: str | None = None  # "openai" (OpenAI-Beta header) | "azure" (api-version query) | None
    # (trace id, span id, trace flags) of the request's server span, set by tracing: in --capture-mode
    # process the capture process links run and response spans to it (it has no other way to know it).
    span_context: tuple[int, int, int] | None = None


@dataclass(slots=True)
class ResponseBody:
    """A whole (bounded) JSON response body of a Runs operation, as the upstream sent it."""

    exchange: Exchange
    status: int
    body: bytes
    truncated: bool  # body exceeded the capture bound; it was relayed whole but not captured


@dataclass(slots=True)
class RequestBody:
    """Request body of a Runs operation; only enqueued with --store-prompts."""

    exchange: Exchange
    body: bytes
    truncated: bool


@dataclass(slots=True)
class StreamChunk:
    """One chunk of an SSE response, exactly as relayed to the client."""

    exchange: Exchange
    data: bytes
    received_at: float  # wall clock when the chunk arrived from upstream


@dataclass(slots=True)
class StreamEnd:
    exchange: Exchange
    complete: bool  # False when the stream broke (upstream reset, client gone)


@dataclass(slots=True)
class RequestRecord:
    """One row of the `requests` table."""

    id: str
    started_at: float
    method: str
    path: str
    operation: str | None
    status_code: int | None
    streamed: bool
    duration_ms: float
    upstream_ttfb_ms: float | None
    bytes_in: int
    bytes_out: int
    upstream_request_id: str | None
    key_fingerprint: str | None
    error: str | None
    api_version: str | None = None
    api_provider: str | None = None
    # --capture-mode process with tracing: the relay's sampled request span as plain values (layout:
    # proxy/addons/relay_tracing.py), built and exported by the capture process; never stored.
    span: tuple[Any, ...] | None = None


CaptureItem = ResponseBody | RequestBody | StreamChunk | StreamEnd | RequestRecord


@dataclass(slots=True)
class Snapshot:
    """A run or step object seen in a response or an SSE event, ready to be merged into the store."""

    kind: Kind
    obj: dict[str, Any]
    observed_at: float  # ordering key, see analytics/ingest/merge.py
    source: Source
    operation: str | None
    api_version: str | None
    key_fingerprint: str | None
    request_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. additional_messages with --store-prompts
    api_provider: str | None = None
