"""Responses API objects and a response's timeline: every stream event it will emit, planned at create.

A response's whole life is decided when it is created (the reply, its tokens, when each event falls);
what a poll, a stream or a resumed stream sees is the prefix of that timeline whose time has come, so
all three agree, and a background response advances in wall-clock time with nobody watching. Event i
of the timeline is the one with `sequence_number` i.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import Json
from .objects import new_id, tokens

LIFECYCLE = frozenset(
    {"response.created", "response.queued", "response.in_progress", "response.completed",
     "response.failed", "response.incomplete"}
)
TERMINAL = frozenset({"completed", "failed", "incomplete", "cancelled"})
BASE_PROMPT_TOKENS = 8
CACHE_MIN_TOKENS = 1024  # prompt caching starts at 1,024 tokens, in steps of 128
CACHE_STEP = 128
REASONING_TOKENS = {"none": 0, "minimal": 0, "low": 64, "medium": 192, "high": 512, "xhigh": 1024}
ERROR_MESSAGES = {
    "server_error": "The server had an error processing your request. Sorry about that!",
    "rate_limit_exceeded": "Rate limit reached for requests. Please try again later.",
    "invalid_prompt": "Invalid prompt: your prompt was flagged as potentially violating our usage policy.",
    "vector_store_timeout": "The vector store search timed out.",
}
_WORD = re.compile(r"\S+\s*|\s+")


@dataclass(slots=True, eq=False)
class Plan:
    """What the model will do, decided from the request (see responses_api.plan_for)."""

    reply: str
    input_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    summary: str | None
    call: Json | None  # a function_call item to end with, instead of a message
    max_output_tokens: int | None
    error_code: str | None
    duration_s: float
    error_event: bool
    queued_s: float


@dataclass(slots=True, eq=False)
class SimResponse:
    obj: Json  # the latest response snapshot (the object polls see)
    input_items: list[Json]
    background: bool
    timeline: list[tuple[float, str, Json]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    cancelled_at: float | None = None
    context_tokens: int = 0  # what a follow-up re-reads: this input and output
    pending_calls: list[str] = field(default_factory=list)  # call_ids a follow-up must answer
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    readers: int = 0  # streams reading the timeline now

    @property
    def end_at(self) -> float:
        return self.times[-1] if self.times else 0.0

    def due(self, now: float) -> int:
        """How many timeline events have happened by `now`."""
        return bisect.bisect_right(self.times, now)

    def finished(self, now: float) -> bool:
        return self.cancelled_at is not None or self.due(now) >= len(self.timeline)

    def snapshot(self, now: float) -> Json:
        if self.cancelled_at is None:
            due = self.due(now)
            for i in range(due - 1, -1, -1):
                kind, payload = self.timeline[i][1], self.timeline[i][2]
                if kind in LIFECYCLE:
                    self.obj = payload["response"]
                    break
            self.compact(due)
        return self.obj

    def compact(self, due: int) -> None:
        """Only a background response can be streamed again: a finished foreground one keeps its final
        object and drops its events, so a long benchmark's memory stays flat."""
        if due and due == len(self.timeline) and not self.background and not self.readers:
            self.obj = self.timeline[-1][2]["response"]
            self.timeline, self.times = [], []

    def cancel(self, now: float) -> Json:
        current = copy.deepcopy(self.snapshot(now))
        current["status"] = "cancelled"
        self.obj = current
        self.cancelled_at = now
        # Events not yet due never happen; a resumed stream sees what was emitted before the cancel.
        keep = self.due(now)
        del self.timeline[keep:]
        del self.times[keep:]
        self.wake.set()
        return current


def usage(plan: Plan, output_tokens: int, reasoning: int) -> Json:
    return {
        "input_tokens": plan.input_tokens,
        "input_tokens_details": {"cached_tokens": plan.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": plan.input_tokens + output_tokens,
    }


def cached(prefix_tokens: int) -> int:
    return prefix_tokens // CACHE_STEP * CACHE_STEP if prefix_tokens >= CACHE_MIN_TOKENS else 0


def _pieces(text: str) -> list[str]:
    return _WORD.findall(text) or [text]


class _Timeline:
    def __init__(self, resp: SimResponse, start: float) -> None:
        self.resp = resp
        self.at = start

    def emit(self, kind: str, **payload: Any) -> None:
        data = {"type": kind, **payload, "sequence_number": len(self.resp.timeline)}
        self.resp.timeline.append((self.at, kind, data))
        self.resp.times.append(self.at)

    def state(self, kind: str, **changes: Any) -> None:
        obj = {**copy.deepcopy(self.resp.obj), **changes}
        self.resp.obj = obj
        self.emit(kind, response=copy.deepcopy(obj))


def _message_events(t: _Timeline, index: int, text: str, status: str, step: float) -> Json:
    item: Json = {"id": new_id("msg"), "type": "message", "status": "in_progress", "content": [],
                  "role": "assistant"}
    t.emit("response.output_item.added", output_index=index, item=copy.deepcopy(item))
    part: Json = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    where = {"item_id": item["id"], "output_index": index, "content_index": 0}
    t.emit("response.content_part.added", **where, part=copy.deepcopy(part))
    for piece in _pieces(text):
        t.at += step
        t.emit("response.output_text.delta", **where, delta=piece, logprobs=[])
    part["text"] = text
    t.emit("response.output_text.done", **where, text=text, logprobs=[])
    t.emit("response.content_part.done", **where, part=copy.deepcopy(part))
    item.update(status=status, content=[part])
    t.emit("response.output_item.done", output_index=index, item=copy.deepcopy(item))
    return item


def _call_events(t: _Timeline, index: int, call: Json, step: float) -> Json:
    item = {**call, "status": "in_progress", "arguments": ""}
    t.emit("response.output_item.added", output_index=index, item=copy.deepcopy(item))
    for piece in _pieces(call["arguments"]):
        t.at += step
        t.emit("response.function_call_arguments.delta", item_id=call["id"], output_index=index, delta=piece)
    t.emit("response.function_call_arguments.done", item_id=call["id"], output_index=index,
           name=call["name"], arguments=call["arguments"])
    done = {**call, "status": "completed"}
    t.emit("response.output_item.done", output_index=index, item=copy.deepcopy(done))
    return done


def _reasoning_events(t: _Timeline, index: int, summary: str | None, step: float) -> Json:
    item: Json = {"id": new_id("rs"), "type": "reasoning", "summary": []}
    t.emit("response.output_item.added", output_index=index, item=copy.deepcopy(item))
    t.at += step
    if summary:
        part = {"type": "summary_text", "text": ""}
        where = {"item_id": item["id"], "output_index": index, "summary_index": 0}
        t.emit("response.reasoning_summary_part.added", **where, part=copy.deepcopy(part))
        for piece in _pieces(summary):
            t.emit("response.reasoning_summary_text.delta", **where, delta=piece)
        t.emit("response.reasoning_summary_text.done", **where, text=summary)
        part["text"] = summary
        t.emit("response.reasoning_summary_part.done", **where, part=copy.deepcopy(part))
        item["summary"] = [part]
    t.emit("response.output_item.done", output_index=index, item=copy.deepcopy(item))
    return item


def build_timeline(resp: SimResponse, plan: Plan, now: float) -> None:
    """Plan every event of `resp` from `now`: queue, reasoning, a function call or a message, the end."""
    t = _Timeline(resp, now)
    t.state("response.created")
    if resp.background:
        t.state("response.queued")
        t.at += plan.queued_s
    t.state("response.in_progress", status="in_progress")
    if plan.error_code is not None:
        t.at += plan.duration_s
        error = {"code": plan.error_code, "message": ERROR_MESSAGES.get(plan.error_code, plan.error_code)}
        if plan.error_event:
            t.emit("error", **error, param=None)
        t.state("response.failed", status="failed", error=error)
        return
    budget = plan.max_output_tokens
    reasoning = plan.reasoning_tokens if budget is None else min(plan.reasoning_tokens, budget)
    visible_budget = None if budget is None else budget - reasoning
    text = plan.reply
    cut = visible_budget is not None and (visible_budget < tokens(text) or plan.call is not None
                                          and visible_budget < tokens(plan.call["arguments"]))
    if cut:
        text = text[: max(0, (visible_budget or 0) * 4)]
    steps = max(1, len(_pieces(text)) + (2 if reasoning else 0))
    step = plan.duration_s / steps
    output: list[Json] = []
    if reasoning:
        output.append(_reasoning_events(t, len(output), plan.summary, step))
    if plan.call is not None and not cut:
        output.append(_call_events(t, len(output), plan.call, step))
        visible = tokens(plan.call["arguments"]) + tokens(plan.call["name"])
        resp.pending_calls = [plan.call["call_id"]]
    elif text or not cut:
        output.append(_message_events(t, len(output), text, "incomplete" if cut else "completed", step))
        visible = tokens(text)
    else:
        visible = 0
    out_tokens = budget if cut and budget is not None else reasoning + visible
    resp.context_tokens = plan.input_tokens + visible
    final = {"output": output, "usage": usage(plan, out_tokens, reasoning)}
    t.at = max(t.at, now + plan.queued_s * resp.background + plan.duration_s)
    if cut:
        t.state("response.incomplete", status="incomplete", incomplete_details={"reason": "max_output_tokens"},
                **final)
    else:
        t.state("response.completed", status="completed", completed_at=int(t.at), **final)


def sse_frame(event: tuple[float, str, Json]) -> bytes:
    _, kind, data = event
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
