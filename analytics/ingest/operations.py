"""The operation names of the Runs and Responses APIs: the vocabulary the relay's routers
(proxy/routes.py, proxy/response_routes.py) tag an exchange with and the ingest path decodes by. Here,
on the ingest side, because the ingest path never imports the relay; declared once for both."""

from __future__ import annotations

from typing import Final

RUNS_CREATE: Final = "runs.create"
THREADS_CREATE_AND_RUN: Final = "threads.create_and_run"
RUNS_LIST: Final = "runs.list"
RUNS_RETRIEVE: Final = "runs.retrieve"
RUNS_UPDATE: Final = "runs.update"
RUNS_SUBMIT_TOOL_OUTPUTS: Final = "runs.submit_tool_outputs"
RUNS_CANCEL: Final = "runs.cancel"
STEPS_LIST: Final = "steps.list"
STEPS_RETRIEVE: Final = "steps.retrieve"
OTHER: Final = "other"

RUN_OPERATIONS: Final = (
    RUNS_CREATE,
    THREADS_CREATE_AND_RUN,
    RUNS_LIST,
    RUNS_RETRIEVE,
    RUNS_UPDATE,
    RUNS_SUBMIT_TOOL_OUTPUTS,
    RUNS_CANCEL,
    STEPS_LIST,
    STEPS_RETRIEVE,
)

RESPONSES_CREATE: Final = "responses.create"
RESPONSES_RETRIEVE: Final = "responses.retrieve"
RESPONSES_CANCEL: Final = "responses.cancel"
RESPONSES_DELETE: Final = "responses.delete"
RESPONSES_INPUT_ITEMS: Final = "responses.input_items"
CONVERSATIONS_CREATE: Final = "conversations.create"

OPERATIONS: Final = (
    RESPONSES_CREATE,
    RESPONSES_RETRIEVE,
    RESPONSES_CANCEL,
    RESPONSES_DELETE,
    RESPONSES_INPUT_ITEMS,
    CONVERSATIONS_CREATE,
)

# Operations whose answer may be a response object (or an SSE stream of its events).
RESPONSE_BODIES: Final = frozenset({RESPONSES_CREATE, RESPONSES_RETRIEVE, RESPONSES_CANCEL})


def response_id(path: str) -> str | None:
    """The `{response_id}` of a path this module classified, if it has one."""
    parts = [p for p in path.split("/") if p]
    try:
        i = len(parts) - 1 - parts[::-1].index("responses")
    except ValueError:
        return None
    return parts[i + 1] if len(parts) > i + 1 else None
