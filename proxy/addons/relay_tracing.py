"""Request tracing in the relay of `--capture-mode process`: ids, decision and times only.

The relay keeps what only it can know: the trace and span ids (continuing an incoming W3C
`traceparent`), the sampling decision (OTEL_TRACES_SAMPLER, read by otel_env.py as the SDK reads it),
the `traceparent` it injects upstream, and the timestamps. At `done` a sampled request's span becomes a
tuple of plain values in `flow.span`, which the capture addon puts into the request record it hands
the capture process (RequestRecord.span); there Tracing.finish_relayed builds the server and client
spans and exports them, as Tracing.end_request does in-process. This module imports no OpenTelemetry
SDK (the relay process then has none); with tracing on it loads the API's W3C propagator at start-up
(not on the first request that carries a `traceparent`: an import on the loop stalls it), the same
parser the in-process mode uses.

A record the channel drops (full) takes its span with it: counted in runtap_capture_dropped_total.
"""

from __future__ import annotations

import random
import time
from typing import Any, Final

from aiohttp import web
from multidict import CIMultiDict

from ..tap import Flow
from .otel_env import SamplerSpec

_SAMPLED: Final = 0x01
_RANDOM_TRACE_ID: Final = 0x02  # W3C trace-context level 2: the trace id's low 56 bits are random

# RequestRecord.span, by position: (trace id, span id, trace flags, parent span id (0: none), parent's
# trace flags, tracestate header ("": none), client span id, start, client start (0: no upstream call),
# end (ns since the epoch), operation label, url scheme, protocol version, host, client address, user agent)
RELAYED_FIELDS: Final = 16


def _span_id() -> int:
    # The SDK's RandomIdGenerator: random bits, never the invalid 0.
    span_id = random.getrandbits(64)
    while not span_id:
        span_id = random.getrandbits(64)
    return span_id


def _trace_id() -> int:
    trace_id = random.getrandbits(128)
    while not trace_id:
        trace_id = random.getrandbits(128)
    return trace_id


class _Span:
    __slots__ = ("agent", "client_id", "client_start", "flags", "host", "parent_flags", "parent_id", "remote",
                 "sampled", "scheme", "span_id", "start", "state", "trace_id", "version")

    def __init__(self, trace_id: int, span_id: int, flags: int, sampled: bool, parent_id: int, parent_flags: int,
                 state: str) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.flags = flags
        self.sampled = sampled
        self.parent_id = parent_id
        self.parent_flags = parent_flags
        self.state = state
        self.start = time.time_ns()
        self.client_id = 0
        self.client_start = 0
        self.scheme = self.version = self.host = ""
        self.remote: str | None = None
        self.agent: str | None = None


def request_facts(request: web.Request) -> tuple[str, str, str, str | None, str | None]:
    """(scheme, protocol version, host, client address, user agent): what the server span reads of the
    request besides its method and path; plain values, which this relay hands to the capture process
    and tracing.py reads in-process. Here: this module imports no OpenTelemetry SDK."""
    version = request.version
    return (request.scheme, f"{version.major}.{version.minor}", request.host, request.remote,
            request.headers.get("User-Agent"))


class _Parent:
    """The API's W3C propagator (the OpenTelemetry API only, not the SDK)."""

    def __init__(self) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        self._extract = TraceContextTextMapPropagator().extract
        self._span_of = trace.get_current_span

    def __call__(self, headers: Any) -> tuple[int, int, int, str] | None:
        """(trace id, span id, trace flags, tracestate header) of a valid incoming parent, else None."""
        parent = self._span_of(self._extract(headers)).get_span_context()
        if not parent.is_valid:
            return None
        state = parent.trace_state
        return parent.trace_id, parent.span_id, int(parent.trace_flags), state.to_header() if state else ""


class RelayTracing:
    """The tracing addon of a relay whose spans the capture process builds; off without a sampler."""

    def __init__(self, sampler: SamplerSpec | None) -> None:
        self._sampler = sampler
        self._parent = _Parent() if sampler is not None else None

    @property
    def enabled(self) -> bool:
        return self._sampler is not None

    def request(self, flow: Flow, request: web.Request) -> None:
        sampler = self._sampler
        if sampler is None:
            return
        headers = request.headers
        parent = None
        if "traceparent" in headers and self._parent is not None:
            parent = self._parent(headers)
        if parent is None:
            trace_id, random_flag, parent_sampled, parent_id, parent_flags, state = (
                _trace_id(), _RANDOM_TRACE_ID, None, 0, 0, "")
        else:
            trace_id, parent_id, parent_flags, state = parent
            random_flag, parent_sampled = parent_flags & _RANDOM_TRACE_ID, bool(parent_flags & _SAMPLED)
        sampled = sampler.sampled(trace_id, parent_sampled)
        span_id = _span_id()
        flags = (_SAMPLED if sampled else 0) | random_flag
        flow.span = span = _Span(trace_id, span_id, flags, sampled, parent_id, parent_flags, state)
        if sampled:  # the capture process cannot see the request
            span.scheme, span.version, span.host, span.remote, span.agent = request_facts(request)
        if flow.exchange.operation is not None:
            flow.exchange.span_context = (trace_id, span_id, flags)  # run and response spans link to it

    def upstream_request(self, flow: Flow, headers: CIMultiDict[str]) -> None:
        span = flow.span
        if span is None:
            return
        span.client_id = client_id = _span_id()
        span.client_start = time.time_ns()
        headers["traceparent"] = f"00-{span.trace_id:032x}-{client_id:016x}-{span.flags:02x}"
        if span.state:
            headers["tracestate"] = span.state

    def done(self, flow: Flow) -> None:
        span = flow.span
        if span is None:
            return
        if not span.sampled:
            flow.span = None
            return
        flow.span = (span.trace_id, span.span_id, span.flags, span.parent_id, span.parent_flags, span.state,
                     span.client_id, span.start, span.client_start, time.time_ns(), flow.op_label, span.scheme,
                     span.version, span.host, span.remote, span.agent)

    def shutdown(self) -> None:
        return None
