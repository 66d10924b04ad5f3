"""Response metrics, fed by the Effects of analytics/ingest/response_merge.py (the pattern of run_metrics.py).

Names parallel the run metrics (`runtap_responses_finished` beside `runtap_runs_finished`...). Counted
once per response however often it is polled, listed or resumed: the merge emits each effect once.
The OTel GenAI histograms are the run metrics' own (one registration), with
`gen_ai_operation_name="chat"` for responses beside `invoke_agent` for runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram

from ...analytics.ingest.bounds import positive_cap, token_count
from ...analytics.ingest.response_merge import (
    ResponseFinished,
    ResponseToolTurnaround,
    ResponseTransition,
    ResponseUsageKnown,
)
from .run_metrics import (
    BUDGET_BUCKETS,
    NONE,
    PROVIDER,
    RUN_BUCKETS,
    TOKENS_OUT_OF_RANGE,
    TURNAROUND_BUCKETS,
    LabelValues,
    RunMetrics,
    _elapsed,
)

# OTel GenAI: a Responses call is a chat operation (the conventions' value for OpenAI's chat APIs).
CHAT: Final = "chat"
# Queue and stream-start times are observation times (microseconds): from milliseconds for a warm
# stream's first event to minutes for a background response waiting on capacity.
LATENCY_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# (usage key in the row, `type` label, OTel gen_ai.token.type or None when OTel has no such type)
_TOKEN_TYPES: Final = (("input_tokens", "input", "input"), ("cached_input_tokens", "cached_input", None),
                       ("output_tokens", "output", "output"), ("reasoning_tokens", "reasoning", None))


class ResponseMetrics:
    def __init__(self, registry: CollectorRegistry, *, runs: RunMetrics) -> None:
        r = registry
        self.transitions = Counter(
            "runtap_response_transitions", "Observed response status changes (from_status `none` at first sight).",
            ["from_status", "to_status", "model"], registry=r)
        self.finished = Counter(
            "runtap_responses_finished", "Responses reaching a terminal status, counted once per response.",
            ["status", "model"], registry=r)
        self.tokens = Counter(
            "runtap_response_tokens", "Token usage of finished responses, once per response; input includes "
            "cached_input, output includes reasoning.", ["model", "type"], registry=r)
        self.budget = Histogram(
            "runtap_response_token_budget_ratio", "output_tokens / max_output_tokens, for finished responses "
            "that set the cap (cut off by it: exactly 1.0).", ["model"], buckets=BUDGET_BUCKETS, registry=r)
        self.incomplete = Counter("runtap_responses_incomplete", "Incomplete responses by incomplete_details.reason.",
                                  ["model", "reason"], registry=r)
        self.errors = Counter("runtap_response_errors", "Failed responses by error.code.", ["model", "code"],
                              registry=r)
        self.queue = Histogram(
            "runtap_response_queue_seconds", "Background responses: queued -> in_progress, as observed.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.duration = Histogram(
            "runtap_response_duration_seconds", "created_at -> completed_at (else the terminal status observed).",
            ["status", "model"], buckets=RUN_BUCKETS, registry=r)
        self.first_event = Histogram(
            "runtap_response_stream_first_event_seconds", "Streamed creates: request sent -> first event.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.first_output = Histogram(
            "runtap_response_stream_first_output_seconds", "Streamed creates: request sent -> first output "
            "delta (time to first token).", ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.turnaround = Histogram(
            "runtap_response_tool_turnaround_seconds", "A response observed ending with function calls -> "
            "the request carrying their outputs was sent: the time the app's own tools take.", ["model"],
            buckets=TURNAROUND_BUCKETS, registry=r)
        self._genai_tokens = runs.genai_tokens
        self._genai_duration = runs.genai_duration
        self._child = runs._child  # noqa: SLF001 - one memo of label children for both kinds
        self._skip_run_metric = runs._skip  # noqa: SLF001 - one skip counter for both kinds
        self._models = LabelValues(200)
        self._statuses = LabelValues(32)
        self._codes = LabelValues(64)

    def handlers(self) -> dict[type, Callable[[Any], None]]:
        """The handler of each response effect type, for a consumer that dispatches once per effect."""
        return {ResponseTransition: self._transition, ResponseFinished: lambda e: self._finished(e.row),
                ResponseUsageKnown: self._usage_known, ResponseToolTurnaround: self._turnaround}

    def _transition(self, e: ResponseTransition) -> None:
        self._child(self.transitions, self._statuses(e.from_status) if e.from_status is not None else NONE,
                    self._statuses(e.to_status), self._models(e.model)).inc()

    def _usage_known(self, e: ResponseUsageKnown) -> None:
        self._tokens(self._models(e.model), {
            "input_tokens": e.input_tokens, "cached_input_tokens": e.cached_input_tokens,
            "output_tokens": e.output_tokens, "reasoning_tokens": e.reasoning_tokens,
            "max_output_tokens": e.max_output_tokens})

    def _turnaround(self, e: ResponseToolTurnaround) -> None:
        self._child(self.turnaround, self._models(e.model)).observe(max(e.seconds, 0.0))

    def _finished(self, row: dict[str, Any]) -> None:
        model = self._models(row.get("model"))
        status = self._statuses(row.get("status"))
        self._child(self.finished, status, model).inc()
        queued = _elapsed(row.get("queued_observed_at"), row.get("in_progress_observed_at"))
        if queued is not None:
            self._child(self.queue, model).observe(queued)
        lasted = _elapsed(row.get("created_at"), row.get("ended_at"))
        if lasted is not None:
            self._child(self.duration, status, model).observe(lasted)
            error_type = "" if status == "completed" else (
                self._codes(row.get("error_code")) if status == "failed" else status)
            self._child(self._genai_duration, CHAT, PROVIDER, model, error_type).observe(lasted)
        if status == "incomplete":
            self._child(self.incomplete, model, self._codes(row.get("incomplete_reason"))).inc()
        elif status == "failed":
            self._child(self.errors, model, self._codes(row.get("error_code"))).inc()
        sent = row.get("request_started_at")
        for col, metric in (("first_event_at", self.first_event), ("first_output_at", self.first_output)):
            waited = _elapsed(sent, row.get(col))
            if waited is not None:
                self._child(metric, model).observe(waited)
        if row.get("total_tokens") is not None:
            self._tokens(model, row)
        # else: the usage comes later as ResponseUsageKnown

    def _tokens(self, model: str, usage: dict[str, Any]) -> None:
        for key, kind, genai_type in _TOKEN_TYPES:
            value = usage.get(key)
            if value is None:
                continue
            n = token_count(value)
            if n is None:
                # As received in DuckDB (the column and raw); kept out of counters and histograms.
                self._skip_run_metric(TOKENS_OUT_OF_RANGE)
                continue
            self._child(self.tokens, model, kind).inc(n)
            if genai_type is not None:
                self._child(self._genai_tokens, CHAT, PROVIDER, model, genai_type).observe(n)
        used, cap = token_count(usage.get("output_tokens")), usage.get("max_output_tokens")
        if used is None or cap is None:
            return
        limit = positive_cap(cap)
        if limit is None:
            self._skip_run_metric(TOKENS_OUT_OF_RANGE)
        else:
            self._child(self.budget, model).observe(used / limit)
