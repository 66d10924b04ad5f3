"""Run operations: create (and create-with-thread), submit tool outputs, cancel; and the scenarios."""

from __future__ import annotations

from typing import Any

from . import objects, stages
from .errors import (
    Json,
    bad,
    invalid_type,
    metadata,
    not_found,
    optional,
    optional_int,
    optional_number,
    reject_unknown,
    required_str,
)
from .objects import Version, tokens
from .state import Run, Sim, Stage, Thread

SCENARIOS = (
    "complete",
    "tool_call",
    "code_interpreter",
    "file_search",
    "fail",
    "incomplete",
    "slow",
    "expire",
)
_RUN_FIELDS = frozenset(
    {
        "assistant_id",
        "model",
        "reasoning_effort",
        "instructions",
        "tools",
        "metadata",
        "temperature",
        "top_p",
        "stream",
        "max_prompt_tokens",
        "max_completion_tokens",
        "truncation_strategy",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
    }
)
CREATE_RUN_FIELDS = _RUN_FIELDS | {"additional_instructions", "additional_messages"}
CREATE_THREAD_AND_RUN_FIELDS = _RUN_FIELDS | {"thread", "tool_resources"}
MIN_TOKEN_CAP = 256  # spec: max_prompt_tokens / max_completion_tokens `minimum: 256`


def create_thread(sim: Sim, body: Json) -> Thread:
    meta = metadata(body)
    thread = Thread(objects.thread({**body, "metadata": meta}, sim.now_s()))
    raw_messages = body.get("messages") or []
    if not isinstance(raw_messages, list):
        raise invalid_type("messages", raw_messages, "an array")
    for i, raw in enumerate(raw_messages):
        thread.messages.append(
            objects.message_from_request(thread.obj["id"], raw, sim.now_s(), f"messages[{i}]")
        )
    sim.threads[thread.obj["id"]] = thread
    return thread


def add_message(sim: Sim, thread: Thread, body: Json) -> Json:
    active = sim.active_run(thread)
    if active is not None:
        raise bad(f"Can't add messages to {thread.obj['id']} while a run {active.obj['id']} is active.")
    metadata(body)
    message = objects.message_from_request(thread.obj["id"], body, sim.now_s())
    thread.messages.append(message)
    return message


def _scenario(run_meta: dict[str, str], assistant: Json) -> tuple[str, str]:
    source = run_meta if "sim_scenario" in run_meta else (assistant.get("metadata") or {})
    scenario = source.get("sim_scenario", "complete")
    if scenario not in SCENARIOS:
        raise bad(
            f"Unknown sim_scenario '{scenario}'. Supported values are: {', '.join(SCENARIOS)}.",
            param="metadata.sim_scenario",
        )
    error_source = run_meta if "sim_error_code" in run_meta else (assistant.get("metadata") or {})
    code = error_source.get("sim_error_code", "server_error")
    if code not in stages.ERROR_MESSAGES:
        raise bad(
            f"Unknown sim_error_code '{code}'. Supported values are: {', '.join(stages.ERROR_MESSAGES)}.",
            param="metadata.sim_error_code",
        )
    return scenario, code


def _tool_choice(body: Json) -> Any:
    choice = body.get("tool_choice")
    if choice is None:
        return "auto"
    if isinstance(choice, str) and choice in ("none", "auto", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") in (
        "function",
        "code_interpreter",
        "file_search",
        "retrieval",
    ):
        return choice
    raise bad("Invalid value for 'tool_choice'.", param="tool_choice", code="invalid_value")


def _truncation(body: Json) -> Json:
    strategy = body.get("truncation_strategy")
    if strategy is None:
        return {"type": "auto", "last_messages": None}
    if not isinstance(strategy, dict) or strategy.get("type") not in ("auto", "last_messages"):
        raise bad("Invalid value for 'truncation_strategy.type'.", param="truncation_strategy.type")
    return {"type": strategy["type"], "last_messages": strategy.get("last_messages")}


def _prompt_tokens(thread: Thread, instructions: str, tools: list[Json], truncation: Json) -> int:
    messages = thread.messages
    if truncation["type"] == "last_messages" and truncation.get("last_messages"):
        messages = messages[-int(truncation["last_messages"]) :]
    text = sum(tokens(objects.message_text(m)) + 4 for m in messages)
    return 20 + tokens(instructions) + text + 16 * len(tools)


def _stages(sim: Sim, run: Run) -> list[Stage]:
    step = sim.config.step_s
    scenario = run.scenario
    reply = stages.reply_for(run, scenario)
    if scenario == "slow":
        return [stages.message_stage(reply, duration=max(1.0, step))]
    if scenario == "incomplete":
        return [stages.message_stage(reply, duration=step, forced_incomplete=True)]
    if scenario in ("tool_call", "expire"):
        return [stages.function_stage(duration=step)]
    if scenario == "fail":
        return [stages.fail_stage(run.error_code, duration=step)]
    if scenario in ("code_interpreter", "file_search"):
        kind = "retrieval" if scenario == "file_search" and run.version == "v1" else scenario
        return [stages.builtin_tool_stage(kind, duration=step), stages.message_stage(reply, duration=step)]
    return [stages.message_stage(reply, duration=step)]


def create_run(
    sim: Sim,
    thread: Thread,
    body: Json,
    version: Version,
    *,
    allowed: frozenset[str] = CREATE_RUN_FIELDS,
    new_thread: bool = False,
) -> Run:
    reject_unknown(body, allowed)
    assistant_id = required_str(body, "assistant_id")
    assistant = sim.assistants.get(assistant_id)
    if assistant is None:
        raise not_found("assistant", assistant_id)
    active = sim.active_run(thread)
    if active is not None:
        raise bad(f"Thread {thread.obj['id']} already has an active run {active.obj['id']}.")
    cap_prompt = optional_int(body, "max_prompt_tokens", minimum=MIN_TOKEN_CAP)
    cap_completion = optional_int(body, "max_completion_tokens", minimum=MIN_TOKEN_CAP)
    temperature = optional_number(body, "temperature", maximum=2.0)
    top_p = optional_number(body, "top_p", maximum=1.0)
    meta = metadata(body) or {}
    tools = objects.check_tools(body)
    model = optional(body, "model", str, "a string") or assistant["model"]
    instructions = _instructions(body, assistant)
    parallel = optional(body, "parallel_tool_calls", bool, "a boolean")
    scenario, error_code = _scenario(meta, assistant)
    additional = body.get("additional_messages") or []
    if not isinstance(additional, list):
        raise invalid_type("additional_messages", additional, "an array")
    now = sim.clock()
    thread_id = thread.obj["id"]
    added = [
        objects.message_from_request(thread_id, raw, int(now), f"additional_messages[{i}]")
        for i, raw in enumerate(additional)
    ]
    thread.messages.extend(added)
    run_tools = tools if tools is not None else list(assistant["tools"])
    truncation = _truncation(body)
    obj: Json = {
        "id": objects.new_id("run"),
        "object": "thread.run",
        "created_at": int(now),
        "assistant_id": assistant_id,
        "thread_id": thread_id,
        "status": "queued",
        "required_action": None,
        "last_error": None,
        "expires_at": int(now) + objects.DEFAULT_EXPIRY_S,
        "started_at": None,
        "cancelled_at": None,
        "failed_at": None,
        "completed_at": None,
        "incomplete_details": None,
        "model": model,
        "instructions": instructions,
        "tools": run_tools,
        "file_ids": list(assistant.get("file_ids") or []),
        "metadata": meta,
        "usage": None,
        "temperature": temperature if temperature is not None else assistant.get("temperature", 1.0),
        "top_p": top_p if top_p is not None else assistant.get("top_p", 1.0),
        "max_prompt_tokens": cap_prompt,
        "max_completion_tokens": cap_completion,
        "truncation_strategy": truncation,
        "tool_choice": _tool_choice(body),
        "parallel_tool_calls": True if parallel is None else parallel,
        "response_format": body.get("response_format") or assistant.get("response_format") or "auto",
    }
    run = Run(
        obj=obj,
        thread=thread,
        version=version,
        scenario=scenario,
        error_code=error_code,
        prompt_base=_prompt_tokens(thread, instructions, run_tools, truncation),
    )
    _start(sim, run, now, stream=bool(body.get("stream")), new_thread=new_thread)
    return run


def _instructions(body: Json, assistant: Json) -> str:
    """The run's own instructions, else the assistant's, plus additional_instructions."""
    instructions = optional(body, "instructions", str, "a string")
    if instructions is None:
        instructions = assistant.get("instructions") or ""
    extra = optional(body, "additional_instructions", str, "a string")
    if extra:
        instructions = f"{instructions}\n{extra}" if instructions else extra
    return str(instructions)


def _start(sim: Sim, run: Run, now: float, *, stream: bool, new_thread: bool) -> None:
    """Register a created run, emit its first events and schedule it to leave the queue."""
    obj = run.obj
    if run.scenario == "expire":
        # Long enough for a poll to see requires_action first on a busy machine, short for tests.
        run.expire_after_s = max(10 * sim.config.step_s, 0.3)
    run.stages.extend(_stages(sim, run))
    run.thread.runs.append(run)
    sim.runs[obj["id"]] = run
    if stream:
        sim.watch(run)
        if new_thread:
            sim.emit(run, "thread.created", run.thread.obj)
    sim.emit(run, "thread.run.created", obj)
    sim.emit(run, "thread.run.queued", obj)

    def start(at: float) -> None:
        obj["status"] = "in_progress"
        if obj["started_at"] is None:
            obj["started_at"] = int(at)
        sim.emit(run, "thread.run.in_progress", obj)
        sim.next_stage(run, at)

    sim.schedule(run, now, [(sim.config.queued_s, start)])


def submit_tool_outputs(sim: Sim, run: Run, body: Json) -> int | None:
    """Returns where a stream of the resumed run starts reading, when `stream` was asked for."""
    reject_unknown(body, frozenset({"tool_outputs", "stream"}))
    sim.advance(run)
    if run.status != "requires_action" or run.waiting_step is None:
        raise bad(f'Runs in status "{run.status}" do not accept tool outputs.')
    raw = body.get("tool_outputs")
    if raw is None:
        raise bad(
            "Missing required parameter: 'tool_outputs'.",
            param="tool_outputs",
            code="missing_required_parameter",
        )
    if not isinstance(raw, list):
        raise invalid_type("tool_outputs", raw, "an array")
    outputs: dict[str, str] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("tool_call_id"), str):
            raise bad(
                f"Missing required parameter: 'tool_outputs[{i}].tool_call_id'.", param=f"tool_outputs[{i}]"
            )
        output = item.get("output", "")
        if not isinstance(output, str):
            raise invalid_type(f"tool_outputs[{i}].output", output, "a string")
        outputs[item["tool_call_id"]] = output
    expected = [call["id"] for call in run.obj["required_action"]["submit_tool_outputs"]["tool_calls"]]
    if sorted(outputs) != sorted(expected):
        raise bad(f"Expected tool outputs for call_ids {expected}, got {list(outputs)}")
    for call in run.waiting_step["step_details"]["tool_calls"]:
        call["function"]["output"] = outputs[call["id"]]
    run.context_tokens += sum(tokens(o) for o in outputs.values())
    ordered = [outputs[call_id] for call_id in expected]
    run.stages.appendleft(stages.message_stage(stages.reply_after_tools(ordered), duration=sim.config.step_s))
    cursor = sim.watch(run) if body.get("stream") else None
    stages.resume_after_outputs(sim, run, sim.clock())
    return cursor


def cancel(sim: Sim, run: Run) -> None:
    sim.advance(run)
    if run.status not in ("queued", "in_progress", "requires_action"):
        raise bad(f"Cannot cancel run with status '{run.status}'.")
    now = sim.clock()
    run.obj["status"] = "cancelling"
    run.obj["required_action"] = None
    run.stages.clear()
    sim.emit(run, "thread.run.cancelling", run.obj)

    def finish(at: float) -> None:
        sim.close_message(run, at, "run_cancelled")
        for step in run.steps:
            if step["status"] == "in_progress":
                sim.close_step(run, step, at, "cancelled")
        sim.end_run(run, at, "cancelled")

    sim.schedule(run, now, [(sim.config.step_s, finish)])


def find_run(sim: Sim, thread_id: str, run_id: str) -> Run:
    run = sim.runs.get(run_id)
    if run is None or run.obj["thread_id"] != thread_id:
        raise not_found("run", run_id)
    sim.advance(run)
    return run


def find_thread(sim: Sim, thread_id: str) -> Thread:
    thread = sim.threads.get(thread_id)
    if thread is None:
        raise not_found("thread", thread_id)
    return thread


def delete_thread(sim: Sim, thread: Thread) -> None:
    del sim.threads[thread.obj["id"]]
    for run in thread.runs:
        sim.runs.pop(run.obj["id"], None)
