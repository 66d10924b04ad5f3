"""In-memory store and the run state machine's core: a per-run plan of timed actions, applied lazily.

Nothing runs in the background. Each run holds a queue of (delay, action) pairs; whenever the run is
read (a poll, a list, a stream waking up) `Sim.advance` applies every action whose time has come, with
that action's scheduled time as its timestamp. A polled run and a streamed run therefore go through the
same transitions at the same moments, as on the real service.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from . import objects
from .config import SimConfig
from .errors import Json
from .objects import Version

Action = Callable[[float], None]
Plan = list[tuple[float, Action]]
# A stage builds its actions when it starts, so it sees the thread as it is at that moment.
Stage = Callable[["Sim", "Run", float], Plan]

ACTIVE = frozenset({"queued", "in_progress", "requires_action", "cancelling"})
TERMINAL = frozenset({"completed", "failed", "cancelled", "expired", "incomplete"})
# A stream ends after one of these, as the real one does (requires_action waits for tool outputs).
STREAM_END_EVENTS = frozenset(
    {
        "thread.run.requires_action",
        "thread.run.completed",
        "thread.run.failed",
        "thread.run.cancelled",
        "thread.run.expired",
        "thread.run.incomplete",
    }
)


@dataclass(slots=True, eq=False)
class Thread:
    obj: Json
    messages: list[Json] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class Run:
    obj: Json
    thread: Thread
    version: Version
    scenario: str
    error_code: str
    prompt_base: int  # prompt tokens of the first model call: instructions, messages, tool definitions
    steps: list[Json] = field(default_factory=list)
    stages: deque[Stage] = field(default_factory=deque)
    plan: deque[tuple[float, Action]] = field(default_factory=deque)
    next_at: float | None = None
    # SSE frames, kept only while a stream is reading this run (None otherwise, to keep memory flat).
    log: list[tuple[str, bytes]] | None = None
    watchers: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    used_prompt: int = 0
    used_completion: int = 0
    # Later model calls re-read earlier output: completions and tool outputs add to their prompt.
    context_tokens: int = 0
    message: Json | None = None  # the assistant message being written
    waiting_step: Json | None = None  # the tool_calls step waiting for submit_tool_outputs
    waiting_usage: tuple[int, int] = (0, 0)
    expire_after_s: float = float(objects.DEFAULT_EXPIRY_S)  # once waiting on tool outputs

    @property
    def status(self) -> str:
        status: str = self.obj["status"]
        return status


class Sim:
    def __init__(self, config: SimConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.assistants: dict[str, Json] = {}
        self.threads: dict[str, Thread] = {}
        self.runs: dict[str, Run] = {}
        self.requests_served = 0

    # -- reading ---------------------------------------------------------------------------------

    def advance(self, run: Run, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        while run.next_at is not None and run.next_at <= now:
            at = run.next_at
            _, action = run.plan.popleft()
            run.next_at = at + run.plan[0][0] if run.plan else None
            action(at)

    def advance_thread(self, thread: Thread) -> None:
        now = self.clock()
        for run in thread.runs:
            if run.status in ACTIVE:
                self.advance(run, now)

    def active_run(self, thread: Thread) -> Run | None:
        self.advance_thread(thread)
        return next((run for run in thread.runs if run.status in ACTIVE), None)

    # -- scheduling --------------------------------------------------------------------------------

    def schedule(self, run: Run, at: float, plan: Plan) -> None:
        run.plan = deque(plan)
        run.next_at = at + plan[0][0] if plan else None
        run.wake.set()

    def next_stage(self, run: Run, at: float) -> None:
        if run.stages:
            stage = run.stages.popleft()
            self.schedule(run, at, stage(self, run, at))
        else:
            self.end_run(run, at, "completed")

    # -- events ------------------------------------------------------------------------------------

    def emit(self, run: Run, event: str, data: Json) -> None:
        if run.log is None:
            return
        payload = orjson.dumps(objects.render(data, run.version))
        run.log.append((event, b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"))
        run.wake.set()

    def watch(self, run: Run) -> int:
        """Start recording frames for a new stream; returns where that stream starts reading."""
        if run.log is None:
            run.log = []
        run.watchers += 1
        return len(run.log)

    def unwatch(self, run: Run) -> None:
        run.watchers -= 1
        if run.watchers <= 0:
            run.watchers = 0
            run.log = None

    # -- steps, usage, endings ---------------------------------------------------------------------

    def add_step(self, run: Run, step_type: str, details: Json, at: float) -> Json:
        step = objects.run_step(run.obj, step_type, details, int(at))
        run.steps.append(step)
        self.emit(run, "thread.run.step.created", step)
        self.emit(run, "thread.run.step.in_progress", step)
        return step

    def step_prompt(self, run: Run) -> int:
        return run.prompt_base + run.context_tokens

    def account(
        self, run: Run, step: Json, prompt: int, completion: int, *, forced: bool = False
    ) -> str | None:
        """Charge one model call to `step` and the run; returns why the run must end `incomplete`, if so.

        Caps follow the spec: usage never exceeds max_prompt_tokens / max_completion_tokens, and a v2 run
        that would have exceeded one ends `incomplete` naming it. v1 has no `incomplete` status, so there
        the usage is capped and the run carries on.
        """
        cap_prompt = run.obj.get("max_prompt_tokens")
        cap_completion = run.obj.get("max_completion_tokens")
        total_prompt = run.used_prompt + prompt
        total_completion = run.used_completion + completion
        reason: str | None = None
        if forced:
            if cap_prompt is not None and cap_completion is None:
                reason, total_prompt = "max_prompt_tokens", max(total_prompt, cap_prompt)
            else:
                reason = "max_completion_tokens"
                if cap_completion is not None:
                    total_completion = max(total_completion, cap_completion)
        elif cap_prompt is not None and total_prompt > cap_prompt:
            reason = "max_prompt_tokens"
        elif cap_completion is not None and total_completion > cap_completion:
            reason = "max_completion_tokens"
        if cap_prompt is not None:
            total_prompt = min(total_prompt, cap_prompt)
        if cap_completion is not None:
            total_completion = min(total_completion, cap_completion)
        step["usage"] = objects.usage(total_prompt - run.used_prompt, total_completion - run.used_completion)
        run.used_prompt, run.used_completion = total_prompt, total_completion
        run.context_tokens += completion
        return reason if run.version == "v2" else None

    def close_step(
        self, run: Run, step: Json, at: float, status: str, last_error: Json | None = None
    ) -> None:
        step["status"] = status
        stamp = {"completed": "completed_at", "failed": "failed_at", "cancelled": "cancelled_at"}
        step[stamp.get(status, "expired_at")] = int(at)
        if last_error is not None:
            step["last_error"] = last_error
        self.emit(run, f"thread.run.step.{status}", step)

    def close_message(self, run: Run, at: float, reason: str | None) -> None:
        message = run.message
        if message is None or message["status"] != "in_progress":
            return
        if reason is None:
            message["status"], message["completed_at"] = "completed", int(at)
            self.emit(run, "thread.message.completed", message)
        else:
            message["status"], message["incomplete_at"] = "incomplete", int(at)
            message["incomplete_details"] = {"reason": reason}
            self.emit(run, "thread.message.incomplete", message)

    def end_run(
        self,
        run: Run,
        at: float,
        status: str,
        *,
        last_error: Json | None = None,
        incomplete_reason: str | None = None,
    ) -> None:
        obj = run.obj
        obj["status"] = status
        obj["required_action"] = None
        stamp = {"failed": "failed_at", "cancelled": "cancelled_at", "expired": None}.get(
            status, "completed_at"
        )
        if stamp is not None:
            obj[stamp] = int(at)
            # The service clears expires_at once a run can no longer expire.
            obj["expires_at"] = None
        if last_error is not None:
            obj["last_error"] = last_error
        if incomplete_reason is not None:
            obj["incomplete_details"] = {"reason": incomplete_reason}
        obj["usage"] = objects.usage(run.used_prompt, run.used_completion)
        run.stages.clear()
        run.waiting_step = None
        self.schedule(run, at, [])
        self.emit(run, f"thread.run.{status}", obj)

    def expire(self, run: Run, at: float) -> None:
        self.close_message(run, at, "run_expired")
        for step in run.steps:
            if step["status"] == "in_progress":
                self.close_step(run, step, at, "expired")
        self.end_run(run, at, "expired")

    # -- misc --------------------------------------------------------------------------------------

    def now_s(self) -> int:
        return int(self.clock())


def last_user_text(thread: Thread) -> str:
    for message in reversed(thread.messages):
        if message["role"] == "user":
            return objects.message_text(message)
    return ""
