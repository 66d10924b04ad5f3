"""Response spans: one per response with ids derived from its id, events inside it, and polls as
`fetch_response` request spans linked to it."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import make_mocked_request
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from runtap.analytics.ingest.records import Exchange, Snapshot
from runtap.analytics.ingest.response_merge import ResponseFinished, merge_responses
from runtap.proxy.addons.response_spans import response_span_id, response_trace_id
from runtap.proxy.addons.tracing import Tracing

from tests import response_factory as rf
from tests.test_response_merge import T0, lifecycle, obj, snap


def traced() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider), exporter


def feed(tracing: Tracing, snaps: list[Any]) -> None:
    rows: dict[str, Any] = {}
    for s in snaps:
        effects: list[Any] = []
        rows.update(merge_responses(rows, [s], events=[], effects=effects))
        tracing.on_effects(effects)


def test_one_span_per_response_with_derived_ids_and_genai_usage() -> None:
    tracing, exporter = traced()
    feed(tracing, lifecycle() + lifecycle())
    spans = exporter.get_finished_spans()
    assert len(spans) == 1
    span = spans[0]
    assert span.name == f"chat {rf.MODEL}" and span.kind is SpanKind.CLIENT
    assert span.context.trace_id == response_trace_id("resp_1")
    assert span.context.span_id == response_span_id("resp_1")
    a = span.attributes or {}
    assert a["gen_ai.operation.name"] == "chat" and a["openai.api.type"] == "responses"
    assert a["gen_ai.usage.input_tokens"] == 1200 and a["gen_ai.usage.output_tokens"] == 300
    assert a["gen_ai.usage.cache_read.input_tokens"] == 1024
    assert a["gen_ai.usage.reasoning.output_tokens"] == 256
    assert a["gen_ai.request.max_tokens"] == 2000 and a["openai.response.queue_seconds"] == 1.0
    assert a["openai.response.tool_names"] == ("get_weather",)
    assert [e.attributes["openai.response.to_status"] for e in span.events] == [  # type: ignore[index]
        "queued", "in_progress", "completed"]
    assert span.start_time is not None and span.end_time is not None
    assert all(span.start_time <= e.timestamp <= span.end_time for e in span.events)


def test_the_span_ends_after_its_last_event_when_observed_past_the_whole_second() -> None:
    tracing, exporter = traced()
    # completed_at says T0+2 (whole seconds); runtap saw completion at T0+3.005
    feed(tracing, [snap(obj("in_progress"), T0 + 0.98, source="stream"),
                   snap(obj("completed"), T0 + 3.005, source="stream")])
    span = exporter.get_finished_spans()[0]
    assert span.end_time is not None and span.end_time >= span.events[-1].timestamp
    assert span.end_time == round((T0 + 3.005) * 1e6) * 1000


def test_a_failed_response_marks_its_span() -> None:
    tracing, exporter = traced()
    feed(tracing, [snap(obj("failed", error={"code": "server_error", "message": "boom"}), T0 + 1)])
    span = exporter.get_finished_spans()[0]
    assert span.status.status_code is StatusCode.ERROR and (span.attributes or {})["error.type"] == "server_error"


def test_a_poll_is_a_fetch_response_span_linked_to_the_response_without_usage() -> None:
    tracing, exporter = traced()
    request = make_mocked_request("GET", "/openai/v1/responses/resp_1", headers={"Host": "runtap:8080"})
    ex = Exchange(id="x1", method="GET", path="/openai/v1/responses/resp_1", operation="responses.retrieve",
                  api_version=None, key_fingerprint=None, started_at=T0)
    span = tracing.start_request(request, "responses.retrieve", ex)
    tracing.end_request(span, 200, None)
    server = next(s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER)
    assert server.name == "fetch_response"
    a = server.attributes or {}
    assert a["gen_ai.operation.name"] == "fetch_response" and a["http.route"] == "/openai/v1/responses/{response_id}"
    assert a["gen_ai.response.id"] == "resp_1"
    assert not [k for k in a if k.startswith("gen_ai.usage")]
    assert [(link.context.trace_id, link.context.span_id) for link in server.links] == [
        (response_trace_id("resp_1"), response_span_id("resp_1"))]


def test_the_response_span_links_the_requests_that_showed_its_changes() -> None:
    tracing, exporter = traced()
    request = make_mocked_request("POST", "/v1/responses", headers={"Host": "runtap:8080"})
    ex = Exchange(id="c", method="POST", path="/v1/responses", operation="responses.create",
                  api_version=None, key_fingerprint=None, started_at=T0)
    span = tracing.start_request(request, "responses.create", ex)
    tracing.end_request(span, 200, None)
    server = next(s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER)
    assert server.name == "POST /v1/responses"
    exporter.clear()
    feed(tracing, lifecycle())
    response_span = exporter.get_finished_spans()[0]
    assert server.context.span_id in [link.context.span_id for link in response_span.links]


def test_a_response_that_cannot_be_traced_keeps_no_other_from_its_span() -> None:
    """Issue 12's rule for response spans too: a finished row without an id (a span cannot be built for
    it) is skipped, and the response after it in the same batch still gets its span."""
    tracing, exporter = traced()
    rows: dict[str, Any] = {}
    effects: list[Any] = []
    rows.update(merge_responses(rows, [snap(obj("completed"), T0 + 1)], events=[], effects=effects))
    finished = [e for e in effects if type(e) is ResponseFinished]
    assert finished
    tracing.on_effects([ResponseFinished({"status": "completed"}), *effects])
    assert [s.context.trace_id for s in exporter.get_finished_spans()] == [response_trace_id("resp_1")]


def test_the_span_names_the_api_provider_and_version_the_requests_called() -> None:
    """As run spans do (openai.run.api_provider / api_version): here from the responses columns."""
    tracing, exporter = traced()
    versioned = [Snapshot("response", s.obj, s.observed_at, s.source, s.operation, "2025-04-01-preview",
                          s.key_fingerprint, s.request_id, s.extra, api_provider="azure") for s in lifecycle()]
    feed(tracing, versioned)
    feed(tracing, [snap(dict(obj("completed"), id="resp_2"), T0 + 1)])  # a server whose paths name no version
    by_id = {(s.attributes or {})["gen_ai.response.id"]: s.attributes or {} for s in exporter.get_finished_spans()}
    assert (by_id["resp_1"]["openai.response.api_provider"], by_id["resp_1"]["openai.response.api_version"]) == (
        "azure", "2025-04-01-preview")
    assert not [k for k in by_id["resp_2"] if k.startswith("openai.response.api_")]


def test_a_foundry_agent_s_response_names_the_agent() -> None:
    tracing, exporter = traced()
    feed(tracing, [snap(obj("completed", agent_reference={"type": "agent_reference", "name": "support-bot",
                                                           "version": "3"}), T0 + 1)])
    a = exporter.get_finished_spans()[0].attributes or {}
    assert (a["gen_ai.agent.name"], a["gen_ai.agent.version"]) == ("support-bot", "3")
