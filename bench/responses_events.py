"""Responses API stream templates for the benchmark upstream: created, in_progress, an output message
of n text deltas, completed, each with its sequence_number, split at the response id placeholder like
bench.upstream's Runs events so both streams cost the upstream the same."""

from __future__ import annotations

from typing import Any, Final

import orjson

# created, in_progress, item added, part added, >=1 delta, text done, part done, item done, completed
MIN_EVENTS: Final = 9
_TS: Final = 1_732_500_000
_MSG: Final = "msg_bench000000000000000000"
_USAGE: Final = {"input_tokens": 345, "input_tokens_details": {"cached_tokens": 128}, "output_tokens": 42,
                 "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 387}


def _response(rid: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"id": rid, "object": "response", "created_at": _TS, "status": status, "background": False,
            "completed_at": None, "error": None, "incomplete_details": None, "instructions": None,
            "max_output_tokens": None, "model": "gpt-5-mini", "output": [], "parallel_tool_calls": True,
            "previous_response_id": None, "service_tier": "default", "store": True, "temperature": 1.0,
            "tool_choice": "auto", "tools": [], "top_p": 1.0, "usage": None,
            "metadata": {"tenant": "bench"}, **extra}


def events(n: int, rid: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) for a stream of n events, n - MIN_EVENTS + 1 of them output_text deltas."""
    where = {"item_id": _MSG, "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "text": "", "annotations": []}
    deltas = max(1, n - MIN_EVENTS + 1)
    text = "word " * deltas
    item = {"id": _MSG, "type": "message", "status": "completed", "role": "assistant",
            "content": [{**part, "text": text}]}
    out: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": _response(rid, "in_progress")}),
        ("response.in_progress", {"response": _response(rid, "in_progress")}),
        ("response.output_item.added", {"output_index": 0, "item": {**item, "status": "in_progress",
                                                                    "content": []}}),
        ("response.content_part.added", {**where, "part": part}),
    ]
    out += [("response.output_text.delta", {**where, "delta": "word ", "logprobs": []})] * deltas
    out += [
        ("response.output_text.done", {**where, "text": text, "logprobs": []}),
        ("response.content_part.done", {**where, "part": {**part, "text": text}}),
        ("response.output_item.done", {"output_index": 0, "item": item}),
        ("response.completed", {"response": _response(rid, "completed", completed_at=_TS + 3, output=[item],
                                                      usage=_USAGE)}),
    ]
    return [(name, {"type": name, "sequence_number": i, **data}) for i, (name, data) in enumerate(out)]


def templates(n: int, placeholder: str) -> list[tuple[bytes, tuple[bytes, ...]]]:
    """As bench.upstream._events: (name, JSON split at the id placeholder, without its closing brace)."""
    result = []
    for name, data in events(max(n, MIN_EVENTS), placeholder):
        parts = tuple(orjson.dumps(data).split(placeholder.encode()))
        result.append((name.encode(), parts[:-1] + (parts[-1][:-1],)))
    return result
