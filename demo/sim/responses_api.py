"""The Responses API: create (JSON, SSE, background), retrieve (poll or resumed stream), cancel, delete,
input items; and conversations, the grouping the `conversation` parameter refers to.

Served under the simulator's prefix; with the Azure prefix `/openai` also under `/openai/v1` (Azure
OpenAI's v1 API), `?api-version=` being ignored as everywhere in the simulator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from .config import SimConfig
from .errors import ApiError, Json, bad, metadata, paginate, required_str
from .objects import new_id
from .responses import json_response, read_json
from .responses_foundry import AGENT_FIELDS, agent_of
from .responses_foundry import PREFIX as FOUNDRY_PREFIX
from .responses_model import SimResponse, build_timeline
from .responses_request import (
    CREATE_FIELDS,
    Conversation,
    check_flags,
    check_outputs,
    input_items,
    item_tokens,
    make_plan,
    new_response,
    tools_of,
    unknown_parameter,
)
from .responses_stream import stream_response


@dataclass(slots=True, eq=False)
class ResponsesState:
    config: SimConfig
    clock: Callable[[], float] = time.time
    responses: dict[str, SimResponse] = field(default_factory=dict)
    conversations: dict[str, Conversation] = field(default_factory=dict)
    prompts_seen: set[bytes] = field(default_factory=set)

    def seen(self, key: bytes) -> bool:
        if key in self.prompts_seen:
            return True
        if len(self.prompts_seen) < 100_000:
            self.prompts_seen.add(key)
        return False


RESPONSES = web.AppKey("sim_responses", ResponsesState)


def _state(request: web.Request) -> ResponsesState:
    return request.app[RESPONSES]


def _not_found(response_id: str) -> ApiError:
    return ApiError(404, f"Response with id '{response_id}' not found.", param="response_id")


def _find(state: ResponsesState, response_id: str) -> SimResponse:
    resp = state.responses.get(response_id)
    if resp is None:
        raise _not_found(response_id)
    return resp


def _conversation(state: ResponsesState, raw: object) -> Conversation | None:
    if raw is None:
        return None
    conv_id = raw.get("id") if isinstance(raw, dict) else raw
    if not isinstance(conv_id, str):
        raise bad("Invalid value for 'conversation': expected an id or {'id': ...}.", param="conversation")
    conversation = state.conversations.get(conv_id)
    if conversation is None:
        raise ApiError(404, f"Conversation with id '{conv_id}' not found.", param="conversation")
    return conversation


def _context(state: ResponsesState, body: Json, conversation: Conversation | None) -> tuple[int, list[str]]:
    """Tokens an earlier turn carries into this one, and the function calls it left unanswered."""
    previous_id = body.get("previous_response_id")
    if previous_id is not None:
        if not isinstance(previous_id, str) or previous_id not in state.responses:
            raise ApiError(404, f"Previous response with id '{previous_id}' not found.",
                           param="previous_response_id")
        previous = state.responses[previous_id]
        previous.snapshot(state.clock())
        if not previous.finished(state.clock()):
            raise bad(f"Previous response with id '{previous_id}' is still in progress.",
                      param="previous_response_id")
        return previous.context_tokens, list(previous.pending_calls)
    if conversation is not None:
        return sum(item_tokens(i) for i in conversation.items), list(conversation.pending_calls)
    return 0, []


def create(state: ResponsesState, body: Json, *, foundry: bool = False) -> tuple[SimResponse, bool]:
    for key in body:
        if key not in CREATE_FIELDS and not (foundry and key in AGENT_FIELDS):
            raise unknown_parameter(key)
    agent = agent_of(body) if foundry else None
    required_str(body, "model")
    background, stream, store = check_flags(body)
    conversation = _conversation(state, body.get("conversation"))
    context, pending = _context(state, body, conversation)
    items = input_items(body)
    check_outputs(items, pending)
    tools = tools_of(body)
    config = state.config
    plan, fields = make_plan(body, items, tools, context, state.seen, step_s=config.step_s,
                             queued_s=config.queued_s)
    now = state.clock()
    resp = new_response(body, fields, tools, now, background=background, store=store,
                        conversation=conversation.obj["id"] if conversation else None)
    resp.input_items = items
    if agent is not None:
        resp.obj["agent_reference"] = agent
    build_timeline(resp, plan, now)
    if conversation is not None:
        final = resp.timeline[-1][2]["response"]
        conversation.items.extend([*items, *final["output"]])
        conversation.pending_calls = list(resp.pending_calls)
    if store:
        state.responses[resp.obj["id"]] = resp
    return resp, stream


async def create_response(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    resp, stream = create(state, await read_json(request), foundry="project" in request.match_info)
    if stream:
        return await stream_response(request, resp, state.clock, max_chunk=state.config.sse_max_chunk)
    if not resp.background:
        # A synchronous create answers when the model is done, as the service does.
        await asyncio.sleep(max(0.0, resp.end_at - state.clock()))
    return json_response(request, resp.snapshot(state.clock()))


async def retrieve_response(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    resp = _find(state, request.match_info["response_id"])
    if request.query.get("stream", "false").lower() == "true":
        if not resp.background:
            raise bad("Streaming a stored response is only supported for responses created with "
                      "background=true.", param="stream")
        raw = request.query.get("starting_after", "-1")
        try:
            after = int(raw)
        except ValueError:
            raise bad(f"Invalid 'starting_after': expected an integer, got '{raw}'.",
                      param="starting_after") from None
        return await stream_response(request, resp, state.clock, after, max_chunk=state.config.sse_max_chunk)
    return json_response(request, resp.snapshot(state.clock()))


async def cancel_response(request: web.Request) -> web.Response:
    state = _state(request)
    resp = _find(state, request.match_info["response_id"])
    now = state.clock()
    current = resp.snapshot(now)
    if not resp.background:
        raise bad("Only responses created with background=true can be cancelled.", param="response_id")
    if current["status"] == "cancelled":
        return json_response(request, current)
    if resp.finished(now):
        raise bad(f"Cannot cancel a response with status '{current['status']}'.", param="response_id")
    return json_response(request, resp.cancel(now))


async def delete_response(request: web.Request) -> web.Response:
    state = _state(request)
    resp = _find(state, request.match_info["response_id"])
    del state.responses[resp.obj["id"]]
    resp.wake.set()
    return json_response(request, {"id": resp.obj["id"], "object": "response", "deleted": True})


def _item_list(items: list[Json], query: object) -> Json:
    page, more = paginate(items, lambda item: str(item["id"]), query, "item")
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": more}


async def list_input_items(request: web.Request) -> web.Response:
    resp = _find(_state(request), request.match_info["response_id"])
    return json_response(request, _item_list(resp.input_items, request.query))


async def create_conversation(request: web.Request) -> web.Response:
    state = _state(request)
    body = await read_json(request)
    for key in body:
        if key not in ("items", "metadata"):
            raise unknown_parameter(key)
    obj: Json = {"id": new_id("conv"), "object": "conversation", "created_at": int(state.clock()),
           "metadata": metadata(body) or {}}
    conversation = Conversation(obj, input_items({"input": body.get("items")}))
    state.conversations[obj["id"]] = conversation
    return json_response(request, obj)


def _find_conversation(request: web.Request) -> Conversation:
    conv_id = request.match_info["conversation_id"]
    conversation = _state(request).conversations.get(conv_id)
    if conversation is None:
        raise ApiError(404, f"Conversation with id '{conv_id}' not found.", param="conversation_id")
    return conversation


async def retrieve_conversation(request: web.Request) -> web.Response:
    return json_response(request, _find_conversation(request).obj)


async def delete_conversation(request: web.Request) -> web.Response:
    conversation = _find_conversation(request)
    del _state(request).conversations[conversation.obj["id"]]
    return json_response(request, {"id": conversation.obj["id"], "object": "conversation.deleted",
                                   "deleted": True})


async def list_conversation_items(request: web.Request) -> web.Response:
    return json_response(request, _item_list(_find_conversation(request).items, request.query))


def add_routes(app: web.Application, config: SimConfig, clock: Callable[[], float]) -> None:
    app[RESPONSES] = ResponsesState(config, clock)
    prefixes = [config.prefix, FOUNDRY_PREFIX] + (["/openai/v1"] if config.prefix == "/openai" else [])
    router = app.router
    for prefix in prefixes:
        responses = f"{prefix}/responses"
        router.add_post(responses, create_response)
        router.add_get(f"{responses}/{{response_id}}", retrieve_response)
        router.add_delete(f"{responses}/{{response_id}}", delete_response)
        router.add_post(f"{responses}/{{response_id}}/cancel", cancel_response)
        router.add_get(f"{responses}/{{response_id}}/input_items", list_input_items)
        conversations = f"{prefix}/conversations"
        router.add_post(conversations, create_conversation)
        router.add_get(f"{conversations}/{{conversation_id}}", retrieve_conversation)
        router.add_delete(f"{conversations}/{{conversation_id}}", delete_conversation)
        router.add_get(f"{conversations}/{{conversation_id}}/items", list_conversation_items)
