"""Response spans: request-span naming for the Responses operations (the lifecycle spans follow).

A response's trace and span ids are derived from its id, as a run's are (proxy/run_spans.py says
why): a poll's request span links to the response span from nothing but the id in its path.
"""

from __future__ import annotations

from typing import Any, Final

from opentelemetry.trace import Link, SpanContext, TraceFlags

from proxy import response_routes as rr
from proxy.run_spans import _digest

PROVIDER: Final = "openai"
API_TYPE: Final = "responses"
# GenAI semantic conventions: the operation of a call that polls a response already created.
FETCH_RESPONSE: Final = "fetch_response"
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
