"""Merge rules for responses: the run rules of analytics/ingest/merge.py, applied to the second captured kind.

Rules 1-3 (terminal is final, the newest snapshot decides, NULL never erases) are merge.py's own
``_merge_common``, with the Responses statuses: ``completed``, ``failed``, ``cancelled`` and
``incomplete`` are terminal; ``queued`` and ``in_progress`` are not. What differs:

- ``ended_at`` is ``completed_at`` (only completed responses carry one), else the time the
  terminal status was first observed. ``queued_observed_at`` / ``in_progress_observed_at`` are the
  earliest observations of those statuses (``status_observed_at`` is the terminal one's).
- The create request's timing (``request_started_at``, a stream's ``first_event_at`` and
  ``first_output_at``) is taken as the minimum seen, so it is the same in any arrival order.
- Every change of the stored status is a ``response_events`` row and a ``ResponseTransition``.
- ``ResponseFinished`` once per response, when it first becomes terminal, with its usage if
  known; usage arriving later comes once as ``ResponseUsageKnown``. State in the row
  (``finished_counted``, ``usage_counted``) keeps this once across polls, resumes, replays and
  restarts.
- Tool turnaround: a response first observed terminal with function calls in its output is
  waiting on the app (``tool_wait_at``, the observation time). The create request that answers
  them (a ``function_call_output`` for one of its calls, linked by ``previous_response_id`` or by
  the call id in a conversation: ``Snapshot.extra["answers"]``) closes the wait at its send time:
  one ``ResponseToolTurnaround``, once, since the row's ``tool_wait_at`` is cleared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .merge import _INT64, _MAX_EPOCH_S, _NUMBER, Effect, Row, _dict, _effect_row, _merge_common, _str, quantize
from .records import Snapshot
from .response_agents import agent_reference

RESPONSE_TERMINAL = frozenset({"completed", "failed", "cancelled", "incomplete"})
_EFFECT_SKIP = frozenset({"tools", "tool_choice", "tool_calls", "metadata", "instructions", "input", "raw"})
_OBSERVED = {"queued": "queued_observed_at", "in_progress": "in_progress_observed_at"}
_TIMING = ("request_started_at", "first_event_at", "first_output_at")


@dataclass(slots=True)
class ResponseTransition:
    response_id: str
    model: str | None
    from_status: str | None
    to_status: str
    observed_at: float
    source: str
    request_id: str | None = None


@dataclass(slots=True)
class ResponseFinished:
    row: Row  # scalar columns of the response when it became terminal


@dataclass(slots=True)
class ResponseUsageKnown:
    response_id: str
    model: str | None
    input_tokens: int | None
    cached_input_tokens: int | None
    output_tokens: int | None
    reasoning_tokens: int | None
    total_tokens: int
    max_output_tokens: int | None = None


@dataclass(slots=True)
class ResponseToolTurnaround:
    response_id: str
    model: str | None
    seconds: float


ResponseEffect = ResponseTransition | ResponseFinished | ResponseUsageKnown | ResponseToolTurnaround


@dataclass(slots=True)
class ResponseEvent:
    """One row of ``response_events``."""

    response_id: str
    observed_at: float
    from_status: str | None
    to_status: str
    source: str
    operation: str | None
    request_id: str | None


def _int(v: Any) -> int | None:
    return v if type(v) is int and -_INT64 <= v < _INT64 else None


def _time(v: Any) -> float | int | None:
    return v if type(v) in _NUMBER and 0 <= v < _MAX_EPOCH_S else None


def _tool_calls(output: Any) -> tuple[list[dict[str, Any]] | None, list[str] | None, list[str] | None, int | None]:
    """(tool calls, distinct kinds, distinct function names, number of function calls) of an output."""
    if type(output) is not list:
        return None, None, None, None
    calls: list[dict[str, Any]] = []
    kinds: list[str] = []
    names: list[str] = []
    functions = 0
    for item in output:
        if type(item) is not dict:
            continue
        kind = item.get("type")
        if type(kind) is not str or not kind.endswith("_call"):
            continue
        call = {k: item[k] for k in ("type", "id", "call_id", "name", "status", "arguments") if k in item}
        calls.append(call)
        if kind not in kinds:
            kinds.append(kind)
        if kind == "function_call":
            functions += 1
            name = item.get("name")
            if type(name) is str and name not in names:
                names.append(name)
    return calls or None, kinds or None, names or None, functions


def response_fields(obj: dict[str, Any], snap: Snapshot, store_prompts: bool) -> Row:
    """Columns of ``responses`` taken from one response object."""
    v: Any  # the walrus target of the checks below
    get = obj.get
    usage = _dict(get("usage")).get
    err = _dict(get("error")).get
    conversation = get("conversation")
    conv = _str(_dict(conversation).get("id")) if type(conversation) is dict else _str(conversation)
    calls, kinds, names, functions = _tool_calls(get("output"))
    agent_name, agent_version = agent_reference(obj)
    if agent_name is None:  # an upstream that does not echo it: the create request named it
        agent_name, agent_version = _str(snap.extra.get("request_agent_name")), _str(
            snap.extra.get("request_agent_version"))
    fields: Row = {
        "model": _str(get("model")),
        "background": v if type(v := get("background")) is bool else None,
        "store": v if type(v := get("store")) is bool else None,
        "created_at": _time(get("created_at")),
        "completed_at": _time(get("completed_at")),
        "conversation_id": conv,
        "previous_response_id": _str(get("previous_response_id")),
        "prompt_id": _str(_dict(get("prompt")).get("id")),
        "prompt_version": _str(_dict(get("prompt")).get("version")),
        "agent_name": agent_name,
        "agent_version": agent_version,
        "max_output_tokens": _int(get("max_output_tokens")),
        "max_tool_calls": _int(get("max_tool_calls")),
        "input_tokens": _int(usage("input_tokens")),
        "cached_input_tokens": _int(_dict(usage("input_tokens_details")).get("cached_tokens")),
        "cache_write_tokens": _int(_dict(usage("input_tokens_details")).get("cache_write_tokens")),
        "output_tokens": _int(usage("output_tokens")),
        "reasoning_tokens": _int(_dict(usage("output_tokens_details")).get("reasoning_tokens")),
        "total_tokens": _int(usage("total_tokens")),
        "incomplete_reason": _str(_dict(get("incomplete_details")).get("reason")),
        "error_code": _str(err("code")),
        "error_message": _str(err("message")),
        "tool_calls": calls,
        "tool_types": kinds,
        "tool_names": names,
        "function_calls": functions,
        "tools": get("tools"),
        "tool_choice": get("tool_choice"),
        "parallel_tool_calls": v if type(v := get("parallel_tool_calls")) is bool else None,
        "service_tier": _str(get("service_tier")),
        "reasoning_effort": _str(_dict(get("reasoning")).get("effort")),
        "temperature": v if type(v := get("temperature")) in _NUMBER and -_INT64 <= v < _INT64 else None,
        "top_p": v if type(v := get("top_p")) in _NUMBER and -_INT64 <= v < _INT64 else None,
        "metadata": get("metadata"),
        "api_version": snap.api_version,
        "api_provider": snap.api_provider,
        "key_fingerprint": snap.key_fingerprint,
        "source": snap.source,
        "raw": obj,
    }
    if store_prompts:
        extra = snap.extra
        fields["instructions"] = _str(get("instructions")) or _str(extra.get("request_instructions"))
        fields["input"] = extra.get("request_input")
    return fields


def _earliest(row: Row, col: str, t: Any) -> None:
    if type(t) in _NUMBER:
        t = quantize(t)
        cur = row.get(col)
        if cur is None or t < cur:
            row[col] = t


def _close_rounds(snap: Snapshot, lookup: Callable[[str], Row | None], effects: list[Effect], emit: bool) -> None:
    answers = snap.extra.get("answers")
    at: Any = snap.extra.get("request_started_at")
    if type(answers) is not list or type(at) not in _NUMBER:
        return
    t2 = quantize(at)
    for rid in answers:
        asked = lookup(rid) if type(rid) is str else None
        if asked is None:
            continue
        since = asked.get("tool_wait_at")
        if since is not None and t2 >= since:
            asked["tool_wait_at"] = None
            if emit:
                effects.append(ResponseToolTurnaround(rid, asked.get("model"), round(t2 - since, 6)))


def merge_response(
    row: Row | None,
    snap: Snapshot,
    *,
    events: list[ResponseEvent],
    effects: list[Effect],
    lookup: Callable[[str], Row | None],
    store_prompts: bool = False,
    emit: bool = True,
) -> Row:
    """Merge one response snapshot into ``row`` (None: first sighting); same contract as
    analytics.merge.merge_run. ``lookup`` gives the (mutable, batch-local) row of another response,
    for the tool rounds this snapshot's request closes."""
    t = quantize(snap.observed_at)
    fields = response_fields(snap.obj, snap, store_prompts)
    if row is None:
        fields["usage_counted"] = False
        fields["ended_at"] = None
        fields["tool_wait_at"] = None
    row, changed, old = _merge_common(row, snap, fields, t, RESPONSE_TERMINAL)
    extra = snap.extra
    if extra:
        for col in _TIMING:
            _earliest(row, col, extra.get(col))
        stream = extra.get("stream")
        if type(stream) is bool and row.get("stream") is None:
            row["stream"] = stream
        _close_rounds(snap, lookup, effects, emit)
    seen = _OBSERVED.get(snap.obj.get("status"))  # type: ignore[arg-type]
    if seen is not None:
        _earliest(row, seen, t)
    status = row["status"]
    rid: str = row["id"]
    if changed:
        events.append(ResponseEvent(rid, t, old, status, snap.source, snap.operation, snap.request_id))
        if emit:
            effects.append(ResponseTransition(rid, row["model"], old, status, t, snap.source, snap.request_id))
    if status in RESPONSE_TERMINAL:
        completed = row.get("completed_at") if status == "completed" else None
        row["ended_at"] = completed if completed is not None else row["status_observed_at"]
        if not row["finished_counted"]:
            row["finished_counted"] = True
            row["usage_counted"] = row.get("total_tokens") is not None
            if status == "completed" and row.get("function_calls"):
                row["tool_wait_at"] = row["status_observed_at"]
            if emit:
                effects.append(ResponseFinished(_effect_row(row, _EFFECT_SKIP)))
        else:
            waiting = row.get("tool_wait_at")
            if waiting is not None and row["status_observed_at"] < waiting:
                row["tool_wait_at"] = row["status_observed_at"]  # an earlier sighting arrived late
        if row["finished_counted"] and not row.get("usage_counted") and row.get("total_tokens") is not None:
            row["usage_counted"] = True
            if emit:
                effects.append(ResponseUsageKnown(
                    rid, row["model"], row.get("input_tokens"), row.get("cached_input_tokens"),
                    row.get("output_tokens"), row.get("reasoning_tokens"), row["total_tokens"],
                    row.get("max_output_tokens")))
    return row


def merge_responses(before: dict[str, Row], snaps: list[Snapshot], *, events: list[ResponseEvent],
                    effects: list[Effect], store_prompts: bool = False, emit: bool = True) -> dict[str, Row]:
    """Merge a batch's response snapshots into copies of the stored rows ``before``; return the rows
    the batch touched (a response whose tool round was closed is among them)."""
    merged: dict[str, Row] = {}

    def lookup(rid: str) -> Row | None:
        row = merged.get(rid)
        if row is None and rid in before:
            row = merged[rid] = dict(before[rid])
        return row

    for snap in snaps:
        rid = snap.obj["id"]
        merged[rid] = merge_response(lookup(rid), snap, events=events, effects=effects, lookup=lookup,
                                     store_prompts=store_prompts, emit=emit)
    return merged
