"""OpenTelemetry traces: request spans (server + upstream client, W3C propagation), run-lifecycle spans
with step children, and the real OTLP/HTTP exporter path into a protobuf-decoding receiver.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import runtap.proxy.addons.run_spans as run_spans_module
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    Decision,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from runtap.analytics.ingest.merge import RunFinished, StepFinished, Transition
from runtap.analytics.ingest.records import Exchange
from runtap.demo import workload as w
from runtap.demo.sim import SimConfig, start_sim
from runtap.proxy.addons.run_spans import RunSpans, run_span_id, run_trace_id, step_span_id
from runtap.proxy.addons.tracing import Tracing, provider_from_env
from runtap.proxy.app import build_runtime
from runtap.proxy.serve import Running, start
from runtap.settings.config import ConfigError

from tests.conftest import stack_settings
from tests.otlp_receiver import OTLPReceiver

V2 = w.V2
APP_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
APP_SPAN = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{APP_TRACE:032x}-{APP_SPAN:016x}-01"


@dataclass
class Traced:
    running: Running
    exporter: InMemorySpanExporter

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def flush(self) -> None:
        assert self.running.runtime.writer is not None
        assert self.running.runtime.writer.flush(30)


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def _traced(tmp_path: Path, upstream: str) -> Traced:
    provider, exporter = _provider()
    settings = stack_settings(tmp_path, upstream)
    running = await start(settings, runtime=build_runtime(settings, tracer_provider=provider))
    return Traced(running, exporter)


@pytest.fixture
async def traced(tmp_path: Path, sim_upstream: str) -> AsyncIterator[Traced]:
    t = await _traced(tmp_path, sim_upstream)
    try:
        yield t
    finally:
        await t.running.stop()


class HeaderRecorder:
    """An upstream that answers every call with a small JSON body and keeps the request headers."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.runner: web.AppRunner | None = None

    async def start(self, status: int = 200) -> str:
        async def handle(request: web.Request) -> web.Response:
            self.headers.append(dict(request.headers))
            return web.json_response({"object": "list", "data": []}, status=status)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def _get(url: str, headers: dict[str, str] | None = None) -> int:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers or {}) as r:
        await r.read()
        return r.status


async def test_request_spans_continue_the_apps_trace_and_propagate_it_upstream(tmp_path: Path) -> None:
    upstream = HeaderRecorder()
    t = await _traced(tmp_path, await upstream.start())
    try:
        path = "/v1/threads/thread_abc/runs/run_abc/steps"
        assert await _get(t.running.proxy_url + path, {"traceparent": TRACEPARENT}) == 200
        assert await _get(t.running.proxy_url + "/v1/models") == 200
    finally:
        await t.running.stop()
        await upstream.close()
    spans = t.spans()
    server = next(s for s in spans if s.kind == SpanKind.SERVER and attrs(s)["url.path"] == path)
    client = next(s for s in spans if s.kind == SpanKind.CLIENT and s.parent
                  and s.parent.span_id == server.context.span_id)
    # The app's trace continues through runtap, and the upstream sees runtap's client span as parent.
    assert server.context.trace_id == APP_TRACE and server.parent is not None
    assert server.parent.span_id == APP_SPAN
    assert client.context.trace_id == APP_TRACE
    assert upstream.headers[0]["traceparent"] == f"00-{APP_TRACE:032x}-{client.context.span_id:016x}-01"
    assert server.name == "GET /v1/threads/{thread_id}/runs/{run_id}/steps"
    sa = attrs(server)
    assert sa["http.request.method"] == "GET" and sa["http.response.status_code"] == 200
    assert sa["http.route"] == "/v1/threads/{thread_id}/runs/{run_id}/steps"
    assert sa["openai.operation"] == "steps.list"
    assert sa["openai.run.id"] == "run_abc" and sa["gen_ai.conversation.id"] == "thread_abc"
    assert attrs(client)["http.response.status_code"] == 200
    assert attrs(client)["url.full"].endswith(path)
    # The request links to the run's span, computed from the run id alone.
    assert [(lk.context.trace_id, lk.context.span_id) for lk in server.links] == [
        (run_trace_id("run_abc"), run_span_id("run_abc"))]
    # A call without traceparent starts its own trace; a non-Runs call has no route in its name.
    other = next(s for s in spans if s.kind == SpanKind.SERVER and attrs(s)["url.path"] == "/v1/models")
    assert other.parent is None and other.name == "GET" and other.context.trace_id != APP_TRACE
    assert "traceparent" in upstream.headers[1]


async def test_the_configured_sampler_decides_and_unsampled_traces_still_propagate(tmp_path: Path) -> None:
    """An app trace it did not sample (flags 00) stays unsampled through runtap, the upstream still
    gets a traceparent in it; with a ratio sampler some root requests are recorded, not all."""
    upstream = HeaderRecorder()
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False, sampler=ParentBased(TraceIdRatioBased(0.5)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = stack_settings(tmp_path, await upstream.start())
    running = await start(settings, runtime=build_runtime(settings, tracer_provider=provider))
    unsampled = f"00-{APP_TRACE:032x}-{APP_SPAN:016x}-00"
    try:
        assert await _get(running.proxy_url + "/v1/threads/t/runs/r", {"traceparent": unsampled}) == 200
        for _ in range(40):
            assert await _get(running.proxy_url + "/v1/models") == 200
    finally:
        await running.stop()
        await upstream.close()
    sent = upstream.headers[0]["traceparent"].split("-")
    assert sent[1] == f"{APP_TRACE:032x}" and sent[2] != f"{APP_SPAN:016x}" and sent[3] == "00"
    spans = exporter.get_finished_spans()
    assert not [s for s in spans if s.context.trace_id == APP_TRACE]
    recorded = {s.context.trace_id for s in spans if s.kind == SpanKind.SERVER}
    assert 0 < len(recorded) < 40  # 40 fair coins: all heads or all tails has odds 2 in 10^12
    # A recorded request's upstream call is recorded too, and the upstream saw it as sampled.
    for header in upstream.headers[1:]:
        trace_id, span_id, flags = header["traceparent"].split("-")[1:]
        assert (int(trace_id, 16) in recorded) == (int(flags, 16) & 1 == 1)
        if int(trace_id, 16) in recorded:
            assert any(s.kind == SpanKind.CLIENT and s.context.span_id == int(span_id, 16) for s in spans)


async def test_upstream_errors_mark_the_spans(tmp_path: Path) -> None:
    upstream = HeaderRecorder()
    t = await _traced(tmp_path, await upstream.start(status=503))
    try:
        assert await _get(t.running.proxy_url + "/v1/threads/thread_a/runs") == 503
    finally:
        await t.running.stop()
        await upstream.close()
    server = next(s for s in t.spans() if s.kind == SpanKind.SERVER)
    client = next(s for s in t.spans() if s.kind == SpanKind.CLIENT)
    assert server.status.status_code == StatusCode.ERROR and attrs(server)["error.type"] == "503"
    assert client.status.status_code == StatusCode.ERROR and attrs(client)["error.type"] == "503"


async def test_with_tracing_off_the_apps_traceparent_passes_through_untouched(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(var, raising=False)
    upstream = HeaderRecorder()
    settings = stack_settings(tmp_path, await upstream.start())
    runtime = build_runtime(settings)
    assert not runtime.tracing.enabled
    running = await start(settings, runtime=runtime)
    try:
        await _get(running.proxy_url + "/v1/threads/t/runs/r", {"traceparent": TRACEPARENT})
    finally:
        await running.stop()
        await upstream.close()
    assert upstream.headers[0]["traceparent"] == TRACEPARENT


def attrs(item: Any) -> dict[str, Any]:
    """Attributes of a span, span event or received span (the SDK types them Optional)."""
    return dict(item.attributes or {})


def _run_span(spans: list[ReadableSpan], run_id: str) -> ReadableSpan:
    found = [s for s in spans
             if s.name.startswith("invoke_agent") and attrs(s).get("openai.run.id") == run_id]
    assert len(found) == 1, f"{len(found)} run spans for {run_id}"
    return found[0]


def _transitions(span: ReadableSpan) -> list[tuple[str, str]]:
    return [(attrs(e)["openai.run.from_status"], attrs(e)["openai.run.to_status"])
            for e in span.events if e.name == "openai.run.transition"]


async def _steps(sdk: Any, run: Any) -> list[Any]:
    page = await sdk.beta.threads.runs.steps.list(run_id=run.id, thread_id=run.thread_id, extra_headers=V2)
    return list(page.data)


async def test_each_run_becomes_one_lifecycle_span_with_its_steps(traced: Traced) -> None:
    sdk = w.client_for(traced.running.proxy_url + "/v1")
    result = w.WorkloadResult()
    tool = await w.polled_run(sdk, result, model="gpt-4o-mini", scenario="tool_call", headers=V2,
                              tools=[w.WEATHER_TOOL], max_prompt_tokens=2000, max_completion_tokens=1000)
    streamed = await w.streamed_run(sdk, result, model="gpt-4o", scenario="complete", headers=V2)
    failed = await w.polled_run(sdk, result, model="gpt-4o", scenario="fail", headers=V2)
    tool_steps = await _steps(sdk, tool)
    await sdk.close()
    traced.flush()
    spans = traced.spans()

    ends = ((tool, tool.completed_at), (streamed, streamed.completed_at), (failed, failed.failed_at))
    for run, end in ends:
        span = _run_span(spans, run.id)
        assert span.name == f"invoke_agent {run.assistant_id}"
        assert span.kind == SpanKind.CLIENT and span.parent is None
        # One trace per run, derived from the run id; the span covers created_at .. terminal time.
        assert span.context.trace_id == run_trace_id(run.id) and span.context.span_id == run_span_id(run.id)
        # Ends at the terminal timestamp (whole seconds in the API), or at runtap's observation when
        # that came later: never before its own events.
        assert span.start_time == run.created_at * 10**9
        assert span.end_time is not None and end * 10**9 <= span.end_time
        assert all(e.timestamp <= span.end_time for e in span.events)
        a = attrs(span)
        assert a["gen_ai.provider.name"] == "openai" and a["gen_ai.operation.name"] == "invoke_agent"
        assert a["gen_ai.agent.id"] == run.assistant_id and a["gen_ai.conversation.id"] == run.thread_id
        assert a["gen_ai.request.model"] == run.model and a["gen_ai.response.id"] == run.id
        assert a["openai.run.status"] == run.status
        if run.usage is not None:
            assert a["gen_ai.usage.input_tokens"] == run.usage.prompt_tokens
            assert a["gen_ai.usage.output_tokens"] == run.usage.completion_tokens
        moves = _transitions(span)
        assert moves[0][0] == "none" and moves[-1][1] == run.status
        assert all(prev[1] == nxt[0] for prev, nxt in zip(moves, moves[1:], strict=False))
        times = [e.timestamp for e in span.events]
        assert times == sorted(times)
        # Every request that named the run in its path (polls, submit) links to the run span.
        touching = [s for s in spans if s.kind == SpanKind.SERVER and attrs(s).get("openai.run.id") == run.id]
        assert touching or run is streamed
        for s in touching:
            assert (run_trace_id(run.id), run_span_id(run.id)) in [
                (lk.context.trace_id, lk.context.span_id) for lk in s.links]

    # A stream shows every hop.
    assert _transitions(_run_span(spans, streamed.id)) == [
        ("none", "queued"), ("queued", "in_progress"), ("in_progress", "completed")]
    tool_span = _run_span(spans, tool.id)
    # Polled: which intermediate statuses a poll sees depends on timing, but the pause for tools is seen.
    assert "requires_action" in [to for _, to in _transitions(tool_span)]
    assert [e.name for e in tool_span.events].count("openai.run.tool_outputs_submitted") == 1
    assert attrs(tool_span)["gen_ai.request.max_input_tokens"] == 2000
    assert attrs(tool_span)["gen_ai.request.max_output_tokens"] == 1000
    failed_span = _run_span(spans, failed.id)
    assert failed_span.status.status_code == StatusCode.ERROR
    assert attrs(failed_span)["error.type"] == failed.last_error.code

    # Steps: children of the run span, in its trace; tool calls named after the tool.
    for step in tool_steps:
        child = next(s for s in spans if attrs(s).get("openai.run.step.id") == step.id
                     and s.kind == SpanKind.INTERNAL)
        assert child.context.trace_id == run_trace_id(tool.id)
        assert child.context.span_id == step_span_id(step.id)
        assert child.parent is not None and child.parent.span_id == run_span_id(tool.id)
        assert child.start_time == step.created_at * 10**9 and child.end_time == step.completed_at * 10**9
        if step.type == "tool_calls":
            assert child.name == "execute_tool get_weather"
            assert attrs(child)["gen_ai.operation.name"] == "execute_tool"
            assert attrs(child)["gen_ai.tool.name"] == "get_weather"
            assert attrs(child)["gen_ai.tool.type"] == "function"
        else:
            assert child.name == "chat gpt-4o-mini"
    assert {s.type for s in tool_steps} == {"tool_calls", "message_creation"}


async def test_steps_seen_by_another_process_join_the_runs_trace(tmp_path: Path, sim_upstream: str) -> None:
    first = await _traced(tmp_path / "a", sim_upstream)
    sdk = w.client_for(first.running.proxy_url + "/v1")
    run = await w.polled_run(sdk, w.WorkloadResult(), model="gpt-4o", scenario="code_interpreter",
                             headers=V2, tools=[{"type": "code_interpreter"}])
    await sdk.close()
    first.flush()
    await first.running.stop()
    run_span = _run_span(first.spans(), run.id)

    # A second sidecar (its own database, nothing shared) only sees the steps being listed.
    second = await _traced(tmp_path / "b", sim_upstream)
    sdk = w.client_for(second.running.proxy_url + "/v1")
    steps = await _steps(sdk, run)
    await sdk.close()
    second.flush()
    await second.running.stop()
    children = [s for s in second.spans() if s.kind == SpanKind.INTERNAL]
    assert {attrs(s)["openai.run.step.id"] for s in children} == {s.id for s in steps}
    for child in children:
        assert child.context.trace_id == run_span.context.trace_id
        assert child.parent is not None and child.parent.span_id == run_span.context.span_id
    names = {s.name for s in children}
    assert "execute_tool code_interpreter" in names


async def test_the_real_otlp_http_exporter_delivers_spans(tmp_path: Path, sim_upstream: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with OTLPReceiver() as receiver:
        for var in ("OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME",
                    "OTEL_RESOURCE_ATTRIBUTES", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        settings = stack_settings(tmp_path, sim_upstream)
        runtime = build_runtime(settings)
        assert runtime.tracing.enabled
        running = await start(settings, runtime=runtime)
        sdk = w.client_for(running.proxy_url + "/v1")
        run = await w.streamed_run(sdk, w.WorkloadResult(), model="gpt-4o", scenario="complete", headers=V2)
        await sdk.close()
        await running.stop()  # flushes the capture queue, then the batch span processor
        assert receiver.wait_for(lambda spans: any(s.name.startswith("invoke_agent") for s in spans))
    spans = receiver.spans
    run_span = next(s for s in spans if s.name.startswith("invoke_agent"))
    assert run_span.trace_id == run_trace_id(run.id) and run_span.span_id == run_span_id(run.id)
    assert attrs(run_span)["gen_ai.usage.output_tokens"] == run.usage.completion_tokens
    assert attrs(run_span)["gen_ai.agent.id"] == run.assistant_id
    assert [e[2]["openai.run.to_status"] for e in run_span.events] == ["queued", "in_progress", "completed"]
    assert run_span.resource["service.name"] == "runtap"
    steps = [s for s in spans if s.parent_span_id == run_span.span_id]
    assert steps and all(s.trace_id == run_span.trace_id for s in steps)
    servers = [s for s in spans if s.kind == 2]
    clients = [s for s in spans if s.kind == 3 and s.scope == "runtap.proxy"]
    assert len(servers) == len(clients) >= 3
    assert {c.parent_span_id for c in clients} == {s.span_id for s in servers}
    assert receiver.content_types == {"application/x-protobuf"}


@pytest.mark.parametrize("env", [
    {},
    {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
    {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
], ids=["no-endpoint", "exporter-none", "sdk-disabled"])
def test_tracing_is_off_without_an_endpoint_or_when_disabled(env: dict[str, str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED", "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert provider_from_env() is None
    assert not Tracing(None).enabled


@pytest.mark.parametrize("env,expected", [
    ({}, (8192, 2048)),
    ({"OTEL_BSP_MAX_QUEUE_SIZE": "1000"}, (1000, 1000)),
    ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100"}, (8192, 100)),
    ({"OTEL_BSP_MAX_QUEUE_SIZE": "4096", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "64"}, (4096, 64)),
], ids=["runtap-defaults", "queue-set", "batch-set", "both-set"])
def test_span_export_batches_default_larger_unless_otel_bsp_says(env: dict[str, str], expected: tuple[int, int],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED", "OTEL_BSP_MAX_QUEUE_SIZE",
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    provider = provider_from_env()
    assert provider is not None
    try:
        (processor,) = provider._active_span_processor._span_processors  # noqa: SLF001 - pinned SDK
        batch = processor._batch_processor  # type: ignore[attr-defined]  # noqa: SLF001
        assert (batch._max_queue_size, batch._max_export_batch_size) == expected  # noqa: SLF001
    finally:
        provider.shutdown()


@pytest.mark.parametrize("var,value", [("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                                       ("OTEL_TRACES_EXPORTER", "zipkin")])
def test_unsupported_otel_settings_fail_fast_naming_the_variable(var: str, value: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=var):
        provider_from_env()


async def test_the_run_span_links_to_the_request_that_created_it(traced: Traced) -> None:
    sdk = w.client_for(traced.running.proxy_url + "/v1")
    run = await w.streamed_run(sdk, w.WorkloadResult(), model="gpt-4o", scenario="complete", headers=V2)
    await sdk.close()
    traced.flush()
    spans = traced.spans()
    create = next(s for s in spans
                  if s.kind == SpanKind.SERVER and attrs(s)["openai.operation"] == "runs.create")
    links = [(lk.context.trace_id, lk.context.span_id) for lk in _run_span(spans, run.id).links]
    assert (create.context.trace_id, create.context.span_id) in links


async def test_cancelled_and_incomplete_runs_end_their_spans_without_an_error_status(traced: Traced) -> None:
    sdk = w.client_for(traced.running.proxy_url + "/v1")
    result = w.WorkloadResult()
    cancelled = await w.cancelled_run(sdk, result, model="gpt-4o", headers=V2)
    incomplete = await w.polled_run(sdk, result, model="gpt-4o-mini", scenario="incomplete", headers=V2,
                                    max_completion_tokens=256)
    await sdk.close()
    traced.flush()
    spans = traced.spans()
    assert (cancelled.status, incomplete.status) == ("cancelled", "incomplete")
    # The API's own end fields: cancelled_at; an incomplete run stops at completed_at.
    for run, end in ((cancelled, cancelled.cancelled_at), (incomplete, incomplete.completed_at)):
        span = _run_span(spans, run.id)
        assert attrs(span)["openai.run.status"] == run.status
        assert span.status.status_code == StatusCode.UNSET  # stopped on purpose or by a cap: not a failure
        assert "error.type" not in attrs(span)
        # the API's whole second, or runtap's observation of the end when that came later (it crossed
        # into the next second): never before the last event the span carries
        last_event = max(e.timestamp for e in span.events)
        assert span.end_time == max(end * 10**9, last_event)
        assert _transitions(span)[-1][1] == run.status
    assert attrs(_run_span(spans, incomplete.id))["gen_ai.request.max_output_tokens"] == 256


def test_run_spans_apply_the_sdks_span_limits() -> None:
    """Run spans are built without the SDK's live spans, so its limits are applied by runtap: the
    newest events kept and the rest counted, long string values cut, lists kept as tuples."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_events=5, max_span_attribute_length=8))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans = RunSpans(provider)
    statuses = ["queued", "in_progress", "requires_action"] * 3 + ["completed"]
    moves = list(zip([None, *statuses[:-1]], statuses, strict=True))
    effects: list[Any] = [Transition("run_lim", "gpt-4o", "asst_long_assistant_id", prev, to, 1_700_000_000 + i,
                                     "stream") for i, (prev, to) in enumerate(moves)]
    row = {"id": "run_lim", "status": "completed", "model": "gpt-4o", "assistant_id": "asst_long_assistant_id",
           "created_at": 1_700_000_000, "completed_at": 1_700_000_020}
    step = {"id": "step_lim", "run_id": "run_lim", "type": "tool_calls", "status": "completed",
            "created_at": 1_700_000_001, "completed_at": 1_700_000_002, "tool_types": ["function"],
            "tool_names": ["get_weather"]}
    spans.on_effects([*effects, RunFinished(row), StepFinished(step)])
    finished = exporter.get_finished_spans()
    (run,) = [s for s in finished if s.kind == SpanKind.CLIENT]
    (child,) = [s for s in finished if s.kind == SpanKind.INTERNAL]
    assert run.name == "invoke_agent asst_long_assistant_id"  # names are not attributes: not cut
    assert [e.attributes["openai.run.to_status"] for e in run.events] == statuses[-5:]
    assert run.dropped_events == len(statuses) - 5
    assert run.attributes["gen_ai.agent.id"] == "asst_lon"
    assert child.attributes["openai.run.step.tool_types"] == ("function",)
    assert child.attributes["gen_ai.tool.name"] == "get_weat"
    assert child.parent is not None and child.parent.span_id == run_span_id("run_lim")


def test_open_runs_are_bounded_and_the_oldest_are_forgotten_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sidecar sees runs it never sees finish: their pending transitions must not grow memory for
    ever. Past the bound the oldest runs are forgotten (their span, if they finish, has no earlier
    transitions) while the newest keep theirs."""
    monkeypatch.setattr(run_spans_module, "MAX_OPEN_RUNS", 3)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans = RunSpans(provider)
    t0 = 1_700_000_000
    spans.on_effects([Transition(f"run_{i}", "gpt-4o", "asst_1", None, "queued", t0 + i, "response")
                      for i in range(5)])

    def finish(run_id: str) -> ReadableSpan:
        spans.on_effects([RunFinished({"id": run_id, "status": "completed", "model": "gpt-4o",
                                       "assistant_id": "asst_1", "created_at": t0, "completed_at": t0 + 9})])
        (span,) = [s for s in exporter.get_finished_spans() if s.context.span_id == run_span_id(run_id)]
        return span

    assert [to for _, to in _transitions(finish("run_4"))] == ["queued"]
    assert [to for _, to in _transitions(finish("run_2"))] == ["queued"]  # the oldest still kept
    assert _transitions(finish("run_1")) == []  # forgotten: evicted as the oldest
    assert _transitions(finish("run_0")) == []


class _CreatesOnly(Sampler):
    """A sampler of the kind users write: it decides from the span's attributes."""

    def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None,
                      attributes: Any = None, links: Any = None, trace_state: Any = None) -> SamplingResult:
        wanted = (attributes or {}).get("openai.operation") == "runs.create"
        return SamplingResult(Decision.RECORD_AND_SAMPLE if wanted else Decision.DROP, {"picked": True})

    def get_description(self) -> str:
        return "CreatesOnly"


@pytest.mark.parametrize("sampler", [
    ParentBasedTraceIdRatio(0.3), TraceIdRatioBased(0.3), ParentBased(TraceIdRatioBased(0.5)), ALWAYS_OFF,
    DEFAULT_OFF, ParentBased(ALWAYS_ON, remote_parent_sampled=TraceIdRatioBased(0.5)),
], ids=lambda s: s.get_description())
def test_request_sampling_decisions_match_the_sdks_sampler(sampler: Sampler) -> None:
    """runtap decides for the SDK's own samplers without building attributes first (and for a
    parent-based ratio sampler without calling it): the decision must be the sampler's own."""
    tracing = Tracing(TracerProvider(sampler=sampler), upstream="http://127.0.0.1:9")
    seen = set()
    for i in range(400):
        headers = {"Host": "127.0.0.1:8080"}
        if i % 2:
            headers["traceparent"] = f"00-{(i * 0x9E3779B97F4A7C15) % (1 << 128) or 1:032x}-{i + 1:016x}-0{i % 4 // 2}"
        request = make_mocked_request("POST", "/v1/threads/thread_1/runs", headers=headers)
        exchange = Exchange(id=f"{i:032x}", method="POST", path="/v1/threads/thread_1/runs",
                            operation="runs.create", api_version="v2", key_fingerprint=None, started_at=0.0)
        span = tracing.start_request(request, "runs.create", exchange)
        assert span is not None
        parent = TraceContextTextMapPropagator().extract(headers) if "traceparent" in headers else None
        expected = sampler.should_sample(parent, span.context.trace_id, span.name, SpanKind.SERVER)
        assert span.sampled == (expected.decision.is_sampled() and expected.decision.is_recording())
        assert span.context.trace_flags.sampled == expected.decision.is_sampled()
        seen.add(span.sampled)
        if span.sampled:
            assert span.attrs["http.route"] == "/v1/threads/{thread_id}/runs"
    if sampler.get_description() not in (ALWAYS_OFF.get_description(), DEFAULT_OFF.get_description()):
        assert seen == {True, False}  # both outcomes were exercised


def test_a_sampler_that_reads_attributes_still_gets_them() -> None:
    tracing = Tracing(TracerProvider(sampler=_CreatesOnly()), upstream="http://127.0.0.1:9")
    decided = {}
    for op, method, path in (("runs.create", "POST", "/v1/threads/t/runs"),
                             ("runs.retrieve", "GET", "/v1/threads/t/runs/run_1")):
        request = make_mocked_request(method, path, headers={"Host": "127.0.0.1:8080"})
        exchange = Exchange(id=op, method=method, path=path, operation=op, api_version=None,
                            key_fingerprint=None, started_at=0.0)
        span = tracing.start_request(request, op, exchange)
        assert span is not None
        decided[op] = span.sampled
        if span.sampled:
            assert span.attrs["picked"] is True  # the sampler's own attributes are kept
    assert decided == {"runs.create": True, "runs.retrieve": False}


def test_a_sampler_that_delegates_to_itself_does_not_stop_start_up() -> None:
    looped = ParentBased(ALWAYS_ON)
    looped._remote_parent_sampled = looped  # noqa: SLF001 - a hand-built cycle
    assert Tracing(TracerProvider(sampler=looped), upstream="http://127.0.0.1:9").enabled


async def test_a_run_span_never_ends_before_its_events_when_seen_seconds_after_its_timestamp(
        tmp_path: Path) -> None:
    """The API stamps a run's end in whole seconds; runtap may observe it later (a stream completing
    at x.98 s read at x+1.005 s). The upstream's clock here runs 1.5 s behind the observer's, so
    every stream crosses a second boundary between the upstream's stamp and runtap's observation."""
    runner, url = await start_sim(SimConfig(), clock=lambda: time.time() - 1.5)
    traced = await _traced(tmp_path, url.removesuffix("/v1"))
    try:
        sdk = w.client_for(traced.running.proxy_url + "/v1")
        result = w.WorkloadResult()
        streamed = await w.streamed_run(sdk, result, model="gpt-4o", scenario="complete", headers=V2)
        polled = await w.polled_run(sdk, result, model="gpt-4o", scenario="fail", headers=V2)
        await sdk.close()
        traced.flush()
        for run, stamp in ((streamed, streamed.completed_at), (polled, polled.failed_at)):
            span = _run_span(traced.spans(), run.id)
            assert span.end_time is not None and span.start_time is not None
            times = [e.timestamp for e in span.events]
            assert times and max(times) > (stamp + 1) * 10**9  # observed after the upstream's second
            assert span.start_time <= min(times) and max(times) <= span.end_time
            assert _transitions(span)[-1][1] == run.status
    finally:
        await traced.running.stop()
        await runner.cleanup()
