"""OpenTelemetry traces: a server span per proxied request with a client child span for the upstream
call, and run-lifecycle spans (proxy/addons/run_spans.py). A true no-op without a tracer provider.

The provider is injected (tests, embedding) or built from the standard OTEL_* variables by
`provider_from_env`; without either every method returns at its first line, and the forwarder's
call sites cost three method calls per request.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import web
from multidict import CIMultiDict
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ...analytics.ingest.records import Exchange, RequestRecord
from ...analytics.ingest.response_merge import ResponseTransition
from ...settings.config import ConfigError
from .. import response_routes, routes
from ..tap import Flow
from . import otel_check, otel_env, otel_private, response_spans
from .relay_tracing import request_facts
from .request_span import DeferredBatchSpanProcessor, RequestSpan, SpanSpec, deferred_processor
from .run_spans import PROVIDER, RunSpans, local_context, run_span_context

log = logging.getLogger("runtap.tracing")

TRACER_NAME: Final = "runtap.proxy"
# Route templates (HTTP semconv http.route) of the Runs operations, after the app's path prefix.
_ROUTES: Final = {
    routes.RUNS_CREATE: "/threads/{thread_id}/runs",
    routes.THREADS_CREATE_AND_RUN: "/threads/runs",
    routes.RUNS_LIST: "/threads/{thread_id}/runs",
    routes.RUNS_RETRIEVE: "/threads/{thread_id}/runs/{run_id}",
    routes.RUNS_UPDATE: "/threads/{thread_id}/runs/{run_id}",
    routes.RUNS_SUBMIT_TOOL_OUTPUTS: "/threads/{thread_id}/runs/{run_id}/submit_tool_outputs",
    routes.RUNS_CANCEL: "/threads/{thread_id}/runs/{run_id}/cancel",
    routes.STEPS_LIST: "/threads/{thread_id}/runs/{run_id}/steps",
    routes.STEPS_RETRIEVE: "/threads/{thread_id}/runs/{run_id}/steps/{step_id}",
}
# Request spans remembered (by exchange id) until capture links the runs they changed to them.
_MAX_REQUEST_CONTEXTS: Final = 10_000
_EXPORT_BATCH: Final = 2048
_QUEUE_SIZE: Final = otel_env.QUEUE_SIZE


def provider_from_env(*, worker: int = 0) -> TracerProvider | None:
    """A TracerProvider exporting as the standard OTEL_* variables say, or None when tracing is off.

    Off when OTEL_SDK_DISABLED=true, OTEL_TRACES_EXPORTER=none, or (for the default `otlp` exporter)
    neither OTEL_EXPORTER_OTLP_ENDPOINT nor OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set. The exporter,
    batch processor, sampler and resource read their own OTEL_* settings (headers, timeout,
    compression, OTEL_BSP_*, OTEL_TRACES_SAMPLER, OTEL_RESOURCE_ATTRIBUTES...), checked first by
    otel_check. `worker`: the `--workers` index of a relay that exports its own spans (instance_id).
    """
    env = os.environ
    otel_check.check_env(env)
    exporters: list[SpanExporter] = []
    for name in otel_env.exporter_names(env):
        if name == "otlp":
            from .otlp_export import FastOTLPSpanExporter
            exporters.append(FastOTLPSpanExporter())
        else:
            exporters.append(ConsoleSpanExporter())
    if not exporters:
        return None
    configured = otel_check.resource_attributes(env)
    named = env.get("OTEL_SERVICE_NAME") or configured.get("service.name")
    attrs: dict[str, str] = {} if named else {"service.name": "runtap"}
    instance = instance_id(configured.get("service.instance.id"), worker)
    if instance is not None:
        attrs["service.instance.id"] = instance
    try:
        attrs["service.version"] = importlib.metadata.version("runtap")
    except importlib.metadata.PackageNotFoundError:
        pass
    provider = TracerProvider(resource=Resource.create(attrs), shutdown_on_exit=False)
    queue, batch = _batch_defaults(env)
    for exporter in exporters:
        # runtap's OTLP exporter alone: its batch queue takes request span records (request_span.py).
        records = len(exporters) == 1 and getattr(exporter, "takes_request_records", False)
        kind = DeferredBatchSpanProcessor if records else BatchSpanProcessor
        try:
            processor = kind(exporter, max_queue_size=queue, max_export_batch_size=batch)
        except ValueError as exc:  # the SDK's check of its OTEL_BSP_* values: a config error, not a crash
            provider.shutdown()
            raise ConfigError(f"invalid OTEL_BSP_MAX_EXPORT_BATCH_SIZE / OTEL_BSP_MAX_QUEUE_SIZE / "
                              f"OTEL_BSP_SCHEDULE_DELAY / OTEL_BSP_EXPORT_TIMEOUT: {exc}") from None
        provider.add_span_processor(processor)
    return provider


def instance_id(configured: str | None, worker: int) -> str | None:
    """service.instance.id where runtap must decide it: `--workers` relays that export their own spans
    (`--capture-mode inprocess`) are one instance each. Unset, the SDK draws a random one per process;
    a configured one (OTEL_RESOURCE_ATTRIBUTES, the same for every worker) gets worker i's suffix, as
    --instance does. None: the SDK's reading stands."""
    if configured is None or worker == 0:
        return None
    return f"{configured}-{worker}"


def _batch_defaults(env: Mapping[str, str]) -> tuple[int | None, int | None]:
    """(queue size, export batch size) where OTEL_BSP_* leave them to runtap; None: the SDK's reading.

    A sidecar emits two spans per request; at the SDK's 512 per batch the exporter thread POSTs
    several times a second under load. Batches of 2,048 (a queue of 8,192) measured 6 interleaved
    pairs of create c=50: mean 24 us (~6%) less CPU per request; a batch stays far under the
    exporter's 64 MiB request bound.
    """
    queue = env.get("OTEL_BSP_MAX_QUEUE_SIZE")
    if env.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") is not None:
        batch = None
    elif queue is None:
        batch = _EXPORT_BATCH
    else:
        try:
            batch = max(1, min(_EXPORT_BATCH, int(queue)))  # the SDK refuses a batch above the queue
        except ValueError:
            batch = None  # the SDK reports the bad value itself
    return (_QUEUE_SIZE if queue is None else None), batch


# The SDK's own samplers (OTEL_TRACES_SAMPLER's every value): none reads a span's attributes or links.
_ATTRIBUTE_FREE: Final = (sampling.StaticSampler, sampling.TraceIdRatioBased, sampling.ParentBased,
                          sampling.AlwaysRecordSampler)


def _attribute_free(sampler: Any, depth: int = 0) -> bool:
    """True when `sampler` and every sampler it delegates to are the SDK's own classes (exactly: a
    subclass written elsewhere may read attributes). A delegation deeper than 8 (or a cycle) is not
    the SDK's: it gets the general path."""
    if depth > 8 or type(sampler).__module__ != sampling.__name__ or not isinstance(sampler, _ATTRIBUTE_FREE):
        return False
    return all(_attribute_free(d, depth + 1) for d in otel_private.delegates(sampler))


def _server_span(method: str, facts: tuple[str, str, str, str | None, str | None], operation: str,
                 exchange: Exchange, runs_call: bool) -> tuple[str, dict[str, Any], list[Link]]:
    """The request span's name, attributes and links (OTel HTTP server and GenAI conventions)."""
    scheme, version, request_host, remote, agent = facts
    path = exchange.path
    attrs: dict[str, Any] = {
        "http.request.method": method, "url.path": path, "url.scheme": scheme,
        "network.protocol.version": version, "openai.operation": operation,
    }
    host, _, port = request_host.rpartition(":")
    if host and port.isdigit():
        attrs["server.address"], attrs["server.port"] = host, int(port)
    elif request_host:
        attrs["server.address"] = request_host
    if remote:
        attrs["client.address"] = remote
    if agent:
        attrs["user_agent.original"] = agent
    links: list[Link] = []
    name = method
    if runs_call and operation in response_routes.OPERATIONS:
        name = response_spans.request_span(method, path, operation, attrs, links)
    elif runs_call:
        prefix, ids = _path_ids(path)
        route = prefix + _ROUTES[operation]
        name = f"{method} {route}"
        attrs["http.route"] = route
        attrs["gen_ai.provider.name"] = PROVIDER
        if exchange.api_version:
            attrs["openai.api_version"] = exchange.api_version
        if exchange.api_provider:
            attrs["openai.api_provider"] = exchange.api_provider
        if "thread_id" in ids:
            attrs["gen_ai.conversation.id"] = ids["thread_id"]
        if "run_id" in ids:
            attrs["openai.run.id"] = ids["run_id"]
            links.append(Link(run_span_context(ids["run_id"]), {"openai.link": "run"}))
        if "step_id" in ids:
            attrs["openai.run.step.id"] = ids["step_id"]
    return name, attrs, links


def _path_ids(path: str) -> tuple[str, dict[str, str]]:
    """(path prefix before `/threads/`, {thread_id, run_id, step_id} present in the path)."""
    i = path.rfind("/threads/")
    parts = path[i + 1:].split("/")
    ids: dict[str, str] = {}
    if len(parts) > 1 and parts[1] != "runs":
        ids["thread_id"] = parts[1]
    if len(parts) > 3:
        ids["run_id"] = parts[3]
    if len(parts) > 5:
        ids["step_id"] = parts[5]
    return path[:i], ids


class Tracing:
    def __init__(self, tracer_provider: Any | None = None, *, upstream: str = "",
                 owned: bool = False) -> None:
        """`owned`: this object built the provider and shuts it down; an injected one is only flushed."""
        self._provider = tracer_provider
        self._owned = owned
        self._tracer: Any = None
        self._runs: RunSpans | None = None
        self._propagator = TraceContextTextMapPropagator()
        self._lock = threading.Lock()
        # OrderedDict: evicting the oldest of a plain dict is O(deleted slots) (next(iter()) walks
        # them), ~3.5 us a request once full; popitem(last=False) is O(1).
        self._contexts: OrderedDict[str, SpanContext] = OrderedDict()
        self._default_sampler = False
        self._attribute_free = False
        self._root_bound: int | None = None
        self._spec: SpanSpec | None = None
        self._emit: Callable[[RequestSpan], None] | None = None
        if tracer_provider is not None:
            tracer = tracer_provider.get_tracer(TRACER_NAME)
            if not isinstance(tracer, SdkTracer):
                raise TypeError("runtap needs an opentelemetry-sdk TracerProvider")
            self._tracer = tracer
            sampler = tracer.sampler
            root = otel_private.root_sampler(sampler)
            self._default_sampler = type(sampler) is sampling.ParentBased and root is sampling.ALWAYS_ON
            self._attribute_free = _attribute_free(sampler)
            if (isinstance(sampler, sampling.ParentBased) and self._attribute_free
                    and type(root) is sampling.TraceIdRatioBased):
                self._root_bound = root.bound
            self._runs = RunSpans(tracer_provider)
            self._responses_spans = response_spans.ResponseSpans(self._runs)
            limit = otel_private.span_limits(tracer).max_span_attribute_length
            up = urlsplit(upstream)
            self._spec = SpanSpec(tracer.resource, otel_private.instrumentation_scope(tracer),
                                  tracer.instrumentation_info, limit if limit is not None and limit >= 0 else None,
                                  upstream, up.hostname or "", up.port or (443 if up.scheme == "https" else 80))
            deferred = deferred_processor(tracer)
            if deferred is not None:
                self._emit = otel_private.batch_emit(deferred)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    # --- request spans (event loop): the tap's hooks --------------------------------------------------

    def request(self, flow: Flow, request: web.Request) -> None:
        flow.span = span = self.start_request(request, flow.op_label, flow.exchange)
        if span is not None and span.runs_call:
            ctx = span.context
            flow.exchange.span_context = (ctx.trace_id, ctx.span_id, int(ctx.trace_flags))  # marshal: plain ints

    def upstream_request(self, flow: Flow, headers: CIMultiDict[str]) -> None:
        self.inject(flow.span, headers)

    def done(self, flow: Flow) -> None:
        self.end_request(flow.span, flow.status, flow.error)


    def start_request(self, request: web.Request, operation: str, exchange: Exchange) -> RequestSpan | None:
        if self._tracer is None:
            return None
        tracer = self._tracer
        headers = request.headers
        method = request.method
        # W3C traceparent/tracestate of the app: the server span continues the app's trace.
        parent_ctx = self._propagator.extract(headers) if "traceparent" in headers else None
        parent: SpanContext | None = None
        if parent_ctx is not None:
            parent = trace.get_current_span(parent_ctx).get_span_context()
            if not parent.is_valid:
                parent, parent_ctx = None, None
        generator = tracer.id_generator
        if parent is None:
            trace_id = generator.generate_trace_id()
            random_id = generator.is_trace_id_random()
        else:
            trace_id = parent.trace_id
            random_id = parent.trace_flags.random_trace_id
        runs_call = exchange.operation is not None
        decided = True
        state: TraceState | None = None
        if parent is None and self._default_sampler:
            # The SDK's default (parent-based, always-on root) samples and records every trace that
            # starts here, with no attributes or trace state of its own: its answer is known.
            sampled, recording = True, True
        elif parent is None and self._root_bound is not None:
            # Parent-based with a trace-id-ratio root, for a trace that starts here: TraceIdRatioBased's
            # own rule, without the two sampler calls.
            sampled = recording = trace_id & sampling.TraceIdRatioBased.TRACE_ID_LIMIT < self._root_bound
        elif self._attribute_free:
            # The SDK's own samplers read neither attributes nor links: ask before building them, so
            # a request that is not sampled costs no attribute work.
            decision = tracer.sampler.should_sample(parent_ctx, trace_id, method, SpanKind.SERVER)
            sampled, recording, state = (decision.decision.is_sampled(), decision.decision.is_recording(),
                                         decision.trace_state)
        else:
            decided = False
            sampled = recording = False
        if decided and not (sampled and recording):
            context = local_context(trace_id, generator.generate_span_id(), sampled, state, random_trace_id=random_id)
            return RequestSpan(context, parent, False, method, {}, [], exchange, runs_call, self._spec)
        name, attrs, links = _server_span(method, request_facts(request), operation, exchange, runs_call)
        if not decided:
            # Any other sampler decides, as Tracer.start_span would ask it (OTEL_TRACES_SAMPLER).
            decision = tracer.sampler.should_sample(parent_ctx, trace_id, name, SpanKind.SERVER, attrs, links)
            sampled, recording, state = (decision.decision.is_sampled(), decision.decision.is_recording(),
                                         decision.trace_state)
            if decision.attributes:
                attrs.update(decision.attributes)
        context = local_context(trace_id, generator.generate_span_id(), sampled, state, random_trace_id=random_id)
        return RequestSpan(context, parent, sampled and recording, name, attrs, links, exchange, runs_call, self._spec)

    def inject(self, span: RequestSpan | None, headers: CIMultiDict[str]) -> None:
        """Start the client span of the upstream call and put its traceparent in the upstream headers.

        The client span is the server span's child in the same trace, so it shares its sampling
        decision (what every built-in sampler, parent-based or trace-id-ratio, would decide).
        """
        if span is None:
            return
        context = span.context
        span.client_id = client_id = self._tracer.id_generator.generate_span_id()
        span.client_start = time.time_ns()
        headers["traceparent"] = f"00-{context.trace_id:032x}-{client_id:016x}-{context.trace_flags:02x}"
        state = context.trace_state
        if state:
            headers["tracestate"] = state.to_header()

    def end_request(self, span: RequestSpan | None, status: int | None, error: str | None) -> None:
        if span is None:
            return
        server = span.context
        if span.runs_call:
            contexts = self._contexts
            with self._lock:
                if len(contexts) >= _MAX_REQUEST_CONTEXTS:
                    contexts.popitem(last=False)
                contexts[span.exchange.id] = server
        if not span.sampled:
            return
        span.end = time.time_ns()
        span.status, span.error = status, error
        self._finish(span)

    def finish_relayed(self, record: RequestRecord) -> None:
        """The sampled request span that a relay of --capture-mode process decided, timed and handed over
        in its request record (relay_tracing.py): built and exported here, as end_request does in-process."""
        relayed = record.span
        if relayed is None or self._tracer is None:
            return
        (trace_id, span_id, flags, parent_id, parent_flags, state_header, client_id, start, client_start, end,
         op_label, scheme, version, host, remote, agent) = relayed
        state = TraceState.from_header([state_header]) if state_header else None
        context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags), trace_state=state)
        parent = (SpanContext(trace_id, parent_id, is_remote=True, trace_flags=TraceFlags(parent_flags),
                              trace_state=state) if parent_id else None)
        exchange = Exchange(record.id, record.method, record.path, record.operation, record.api_version, None,
                            record.started_at, api_provider=record.api_provider)
        runs_call = record.operation is not None
        name, attrs, links = _server_span(record.method, (scheme, version, host, remote, agent), op_label,
                                          exchange, runs_call)
        span = RequestSpan(context, parent, True, name, attrs, links, exchange, runs_call, self._spec)
        span.start, span.client_id, span.client_start, span.end = start, client_id, client_start, end
        span.status, span.error = record.status_code, record.error
        self._finish(span)

    def _finish(self, span: RequestSpan) -> None:
        if self._emit is not None:
            # runtap's export pipeline: the export thread builds and encodes both spans (request_span.py).
            self._emit(span)
            return
        on_end = self._tracer.span_processor.on_end
        for finished in span.readable_spans():
            on_end(finished)

    # --- run spans (capture writer thread) ---------------------------------------------------------

    def remember_request(self, exchange: Exchange) -> None:
        """A request span seen only through its exchange (the capture process, which has no request
        spans of its own): run and response spans it changed will link to it."""
        ids = exchange.span_context
        if ids is None or self._tracer is None:
            return
        contexts = self._contexts
        with self._lock:
            if exchange.id in contexts:
                return
            if len(contexts) >= _MAX_REQUEST_CONTEXTS:
                contexts.popitem(last=False)
            contexts[exchange.id] = SpanContext(ids[0], ids[1], is_remote=False, trace_flags=TraceFlags(ids[2]))

    def on_effects(self, effects: list[Any]) -> None:
        runs = self._runs
        if runs is None:
            return
        contexts = self._contexts
        for e in effects:
            # Transition.request_id (the exchange whose response or stream showed the change) lets the
            # run span link back to creating requests too, whose path holds no run id.
            request_id = getattr(e, "request_id", None)
            if request_id is not None:
                with self._lock:
                    ctx = contexts.get(request_id)
                if ctx is not None:
                    if type(e) is ResponseTransition:
                        self._responses_spans.link_request(e.response_id, ctx)
                    else:
                        runs.link_request(e.run_id, ctx)
        runs.on_effects(effects)
        self._responses_spans.on_effects(effects)

    def shutdown(self) -> None:
        provider = self._provider
        if provider is None:
            return
        try:
            if self._owned:
                provider.shutdown()
            elif hasattr(provider, "force_flush"):
                provider.force_flush()
        except Exception as exc:  # exporting is best effort; shutdown must finish
            log.warning("flushing spans failed: %s: %s", type(exc).__name__, exc)
