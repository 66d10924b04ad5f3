"""Which Responses API operation a request is, from its method and the tail of its path.

As for runs (proxy/routes.py) only the tail is matched, so any prefix works: `/v1/responses`
(OpenAI), `/openai/v1/responses` and `/openai/responses?api-version=...` (Azure OpenAI; the query is
not part of the path), `/api/v1/responses` (compatible servers).
"""

from __future__ import annotations

from ..analytics.ingest.operations import (  # noqa: F401 - the names this router tags exchanges with
    CONVERSATIONS_CREATE,
    OPERATIONS,
    RESPONSE_BODIES,
    RESPONSES_CANCEL,
    RESPONSES_CREATE,
    RESPONSES_DELETE,
    RESPONSES_INPUT_ITEMS,
    RESPONSES_RETRIEVE,
    response_id,
)


def classify(method: str, path: str) -> str | None:
    """The operation name, or None for any call that is not one of the Responses operations above."""
    if "/responses" not in path and "/conversations" not in path:
        return None
    parts = [p for p in path.split("/") if p]
    if parts and parts[-1] == "conversations":
        return CONVERSATIONS_CREATE if method == "POST" else None
    try:
        i = len(parts) - 1 - parts[::-1].index("responses")
    except ValueError:
        return None
    tail = parts[i:]
    t = len(tail)
    if t == 1:
        return RESPONSES_CREATE if method == "POST" else None
    if t == 2:
        return RESPONSES_RETRIEVE if method == "GET" else RESPONSES_DELETE if method == "DELETE" else None
    if t == 3:
        if tail[2] == "cancel" and method == "POST":
            return RESPONSES_CANCEL
        if tail[2] == "input_items" and method == "GET":
            return RESPONSES_INPUT_ITEMS
    return None
