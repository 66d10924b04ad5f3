"""Decoding of Responses API bodies and streams into response snapshots (the second captured kind).

Called by analytics/ingest/decode.py's CaptureDecoder on the writer thread, for exchanges whose operation is a
Responses one (proxy/response_routes.py); shares its inflating, SSE parsing, counting and ordering
rule (JSON: the request's send time; SSE: the chunk's arrival).

What becomes a snapshot (openapi.yaml, ResponseStreamEvent):
- a response object in a JSON body (create, retrieve, cancel);
- `response.created|queued|in_progress|completed|failed|incomplete` events, which carry the response;
- `response.output_item.done`, which carries one finished output item: the snapshot is the stream's
  latest response object with the items finished so far (its status is the stream's latest), so a
  stream cut before its final event still leaves the calls it made.
Every other event (text, argument and reasoning deltas: most of a stream) is counted by name and
never JSON-decoded; the first output delta's arrival is noted by name alone.

`sequence_number` orders the events of one response across its streams (a background response can be
streamed, dropped and resumed with `starting_after`): an event at or below the highest number already
decoded for its response is a repeat and makes no snapshot.

Privacy: `instructions`, output text, refusals, reasoning summaries and function arguments are
removed from the object unless --store-prompts; the request's `input` and `instructions` are only
kept with it. The request body of a create is read in every case, for what is not a prompt: the
`function_call_output` call ids it answers (tool turnaround, analytics/ingest/response_merge.py).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from . import operations as rr
from .records import Exchange, RequestBody, Snapshot, Source
from .redact import redact_secrets
from .response_agents import agent_reference
from .response_versions import response_api_version

RESPONSE_OBJECT: Final = "response"
STATE_EVENTS: Final = frozenset({
    "response.created", "response.queued", "response.in_progress", "response.completed",
    "response.failed", "response.incomplete",
})
ITEM_DONE: Final = "response.output_item.done"
# The first of these marks the first output token of a stream.
OUTPUT_DELTAS: Final = frozenset({
    "response.output_text.delta", "response.refusal.delta", "response.function_call_arguments.delta",
    "response.custom_tool_call_input.delta", "response.audio.delta",
})
# Bodies of Responses operations that are not response objects: not captured, and not an error.
_QUIET_OBJECTS: Final = frozenset({"response.deleted", "list", "conversation", "conversation.deleted"})
# Request fields that are prompt content: only kept with --store-prompts.
PROMPT_FIELDS: Final = ("input", "instructions")
_MAX_TRACKED: Final = 20_000


@dataclass(slots=True)
class _Tracked:
    """What the decoder remembers of one response across its streams (bounded, in memory)."""

    seq: int = -1
    base: dict[str, Any] | None = None
    items: dict[int, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ResponseStream:
    """Per-exchange state of one Responses SSE stream."""

    response_id: str | None
    create: bool
    first_event_at: float | None = None
    first_output_at: float | None = None


# What any other output item keeps without --store-prompts: who and what, never content. An allow-list,
# because every built-in tool carries content under its own key (code_interpreter_call code and outputs,
# file_search_call queries and retrieved text, web_search_call's query, image_generation_call's image,
# shell commands, patches, computer actions), and new item types keep arriving.
_ITEM_KEYS: Final = frozenset({"type", "id", "call_id", "name", "namespace", "status", "server_label",
                               "container_id", "approval_request_id", "approve", "created_by"})


def _strip_item(item: dict[str, Any]) -> dict[str, Any]:
    """An output item without its text, arguments, tool contents or reasoning (the shape is kept)."""
    kind = item.get("type")
    if kind == "message":
        content = item.get("content")
        if type(content) is list:
            item = dict(item, content=[
                {k: v for k, v in part.items() if k not in ("text", "refusal", "annotations", "logprobs")}
                if type(part) is dict else part for part in content])
        return item
    return {k: v for k, v in item.items() if k in _ITEM_KEYS}


def strip_prompts(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of a response object without prompt or output content (without --store-prompts)."""
    out = obj.copy()
    out.pop("instructions", None)
    out.pop("output_text", None)
    out.pop("input", None)
    prompt = out.get("prompt")
    if type(prompt) is dict and "variables" in prompt:
        # the template's id and version say which prompt ran; its variables are the app's input
        out["prompt"] = {k: v for k, v in prompt.items() if k != "variables"}
    output = out.get("output")
    if type(output) is list:
        out["output"] = [_strip_item(i) if type(i) is dict else i for i in output]
    return out


class ResponseDecoding:
    """The Responses half of CaptureDecoder; `skipped` and `pending` are the decoder's own."""

    def __init__(self, *, store_prompts: bool, skipped: Counter[str],
                 pending: OrderedDict[str, dict[str, Any]], max_pending: int,
                 max_tracked: int = _MAX_TRACKED) -> None:
        self._store_prompts = store_prompts
        self._skipped = skipped
        self._pending = pending
        self._max_pending = max_pending
        self._max_tracked = max_tracked
        self._tracked: OrderedDict[str, _Tracked] = OrderedDict()
        self._calls: OrderedDict[str, str] = OrderedDict()  # function call_id -> response id
        self.repeated_events = 0

    # --- requests ----------------------------------------------------------------------------------

    def request(self, item: RequestBody) -> None:
        if item.truncated:
            self._skipped["request_truncated"] += 1
            return
        try:
            value = orjson.loads(item.body) if item.body else None
        except orjson.JSONDecodeError:
            self._skipped["request_malformed_json"] += 1
            return
        if type(value) is not dict:
            return
        extra: dict[str, Any] = {"request_started_at": item.exchange.started_at}
        answers = self._answered(value)
        if answers:
            extra["answers"] = answers
        agent_name, agent_version = agent_reference(value)
        if agent_name is not None:
            extra["request_agent_name"] = agent_name
            extra["request_agent_version"] = agent_version
        if self._store_prompts:
            for k in PROMPT_FIELDS:
                if value.get(k) is not None:
                    extra["request_" + k] = value[k]
        pending = self._pending
        if len(pending) >= self._max_pending:
            pending.popitem(last=False)
            self._skipped["prompt_evicted"] += 1
        pending[item.exchange.id] = extra

    def _answered(self, request: dict[str, Any]) -> list[str]:
        """Response ids whose pending function calls this request answers: the response that made
        each call a `function_call_output` answers (when this process saw it), and the request's
        previous_response_id."""
        items = request.get("input")
        if type(items) is not list:
            return []
        outputs = [it for it in items if type(it) is dict and it.get("type") == "function_call_output"]
        if not outputs:
            return []
        out: list[str] = []
        for it in outputs:
            call_id = it.get("call_id")
            rid = self._calls.get(call_id) if type(call_id) is str else None
            if rid is not None and rid not in out:
                out.append(rid)
        prev = request.get("previous_response_id")
        if type(prev) is str and prev not in out:
            out.append(prev)
        return out

    # --- objects -----------------------------------------------------------------------------------

    def _track(self, rid: str) -> _Tracked:
        tracked = self._tracked.get(rid)
        if tracked is None:
            if len(self._tracked) >= self._max_tracked:
                self._tracked.popitem(last=False)
            tracked = self._tracked[rid] = _Tracked()
        else:
            self._tracked.move_to_end(rid)
        return tracked

    def _remember_calls(self, rid: str, obj: dict[str, Any]) -> None:
        output = obj.get("output")
        if type(output) is not list:
            return
        calls = self._calls
        for item in output:
            if type(item) is dict and item.get("type") == "function_call" and type(item.get("call_id")) is str:
                if len(calls) >= self._max_tracked:
                    calls.popitem(last=False)
                calls[item["call_id"]] = rid

    def snapshot(self, obj: Any, ex: Exchange, observed_at: float, source: Source,
                 extra: dict[str, Any] | None = None) -> Snapshot | None:
        if type(obj) is not dict or obj.get("object") != RESPONSE_OBJECT:
            self._skipped["not_response_object"] += 1
            return None
        rid = obj.get("id")
        if type(rid) is not str or not rid:
            self._skipped["missing_id"] += 1
            return None
        self._remember_calls(rid, obj)
        obj = redact_secrets(obj)
        if not self._store_prompts:
            obj = strip_prompts(obj)
        more = self._pending.pop(ex.id, None) if self._pending else None
        if more:
            extra = {**more, **extra} if extra else more
        if ex.operation == rr.RESPONSES_CREATE:
            extra = dict(extra or {}, stream=source == "stream")
        provider, version = response_api_version(ex.path, ex.api_provider, ex.api_version)
        return Snapshot(kind="response", obj=obj, observed_at=observed_at, source=source,
                        operation=ex.operation, api_version=version, key_fingerprint=ex.key_fingerprint,
                        request_id=ex.id, extra=extra or {}, api_provider=provider)

    def body(self, value: Any, ex: Exchange) -> list[Snapshot]:
        if type(value) is dict and value.get("object") in _QUIET_OBJECTS:
            return []
        if ex.operation not in rr.RESPONSE_BODIES:
            return []
        snap = self.snapshot(value, ex, ex.started_at, "response")
        return [] if snap is None else [snap]

    # --- streams -----------------------------------------------------------------------------------

    def open_stream(self, ex: Exchange) -> ResponseStream:
        rid = rr.response_id(ex.path) if ex.operation == rr.RESPONSES_RETRIEVE else None
        return ResponseStream(rid, ex.operation == rr.RESPONSES_CREATE)

    def events(self, events: list[tuple[str, str]], stream: ResponseStream, ex: Exchange, received_at: float,
               loads: Callable[[str], Any]) -> list[Snapshot]:
        """(name, data) events, counted by the caller: only the ones that carry state are JSON-decoded."""
        out: list[Snapshot] = []
        if stream.first_event_at is None and events:
            stream.first_event_at = received_at
        for name, data in events:
            if name in STATE_EVENTS:
                value = loads(data)
                if value is not None:
                    self._state_event(value, stream, ex, received_at, out)
            elif name == ITEM_DONE:
                value = loads(data)
                if value is not None:
                    self._item_done(value, stream, ex, received_at, out)
            elif stream.first_output_at is None and name in OUTPUT_DELTAS:
                stream.first_output_at = received_at
        return out

    def _fresh(self, tracked: _Tracked, data: dict[str, Any]) -> bool:
        seq = data.get("sequence_number")
        if type(seq) is not int:
            return True
        if seq <= tracked.seq:
            self.repeated_events += 1
            return False
        tracked.seq = seq
        return True

    def _timing(self, stream: ResponseStream) -> dict[str, Any] | None:
        if not stream.create:
            return None
        timing: dict[str, Any] = {}
        if stream.first_event_at is not None:
            timing["first_event_at"] = stream.first_event_at
        if stream.first_output_at is not None:
            timing["first_output_at"] = stream.first_output_at
        return timing

    def _state_event(self, data: Any, stream: ResponseStream, ex: Exchange, received_at: float,
                     out: list[Snapshot]) -> None:
        obj = data.get("response") if type(data) is dict else None
        if type(obj) is not dict or type(obj.get("id")) is not str:
            self._skipped["not_response_object"] += 1
            return
        rid = obj["id"]
        stream.response_id = rid
        tracked = self._track(rid)
        if not self._fresh(tracked, data):
            return
        tracked.base = obj
        snap = self.snapshot(obj, ex, received_at, "stream", self._timing(stream))
        if snap is not None:
            out.append(snap)

    def _item_done(self, data: Any, stream: ResponseStream, ex: Exchange, received_at: float,
                   out: list[Snapshot]) -> None:
        item = data.get("item") if type(data) is dict else None
        index = data.get("output_index") if type(data) is dict else None
        rid = stream.response_id
        if type(item) is not dict or type(index) is not int or rid is None:
            self._skipped["not_response_object"] += 1
            return
        tracked = self._track(rid)
        if not self._fresh(tracked, data):
            return
        tracked.items[index] = item
        base = tracked.base
        obj: dict[str, Any] = dict(base) if base is not None else {"id": rid, "object": RESPONSE_OBJECT}
        output = obj.get("output")
        merged = dict(enumerate(output)) if type(output) is list else {}
        merged.update(tracked.items)
        obj["output"] = [merged[i] for i in sorted(merged)]
        snap = self.snapshot(obj, ex, received_at, "stream", self._timing(stream))
        if snap is not None:
            out.append(snap)
