"""A `POST /responses` body checked as the service checks it, and turned into the response's plan.

Unknown parameters, bad types and impossible combinations are 400s with the service's error shape;
what the model then does is deterministic: a reasoning model reasons first (its effort sets the
reasoning tokens), a request offering function tools and carrying no tool output calls the first
one (or the one `tool_choice` names), one that answers a call gets a reply built from the outputs,
and `metadata.sim_scenario` picks `fail` (`sim_error_code` names the code), `stream_error` (the same,
with an `error` event first), `slow` or `long` (a reply of a few hundred deltas).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import ApiError, Json, bad, invalid_type, metadata, optional, optional_int, optional_number
from .objects import new_id, tokens
from .responses_model import BASE_PROMPT_TOKENS, ERROR_MESSAGES, REASONING_TOKENS, Plan, SimResponse, cached

CREATE_FIELDS = frozenset(
    {"model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "max_output_tokens",
     "max_tool_calls", "metadata", "previous_response_id", "conversation", "background", "stream",
     "stream_options", "store", "temperature", "top_p", "reasoning", "text", "truncation", "user",
     "service_tier", "include", "prompt_cache_key", "safety_identifier", "top_logprobs", "prompt",
     "prompt_cache_retention"}
)
SCENARIOS = ("complete", "fail", "stream_error", "slow", "long")
REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
MIN_OUTPUT_TOKENS = 16


@dataclass(slots=True, eq=False)
class Conversation:
    obj: Json
    items: list[Json] = field(default_factory=list)
    pending_calls: list[str] = field(default_factory=list)


def unknown_parameter(name: str) -> ApiError:
    return bad(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid_type(f"{where}.content", content, "a string or an array")
    texts = []
    for part in content:
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise bad(f"Invalid value for '{where}.content': expected content parts.", param=f"{where}.content")
        texts.append(str(part.get("text") or ""))
    return " ".join(texts)


def _input_item(raw: Any, i: int) -> Json:
    """One input item as the service stores it (with an id), for input_items and token counts."""
    where = f"input[{i}]"
    if not isinstance(raw, dict):
        raise invalid_type(where, raw, "an object")
    kind = raw.get("type", "message")
    if kind == "message":
        role = raw.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise bad(f"Invalid value: '{role}'. Supported values are: 'assistant', 'system', 'developer', "
                      "and 'user'.", param=f"{where}.role", code="invalid_value")
        text = _content_text(raw.get("content"), where)
        part = ({"type": "output_text", "text": text, "annotations": [], "logprobs": []} if role == "assistant"
                else {"type": "input_text", "text": text})
        return {"id": new_id("msg"), "type": "message", "role": role, "content": [part], "status": "completed"}
    if kind == "function_call_output":
        if not isinstance(raw.get("call_id"), str):
            raise bad(f"Missing required parameter: '{where}.call_id'.", param=f"{where}.call_id",
                      code="missing_required_parameter")
        output = raw.get("output")
        text = output if isinstance(output, str) else orjson.dumps(output).decode()
        return {"id": new_id("fco"), "type": kind, "call_id": raw["call_id"], "output": text,
                "status": "completed"}
    if kind == "function_call":
        for key in ("call_id", "name", "arguments"):
            if not isinstance(raw.get(key), str):
                raise bad(f"Missing required parameter: '{where}.{key}'.", param=f"{where}.{key}",
                          code="missing_required_parameter")
        return {"id": raw.get("id") or new_id("fc"), "type": kind, "call_id": raw["call_id"],
                "name": raw["name"], "arguments": raw["arguments"], "status": "completed"}
    if kind == "reasoning":
        return {"id": raw.get("id") or new_id("rs"), "type": kind, "summary": list(raw.get("summary") or [])}
    raise bad(f"Invalid value: '{kind}'. Supported values are: 'message', 'function_call', "
              "'function_call_output' and 'reasoning'.", param=f"{where}.type", code="invalid_value")


def input_items(body: Json) -> list[Json]:
    raw = body.get("input")
    if raw is None:
        return []
    if isinstance(raw, str):
        return [_input_item({"role": "user", "content": raw}, 0)]
    if not isinstance(raw, list):
        raise invalid_type("input", raw, "a string or an array")
    return [_input_item(item, i) for i, item in enumerate(raw)]


def item_tokens(item: Json) -> int:
    if item["type"] == "message":
        return 4 + sum(tokens(str(part.get("text", ""))) for part in item["content"])
    if item["type"] == "function_call_output":
        return 4 + tokens(item["output"])
    if item["type"] == "function_call":
        return 4 + tokens(item["name"]) + tokens(item["arguments"])
    return 0


def tools_of(body: Json) -> list[Json]:
    raw = body.get("tools")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise invalid_type("tools", raw, "an array")
    out = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise bad(f"Missing required parameter: 'tools[{i}].type'.", param=f"tools[{i}].type",
                      code="missing_required_parameter")
        if tool["type"] == "function":
            if not isinstance(tool.get("name"), str):
                raise bad(f"Missing required parameter: 'tools[{i}].name'.", param=f"tools[{i}].name",
                          code="missing_required_parameter")
            tool = {"type": "function", "name": tool["name"], "description": tool.get("description"),
                    "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
                    "strict": True if tool.get("strict") is None else bool(tool["strict"])}
        out.append(tool)
    return out


def reasoning_of(body: Json, model: str) -> tuple[Json, int, str | None]:
    """(the response's `reasoning`, reasoning tokens, summary text)."""
    raw = body.get("reasoning")
    if raw is not None and not isinstance(raw, dict):
        raise invalid_type("reasoning", raw, "an object")
    raw = raw or {}
    if not model.startswith(REASONING_PREFIXES):
        if raw.get("effort") is not None:
            raise bad("Unsupported parameter: 'reasoning.effort' is not supported with this model.",
                      param="reasoning.effort", code="unsupported_parameter")
        return {"effort": None, "summary": None}, 0, None
    effort = raw.get("effort") or "medium"
    if effort not in REASONING_TOKENS:
        raise bad(f"Invalid value: '{effort}'. Supported values are: {', '.join(REASONING_TOKENS)}.",
                  param="reasoning.effort", code="invalid_value")
    summary = raw.get("summary") or raw.get("generate_summary")
    text = "**Planning the answer**\n\nReading the request and choosing what to say." if summary else None
    return {"effort": effort, "summary": summary}, REASONING_TOKENS[effort], text


def _arguments(tool: Json, user_text: str) -> str:
    props = (tool.get("parameters") or {}).get("properties") or {}
    args: Json = {}
    for name, schema in props.items():
        kind = schema.get("type") if isinstance(schema, dict) else None
        if isinstance(schema, dict) and schema.get("enum"):
            args[name] = schema["enum"][0]
        elif kind in ("number", "integer"):
            args[name] = 1
        elif kind == "boolean":
            args[name] = True
        else:
            args[name] = user_text.split()[-1].strip("?.!,") if user_text.split() else "Paris"
    return orjson.dumps(args).decode()


def tool_call(body: Json, tools: list[Json], items: list[Json]) -> Json | None:
    choice = body.get("tool_choice", "auto")
    functions = [t for t in tools if t["type"] == "function"]
    if not functions or choice == "none" or any(i["type"] == "function_call_output" for i in items):
        return None
    if isinstance(choice, dict) and choice.get("type") == "function":
        chosen = next((t for t in functions if t["name"] == choice.get("name")), None)
        if chosen is None:
            raise bad(f"Tool choice '{choice.get('name')}' not found in 'tools' parameter.", param="tool_choice")
    else:
        chosen = functions[0]
    user = next((i for i in reversed(items) if i["type"] == "message" and i["role"] == "user"), None)
    text = " ".join(str(p.get("text", "")) for p in user["content"]) if user else ""
    return {"id": new_id("fc"), "type": "function_call", "status": "completed", "arguments": _arguments(chosen, text),
            "call_id": new_id("call"), "name": chosen["name"]}


def check_outputs(items: list[Json], pending: list[str]) -> None:
    """The service's rules for a turn after function calls: every call answered, no stray outputs."""
    answered = {i["call_id"] for i in items if i["type"] == "function_call_output"}
    called = set(pending) | {i["call_id"] for i in items if i["type"] == "function_call"}
    for call_id in pending:
        if call_id not in answered:
            raise bad(f"No tool output found for function call {call_id}.", param="input")
    for call_id in answered - called:
        raise bad(f"No tool call found for function call output with call_id {call_id}.", param="input")


def reply_for(items: list[Json], scenario: str) -> str:
    outputs = [i["output"] for i in items if i["type"] == "function_call_output"]
    if outputs:
        return "Based on the tool results (" + "; ".join(outputs) + "), here is the answer."
    user = next((i for i in reversed(items) if i["type"] == "message" and i["role"] == "user"), None)
    asked = " ".join(str(p.get("text", "")) for p in user["content"])[:80] if user else "nothing"
    reply = f"You asked: {asked!r}. This is the simulated model's short answer."
    if scenario == "long":
        reply += " " + " ".join(f"Point {n}: streaming keeps going." for n in range(1, 61))
    return reply


def scenario_of(meta: dict[str, str]) -> tuple[str, str | None]:
    scenario = meta.get("sim_scenario", "complete")
    if scenario not in SCENARIOS:
        raise bad(f"Unknown sim_scenario '{scenario}'. Supported values are: {', '.join(SCENARIOS)}.",
                  param="metadata.sim_scenario")
    code = meta.get("sim_error_code", "server_error") if scenario in ("fail", "stream_error") else None
    if code is not None and code not in ERROR_MESSAGES:
        raise bad(f"Unknown sim_error_code '{code}'. Supported values are: {', '.join(ERROR_MESSAGES)}.",
                  param="metadata.sim_error_code")
    return scenario, code


def numbers(body: Json) -> tuple[int | None, int | None, float, float]:
    cap = optional_int(body, "max_output_tokens", minimum=MIN_OUTPUT_TOKENS)
    max_calls = optional_int(body, "max_tool_calls", minimum=1)
    temperature = optional_number(body, "temperature", maximum=2.0)
    top_p = optional_number(body, "top_p", maximum=1.0)
    return cap, max_calls, 1.0 if temperature is None else temperature, 1.0 if top_p is None else top_p


def check_flags(body: Json) -> tuple[bool, bool, bool]:
    background = bool(optional(body, "background", bool, "a boolean"))
    stream = bool(optional(body, "stream", bool, "a boolean"))
    store = optional(body, "store", bool, "a boolean")
    if background and store is False:
        raise bad("Background mode requires 'store' to be true.", param="background")
    if body.get("previous_response_id") is not None and body.get("conversation") is not None:
        raise bad("Mutually exclusive parameters: Ensure you are only providing one of: "
                  "'previous_response_id' or 'conversation'.", param="conversation",
                  code="mutually_exclusive_parameters")
    return background, stream, True if store is None else store


def make_plan(body: Json, items: list[Json], tools: list[Json], context: int, seen: Callable[[bytes], bool],
              *, step_s: float, queued_s: float) -> tuple[Plan, Json]:
    """The plan, and the request-derived fields of the response object."""
    model = body["model"]
    meta = metadata(body) or {}
    scenario, error_code = scenario_of(meta)
    reasoning, reasoning_tokens, summary = reasoning_of(body, model)
    instructions = optional(body, "instructions", str, "a string")
    prompt = BASE_PROMPT_TOKENS + tokens(instructions or "") + sum(item_tokens(i) for i in items) + 16 * len(tools)
    input_tokens = context + prompt
    # Cached: what an earlier turn already sent (previous response, conversation), or a repeat of an
    # identical prompt; only past 1,024 tokens and in steps of 128, as the service caches.
    key = orjson.dumps([model, instructions, [{k: v for k, v in i.items() if k != "id"} for i in items]])
    cache = cached(input_tokens) if seen(key) else cached(context + BASE_PROMPT_TOKENS)
    call = tool_call(body, tools, items)
    plan = Plan(reply="" if call else reply_for(items, scenario), input_tokens=input_tokens,
                cached_tokens=min(cache, input_tokens), reasoning_tokens=reasoning_tokens, summary=summary,
                call=call, max_output_tokens=body.get("max_output_tokens"), error_code=error_code,
                error_event=scenario == "stream_error",
                duration_s=max(1.0, step_s) if scenario == "slow" else step_s, queued_s=queued_s)
    return plan, {"reasoning": reasoning, "metadata": meta, "instructions": instructions}


def new_response(body: Json, fields: Json, tools: list[Json], now: float, *, background: bool, store: bool,
                 conversation: str | None) -> SimResponse:
    cap, max_calls, temperature, top_p = numbers(body)
    tier = body.get("service_tier") or "auto"
    parallel = optional(body, "parallel_tool_calls", bool, "a boolean")
    obj: Json = {
        "id": new_id("resp"), "object": "response", "created_at": int(now),
        "status": "queued" if background else "in_progress", "background": background,
        "completed_at": None, "error": None, "incomplete_details": None,
        "instructions": fields["instructions"], "max_output_tokens": cap, "max_tool_calls": max_calls,
        "model": body["model"], "output": [], "parallel_tool_calls": True if parallel is None else parallel,
        "previous_response_id": body.get("previous_response_id"),
        "conversation": {"id": conversation} if conversation else None,
        "prompt_cache_key": body.get("prompt_cache_key"), "reasoning": fields["reasoning"],
        "safety_identifier": body.get("safety_identifier"), "service_tier": "default" if tier == "auto" else tier,
        "store": store, "temperature": temperature,
        "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"), "tools": tools, "top_logprobs": 0, "top_p": top_p,
        "truncation": body.get("truncation") or "disabled", "metadata": fields["metadata"],
    }
    # `usage` (until there is some) and `user` are absent rather than null: the spec types them
    # as an object and a string, not nullable.
    if body.get("user") is not None:
        obj["user"] = body["user"]
    return SimResponse(obj=obj, input_items=[], background=background)
