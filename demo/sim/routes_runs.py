"""Runs and run steps."""

from __future__ import annotations

from aiohttp import web

from . import engine, objects
from .errors import ApiError, Json, bad, invalid_type, metadata, not_found, paginate
from .responses import json_response, read_json, sim_of, version_of
from .state import Run
from .streaming import stream_run


def _render_run(request: web.Request, run: Run) -> Json:
    return objects.render(run.obj, version_of(request))


async def create_run(request: web.Request) -> web.StreamResponse:
    sim = sim_of(request)
    thread = engine.find_thread(sim, request.match_info["thread_id"])
    body = await read_json(request)
    run = engine.create_run(sim, thread, body, version_of(request))
    if body.get("stream"):
        return await stream_run(request, sim, run, 0)
    return json_response(request, _render_run(request, run))


async def create_thread_and_run(request: web.Request) -> web.StreamResponse:
    sim = sim_of(request)
    body = await read_json(request)
    raw_thread = body.get("thread") or {}
    if not isinstance(raw_thread, dict):
        raise invalid_type("thread", raw_thread, "an object")
    thread = engine.create_thread(sim, raw_thread)
    try:
        run = engine.create_run(
            sim,
            thread,
            body,
            version_of(request),
            allowed=engine.CREATE_THREAD_AND_RUN_FIELDS,
            new_thread=True,
        )
    except ApiError:
        # A rejected request leaves no half-made thread behind.
        engine.delete_thread(sim, thread)
        raise
    if body.get("tool_resources") is not None:
        thread.obj["tool_resources"] = body["tool_resources"]
    if body.get("stream"):
        return await stream_run(request, sim, run, 0)
    return json_response(request, _render_run(request, run))


async def list_runs(request: web.Request) -> web.Response:
    sim = sim_of(request)
    thread = engine.find_thread(sim, request.match_info["thread_id"])
    sim.advance_thread(thread)
    runs, more = paginate(thread.runs, lambda run: str(run.obj["id"]), request.query, "run")
    return json_response(request, objects.page([_render_run(request, run) for run in runs], more))


def _run(request: web.Request) -> Run:
    return engine.find_run(sim_of(request), request.match_info["thread_id"], request.match_info["run_id"])


async def retrieve_run(request: web.Request) -> web.Response:
    return json_response(request, _render_run(request, _run(request)))


async def update_run(request: web.Request) -> web.Response:
    run = _run(request)
    body = await read_json(request)
    for key in body:
        if key != "metadata":
            raise bad(f"Unrecognized request argument supplied: {key}")
    if "metadata" in body:
        run.obj["metadata"] = metadata(body) or {}
    return json_response(request, _render_run(request, run))


async def submit_tool_outputs(request: web.Request) -> web.StreamResponse:
    sim = sim_of(request)
    run = _run(request)
    cursor = engine.submit_tool_outputs(sim, run, await read_json(request))
    if cursor is not None:
        return await stream_run(request, sim, run, cursor)
    return json_response(request, _render_run(request, run))


async def cancel_run(request: web.Request) -> web.Response:
    run = _run(request)
    engine.cancel(sim_of(request), run)
    return json_response(request, _render_run(request, run))


async def list_steps(request: web.Request) -> web.Response:
    run = _run(request)
    steps, more = paginate(run.steps, lambda step: str(step["id"]), request.query, "step")
    version = version_of(request)
    return json_response(request, objects.page([objects.render(s, version) for s in steps], more))


async def retrieve_step(request: web.Request) -> web.Response:
    run = _run(request)
    step_id = request.match_info["step_id"]
    for step in run.steps:
        if step["id"] == step_id:
            return json_response(request, objects.render(step, version_of(request)))
    raise not_found("step", step_id)


def add_routes(router: web.UrlDispatcher, prefix: str) -> None:
    runs = f"{prefix}/threads/{{thread_id}}/runs"
    # Registered before /threads/{thread_id} so that "runs" is not taken for a thread id.
    router.add_post(f"{prefix}/threads/runs", create_thread_and_run)
    router.add_post(runs, create_run)
    router.add_get(runs, list_runs)
    router.add_get(f"{runs}/{{run_id}}", retrieve_run)
    router.add_post(f"{runs}/{{run_id}}", update_run)
    router.add_post(f"{runs}/{{run_id}}/submit_tool_outputs", submit_tool_outputs)
    router.add_post(f"{runs}/{{run_id}}/cancel", cancel_run)
    router.add_get(f"{runs}/{{run_id}}/steps", list_steps)
    router.add_get(f"{runs}/{{run_id}}/steps/{{step_id}}", retrieve_step)
