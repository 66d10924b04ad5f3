"""Run-lifecycle spans: one `invoke_agent <assistant_id>` span per run, a child span per step.

Built on the writer thread from capture Effects. A run span is emitted when the run first reaches a
terminal status (merge.py emits RunFinished once per run, across restarts): it starts at the run's
`created_at`, ends at its terminal timestamp and carries one span event per status transition this
process observed. Step spans are emitted when each step finishes, which may be before the run span
(streams) or long after it (steps listed after a polled run ended).

Trace and span ids are derived from the run id (sha256), not random. That is what keeps a run in one
trace without shared state: step spans emitted later, by another sidecar behind the same load
balancer, or after a restart, name the same parent; a request span can link to the run span from
nothing but the run id in its path; and anyone holding a run id can compute its trace id
(`run_trace_id`) to look the run up in the tracing backend. The hash is uniform, so ratio samplers
keep working, and every process takes the same sampling decision for a run.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from ...analytics.ingest.merge import Effect, RunFinished, StepFinished, ToolTurnaround, Transition
from .effects import apply_each
from .otel_private import instrumentation_scope, span_limits

log = logging.getLogger("runtap.tracing")


def _not_traced(effect: Any) -> None:
    log.debug("span for %s not built", type(effect).__name__, exc_info=True)

PROVIDER: Final = "openai"
TRACER_NAME: Final = "runtap.runs"
# Runs seen but not finished yet (their transitions wait here for the run span), and finished runs
# remembered for the steps that arrive after them. Bounded: a run may never be seen to finish.
MAX_OPEN_RUNS: Final = 20_000
MAX_FINISHED_RUNS: Final = 20_000
_NS: Final = 1_000_000_000
_RUN_END = {"completed": "completed_at", "failed": "failed_at", "cancelled": "cancelled_at",
            "expired": "expires_at", "incomplete": "completed_at"}
_STEP_END = {"completed": "completed_at", "failed": "failed_at", "cancelled": "cancelled_at",
             "expired": "expired_at"}
# gen_ai.tool.type (OTel GenAI): function = the app's code, extension = runs on the provider's side,
# datastore = retrieval.
_TOOL_TYPE = {"function": "function", "code_interpreter": "extension", "file_search": "datastore",
              "retrieval": "datastore"}


_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def _digest(kind: bytes, oid: str) -> bytes:
    return hashlib.sha256(b"runtap:" + kind + b":" + oid.encode("utf-8", "surrogatepass")).digest()


def run_trace_id(run_id: str) -> int:
    """The trace id of every span of run `run_id`: the first 16 bytes of sha256("runtap:run:" + id)."""
    return int.from_bytes(_digest(b"run", run_id)[:16], "big") or 1


def run_span_id(run_id: str) -> int:
    return int.from_bytes(_digest(b"run", run_id)[16:24], "big") or 1


def step_span_id(step_id: str) -> int:
    return int.from_bytes(_digest(b"step", step_id)[:8], "big") or 1


def run_span_context(run_id: str) -> SpanContext:
    """The run span's context, computable from the run id alone (for links and parents): run_trace_id
    and run_span_id from one digest (every request span that names a run links to it)."""
    digest = _digest(b"run", run_id)
    return SpanContext(int.from_bytes(digest[:16], "big") or 1, int.from_bytes(digest[16:24], "big") or 1,
                       is_remote=True, trace_flags=_SAMPLED)


class _NextIds(IdGenerator):
    """Hands the SDK the ids chosen for the next span (the SDK asks its tracer's id generator)."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_id = 0

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_id


def _ns(seconds: Any) -> int | None:
    return int(seconds * _NS) if type(seconds) is int or type(seconds) is float else None


def _us_ns(seconds: float) -> int:
    # Observation times are microsecond-quantised (merge.quantize); staying on that grid keeps
    # "requires_action at T, outputs after S seconds" exactly equal to the next transition's time.
    return round(seconds * 1_000_000) * 1000


def _set(attrs: dict[str, Any], key: str, value: Any) -> None:
    if value is not None and value != "" and value != []:
        attrs[key] = value


class _OpenRun:
    __slots__ = ("events", "links", "model")

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], int]] = []
        self.links: list[SpanContext] = []
        self.model: str | None = None


UNSET: Final = Status(StatusCode.UNSET)


def local_context(trace_id: int, span_id: int, sampled: bool, state: Any = None, *,
                  random_trace_id: bool = False) -> SpanContext:
    """A span's own context, as the SDK builds it from a sampling decision."""
    flags = (TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT) | (
        TraceFlags.RANDOM_TRACE_ID if random_trace_id else 0)
    return SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags), trace_state=state)


def truncate_strings(attrs: dict[str, Any], max_value: int) -> None:
    """Cut string values to `max_value` characters, as the SDK applies max_span_attribute_length."""
    for key, value in attrs.items():
        if type(value) is str and len(value) > max_value:
            attrs[key] = value[:max_value]


def emit_finished(tracer: SdkTracer, name: str, context: SpanContext, parent: SpanContext | None,
                  kind: SpanKind, attrs: dict[str, Any], events: Sequence[Event], links: Sequence[Link],
                  status: Status, start: int, end: int, *, max_value: int | None) -> None:
    """Hand the span processors the ReadableSpan an SDK span built live would have ended as.

    Request spans (proxy/addons/tracing.py) and run spans both skip the SDK's live spans, whose attribute
    validation on every call costs more than the span is worth here; `max_value` is the SDK's
    attribute value length limit (None: unlimited), applied to strings as the SDK applies it.
    """
    if max_value is not None:
        truncate_strings(attrs, max_value)
    tracer.span_processor.on_end(ReadableSpan(
        name, context, parent, tracer.resource, attrs, events, links, kind, tracer.instrumentation_info,
        status, start, end, instrumentation_scope(tracer),
    ))


class RunSpans:
    def __init__(self, tracer_provider: Any) -> None:
        self._tracer = tracer_provider.get_tracer(TRACER_NAME)
        self._ids = _NextIds()
        # With the SDK's tracer a finished span is built once, as the ReadableSpan the SDK would have
        # produced (a live span cleans every attribute and event on the way: ~60 us of the writer's
        # ~360 us per 12-event stream). Another implementation gets live spans, and ids chosen through
        # its id generator where it has one; otherwise random ids (the run's spans are then tied
        # together by parentage within this process only).
        self._sdk = isinstance(self._tracer, SdkTracer)
        self._deterministic = self._sdk or hasattr(self._tracer, "id_generator")
        if not self._sdk:
            if self._deterministic:
                self._tracer.id_generator = self._ids
            else:
                log.warning("tracer provider %s is not the OpenTelemetry SDK's: run span ids will be random",
                            type(tracer_provider).__name__)
        self._lock = threading.Lock()
        # OrderedDicts: bounded by evicting the oldest, O(1) by popitem (proxy/addons/tracing.py says why)
        self._open: OrderedDict[str, _OpenRun] = OrderedDict()
        self._finished: OrderedDict[str, str | None] = OrderedDict()  # run id -> model, for late steps

    def _run(self, run_id: str) -> _OpenRun:
        run = self._open.get(run_id)
        if run is None:
            if len(self._open) >= MAX_OPEN_RUNS:
                self._open.popitem(last=False)
            run = self._open[run_id] = _OpenRun()
        return run

    def link_request(self, run_id: str, request_span: SpanContext) -> None:
        """A request that changed this run's status: the run span will link to it."""
        links = self._run(run_id).links
        if len(links) < 64 and request_span not in links:
            links.append(request_span)

    def on_effects(self, effects: list[Effect]) -> None:
        apply_each(effects, self._effect, _not_traced)

    def _effect(self, e: Any) -> None:
        if type(e) is Transition:
            run = self._run(e.run_id)
            run.model = e.model or run.model
            attrs = {"openai.run.from_status": e.from_status or "none",
                     "openai.run.to_status": e.to_status, "openai.run.source": e.source}
            run.events.append(("openai.run.transition", attrs, _us_ns(e.observed_at)))
        elif type(e) is ToolTurnaround:
            run = self._run(e.run_id)
            # The round started at the latest requires_action this process saw (0: not seen here,
            # the event then sits at the span's end).
            asked = next((at for name, attrs, at in reversed(run.events)
                          if attrs.get("openai.run.to_status") == "requires_action"), 0)
            run.events.append(("openai.run.tool_outputs_submitted",
                               {"openai.run.tool_turnaround_seconds": e.seconds},
                               asked + _us_ns(e.seconds) if asked else 0))
        elif type(e) is RunFinished:
            self._run_span(e.row)
        elif type(e) is StepFinished:
            self._step_span(e.row)

    def _emit(self, name: str, trace_id: int, span_id: int, parent: SpanContext | None, kind: SpanKind,
              attrs: dict[str, Any], events: list[tuple[str, dict[str, Any], int]], links: list[Link],
              status: Status, start: int | None, end: int | None) -> None:
        """One finished span: asked of the configured sampler as Tracer.start_span would, then handed
        to the span processors; the SDK's span limits applied as its live spans apply them."""
        # An explicit empty base context: without one the API reads the current context first, which
        # on this (writer) thread is always empty anyway.
        context = (trace.set_span_in_context(trace.NonRecordingSpan(parent), Context()) if parent is not None
                   else None)
        if not self._sdk:
            with self._lock:
                self._ids.trace_id, self._ids.span_id = trace_id, span_id
                span = self._tracer.start_span(name, context=context, kind=kind, attributes=attrs,
                                               start_time=start, links=links)
            for event_name, event_attrs, at in events:
                span.add_event(event_name, event_attrs, timestamp=at)
            span.set_status(status)
            span.end(end_time=end)
            return
        tracer: SdkTracer = self._tracer
        decision = tracer.sampler.should_sample(context, trace_id, name, kind, attrs, links)
        if not decision.decision.is_recording():
            return
        if decision.attributes:
            attrs.update(decision.attributes)
        limits = span_limits(tracer)
        for key, value in attrs.items():
            if type(value) is list:
                attrs[key] = tuple(value)  # the SDK keeps sequences as tuples
        span_events: Any = [Event(n, a, at) for n, a, at in events]
        if limits.max_events is not None and len(span_events) > limits.max_events:
            bounded: Any = BoundedList(limits.max_events)  # keeps the newest and counts the rest, as the SDK
            bounded.extend(span_events)
            span_events = bounded
        if limits.max_links is not None and len(links) > limits.max_links:
            links = links[:limits.max_links]  # the SDK keeps the first ones
        if start is None or end is None:  # a live span would have taken the time of its start or end call
            now = time.time_ns()
            start, end = start or now, end or now
        ctx = local_context(trace_id, span_id, decision.decision.is_sampled(), decision.trace_state)
        emit_finished(tracer, name, ctx, parent, kind, attrs, span_events, links, status, start, end,
                      max_value=limits.max_span_attribute_length)

    def _run_span(self, row: dict[str, Any]) -> None:
        run_id: str = row["id"]
        run = self._open.pop(run_id, None) or _OpenRun()
        model = row.get("model") or run.model
        finished = self._finished
        if len(finished) >= MAX_FINISHED_RUNS:
            finished.popitem(last=False)
        finished[run_id] = model
        status = row.get("status") or "unknown"
        start = _ns(row.get("created_at")) or _ns(row.get("first_seen_at"))
        end_field = _RUN_END.get(status)
        end = _ns(row.get(end_field)) if end_field else None
        end = end or _ns(row.get("ended_at")) or _ns(row.get("status_observed_at"))
        # API timestamps are truncated to the second, and this process may see the terminal status
        # any time after it (a stream ending at x.98 s read at x+1.005 s, a poll minutes later). The
        # span never ends before the last event it carries: its observation (microseconds) is then
        # the end.
        last_seen = max((at for _, _, at in run.events), default=0)
        if end is None or last_seen > end:
            end = last_seen or end
        attrs: dict[str, Any] = {"gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": PROVIDER,
                                 "gen_ai.response.id": run_id, "openai.run.id": run_id,
                                 "openai.run.status": status}
        for key, col in (("gen_ai.agent.id", "assistant_id"), ("gen_ai.conversation.id", "thread_id"),
                         ("gen_ai.usage.input_tokens", "prompt_tokens"),
                         ("gen_ai.usage.output_tokens", "completion_tokens"),
                         ("openai.run.usage.total_tokens", "total_tokens"),
                         ("gen_ai.request.max_input_tokens", "max_prompt_tokens"),
                         ("gen_ai.request.max_output_tokens", "max_completion_tokens"),
                         ("gen_ai.request.max_tokens", "max_completion_tokens"),
                         ("gen_ai.request.temperature", "temperature"), ("gen_ai.request.top_p", "top_p"),
                         ("openai.run.incomplete_reason", "incomplete_reason"),
                         ("openai.run.last_error.code", "last_error_code"),
                         ("openai.run.api_version", "api_version"),
                         ("openai.run.api_provider", "api_provider")):
            _set(attrs, key, row.get(col))
        _set(attrs, "gen_ai.request.model", model)
        created, started = _ns(row.get("created_at")), _ns(row.get("started_at"))
        if created is not None and started is not None:
            attrs["openai.run.queue_seconds"] = max(started - created, 0) / _NS
        error = status in ("failed", "expired")
        if error:
            attrs["error.type"] = row.get("last_error_code") or status
        assistant = row.get("assistant_id")
        events = [(name, event_attrs, at or end or time.time_ns())
                  for name, event_attrs, at in sorted(run.events, key=lambda ev: ev[2] or end or 0)]
        self._emit(f"invoke_agent {assistant}" if assistant else "invoke_agent", run_trace_id(run_id),
                   run_span_id(run_id), None, SpanKind.CLIENT, attrs, events,
                   [Link(c, {"openai.link": "request"}) for c in run.links],
                   Status(StatusCode.ERROR, row.get("last_error_message") or status) if error else UNSET,
                   start, max(end, start) if end is not None and start is not None else end)

    def _step_span(self, row: dict[str, Any]) -> None:
        run_id = row.get("run_id")
        step_id = row.get("id")
        if not isinstance(run_id, str) or not isinstance(step_id, str):
            return
        model = self._finished.get(run_id)
        if model is None and run_id in self._open:
            model = self._open[run_id].model
        kind = row.get("type")
        status = row.get("status") or "unknown"
        attrs: dict[str, Any] = {"gen_ai.provider.name": PROVIDER, "openai.run.id": run_id,
                                 "openai.run.step.id": step_id, "openai.run.step.status": status}
        _set(attrs, "openai.run.step.type", kind)
        _set(attrs, "gen_ai.agent.id", row.get("assistant_id"))
        _set(attrs, "gen_ai.conversation.id", row.get("thread_id"))
        _set(attrs, "gen_ai.usage.input_tokens", row.get("prompt_tokens"))
        _set(attrs, "gen_ai.usage.output_tokens", row.get("completion_tokens"))
        if kind == "tool_calls":
            types = [t for t in row.get("tool_types") or () if isinstance(t, str)]
            names = [n for n in row.get("tool_names") or () if isinstance(n, str)]
            _set(attrs, "openai.run.step.tool_types", types)
            _set(attrs, "openai.run.step.tool_names", names)
            attrs["gen_ai.operation.name"] = "execute_tool"
            # One span per step: a step of parallel calls to different tools names none of them.
            tool = names[0] if len(names) == 1 else types[0] if len(types) == 1 and not names else None
            _set(attrs, "gen_ai.tool.name", tool)
            if len(types) == 1:
                _set(attrs, "gen_ai.tool.type", _TOOL_TYPE.get(types[0]))
            name = f"execute_tool {tool}" if tool else "execute_tool"
        else:
            # message_creation: the model writing the assistant's message.
            attrs["gen_ai.operation.name"] = "chat"
            _set(attrs, "gen_ai.request.model", model)
            name = f"chat {model}" if model else "chat"
        start = _ns(row.get("created_at")) or _ns(row.get("first_seen_at"))
        end_field = _STEP_END.get(status)
        end = (_ns(row.get(end_field)) if end_field else None) or _ns(row.get("status_observed_at"))
        failed = status in ("failed", "expired")
        if failed:
            attrs["error.type"] = row.get("last_error_code") or status
        self._emit(name, run_trace_id(run_id), step_span_id(step_id), run_span_context(run_id), SpanKind.INTERNAL,
                   attrs, [], [],
                   Status(StatusCode.ERROR, row.get("last_error_message") or status) if failed else UNSET,
                   start, max(end, start) if end is not None and start is not None else end)
