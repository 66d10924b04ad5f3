"""Response spans: one span per response, and the request spans of the Responses operations.

A response's trace and span ids are derived from its id, as a run's are (proxy/addons/run_spans.py says
why): a poll's request span links to the response span from nothing but the id in its path.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Final

from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from ...analytics.ingest.response_merge import ResponseFinished, ResponseTransition
from .. import response_routes as rr
from .effects import apply_each
from .run_spans import MAX_OPEN_RUNS, UNSET, RunSpans, _digest, _not_traced, _ns, _OpenRun, _set, _us_ns

PROVIDER: Final = "openai"
API_TYPE: Final = "responses"
# GenAI semantic conventions: the operation of a call that polls a response already created.
FETCH_RESPONSE: Final = "fetch_response"
CHAT: Final = "chat"
# (span attribute, responses column): GenAI semantic conventions where they name it, openai.* else.
_ATTRS: Final = (
    ("gen_ai.conversation.id", "conversation_id"),
    ("gen_ai.usage.input_tokens", "input_tokens"),
    ("gen_ai.usage.output_tokens", "output_tokens"),
    ("gen_ai.usage.cache_read.input_tokens", "cached_input_tokens"),
    ("gen_ai.usage.reasoning.output_tokens", "reasoning_tokens"),
    ("openai.response.usage.total_tokens", "total_tokens"),
    ("gen_ai.request.max_tokens", "max_output_tokens"),
    ("gen_ai.request.temperature", "temperature"),
    ("gen_ai.request.top_p", "top_p"),
    ("openai.response.service_tier", "service_tier"),
    ("openai.response.background", "background"),
    ("openai.response.previous_response_id", "previous_response_id"),
    ("openai.response.incomplete_reason", "incomplete_reason"),
    ("openai.response.error.code", "error_code"),
    ("gen_ai.request.reasoning.effort", "reasoning_effort"),
    ("openai.response.api_version", "api_version"),
    ("openai.response.api_provider", "api_provider"),
    # the Azure AI Foundry agent it ran as (analytics/ingest/response_agents.py)
    ("gen_ai.agent.name", "agent_name"),
    ("gen_ai.agent.version", "agent_version"),
)
# Route templates (HTTP semconv http.route) of the Responses operations, after the app's path prefix.
ROUTES: Final = {
    rr.RESPONSES_CREATE: "/responses",
    rr.RESPONSES_RETRIEVE: "/responses/{response_id}",
    rr.RESPONSES_DELETE: "/responses/{response_id}",
    rr.RESPONSES_CANCEL: "/responses/{response_id}/cancel",
    rr.RESPONSES_INPUT_ITEMS: "/responses/{response_id}/input_items",
    rr.CONVERSATIONS_CREATE: "/conversations",
}


def response_trace_id(response_id: str) -> int:
    """The trace id of a response's span: the first 16 bytes of sha256("runtap:response:" + id)."""
    return int.from_bytes(_digest(b"response", response_id)[:16], "big") or 1


def response_span_id(response_id: str) -> int:
    return int.from_bytes(_digest(b"response", response_id)[16:24], "big") or 1


def response_span_context(response_id: str) -> SpanContext:
    return SpanContext(response_trace_id(response_id), response_span_id(response_id), is_remote=True,
                       trace_flags=TraceFlags(TraceFlags.SAMPLED))


def request_span(method: str, path: str, operation: str, attrs: dict[str, Any], links: list[Link]) -> str:
    """Fill a Responses request span's attributes and links; return its name. A poll is a
    `fetch_response` span; it carries no token usage (the response's own span counts those)."""
    anchor = "/conversations" if operation == rr.CONVERSATIONS_CREATE else "/responses"
    route = path[:path.rfind(anchor)] + ROUTES[operation]
    attrs["http.route"] = route
    attrs["gen_ai.provider.name"] = PROVIDER
    attrs["openai.api.type"] = API_TYPE
    response_id = rr.response_id(path) if operation != rr.CONVERSATIONS_CREATE else None
    if response_id:
        attrs["gen_ai.response.id"] = response_id
        links.append(Link(response_span_context(response_id), {"openai.link": "response"}))
    if operation == rr.RESPONSES_RETRIEVE:
        attrs["gen_ai.operation.name"] = FETCH_RESPONSE
        return FETCH_RESPONSE
    return f"{method} {route}"


class ResponseSpans:
    """One `chat <model>` span per response, emitted when it first reaches a terminal status
    (ResponseFinished, once per response across restarts), through the run spans' emitter: same
    sampling, limits and ReadableSpan hand-off. Its events are the status transitions this process
    observed; it links to the requests that showed them (creates, polls, resumes)."""

    def __init__(self, runs: RunSpans) -> None:
        self._runs = runs
        self._open: OrderedDict[str, _OpenRun] = OrderedDict()

    def _response(self, response_id: str) -> _OpenRun:
        open_ = self._open.get(response_id)
        if open_ is None:
            if len(self._open) >= MAX_OPEN_RUNS:
                self._open.popitem(last=False)
            open_ = self._open[response_id] = _OpenRun()
        return open_

    def link_request(self, response_id: str, request_span: SpanContext) -> None:
        links = self._response(response_id).links
        if len(links) < 64 and request_span not in links:
            links.append(request_span)

    def on_effects(self, effects: list[Any]) -> None:
        # Guarded like the run spans: one response that cannot be traced keeps no other from its span.
        apply_each(effects, self._effect, _not_traced)

    def _effect(self, e: Any) -> None:
        t = type(e)
        if t is ResponseTransition:
            open_ = self._response(e.response_id)
            open_.model = e.model or open_.model
            attrs = {"openai.response.from_status": e.from_status or "none",
                     "openai.response.to_status": e.to_status, "openai.response.source": e.source}
            open_.events.append(("openai.response.transition", attrs, _us_ns(e.observed_at)))
        elif t is ResponseFinished:
            self._span(e.row)

    def _span(self, row: dict[str, Any]) -> None:
        rid: str = row["id"]
        open_ = self._open.pop(rid, None) or _OpenRun()
        model = row.get("model") or open_.model
        status = row.get("status") or "unknown"
        attrs: dict[str, Any] = {"gen_ai.operation.name": CHAT, "gen_ai.provider.name": PROVIDER,
                                 "gen_ai.response.id": rid, "openai.api.type": API_TYPE,
                                 "openai.response.status": status}
        for key, col in _ATTRS:
            _set(attrs, key, row.get(col))
        _set(attrs, "gen_ai.request.model", model)
        _set(attrs, "gen_ai.response.model", model)
        _set(attrs, "openai.response.tool_names", [n for n in row.get("tool_names") or () if isinstance(n, str)])
        queued, started = row.get("queued_observed_at"), row.get("in_progress_observed_at")
        if isinstance(queued, float | int) and isinstance(started, float | int):
            attrs["openai.response.queue_seconds"] = max(started - queued, 0)
        error = status == "failed"
        if error:
            attrs["error.type"] = row.get("error_code") or status
        events = sorted(open_.events, key=lambda ev: ev[2])
        start = _ns(row.get("created_at")) or _ns(row.get("first_seen_at"))
        end = _ns(row.get("ended_at")) or _ns(row.get("status_observed_at"))
        # The API's timestamps are whole seconds: the span must still hold every event it carries.
        if events:
            first, last = events[0][2], events[-1][2]
            start = first if start is None else min(start, first)
            end = last if end is None else max(end, last)
        self._runs._emit(  # noqa: SLF001 - one span emitter for runs and responses
            f"{CHAT} {model}" if model else CHAT, response_trace_id(rid), response_span_id(rid), None,
            SpanKind.CLIENT, attrs, events, [Link(c, {"openai.link": "request"}) for c in open_.links],
            Status(StatusCode.ERROR, row.get("error_message") or status) if error else UNSET,
            start, max(end, start) if end is not None and start is not None else end)
