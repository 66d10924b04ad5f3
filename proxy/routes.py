"""Which Runs API operation a request is, from its method and the tail of its path.

Only the tail is matched so any prefix works: `/v1/threads/...` (OpenAI), `/openai/threads/...`
(Azure-style), `/api/v1/threads/...` (self-hosted compatible servers). The spec's paths have no `/v1`;
the server URL carries it, so the prefix is whatever the app's base URL had.
"""

from __future__ import annotations

from typing import Final

from ..analytics.ingest.operations import (  # the names this router tags exchanges with
    OTHER,
    RUNS_CANCEL,
    RUNS_CREATE,
    RUNS_LIST,
    RUNS_RETRIEVE,
    RUNS_SUBMIT_TOOL_OUTPUTS,
    RUNS_UPDATE,
    STEPS_LIST,
    STEPS_RETRIEVE,
    THREADS_CREATE_AND_RUN,
)
from ..analytics.ingest.operations import RUN_OPERATIONS as OPERATIONS
from .response_routes import classify as classify_responses

__all__ = ["OPERATIONS", "OTHER", "RUNS_CANCEL", "RUNS_CREATE", "RUNS_LIST", "RUNS_RETRIEVE",
           "RUNS_SUBMIT_TOOL_OUTPUTS", "RUNS_UPDATE", "STEPS_LIST", "STEPS_RETRIEVE", "STREAMABLE",
           "THREADS_CREATE_AND_RUN", "classify"]

# Operations whose request may ask for `stream: true`.
STREAMABLE: Final = frozenset({RUNS_CREATE, THREADS_CREATE_AND_RUN, RUNS_SUBMIT_TOOL_OUTPUTS})


def classify(method: str, path: str) -> str | None:
    """Return the operation name, or None for any call that is neither one of the nine Runs operations
    nor a Responses operation (proxy/response_routes.py)."""
    # Cheap reject first: this runs for every proxied request.
    if "/runs" not in path:
        return classify_responses(method, path)
    parts = [p for p in path.split("/") if p]
    try:
        i = len(parts) - 1 - parts[::-1].index("threads")
    except ValueError:
        return None
    tail = parts[i:]
    t = len(tail)
    if t < 2:
        return None
    get = method == "GET"
    post = method == "POST"
    # threads/runs
    if t == 2 and tail[1] == "runs":
        return THREADS_CREATE_AND_RUN if post else None
    if t < 3 or tail[2] != "runs":
        return None
    # threads/{thread_id}/runs
    if t == 3:
        return RUNS_CREATE if post else RUNS_LIST if get else None
    # threads/{thread_id}/runs/{run_id}
    if t == 4:
        return RUNS_UPDATE if post else RUNS_RETRIEVE if get else None
    if t == 5:
        if tail[4] == "submit_tool_outputs" and post:
            return RUNS_SUBMIT_TOOL_OUTPUTS
        if tail[4] == "cancel" and post:
            return RUNS_CANCEL
        if tail[4] == "steps" and get:
            return STEPS_LIST
        return None
    if t == 6 and tail[4] == "steps" and get:
        return STEPS_RETRIEVE
    return None
