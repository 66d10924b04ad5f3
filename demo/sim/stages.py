"""The steps a run goes through, per scenario: each stage is a few timed actions on one run step."""

from __future__ import annotations

import math
from typing import Any

import orjson

from . import objects
from .errors import Json
from .objects import new_id, tokens
from .state import Plan, Run, Sim, Stage, last_user_text

ERROR_MESSAGES = {
    "server_error": "Sorry, something went wrong.",
    "rate_limit_exceeded": "You exceeded your current quota, please check your plan and billing details.",
    "invalid_prompt": "Your prompt was flagged as potentially violating our usage policy.",
}
CODE_INPUT = "values = [3, 1, 4, 1, 5, 9, 2, 6]\nprint(sum(values) / len(values))"
CODE_LOGS = "3.875\n"
RANKING_OPTIONS = {"ranker": "default_2024_08_21", "score_threshold": 0.0}


def _chunks(text: str, pieces: int) -> list[str]:
    words = text.split(" ")
    size = max(1, -(-len(words) // pieces))
    parts = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [part if i == 0 else " " + part for i, part in enumerate(parts)]


def _snippet(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def reply_for(run: Run, scenario: str) -> str:
    said = _snippet(last_user_text(run.thread)) or "(nothing)"
    if scenario == "code_interpreter":
        return f"I ran some Python for you: the mean of the sample values is {CODE_LOGS.strip()}."
    if scenario == "file_search":
        return f'I searched the attached files for "{said}" and found no matching passages.'
    if scenario == "incomplete":
        return "Here is a long answer that keeps going. " * 24
    return f'This is a simulated reply to "{said}". No model was called: the runtap simulator answered.'


def reply_after_tools(outputs: list[str]) -> str:
    return f"Thanks, the tool said: {_snippet(' | '.join(outputs))}. That is my simulated final answer."


def start_message(sim: Sim, run: Run, at: float) -> Json:
    """Open a message_creation step and the (empty, in_progress) assistant message it writes."""
    obj = run.obj
    message = objects.message(
        obj["thread_id"],
        "assistant",
        [],
        int(at),
        status="in_progress",
        assistant_id=obj["assistant_id"],
        run_id=obj["id"],
    )
    run.thread.messages.append(message)
    run.message = message
    details = {"type": "message_creation", "message_creation": {"message_id": message["id"]}}
    step = sim.add_step(run, "message_creation", details, at)
    sim.emit(run, "thread.message.created", message)
    sim.emit(run, "thread.message.in_progress", message)
    return step


def message_stage(reply: str, *, duration: float, forced_incomplete: bool = False) -> Stage:
    chunks = _chunks(reply, 5)
    gap = duration / (len(chunks) + 1)

    def build(sim: Sim, run: Run, at: float) -> Plan:
        step_holder: list[Json] = []

        def start(at: float) -> None:
            step_holder.append(start_message(sim, run, at))

        def delta(index: int) -> Any:
            def write(at: float) -> None:
                message = run.message
                assert message is not None  # noqa: S101 - invariant for the type checker, not an input check
                text: Json = {"value": chunks[index]}
                if index == 0:
                    message["content"].append(objects.text_content(chunks[0]))
                    text["annotations"] = []
                else:
                    message["content"][0]["text"]["value"] += chunks[index]
                part = {"index": 0, "type": "text", "text": text}
                body = {"id": message["id"], "object": "thread.message.delta", "delta": {"content": [part]}}
                sim.emit(run, "thread.message.delta", body)

            return write

        def finish(at: float) -> None:
            step = step_holder[0]
            reason = sim.account(run, step, sim.step_prompt(run), tokens(reply), forced=forced_incomplete)
            sim.close_message(run, at, None if reason is None else "max_tokens")
            sim.close_step(run, step, at, "completed")
            if reason is not None:
                sim.end_run(run, at, "incomplete", incomplete_reason=reason)
            else:
                sim.next_stage(run, at)

        plan: Plan = [(0.0, start)]
        plan += [(gap, delta(i)) for i in range(len(chunks))]
        plan.append((gap, finish))
        return plan

    return build


def fail_stage(code: str, *, duration: float) -> Stage:
    error = {"code": code, "message": ERROR_MESSAGES[code]}

    def build(sim: Sim, run: Run, at: float) -> Plan:
        if code == "invalid_prompt":
            # A flagged prompt is refused before any step is taken.
            return [(duration, lambda at: sim.end_run(run, at, "failed", last_error=error))]
        steps: list[Json] = []

        def start(at: float) -> None:
            steps.append(start_message(sim, run, at))

        def fail(at: float) -> None:
            step = steps[0]
            sim.account(run, step, sim.step_prompt(run), 0)
            sim.close_message(run, at, "run_failed")
            sim.close_step(run, step, at, "failed", last_error=error)
            sim.end_run(run, at, "failed", last_error=error)

        return [(0.0, start), (duration, fail)]

    return build


def _sample_value(name: str, schema: Any) -> Any:
    if not isinstance(schema, dict):
        return "sample"
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return "San Francisco, CA" if name in ("location", "city", "place") else f"sample {name}"


def _arguments(function: Json) -> str:
    params = function.get("parameters") or {}
    props = params.get("properties") or {}
    names = params.get("required") or list(props)
    return orjson.dumps({name: _sample_value(name, props.get(name)) for name in names}).decode()


def planned_calls(run: Run) -> list[Json]:
    """The function calls the "model" asks for: the forced one, else every function tool (one when
    parallel_tool_calls is off), else a stock get_weather."""
    functions = [t["function"] for t in run.obj["tools"] if t.get("type") == "function"]
    choice = run.obj.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        wanted = (choice.get("function") or {}).get("name")
        functions = [f for f in functions if f.get("name") == wanted] or [{"name": wanted}]
    if not functions:
        functions = [
            {"name": "get_weather", "parameters": {"type": "object", "properties": {"location": {}}}}
        ]
    if run.obj.get("parallel_tool_calls") is False:
        functions = functions[:1]
    return [
        {
            "id": new_id("call"),
            "type": "function",
            "function": {"name": f["name"], "arguments": _arguments(f)},
        }
        for f in functions[:8]
    ]


def _step_delta(step: Json, calls: list[Json]) -> Json:
    return {
        "id": step["id"],
        "object": "thread.run.step.delta",
        "delta": {"step_details": {"type": "tool_calls", "tool_calls": calls}},
    }


def function_stage(*, duration: float) -> Stage:
    def build(sim: Sim, run: Run, at: float) -> Plan:
        calls = planned_calls(run)
        steps: list[Json] = []

        def start(at: float) -> None:
            steps.append(sim.add_step(run, "tool_calls", {"type": "tool_calls", "tool_calls": []}, at))

        def stream_arguments(at: float) -> None:
            step = steps[0]
            for index, call in enumerate(calls):
                fn = call["function"]
                step["step_details"]["tool_calls"].append(
                    {"id": call["id"], "type": "function", "function": {**fn, "output": None}}
                )
                head = {"name": fn["name"], "arguments": "", "output": None}
                sim.emit(
                    run,
                    "thread.run.step.delta",
                    _step_delta(step, [{"index": index, **call, "function": head}]),
                )
                for piece in _chunks(fn["arguments"], 3):
                    part = {"index": index, "type": "function", "function": {"arguments": piece}}
                    sim.emit(run, "thread.run.step.delta", _step_delta(step, [part]))

        def require_action(at: float) -> None:
            obj = run.obj
            run.waiting_step = steps[0]
            completion = sum(tokens(c["function"]["arguments"]) + 8 for c in calls)
            run.waiting_usage = (sim.step_prompt(run), completion)
            obj["status"] = "requires_action"
            obj["required_action"] = {
                "type": "submit_tool_outputs",
                "submit_tool_outputs": {"tool_calls": calls},
            }
            wait = max(0.0, obj["expires_at"] - at)
            if run.expire_after_s < wait:
                wait = run.expire_after_s
                obj["expires_at"] = math.ceil(at + wait)
            sim.schedule(run, at, [(wait, lambda at: sim.expire(run, at))])
            sim.emit(run, "thread.run.requires_action", obj)

        return [(0.0, start), (duration / 2, stream_arguments), (duration / 2, require_action)]

    return build


def resume_after_outputs(sim: Sim, run: Run, at: float) -> None:
    """After submit_tool_outputs: the run is queued again, then the waiting step completes."""
    obj = run.obj
    obj["status"] = "queued"
    obj["required_action"] = None
    sim.emit(run, "thread.run.queued", obj)

    def restart(at: float) -> None:
        step = run.waiting_step
        assert step is not None  # noqa: S101 - invariant for the type checker, not an input check
        run.waiting_step = None
        obj["status"] = "in_progress"
        sim.emit(run, "thread.run.in_progress", obj)
        reason = sim.account(run, step, *run.waiting_usage)
        sim.close_step(run, step, at, "completed")
        if reason is not None:
            sim.end_run(run, at, "incomplete", incomplete_reason=reason)
        else:
            sim.next_stage(run, at)

    sim.schedule(run, at, [(sim.config.queued_s, restart)])


def builtin_tool_stage(kind: str, *, duration: float) -> Stage:
    """code_interpreter, file_search (v2) or retrieval (v1): the service runs the tool itself."""

    def build(sim: Sim, run: Run, at: float) -> Plan:
        call_id = new_id("call")
        steps: list[Json] = []

        def start(at: float) -> None:
            steps.append(sim.add_step(run, "tool_calls", {"type": "tool_calls", "tool_calls": []}, at))

        def call(at: float) -> None:
            step = steps[0]
            if kind == "code_interpreter":
                full: Json = {"input": CODE_INPUT, "outputs": []}
                head: Json = {"input": "", "outputs": []}
            elif kind == "file_search":
                full, head = {"ranking_options": dict(RANKING_OPTIONS), "results": []}, {}
            else:
                full, head = {}, {}
            step["step_details"]["tool_calls"].append({"id": call_id, "type": kind, kind: full})
            sim.emit(
                run,
                "thread.run.step.delta",
                _step_delta(step, [{"index": 0, "id": call_id, "type": kind, kind: head}]),
            )
            if kind == "code_interpreter":
                for piece in _chunks(CODE_INPUT, 2):
                    part = {"index": 0, "type": kind, kind: {"input": piece}}
                    sim.emit(run, "thread.run.step.delta", _step_delta(step, [part]))

        def finish(at: float) -> None:
            step = steps[0]
            if kind == "code_interpreter":
                step["step_details"]["tool_calls"][0][kind]["outputs"] = [{"type": "logs", "logs": CODE_LOGS}]
                logs = {"index": 0, "type": "logs", "logs": CODE_LOGS}
                sim.emit(
                    run,
                    "thread.run.step.delta",
                    _step_delta(step, [{"index": 0, "type": kind, kind: {"outputs": [logs]}}]),
                )
                completion = tokens(CODE_INPUT)
            else:
                completion = 12
            reason = sim.account(run, step, sim.step_prompt(run), completion)
            run.context_tokens += tokens(CODE_LOGS) if kind == "code_interpreter" else 40
            sim.close_step(run, step, at, "completed")
            if reason is not None:
                sim.end_run(run, at, "incomplete", incomplete_reason=reason)
            else:
                sim.next_stage(run, at)

        return [(0.0, start), (duration / 2, call), (duration / 2, finish)]

    return build
