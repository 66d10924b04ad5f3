"""Merge rules: how run and step snapshots, arriving in any order, become one row per object.

A snapshot is an object seen in a response body or an SSE event. Its ``observed_at`` orders it:
for a response, the time the request was sent (the upstream state is at least that new); for a
stream event, the time the event arrived. Snapshots reach the store out of order (a slow poll can
land after the stream's final event), and the same snapshot may be delivered twice (spool replay,
restart). The rules below make a row's status, usage and timestamps depend only on the set of
snapshots seen, not on their arrival order or repetition:

1. Terminal is final. Runs end in ``completed``, ``failed``, ``cancelled``, ``expired`` or
   ``incomplete`` (steps: the same without ``incomplete``). Once a row is terminal no later snapshot
   changes its status. If two different terminal statuses are seen, the one observed earliest
   wins, whatever order they arrive in.
2. Otherwise the newest snapshot decides: a snapshot observed before the row's
   ``status_observed_at`` never moves the status back. Equal times: the later arrival wins.
3. Fields come from the snapshot that decides (the newest; for a terminal row, the newest with
   the final status, so a metadata update after completion is kept). Every other snapshot only
   fills fields that are still NULL. A NULL never erases a value: usage, once known, stays. The
   API never changes usage or a timestamp once set, so these end the same in every arrival order.
   ``first_seen_at``/``last_seen_at`` are the min/max of all observed_at; ``ended_at`` is the
   final status's own timestamp (completed_at, failed_at, cancelled_at, expires_at), else the
   time the final status was first observed.
4. Every change of a run's stored status writes a ``run_events`` row (first sighting: from NULL)
   with the snapshot's observed_at, source, operation and request_id. Only changes of the stored
   row are recorded, so a stale snapshot arriving late records nothing, and the events of one run
   always chain (each from_status is the previous to_status). Steps follow rules 1-3 with their
   own statuses and record no events.
5. Effects for metrics and tracing are emitted once per run, across re-deliveries and restarts,
   because the "already emitted" state is stored in the row (``finished_counted``,
   ``usage_counted``, ``requires_action_at``):

   - ``Transition`` for each change of the stored status (as in rule 4).
   - ``RunFinished`` when the row first becomes terminal, with its usage if known. If usage is
     still unknown then and arrives in a later snapshot, ``UsageKnown`` carries it exactly once;
     tokens are therefore counted once, from RunFinished or from UsageKnown, never both.
   - ``StepFinished`` when a step first becomes terminal.
   - ``ToolTurnaround``: the row entered ``requires_action`` at T (first observed), and a snapshot
     of operation ``runs.submit_tool_outputs`` observed at T2 >= T (the submit request's send time;
     for a streamed submit, the arrival of its first event) closes the round: T2 - T, once per
     round. A submit seen before any requires_action of its round is not measured.

   Replaying the spool (``emit=False``) updates the same state but returns no effects: they were
   handed to the caller when the batch was first processed (a batch spooled before its merge ran
   is replayed with ``emit=True``: spool.py).

A row written by something else (no ``status_observed_at``...) counts as observed before any
snapshot. Functions here are pure: rows are plain dicts keyed by column name, timestamps are float epoch
seconds quantised to the microsecond (what a TIMESTAMPTZ holds). A structured column (JSON, list)
holds the decoded value when a snapshot of this batch set it, or ``KEPT`` when the stored row has a
value that was not read back (the store writes it as "keep the stored value").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from .operations import RUNS_SUBMIT_TOOL_OUTPUTS
from .records import Snapshot

if TYPE_CHECKING:  # response_merge builds on this module
    from .response_merge import ResponseEffect

Row = dict[str, Any]

# Not None, so the fill rule leaves it alone; never compared or emitted.
KEPT: Any = ...

RUN_TERMINAL = frozenset({"completed", "failed", "cancelled", "expired", "incomplete"})
STEP_TERMINAL = frozenset({"completed", "failed", "cancelled", "expired"})
SUBMIT_TOOL_OUTPUTS = RUNS_SUBMIT_TOOL_OUTPUTS

_RUN_END_FIELD = {
    "completed": "completed_at",
    "failed": "failed_at",
    "cancelled": "cancelled_at",
    "expired": "expires_at",
    "incomplete": "completed_at",
}
# Effects carry the scalar columns; structures and prompts stay in the database.
_RUN_EFFECT_SKIP = frozenset(
    {
        "tools",
        "tool_choice",
        "response_format",
        "truncation_strategy",
        "metadata",
        "instructions",
        "additional_instructions",
        "additional_messages",
        "raw",
    }
)
_STEP_EFFECT_SKIP = frozenset({"step_details", "metadata", "raw"})
_INT64 = 1 << 63
_NUMBER = (int, float)
_EMPTY: dict[str, Any] = {}
_MAX_EPOCH_S = 1e11  # year 5138: anything above is not seconds, and would overflow microseconds


@dataclass(slots=True)
class Transition:
    run_id: str
    model: str | None
    assistant_id: str | None
    from_status: str | None
    to_status: str
    observed_at: float
    source: str
    request_id: str | None = None  # the request that showed the change (links run spans to it)


@dataclass(slots=True)
class RunFinished:
    row: Row  # scalar columns of the run at the moment it became terminal


@dataclass(slots=True)
class UsageKnown:
    run_id: str
    model: str | None
    assistant_id: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int
    # The run's caps, from its stored row: the budget ratio needs them even when the usage comes
    # after a restart of the proxy (the row, not process memory, is what survives).
    max_prompt_tokens: int | None = None
    max_completion_tokens: int | None = None


@dataclass(slots=True)
class StepFinished:
    row: Row


@dataclass(slots=True)
class ToolTurnaround:
    run_id: str
    model: str | None
    seconds: float


RunEffect = Transition | RunFinished | UsageKnown | StepFinished | ToolTurnaround
# What one batch changed, runs and responses alike: a store batch returns both kinds in one list.
Effect: TypeAlias = "RunEffect | ResponseEffect"


@dataclass(slots=True)
class RunEvent:
    """One row of ``run_events``."""

    run_id: str
    observed_at: float
    from_status: str | None
    to_status: str
    source: str
    operation: str | None
    request_id: str | None


def quantize(t: float) -> float:
    """Round to the microsecond, so a row compares the same from memory and from TIMESTAMPTZ."""
    return round(t * 1_000_000) / 1_000_000


def _str(v: Any) -> str | None:
    return v if type(v) is str else None


def _dict(v: Any) -> dict[str, Any]:
    return v if type(v) is dict else _EMPTY


def _status(obj: dict[str, Any]) -> str | None:
    return _str(obj.get("status"))


# The two functions below run for every snapshot (50k/s on one thread), so the type checks are
# inline expressions rather than helper calls, which would double their cost. Types are checked
# because one bad value must not fail the whole batch: it would be spooled and replayed forever.
# Timestamps: seconds below _MAX_EPOCH_S; integers: int64; booleans are not numbers.


def run_fields(obj: dict[str, Any], snap: Snapshot, store_prompts: bool) -> Row:
    """Columns of ``runs`` taken from one run object (``raw`` is the object itself; the store
    removes ``instructions`` from it unless it stores prompts)."""
    v: Any  # the walrus target of every check below
    get = obj.get
    usage = _dict(get("usage")).get
    err = _dict(get("last_error")).get
    fields: Row = {
        "thread_id": v if type(v := get("thread_id")) is str else None,
        "assistant_id": v if type(v := get("assistant_id")) is str else None,
        "model": v if type(v := get("model")) is str else None,
        "created_at": v if type(v := get("created_at")) in _NUMBER and 0 <= v < _MAX_EPOCH_S else None,
        "started_at": v if type(v := get("started_at")) in _NUMBER and 0 <= v < _MAX_EPOCH_S else None,
        "expires_at": v if type(v := get("expires_at")) in _NUMBER and 0 <= v < _MAX_EPOCH_S else None,
        "cancelled_at": v if type(v := get("cancelled_at")) in _NUMBER and 0 <= v < _MAX_EPOCH_S else None,
        "failed_at": v if type(v := get("failed_at")) in _NUMBER and 0 <= v < _MAX_EPOCH_S else None,
        "completed_at": v if type(v := get("completed_at")) in _NUMBER and 0 <= v < _MAX_EPOCH_S else None,
        "incomplete_reason": _str(_dict(get("incomplete_details")).get("reason")),
        "last_error_code": v if type(v := err("code")) is str else None,
        "last_error_message": v if type(v := err("message")) is str else None,
        "prompt_tokens": v if type(v := usage("prompt_tokens")) is int and -_INT64 <= v < _INT64 else None,
        "completion_tokens": v if type(v := usage("completion_tokens")) is int and -_INT64 <= v < _INT64 else None,
        "total_tokens": v if type(v := usage("total_tokens")) is int and -_INT64 <= v < _INT64 else None,
        "max_prompt_tokens": v if type(v := get("max_prompt_tokens")) is int and -_INT64 <= v < _INT64 else None,
        "max_completion_tokens": (
            v if type(v := get("max_completion_tokens")) is int and -_INT64 <= v < _INT64 else None
        ),
        "temperature": v if type(v := get("temperature")) in _NUMBER and -_INT64 <= v < _INT64 else None,
        "top_p": v if type(v := get("top_p")) in _NUMBER and -_INT64 <= v < _INT64 else None,
        "parallel_tool_calls": v if type(v := get("parallel_tool_calls")) is bool else None,
        "tools": get("tools"),
        "tool_choice": get("tool_choice"),
        "response_format": get("response_format"),
        "truncation_strategy": get("truncation_strategy"),
        "metadata": get("metadata"),
        "api_version": snap.api_version,
        "api_provider": snap.api_provider,
        "key_fingerprint": snap.key_fingerprint,
        "source": snap.source,
        "raw": obj,
    }
    if store_prompts:
        extra = snap.extra
        fields["instructions"] = _str(get("instructions"))
        fields["additional_instructions"] = _str(extra.get("additional_instructions"))
        fields["additional_messages"] = extra.get("additional_messages")
    return fields


def _tool_lists(details: Any) -> tuple[list[str] | None, list[str] | None]:
    calls = _dict(details).get("tool_calls")
    if type(calls) is not list or not calls:
        return None, None
    types: list[str] = []
    names: list[str] = []
    for call in calls:
        if type(call) is not dict:
            continue
        kind = call.get("type")
        if type(kind) is str and kind not in types:
            types.append(kind)
        if kind == "function":
            name = _dict(call.get("function")).get("name")
            if type(name) is str and name not in names:
                names.append(name)
    # an empty list (step created before its calls) stays NULL so a later snapshot fills it
    return types or None, names or None


def step_fields(obj: dict[str, Any], snap: Snapshot) -> Row:
    v: Any
    get = obj.get
    usage = _dict(get("usage")).get
    err = _dict(get("last_error")).get
    details = get("step_details")
    tool_types, tool_names = _tool_lists(details)
    return {
        "run_id": v if type(v := get("run_id")) is str else None,
        "thread_id": v if type(v := get("thread_id")) is str else None,
        "assistant_id": v if type(v := get("assistant_id")) is str else None,
        "type": v if type(v := get("type")) is str else None,
        "created_at": v if type(v := get("created_at")) in _NUMBER and 0 <= v < _MAX_EPOCH_S else None,
        "completed_at": v if type(v := get("completed_at")) in _NUMBER and 0 <= v < _MAX_EPOCH_S else None,
        "cancelled_at": v if type(v := get("cancelled_at")) in _NUMBER and 0 <= v < _MAX_EPOCH_S else None,
        "failed_at": v if type(v := get("failed_at")) in _NUMBER and 0 <= v < _MAX_EPOCH_S else None,
        "expired_at": v if type(v := get("expired_at")) in _NUMBER and 0 <= v < _MAX_EPOCH_S else None,
        "last_error_code": v if type(v := err("code")) is str else None,
        "last_error_message": v if type(v := err("message")) is str else None,
        "prompt_tokens": v if type(v := usage("prompt_tokens")) is int and -_INT64 <= v < _INT64 else None,
        "completion_tokens": v if type(v := usage("completion_tokens")) is int and -_INT64 <= v < _INT64 else None,
        "total_tokens": v if type(v := usage("total_tokens")) is int and -_INT64 <= v < _INT64 else None,
        "step_details": details,
        "tool_types": tool_types,
        "tool_names": tool_names,
        "metadata": get("metadata"),
        "api_version": snap.api_version,
        "api_provider": snap.api_provider,
        "key_fingerprint": snap.key_fingerprint,
        "source": snap.source,
        "raw": obj,
    }


def _arbitrate(row: Row, new: str | None, t: float, terminal: frozenset[str]) -> tuple[bool, bool, float | None]:
    """Rules 1-3: (status changes, snapshot's fields override, new status_observed_at).

    A missing observed_at (a row written by something other than this merge) counts as oldest.
    """
    cur = row["status"]
    cur_t = row.get("status_observed_at")
    if new is None:
        return False, False, cur_t
    if cur in terminal:
        fields_t = row.get("fields_observed_at")
        if new == cur:
            return False, fields_t is None or t >= fields_t, t if cur_t is None else min(cur_t, t)
        if new in terminal and cur_t is not None and t < cur_t:
            return True, True, t
        return False, False, cur_t
    if new in terminal or cur is None or cur_t is None or t >= cur_t:
        return new != cur, True, t
    return False, False, cur_t


def _effect_row(row: Row, skip: frozenset[str]) -> Row:
    """A copy of the row's scalar columns (copy-then-delete: 5x faster than filtering)."""
    out = row.copy()
    for k in skip:
        out.pop(k, None)
    for k in ("tool_types", "tool_names"):
        if out.get(k) is KEPT:
            out[k] = None
    return out


def _merge_fields(row: Row, fields: Row, override: bool) -> None:
    if override:
        for k, v in fields.items():
            if v is not None:
                row[k] = v
    else:
        for k, v in fields.items():
            if v is not None and row.get(k) is None:
                row[k] = v


def _new_row(obj_id: str, t: float) -> Row:
    return {
        "id": obj_id,
        "status": None,
        "status_observed_at": None,
        "fields_observed_at": t,
        "first_seen_at": t,
        "last_seen_at": t,
        "finished_counted": False,
    }


def _merge_common(
    row: Row | None, snap: Snapshot, fields: Row, t: float, terminal: frozenset[str]
) -> tuple[Row, bool, str | None]:
    new = _status(snap.obj)
    if row is None:
        row = _new_row(snap.obj["id"], t)
        row.update(fields)
        changed, override, status_t = new is not None, True, t if new is not None else None
    else:
        first, last = row.get("first_seen_at"), row.get("last_seen_at")
        if first is None or t < first:
            row["first_seen_at"] = t
        if last is None or t > last:
            row["last_seen_at"] = t
        changed, override, status_t = _arbitrate(row, new, t, terminal)
        _merge_fields(row, fields, override)
        if override:
            row["fields_observed_at"] = t
    row["status_observed_at"] = status_t
    old = row["status"]
    if changed:
        row["status"] = new
    return row, changed, old


def merge_run(
    row: Row | None,
    snap: Snapshot,
    *,
    events: list[RunEvent],
    effects: list[Effect],
    store_prompts: bool = False,
    emit: bool = True,
) -> Row:
    """Merge one run snapshot (``snap.obj["id"]`` must be a str) into ``row`` (None: first sighting).

    Mutates and returns ``row``; appends run_events rows to ``events`` and, when ``emit``,
    effects to ``effects``.
    """
    t = quantize(snap.observed_at)
    fields = run_fields(snap.obj, snap, store_prompts)
    if row is None:
        fields["requires_action_at"] = None
        fields["usage_counted"] = False
        fields["ended_at"] = None
    row, changed, old = _merge_common(row, snap, fields, t, RUN_TERMINAL)
    status = row["status"]
    run_id: str = row["id"]
    if snap.operation == SUBMIT_TOOL_OUTPUTS and snap.obj.get("status") != "requires_action":
        asked_at = row.get("requires_action_at")
        if asked_at is not None and t >= asked_at:
            row["requires_action_at"] = None
            if emit:
                effects.append(ToolTurnaround(run_id, row["model"], round(t - asked_at, 6)))
    if changed:
        events.append(RunEvent(run_id, t, old, status, snap.source, snap.operation, snap.request_id))
        if emit:
            effects.append(
                Transition(run_id, row["model"], row["assistant_id"], old, status, t, snap.source, snap.request_id)
            )
        if status == "requires_action":
            row["requires_action_at"] = t
    if status in RUN_TERMINAL:
        end_field = _RUN_END_FIELD[status]
        ended = row[end_field]
        row["ended_at"] = ended if ended is not None else row["status_observed_at"]
        if not row["finished_counted"]:
            row["finished_counted"] = True
            row["usage_counted"] = row["total_tokens"] is not None
            if emit:
                effects.append(RunFinished(_effect_row(row, _RUN_EFFECT_SKIP)))
        elif not row["usage_counted"] and row["total_tokens"] is not None:
            row["usage_counted"] = True
            if emit:
                effects.append(
                    UsageKnown(
                        run_id,
                        row["model"],
                        row["assistant_id"],
                        row["prompt_tokens"],
                        row["completion_tokens"],
                        row["total_tokens"],
                        row["max_prompt_tokens"],
                        row["max_completion_tokens"],
                    )
                )
    return row


def merge_step(row: Row | None, snap: Snapshot, *, effects: list[Effect], emit: bool = True) -> Row:
    """Merge one run-step snapshot; same contract as :func:`merge_run` (steps write no events)."""
    t = quantize(snap.observed_at)
    row, _, _ = _merge_common(row, snap, step_fields(snap.obj, snap), t, STEP_TERMINAL)
    if row["status"] in STEP_TERMINAL and not row["finished_counted"]:
        row["finished_counted"] = True
        if emit:
            effects.append(StepFinished(_effect_row(row, _STEP_EFFECT_SKIP)))
    return row
