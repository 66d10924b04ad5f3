"""Assistants, threads and messages: plain stored objects, no lifecycle."""

from __future__ import annotations

from aiohttp import web

from . import engine, objects
from .errors import (
    Json,
    bad,
    metadata,
    not_found,
    optional,
    optional_number,
    paginate,
    required_str,
)
from .responses import json_response, read_json, sim_of, version_of

_ASSISTANT_FIELDS = (
    "model",
    "name",
    "description",
    "instructions",
    "tools",
    "tool_resources",
    "file_ids",
    "metadata",
    "temperature",
    "top_p",
    "response_format",
    "reasoning_effort",
)


def _check_assistant(body: Json, *, creating: bool) -> Json:
    for key in body:
        if key not in _ASSISTANT_FIELDS:
            raise bad(f"Unrecognized request argument supplied: {key}")
    if creating or "model" in body:
        required_str(body, "model")
    name = optional(body, "name", str, "a string")
    if name is not None and len(name) > 256:
        raise bad("Invalid 'name': string too long. Expected a string with maximum length 256.", param="name")
    optional(body, "description", str, "a string")
    optional(body, "instructions", str, "a string")
    optional_number(body, "temperature", maximum=2.0)
    optional_number(body, "top_p", maximum=1.0)
    checked = dict(body)
    checked.pop("reasoning_effort", None)
    tools = objects.check_tools(body)
    if tools is not None:
        checked["tools"] = tools
    if "metadata" in body:
        checked["metadata"] = metadata(body) or {}
    return checked


async def create_assistant(request: web.Request) -> web.Response:
    sim = sim_of(request)
    body = _check_assistant(await read_json(request), creating=True)
    assistant = objects.assistant(body, sim.now_s())
    sim.assistants[assistant["id"]] = assistant
    return json_response(request, objects.render(assistant, version_of(request)))


def _assistant(request: web.Request) -> Json:
    assistant_id = request.match_info["assistant_id"]
    assistant = sim_of(request).assistants.get(assistant_id)
    if assistant is None:
        raise not_found("assistant", assistant_id)
    return assistant


async def retrieve_assistant(request: web.Request) -> web.Response:
    return json_response(request, objects.render(_assistant(request), version_of(request)))


async def update_assistant(request: web.Request) -> web.Response:
    assistant = _assistant(request)
    assistant.update(_check_assistant(await read_json(request), creating=False))
    return json_response(request, objects.render(assistant, version_of(request)))


async def delete_assistant(request: web.Request) -> web.Response:
    assistant = _assistant(request)
    del sim_of(request).assistants[assistant["id"]]
    return json_response(request, objects.deleted("assistant", assistant["id"]))


async def list_assistants(request: web.Request) -> web.Response:
    items, more = paginate(list(sim_of(request).assistants.values()), _id, request.query, "assistant")
    version = version_of(request)
    return json_response(request, objects.page([objects.render(a, version) for a in items], more))


async def create_thread(request: web.Request) -> web.Response:
    body = await read_json(request)
    for key in body:
        if key not in ("messages", "tool_resources", "metadata"):
            raise bad(f"Unrecognized request argument supplied: {key}")
    thread = engine.create_thread(sim_of(request), body)
    return json_response(request, objects.render(thread.obj, version_of(request)))


async def retrieve_thread(request: web.Request) -> web.Response:
    thread = engine.find_thread(sim_of(request), request.match_info["thread_id"])
    return json_response(request, objects.render(thread.obj, version_of(request)))


async def update_thread(request: web.Request) -> web.Response:
    thread = engine.find_thread(sim_of(request), request.match_info["thread_id"])
    body = await read_json(request)
    if "metadata" in body:
        thread.obj["metadata"] = metadata(body) or {}
    if body.get("tool_resources") is not None:
        thread.obj["tool_resources"] = body["tool_resources"]
    return json_response(request, objects.render(thread.obj, version_of(request)))


async def delete_thread(request: web.Request) -> web.Response:
    sim = sim_of(request)
    thread = engine.find_thread(sim, request.match_info["thread_id"])
    engine.delete_thread(sim, thread)
    return json_response(request, objects.deleted("thread", thread.obj["id"]))


async def create_message(request: web.Request) -> web.Response:
    sim = sim_of(request)
    thread = engine.find_thread(sim, request.match_info["thread_id"])
    message = engine.add_message(sim, thread, await read_json(request))
    return json_response(request, objects.render(message, version_of(request)))


async def list_messages(request: web.Request) -> web.Response:
    sim = sim_of(request)
    thread = engine.find_thread(sim, request.match_info["thread_id"])
    sim.advance_thread(thread)
    messages = thread.messages
    run_id = request.query.get("run_id")
    if run_id:
        messages = [m for m in messages if m["run_id"] == run_id]
    items, more = paginate(messages, _id, request.query, "message")
    version = version_of(request)
    return json_response(request, objects.page([objects.render(m, version) for m in items], more))


def _message(request: web.Request) -> Json:
    sim = sim_of(request)
    thread = engine.find_thread(sim, request.match_info["thread_id"])
    sim.advance_thread(thread)
    message_id = request.match_info["message_id"]
    for message in thread.messages:
        if message["id"] == message_id:
            return message
    raise not_found("message", message_id)


async def retrieve_message(request: web.Request) -> web.Response:
    return json_response(request, objects.render(_message(request), version_of(request)))


async def update_message(request: web.Request) -> web.Response:
    message = _message(request)
    body = await read_json(request)
    if "metadata" in body:
        message["metadata"] = metadata(body) or {}
    return json_response(request, objects.render(message, version_of(request)))


def _id(obj: Json) -> str:
    return str(obj["id"])


def add_routes(router: web.UrlDispatcher, prefix: str) -> None:
    router.add_post(f"{prefix}/assistants", create_assistant)
    router.add_get(f"{prefix}/assistants", list_assistants)
    router.add_get(f"{prefix}/assistants/{{assistant_id}}", retrieve_assistant)
    router.add_post(f"{prefix}/assistants/{{assistant_id}}", update_assistant)
    router.add_delete(f"{prefix}/assistants/{{assistant_id}}", delete_assistant)
    router.add_post(f"{prefix}/threads", create_thread)
    router.add_get(f"{prefix}/threads/{{thread_id}}", retrieve_thread)
    router.add_post(f"{prefix}/threads/{{thread_id}}", update_thread)
    router.add_delete(f"{prefix}/threads/{{thread_id}}", delete_thread)
    router.add_post(f"{prefix}/threads/{{thread_id}}/messages", create_message)
    router.add_get(f"{prefix}/threads/{{thread_id}}/messages", list_messages)
    router.add_get(f"{prefix}/threads/{{thread_id}}/messages/{{message_id}}", retrieve_message)
    router.add_post(f"{prefix}/threads/{{thread_id}}/messages/{{message_id}}", update_message)
