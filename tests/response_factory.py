"""Spec-shaped Responses API objects and SSE streams (openapi.yaml: Response, ResponseStreamEvent).

Used by the decoder tests and by the fake upstream of the end-to-end tests, so both speak the same
shapes the openai SDK parses.
"""

from __future__ import annotations

import json
from typing import Any

MODEL = "gpt-5-mini"


def usage(input_tokens: int = 40, cached: int = 8, output_tokens: int = 25, reasoning: int = 10) -> dict[str, Any]:
    return {"input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": input_tokens + output_tokens}


def message(text: str = "Hi there!", mid: str = "msg_1") -> dict[str, Any]:
    return {"id": mid, "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def function_call(name: str = "get_weather", call_id: str = "call_1", fid: str = "fc_1",
                  arguments: str = '{"city":"Paris"}') -> dict[str, Any]:
    return {"id": fid, "type": "function_call", "status": "completed", "call_id": call_id, "name": name,
            "arguments": arguments}


def response(rid: str = "resp_1", status: str = "completed", *, created_at: int = 1_760_000_000,
             output: list[dict[str, Any]] | None = None, with_usage: bool = True, **extra: Any) -> dict[str, Any]:
    terminal = status in ("completed", "failed", "incomplete", "cancelled")
    obj: dict[str, Any] = {
        "id": rid, "object": "response", "created_at": created_at, "status": status,
        "background": False, "completed_at": created_at + 2 if status == "completed" else None,
        "error": None, "incomplete_details": None, "instructions": "Be terse.",
        "max_output_tokens": None, "max_tool_calls": None, "model": MODEL,
        "output": output if output is not None else ([message()] if terminal else []),
        "parallel_tool_calls": True, "previous_response_id": None, "conversation": None,
        "reasoning": {"effort": "low", "summary": None}, "service_tier": "default", "store": True,
        "temperature": 1.0, "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled",
        "usage": usage() if terminal and with_usage else None, "user": None, "metadata": {},
    }
    obj.update(extra)
    return obj


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def stream_events(final: dict[str, Any], *, deltas: int = 5, start_seq: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """The events of a streamed response ending as `final`, in the spec's order, numbered from 0."""
    base = dict(final, status="in_progress", output=[], usage=None, completed_at=None, error=None,
                incomplete_details=None)
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"type": "response.created", "response": base}),
        ("response.in_progress", {"type": "response.in_progress", "response": base}),
    ]
    for index, item in enumerate(final["output"]):
        added = dict(item, status="in_progress")
        events.append(("response.output_item.added", {"type": "response.output_item.added",
                                                       "output_index": index, "item": added}))
        if item["type"] == "message":
            text = item["content"][0]["text"]
            for i in range(deltas):
                piece = text[i * len(text) // deltas:(i + 1) * len(text) // deltas]
                events.append(("response.output_text.delta", {
                    "type": "response.output_text.delta", "item_id": item["id"], "output_index": index,
                    "content_index": 0, "delta": piece, "logprobs": []}))
            events.append(("response.output_text.done", {
                "type": "response.output_text.done", "item_id": item["id"], "output_index": index,
                "content_index": 0, "text": text, "logprobs": []}))
        elif item["type"] == "function_call":
            events.append(("response.function_call_arguments.delta", {
                "type": "response.function_call_arguments.delta", "item_id": item["id"],
                "output_index": index, "delta": item["arguments"]}))
            events.append(("response.function_call_arguments.done", {
                "type": "response.function_call_arguments.done", "item_id": item["id"],
                "output_index": index, "name": item["name"], "arguments": item["arguments"]}))
        events.append(("response.output_item.done", {"type": "response.output_item.done",
                                                      "output_index": index, "item": item}))
    end = {"completed": "response.completed", "failed": "response.failed",
           "incomplete": "response.incomplete"}.get(final["status"])
    if end is not None:
        events.append((end, {"type": end, "response": final}))
    for seq, (_, data) in enumerate(events, start=start_seq):
        data["sequence_number"] = seq
    return events


def stream_bytes(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(sse(name, data) for name, data in events)
