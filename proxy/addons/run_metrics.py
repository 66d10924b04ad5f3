"""Run and step metrics, fed by the capture Effects of analytics/ingest/merge.py, plus the OTel GenAI metrics.

"Counted once per run" is not tracked here: merge.py emits RunFinished, UsageKnown, StepFinished and
ToolTurnaround exactly once per run/step/round, across re-deliveries, out-of-order snapshots and
restarts, because the "already emitted" state lives in the DuckDB row. This module only turns each
effect into observations, so it keeps no per-run state except the token caps of runs whose usage is
still unknown when they finish.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram

from ...analytics.ingest.bounds import MAX_LABEL_CHARS, cap_label, positive_cap, token_count
from ...analytics.ingest.merge import RunFinished, StepFinished, ToolTurnaround, Transition, UsageKnown

# Run timestamps (created_at, started_at, completed_at...) are whole seconds in the API, so nothing
# below 1 s can be told apart; runs queue for seconds and last from seconds to many minutes (a run
# expires 10 minutes after it is created or enters requires_action), tool-heavy runs longer.
RUN_BUCKETS: Final = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)
# Tool turnaround is measured from observation times (microseconds): an app's own function call takes
# from tens of milliseconds (a lookup) to minutes (a human in the loop); the API expires the run
# 10 minutes after requires_action, so 600 s is the useful top.
TURNAROUND_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# usage / cap. Runs that hit their cap end incomplete with usage == cap exactly, so 1.0 is a bucket
# edge of its own (le="0.99" vs le="1.0" separates "close" from "cut off"); a prompt cap applies to
# the truncated thread, so usage above the cap is possible and visible in the buckets above 1.
BUDGET_BUCKETS: Final = (0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0, 1.1, 1.25, 1.5, 2, 5)
# OTel GenAI semantic conventions: the advisory bucket boundaries of gen_ai.client.token.usage, and of
# gen_ai.client.operation.duration extended by the same doubling up to 655 s, because an agent run
# (unlike one chat completion) routinely outlasts the spec's 81.92 s top bucket.
GENAI_TOKEN_BUCKETS: Final = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                              16777216, 67108864)
GENAI_DURATION_BUCKETS: Final = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                                 40.96, 81.92, 163.84, 327.68, 655.36)

PROVIDER: Final = "openai"
INVOKE_AGENT: Final = "invoke_agent"
OTHER: Final = "other"
UNKNOWN: Final = "unknown"
NONE: Final = "none"  # from_status of a run's first sighting; tool of a message_creation step

_STEP_END = {"completed": "completed_at", "failed": "failed_at", "cancelled": "cancelled_at",
             "expired": "expired_at"}


class LabelValues:
    """Caps the distinct values one label takes: the first `limit` are kept, later ones become `other`;
    and each value's length (analytics/ingest/bounds.py cap_label).

    Label values here come from upstream JSON (model names, error codes, event names); a misbehaving
    upstream or a typo-happy app must not be able to grow the series count, or one series, without bound.
    """

    def __init__(self, limit: int, *, missing: str = UNKNOWN) -> None:
        if limit < 1:
            raise ValueError("limit must be positive")
        self._limit = limit
        self._missing = missing
        self._seen: set[str] = set()

    def __call__(self, value: Any) -> str:
        # Fast path for a value already given (most calls): everything in _seen is its own cap_label, and
        # "" never enters it, so the answer is the one the slow path below would give.
        if type(value) is str and value in self._seen:
            return value
        if value is None or value == "":
            return self._missing
        text = cap_label(value if type(value) is str else str(value))
        seen = self._seen
        if text in seen:
            return text
        if len(seen) >= self._limit:
            return OTHER
        seen.add(text)
        return text


def _num(v: Any) -> float | None:
    if type(v) is int:
        return float(v)
    return v if type(v) is float and math.isfinite(v) else None


def _elapsed(start: Any, end: Any) -> float | None:
    a, b = _num(start), _num(end)
    return None if a is None or b is None else max(b - a, 0.0)


def _step_tool(row: dict[str, Any]) -> str:
    if row.get("type") != "tool_calls":
        return NONE
    types = row.get("tool_types")
    if not isinstance(types, list) or not types:
        return UNKNOWN
    # A step with parallel calls of different kinds is counted once, under the combination.
    return "+".join(sorted(str(t) for t in types))


def _short(value: Any) -> bool:
    return type(value) is str and len(value) <= MAX_LABEL_CHARS


OnSkip = Callable[[str, int], None]
# Skip reasons (runtap_capture_skipped_total{reason}): a usage or cap value that is not a plausible
# count, and an effect that raised while it was being counted (the others are still counted).
TOKENS_OUT_OF_RANGE: Final = "tokens_out_of_range"
EFFECT_ERROR: Final = "metrics_effect_error"
# Raw label values memoised per metric: bounded, since upstream values are unbounded before LabelValues.
_MAX_MEMO: Final = 4096


class RunMetrics:
    def __init__(self, registry: CollectorRegistry, *, label_assistant: bool = False,
                 on_skip: OnSkip | None = None) -> None:
        r = registry
        self._on_skip = on_skip
        self._with_assistant = label_assistant
        a = ["assistant_id"] if label_assistant else []
        self.transitions = Counter(
            "runtap_run_transitions", "Observed run status changes (from_status `none` at first sight).",
            ["from_status", "to_status", "model"], registry=r)
        self.finished = Counter(
            "runtap_runs_finished", "Runs reaching a terminal status, counted once per run.",
            ["status", "model", *a], registry=r)
        self.queue = Histogram("runtap_run_queue_seconds", "started_at - created_at, per finished run.",
                               ["model"], buckets=RUN_BUCKETS, registry=r)
        self.duration = Histogram(
            "runtap_run_duration_seconds", "Terminal timestamp - created_at, per finished run.",
            ["status", "model"], buckets=RUN_BUCKETS, registry=r)
        self.turnaround = Histogram(
            "runtap_tool_turnaround_seconds",
            "requires_action observed -> tool outputs submitted: the time the app's own tools take.",
            ["model"], buckets=TURNAROUND_BUCKETS, registry=r)
        self.tokens = Counter("runtap_tokens", "Token usage of finished runs, counted once per run.",
                              ["model", "type", *a], registry=r)
        self.budget = Histogram(
            "runtap_token_budget_ratio",
            "Usage / max_prompt_tokens (type=prompt) or / max_completion_tokens (type=completion), "
            "for finished runs that set the cap.", ["model", "type"], buckets=BUDGET_BUCKETS, registry=r)
        self.incomplete = Counter("runtap_runs_incomplete", "Incomplete runs by incomplete_details.reason.",
                                  ["model", "reason", *a], registry=r)
        self.errors = Counter("runtap_run_errors", "Failed runs by last_error.code.",
                              ["model", "code", *a], registry=r)
        self.steps = Counter(
            "runtap_steps_finished", "Run steps reaching a terminal status, by type and tool kind.",
            ["type", "tool", "status"], registry=r)
        self.step_duration = Histogram(
            "runtap_step_duration_seconds", "Step terminal timestamp - created_at.", ["type"],
            buckets=RUN_BUCKETS, registry=r)
        # OTel GenAI semantic-convention metrics under the names the OTel Prometheus exporter would
        # give them (dots -> underscores, unit suffix `_seconds`; `{token}` is an annotation and adds
        # none). One invoke_agent operation = one run.
        self.genai_tokens = Histogram(
            "gen_ai_client_token_usage", "Number of input and output tokens used, per run (OTel GenAI "
            "gen_ai.client.token.usage).",
            ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_token_type"],
            buckets=GENAI_TOKEN_BUCKETS, registry=r)
        self.genai_duration = Histogram(
            "gen_ai_client_operation_duration_seconds", "GenAI operation duration: a run from created_at "
            "to its terminal timestamp (OTel GenAI gen_ai.client.operation.duration).",
            ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "error_type"],
            buckets=GENAI_DURATION_BUCKETS, registry=r)
        self._models = LabelValues(200)
        self._assistants = LabelValues(1000)
        self._statuses = LabelValues(32)
        self._codes = LabelValues(64)
        self._kinds = LabelValues(64)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._transition_children: dict[tuple[Any, Any, Any], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        """metric.labels(*values), memoised: labels() takes a lock and validates on every call, and this
        runs several times per captured run. Values are bounded (LabelValues), so the memo is too."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def handlers(self) -> dict[type, Callable[[Any], None]]:
        """The handler of each run effect type, for a consumer that dispatches once per effect."""
        return {Transition: self._transition, RunFinished: lambda e: self._finished(e.row),
                UsageKnown: self._usage_known, StepFinished: lambda e: self._step(e.row),
                ToolTurnaround: self._turnaround}

    def _skip(self, reason: str) -> None:
        if self._on_skip is not None:
            self._on_skip(reason, 1)

    def _transition(self, e: Transition) -> None:
        # Several per run: the child is memoised by the raw values, whose labels never change once
        # given (LabelValues keeps a value, or `other` once full, for good). Kept beside LabelValues'
        # own fast path: three label calls and _child's key cost a memo hit about 40% more.
        was, now, model = key = (e.from_status, e.to_status, e.model)
        # Only short text (or None) is a key: 1, 1.0 and true are one key but three labels, a dict none,
        # and an upstream's megabyte-long model name must not be kept thousands of times over.
        memo = (was is None or _short(was)) and _short(now) and (model is None or _short(model))
        child = self._transition_children.get(key) if memo else None
        if child is None:
            child = self._child(self.transitions, self._statuses(e.from_status) if e.from_status is not None
                                else NONE, self._statuses(e.to_status), self._models(e.model))
            if memo and len(self._transition_children) < _MAX_MEMO:
                self._transition_children[key] = child
        child.inc()

    def _turnaround(self, e: ToolTurnaround) -> None:
        self._child(self.turnaround, self._models(e.model)).observe(max(e.seconds, 0.0))

    def _assistant(self, value: Any) -> list[str]:
        return [self._assistants(value)] if self._with_assistant else []

    def _finished(self, row: dict[str, Any]) -> None:
        model = self._models(row.get("model"))
        status = self._statuses(row.get("status"))
        who = self._assistant(row.get("assistant_id"))
        self._child(self.finished, status, model, *who).inc()
        queued = _elapsed(row.get("created_at"), row.get("started_at"))
        if queued is not None:
            self._child(self.queue, model).observe(queued)
        lasted = _elapsed(row.get("created_at"), row.get("ended_at"))
        if lasted is not None:
            self._child(self.duration, status, model).observe(lasted)
            error_type = "" if status == "completed" else (
                self._codes(row.get("last_error_code")) if status == "failed" else status)
            self._child(self.genai_duration, INVOKE_AGENT, PROVIDER, model, error_type).observe(lasted)
        if status == "incomplete":
            self._child(self.incomplete, model, self._codes(row.get("incomplete_reason")), *who).inc()
        elif status == "failed":
            self._child(self.errors, model, self._codes(row.get("last_error_code")), *who).inc()
        if row.get("total_tokens") is not None:
            self._tokens(model, who, row.get("prompt_tokens"), row.get("completion_tokens"),
                         (row.get("max_prompt_tokens"), row.get("max_completion_tokens")))
        # else: the usage comes later as UsageKnown, which carries the caps itself

    def _usage_known(self, e: UsageKnown) -> None:
        self._tokens(self._models(e.model), self._assistant(e.assistant_id), e.prompt_tokens,
                     e.completion_tokens, (e.max_prompt_tokens, e.max_completion_tokens))

    def _tokens(self, model: str, who: list[str], prompt: Any, completion: Any,
                caps: tuple[Any, Any]) -> None:
        for kind, used, cap, genai_type in (("prompt", prompt, caps[0], "input"),
                                            ("completion", completion, caps[1], "output")):
            if used is None:
                continue
            n = token_count(used)
            if n is None:
                # As received in DuckDB (the column and raw); kept out of counters and histograms.
                self._skip(TOKENS_OUT_OF_RANGE)
                continue
            self._child(self.tokens, model, kind, *who).inc(n)
            self._child(self.genai_tokens, INVOKE_AGENT, PROVIDER, model, genai_type).observe(n)
            if cap is None:
                continue
            limit = positive_cap(cap)
            if limit is None:
                self._skip(TOKENS_OUT_OF_RANGE)
            else:
                self._child(self.budget, model, kind).observe(n / limit)

    def _step(self, row: dict[str, Any]) -> None:
        kind = self._kinds(row.get("type"))
        status = self._statuses(row.get("status"))
        self._child(self.steps, kind, self._kinds(_step_tool(row)), status).inc()
        end = _STEP_END.get(row.get("status") or "")
        lasted = _elapsed(row.get("created_at"), row.get(end)) if end else None
        if lasted is not None:
            self._child(self.step_duration, kind).observe(lasted)
