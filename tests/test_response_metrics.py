"""Response metrics from merge effects: each response counted once, labels bounded."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from runtap.analytics.ingest.response_merge import merge_responses
from runtap.proxy.addons.metrics import Metrics

from tests import response_factory as rf
from tests.test_response_merge import T0, USAGE, lifecycle, obj, snap


def effects_of(snaps: list[Any]) -> list[Any]:
    rows: dict[str, Any] = {}
    effects: list[Any] = []
    for s in snaps:
        rows.update(merge_responses(rows, [s], events=[], effects=effects))
    return effects


def test_a_polled_and_resumed_response_is_counted_once() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.on_effects(effects_of(lifecycle() + lifecycle()))
    v = registry.get_sample_value
    m = rf.MODEL
    assert v("runtap_responses_finished_total", {"status": "completed", "model": m}) == 1
    for kind, n in (("input", 1200), ("cached_input", 1024), ("output", 300), ("reasoning", 256)):
        assert v("runtap_response_tokens_total", {"model": m, "type": kind}) == n
    assert v("runtap_response_token_budget_ratio_sum", {"model": m}) == 300 / 2000
    assert v("runtap_response_queue_seconds_sum", {"model": m}) == 1.0
    assert v("runtap_response_duration_seconds_count", {"status": "completed", "model": m}) == 1
    genai = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai", "gen_ai_request_model": m}
    assert v("gen_ai_client_token_usage_sum", {**genai, "gen_ai_token_type": "input"}) == 1200
    assert v("gen_ai_client_token_usage_sum", {**genai, "gen_ai_token_type": "output"}) == 300
    assert v("gen_ai_client_operation_duration_seconds_count", {**genai, "error_type": ""}) == 1
    assert v("runtap_response_transitions_total", {"from_status": "none", "to_status": "queued", "model": m}) == 1
    # run metrics untouched by responses
    assert v("runtap_runs_finished_total", {"status": "completed", "model": m}) is None


def test_incomplete_failed_cut_off_and_stream_timing() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    cut = obj("incomplete", id="resp_2", incomplete_details={"reason": "max_output_tokens"}, max_output_tokens=300,
              usage=USAGE)
    failed = obj("failed", id="resp_3", error={"code": "server_error", "message": "boom"})
    streamed = obj("completed", id="resp_4", background=False, max_output_tokens=None)
    metrics.on_effects(effects_of([
        snap(cut, T0 + 1), snap(failed, T0 + 2),
        snap(streamed, T0 + 3, source="stream", op="responses.create", request_started_at=T0 + 2.5,
             first_event_at=T0 + 2.75, first_output_at=T0 + 3.0, stream=True),
    ]))
    v = registry.get_sample_value
    m = rf.MODEL
    assert v("runtap_responses_incomplete_total", {"model": m, "reason": "max_output_tokens"}) == 1
    assert v("runtap_response_token_budget_ratio_bucket", {"model": m, "le": "0.99"}) == 0
    assert v("runtap_response_token_budget_ratio_bucket", {"model": m, "le": "1.0"}) == 1
    assert v("runtap_response_errors_total", {"model": m, "code": "server_error"}) == 1
    assert v("runtap_response_stream_first_event_seconds_sum", {"model": m}) == 0.25
    assert v("runtap_response_stream_first_output_seconds_sum", {"model": m}) == 0.5


def test_tool_turnaround_is_observed_once() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    answer = rf.response("resp_2", "completed", created_at=T0 + 5, previous_response_id="resp_1")
    again = snap(answer, T0 + 4.5, op="responses.create", answers=["resp_1"], request_started_at=T0 + 4.5)
    metrics.on_effects(effects_of([snap(obj("completed"), T0 + 3), again, again]))
    assert registry.get_sample_value("runtap_response_tool_turnaround_seconds_sum", {"model": rf.MODEL}) == 1.5
    assert registry.get_sample_value("runtap_response_tool_turnaround_seconds_count", {"model": rf.MODEL}) == 1
