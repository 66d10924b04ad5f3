"""Prometheus metrics, end to end: the real SDK through runtap against the simulated upstream, then
/metrics scraped over HTTP and parsed with prometheus_client.parser. Expected values come from what
the SDK received from the upstream (final run objects, usage, steps), never from runtap itself.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp
import httpx2 as httpx
import pytest
from openai import AsyncOpenAI
from prometheus_client import CollectorRegistry
from runtap.analytics.ingest.health import MAX_LABELS
from runtap.analytics.ingest.records import Exchange, RequestRecord, ResponseBody
from runtap.analytics.ingest.writer import CaptureWriter, WriterConfig
from runtap.demo import workload as w
from runtap.demo.sim import SimConfig, start_sim
from runtap.proxy import routes
from runtap.proxy.addons.metrics import Metrics
from runtap.proxy.app import build_runtime
from runtap.proxy.serve import Running, start

from tests.conftest import Stack, stack_settings, start_stack
from tests.metrics_scrape import Scrape, scrape

TERMINAL = {"completed", "failed", "cancelled", "expired", "incomplete"}
IDS = ("run_", "thread_", "asst_", "step_", "msg_", "call_")
V2 = w.V2


class CountingClient:
    """An SDK client whose every HTTP exchange is counted by (operation, status code)."""

    def __init__(self, base_url: str) -> None:
        self.seen: Counter[tuple[str, str]] = Counter()

        async def hook(response: httpx.Response) -> None:
            op = routes.classify(response.request.method, response.request.url.path) or routes.OTHER
            self.seen[(op, str(response.status_code))] += 1

        self.http = httpx.AsyncClient(event_hooks={"response": [hook]})
        self.sdk: AsyncOpenAI = w.client_for(base_url, http_client=self.http)

    async def close(self) -> None:
        await self.sdk.close()


async def list_steps(client: AsyncOpenAI, runs: Iterable[Any]) -> list[Any]:
    steps = []
    for run in runs:
        page = await client.beta.threads.runs.steps.list(run_id=run.id, thread_id=run.thread_id,
                                                         extra_headers=V2)
        steps.extend(page.data)
    return steps


def step_key(step: Any) -> tuple[str, str, str]:
    if step.type == "tool_calls":
        tool = "+".join(sorted({c.type for c in step.step_details.tool_calls}))
    else:
        tool = "none"
    return step.type, tool, step.status


async def test_sdk_workload_metrics_equal_what_the_upstream_reported(stack: Stack) -> None:
    client = CountingClient(stack.proxy_url + "/v1")
    sdk, result = client.sdk, w.WorkloadResult()
    # One model per scenario, so every per-model expectation below is about exactly one run.
    runs = [
        await w.polled_run(sdk, result, model="gpt-4o", scenario="complete", headers=V2),
        await w.polled_run(sdk, result, model="gpt-4o-mini", scenario="tool_call", headers=V2,
                           tools=[w.WEATHER_TOOL]),
        await w.polled_run(sdk, result, model="gpt-4o-ci", scenario="code_interpreter", headers=V2,
                           tools=[{"type": "code_interpreter"}]),
        await w.streamed_run(sdk, result, model="gpt-4.1", scenario="complete", headers=V2),
        await w.streamed_run(sdk, result, model="gpt-4.1-mini", scenario="tool_call", headers=V2,
                             tools=[w.WEATHER_TOOL]),
        await w.polled_run(sdk, result, model="gpt-4-turbo", scenario="incomplete", headers=V2,
                           max_completion_tokens=256),
        await w.polled_run(sdk, result, model="gpt-3.5-turbo", scenario="fail", headers=V2),
        await w.cancelled_run(sdk, result, model="o1", headers=V2),
        await w.polled_run(sdk, result, model="o3-mini", scenario="complete", headers=V2,
                           max_prompt_tokens=1000, max_completion_tokens=500),
    ]
    steps = await list_steps(sdk, runs)
    stack.flush()
    m = await scrape(stack.admin_url)
    await client.close()

    # Finished runs, exactly once each, with the upstream's final status.
    assert m.by("runtap_runs_finished_total", "status", "model") == {
        (r.status, r.model): 1.0 for r in runs}
    assert {r.status for r in runs} == {"completed", "incomplete", "failed", "cancelled"}

    # Tokens: the sum of the upstream's usage, by model and type, in both metric families.
    want_tokens: Counter[tuple[str, str]] = Counter()
    for r in runs:
        if r.usage is not None:
            want_tokens[(r.model, "prompt")] += r.usage.prompt_tokens
            want_tokens[(r.model, "completion")] += r.usage.completion_tokens
    assert m.by("runtap_tokens_total", "model", "type") == {k: float(v) for k, v in want_tokens.items() if v}
    genai = {(model, {"prompt": "input", "completion": "output"}[t]): float(v)
             for (model, t), v in want_tokens.items() if v}
    assert m.by("gen_ai_client_token_usage_sum", "gen_ai_request_model", "gen_ai_token_type",
                gen_ai_operation_name="invoke_agent", gen_ai_provider_name="openai") == genai

    # Budget ratios: only where a cap was set, usage / cap.
    o3 = runs[-1]
    incomplete = runs[5]
    assert m.get("runtap_token_budget_ratio_sum", model="o3-mini", type="prompt") == pytest.approx(
        o3.usage.prompt_tokens / 1000)
    assert m.get("runtap_token_budget_ratio_sum", model="o3-mini", type="completion") == pytest.approx(
        o3.usage.completion_tokens / 500)
    completion_ratio = incomplete.usage.completion_tokens / 256
    assert m.get("runtap_token_budget_ratio_sum", model="gpt-4-turbo", type="completion") == pytest.approx(
        completion_ratio)
    assert m.get("runtap_token_budget_ratio_bucket", model="gpt-4-turbo", type="completion", le="0.99") == (
        1.0 if completion_ratio <= 0.99 else 0.0)
    assert m.by("runtap_token_budget_ratio_count", "model", "type") == {
        ("o3-mini", "prompt"): 1.0, ("o3-mini", "completion"): 1.0, ("gpt-4-turbo", "completion"): 1.0}

    # Incomplete reasons and error codes, as the upstream gave them.
    assert incomplete.status == "incomplete"
    assert m.by("runtap_runs_incomplete_total", "model", "reason") == {
        ("gpt-4-turbo", incomplete.incomplete_details.reason): 1.0}
    failed = runs[6]
    assert m.by("runtap_run_errors_total", "model", "code") == {
        ("gpt-3.5-turbo", failed.last_error.code): 1.0}

    # Transitions: per run, a path from `none` to its final status; a stream sees every hop.
    for r in runs:
        edges = m.by("runtap_run_transitions_total", "from_status", "to_status", model=r.model)
        out: Counter[str] = Counter()
        into: Counter[str] = Counter()
        for (a, b), n in edges.items():
            out[a] += int(n)
            into[b] += int(n)
        assert out["none"] == 1 and into["none"] == 0, r.model
        for status in (set(out) | set(into)) - {"none"}:
            assert into[status] - out[status] == (1 if status == r.status else 0), (r.model, edges)
    assert m.by("runtap_run_transitions_total", "from_status", "to_status", model="gpt-4.1") == {
        ("none", "queued"): 1.0, ("queued", "in_progress"): 1.0, ("in_progress", "completed"): 1.0}
    assert m.get("runtap_run_transitions_total", model="gpt-4.1-mini", from_status="in_progress",
                 to_status="requires_action") == 1.0

    # Tool turnaround: one round per tool-call run, none elsewhere.
    assert m.by("runtap_tool_turnaround_seconds_count", "model") == {("gpt-4o-mini",): 1.0,
                                                                      ("gpt-4.1-mini",): 1.0}
    assert 0 <= m.get("runtap_tool_turnaround_seconds_sum") < 30

    # Queue and run duration: one observation per finished run (queue only for runs that started).
    assert m.by("runtap_run_duration_seconds_count", "status", "model") == {(r.status, r.model): 1.0
                                                                            for r in runs}
    assert m.by("runtap_run_queue_seconds_count", "model") == {(r.model,): 1.0 for r in runs
                                                               if r.started_at is not None}
    assert m.by("gen_ai_client_operation_duration_seconds_count", "gen_ai_request_model", "error_type") == {
        (r.model, "" if r.status == "completed" else failed.last_error.code if r is failed else r.status): 1.0
        for r in runs}

    # Steps: every terminal step the upstream listed, by type, tool kind and status.
    want_steps = Counter(step_key(s) for s in steps if s.status in TERMINAL)
    assert {"function", "code_interpreter", "none"} <= {k[1] for k in want_steps}
    assert m.by("runtap_steps_finished_total", "type", "tool", "status") == {
        k: float(v) for k, v in want_steps.items()}
    assert m.by("runtap_step_duration_seconds_count", "type") == {
        (t,): float(n) for t, n in Counter(k[0] for k in want_steps.elements()).items()}

    # Requests: every exchange the client made, by operation and status code.
    got = m.by("runtap_requests_total", "operation", "code")
    assert got == {k: float(v) for k, v in client.seen.items()}
    streamed = m.get("runtap_requests_total", stream="true")
    assert streamed == 3  # two runs.stream and one submit_tool_outputs_stream
    assert m.get("runtap_request_duration_seconds_count") == sum(client.seen.values())
    assert m.get("runtap_proxy_overhead_seconds_count") == sum(client.seen.values())

    # Capture health.
    assert m.get("runtap_capture_written_total", table="requests") == sum(client.seen.values())
    assert m.get("runtap_capture_written_total", table="runs") > 0
    assert m.get("runtap_capture_dropped_total") == 0
    assert m.get("runtap_capture_errors_total") == 0
    assert m.get("runtap_capture_store_open") == 1
    # The buffer pool against its limit (the default 512MB), for the memory alert.
    limit = m.get("runtap_capture_db_memory_limit_bytes")
    assert 0 < m.get("runtap_capture_db_memory_bytes") < limit == int(488.2 * 2**20)
    # Every request's row became visible once: one lag observation each, none of them stale (a batch
    # closes within 0.5 s, or at once when flushed).
    requests = sum(client.seen.values())
    assert m.get("runtap_capture_lag_seconds_count") == requests
    assert m.get("runtap_capture_lag_seconds_bucket", le="30.0") == requests
    assert m.get("runtap_capture_lag_seconds_sum") > 0

    # Nothing identifies a run, thread, step or assistant in any label.
    assert not [v for v in m.label_values() if v.startswith(IDS)]


async def test_runs_seen_again_by_polls_and_lists_are_not_counted_again(stack: Stack) -> None:
    sdk = w.client_for(stack.proxy_url + "/v1")
    result = w.WorkloadResult()
    polled = await w.polled_run(sdk, result, model="gpt-4o", scenario="tool_call", headers=V2,
                                tools=[w.WEATHER_TOOL])
    streamed = await w.streamed_run(sdk, result, model="gpt-4o", scenario="complete", headers=V2)
    stack.flush()
    first = await scrape(stack.admin_url)
    # Everything again: retrieves, list of runs, steps listed twice, a metadata update after the end.
    for run in (polled, streamed):
        await sdk.beta.threads.runs.retrieve(run_id=run.id, thread_id=run.thread_id, extra_headers=V2)
        await sdk.beta.threads.runs.list(thread_id=run.thread_id, extra_headers=V2)
        await sdk.beta.threads.runs.update(run_id=run.id, thread_id=run.thread_id,
                                           metadata={"reviewed": "yes"}, extra_headers=V2)
    steps = await list_steps(sdk, [polled, streamed])
    stack.flush()
    second = await scrape(stack.admin_url)
    await list_steps(sdk, [polled, streamed])
    stack.flush()
    third = await scrape(stack.admin_url)
    await sdk.close()

    for name in ("runtap_runs_finished_total", "runtap_tokens_total", "runtap_run_transitions_total",
                 "runtap_tool_turnaround_seconds_count", "runtap_run_duration_seconds_count",
                 "gen_ai_client_token_usage_count"):
        assert first.get(name) == second.get(name) == third.get(name), name
    assert first.get("runtap_runs_finished_total") == 2
    usage = sum(r.usage.total_tokens for r in (polled, streamed))
    assert first.get("runtap_tokens_total") == usage
    # Polled steps were first seen by the listing; listing them again adds nothing.
    assert second.get("runtap_steps_finished_total") == len(steps)
    assert third.get("runtap_steps_finished_total") == len(steps)


async def _runtap(tmp_path: Path, upstream: str) -> tuple[Running, CollectorRegistry]:
    settings = stack_settings(tmp_path, upstream)
    registry = CollectorRegistry()
    return await start(settings, runtime=build_runtime(settings, registry=registry)), registry


async def test_a_restart_on_the_same_database_does_not_count_runs_again(tmp_path: Path) -> None:
    sim_runner, sim_url = await start_sim(SimConfig())
    upstream = sim_url.removesuffix("/v1")
    try:
        first, _ = await _runtap(tmp_path, upstream)
        sdk = w.client_for(first.proxy_url + "/v1")
        result = w.WorkloadResult()
        runs = [await w.polled_run(sdk, result, model="gpt-4o", scenario="tool_call", headers=V2,
                                   tools=[w.WEATHER_TOOL]),
                await w.streamed_run(sdk, result, model="gpt-4o", scenario="complete", headers=V2),
                await w.polled_run(sdk, result, model="gpt-4o", scenario="fail", headers=V2)]
        steps = await list_steps(sdk, runs)
        assert first.runtime.writer is not None and first.runtime.writer.flush(30)
        before = await scrape(first.admin_url)
        assert before.get("runtap_runs_finished_total") == 3
        await sdk.close()
        await first.stop()

        second, _ = await _runtap(tmp_path, upstream)  # same DuckDB file, fresh process state
        sdk = w.client_for(second.proxy_url + "/v1")
        for run in runs:
            await sdk.beta.threads.runs.retrieve(run_id=run.id, thread_id=run.thread_id, extra_headers=V2)
            await sdk.beta.threads.runs.list(thread_id=run.thread_id, extra_headers=V2)
        assert len(await list_steps(sdk, runs)) == len(steps)
        assert second.runtime.writer is not None and second.runtime.writer.flush(30)
        after = await scrape(second.admin_url)
        for name in ("runtap_runs_finished_total", "runtap_tokens_total", "runtap_run_transitions_total",
                     "runtap_steps_finished_total", "runtap_run_errors_total",
                     "runtap_tool_turnaround_seconds_count", "gen_ai_client_token_usage_count"):
            assert after.get(name) == 0, name
        # The new process does count a run it has not seen before.
        fresh = await w.polled_run(sdk, result, model="gpt-4o", scenario="complete", headers=V2)
        assert second.runtime.writer.flush(30)
        latest = await scrape(second.admin_url)
        assert latest.get("runtap_runs_finished_total") == 1
        assert latest.get("runtap_tokens_total") == fresh.usage.total_tokens
        await sdk.close()
        await second.stop()
    finally:
        await sim_runner.cleanup()


async def _create_and_run(session: aiohttp.ClientSession, base: str, assistant: str, i: int) -> str:
    scenario = ("complete", "fail", "incomplete", "tool_call")[i % 4]
    body: dict[str, Any] = {"assistant_id": assistant, "stream": True, "metadata": {"sim_scenario": scenario},
                            "thread": {"messages": [{"role": "user", "content": f"request {i}"}]}}
    if scenario == "incomplete":
        body["max_completion_tokens"] = 256
    async with session.post(base + "/threads/runs", json=body, headers=V2) as r:
        assert r.status == 200
        await r.read()
        return scenario


async def test_series_count_does_not_grow_with_distinct_runs(tmp_path: Path) -> None:
    s, sim_runner = await start_stack(tmp_path, sim_config=SimConfig(queued_s=0.0, step_s=0.0))
    base = s.proxy_url + "/v1"
    try:
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-cardinality"}) as session:
            async with session.post(base + "/assistants", json={"model": "gpt-4o", "tools": [w.WEATHER_TOOL]},
                                    headers=V2) as r:
                assistant = (await r.json())["id"]

            async def batch(start_at: int, n: int) -> None:
                for first in range(start_at, start_at + n, 50):
                    await asyncio.gather(*(_create_and_run(session, base, assistant, i)
                                           for i in range(first, min(first + 50, start_at + n))))

            await batch(0, 20)
            s.flush()
            early = await scrape(s.admin_url)
            await batch(20, 480)
            s.flush()
            late = await scrape(s.admin_url)
    finally:
        await s.running.stop()
        await sim_runner.cleanup()
    assert late.get("runtap_requests_total", operation="threads.create_and_run") == 500
    assert late.get("runtap_runs_finished_total") == 500 - 125  # tool_call runs stop at requires_action
    assert late.get("runtap_run_transitions_total", from_status="none") == 500
    # Same series, more samples in them: 25x the runs, not one series more.
    assert len(late.samples) == len(early.samples)
    assert set(late.samples) == set(early.samples)
    assert not [v for v in late.label_values() if v.startswith(IDS)]


async def test_assistant_label_only_when_opted_in(tmp_path: Path) -> None:
    s, sim_runner = await start_stack(tmp_path, metrics_label_assistant=True)
    try:
        sdk = w.client_for(s.proxy_url + "/v1")
        run = await w.polled_run(sdk, w.WorkloadResult(), model="gpt-4o", scenario="complete", headers=V2)
        await sdk.close()
        s.flush()
        m = await scrape(s.admin_url)
    finally:
        await s.running.stop()
        await sim_runner.cleanup()
    assert m.by("runtap_runs_finished_total", "assistant_id", "status") == {
        (run.assistant_id, "completed"): 1}
    assert m.get("runtap_tokens_total", assistant_id=run.assistant_id) == run.usage.total_tokens
    # Still never on transitions or histograms: their series multiply by buckets and statuses.
    assert not m.by("runtap_run_transitions_total", "assistant_id", assistant_id=run.assistant_id)


async def test_unreachable_upstream_is_counted_by_reason(tmp_path: Path) -> None:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    running, _ = await _runtap(tmp_path, f"http://127.0.0.1:{dead}")
    try:
        async with aiohttp.ClientSession() as session, session.get(
                running.proxy_url + "/v1/threads/thread_x/runs/run_x") as r:
            assert r.status == 502
        m = await scrape(running.admin_url)
    finally:
        await running.stop()
    assert m.by("runtap_upstream_errors_total", "reason") == {("refused",): 1.0}
    assert m.by("runtap_requests_total", "operation", "code") == {("runs.retrieve", "502"): 1.0}
    assert m.get("runtap_upstream_ttfb_seconds_count") == 0


async def test_metrics_are_served_in_the_classic_text_format(stack: Stack) -> None:
    # Even to a Prometheus asking for OpenMetrics: the `_total` names are what dashboards query.
    async with aiohttp.ClientSession() as s, s.get(
            stack.admin_url + "/metrics",
            headers={"Accept": "application/openmetrics-text; version=1.0.0"}) as r:
        assert r.headers["Content-Type"].startswith("text/plain;")
        text = await r.text()
    assert "# TYPE runtap_runs_finished_total counter" in text
    assert "# TYPE gen_ai_client_token_usage histogram" in text


async def test_a_stalled_event_loop_shows_in_the_lag_histogram(stack: Stack) -> None:
    """The proxy shares this test's loop: stall it past the probe's 100 ms period and the probe's next
    wake-up is late by at least the overlap, which lands above the 25 ms bucket."""
    def late(m: Scrape) -> float:
        return (m.get("runtap_event_loop_lag_seconds_count")
                - m.get("runtap_event_loop_lag_seconds_bucket", le="0.025"))

    before = late(await scrape(stack.admin_url))
    time.sleep(0.15)  # noqa: ASYNC251 - the stall under test
    # The late timer fires in the loop's first iteration after the stall, before a scrape can finish;
    # a few scrapes only allow for the probe having been between two sleeps.
    for _ in range(5):
        if late(await scrape(stack.admin_url)) > before:
            break
    assert late(await scrape(stack.admin_url)) >= before + 1


async def test_sse_events_are_counted_by_name(stack: Stack) -> None:
    sdk = w.client_for(stack.proxy_url + "/v1")
    await w.streamed_run(sdk, w.WorkloadResult(), model="gpt-4o", scenario="complete", headers=V2)
    await sdk.close()
    stack.flush()
    m = await scrape(stack.admin_url)
    events = m.by("runtap_sse_events_total", "event")
    assert events[("thread.run.created",)] == 1
    assert events[("thread.run.completed",)] == 1
    assert events[("thread.message.delta",)] >= 1
    assert events[("done",)] == 1


def _exchange(xid: str) -> Exchange:
    return Exchange(id=xid, method="GET", path=f"/v1/threads/thread_1/runs/{xid}", operation="runs.retrieve",
                    api_version="v2", key_fingerprint=None, started_at=1_700_000_000.0)


def _record(xid: str) -> RequestRecord:
    return RequestRecord(id=xid, started_at=1_700_000_000.0, method="GET", path="/v1/threads/thread_1/runs",
                         operation="runs.retrieve", status_code=200, streamed=False, duration_ms=1.0,
                         upstream_ttfb_ms=1.0, bytes_in=0, bytes_out=2, upstream_request_id=None,
                         key_fingerprint=None, error=None)


def test_capture_health_reported_by_the_writer_becomes_metrics(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    # A healthy store: rows written by table, an undecodable body counted as a decode error.
    writer = CaptureWriter(WriterConfig(db_path=str(tmp_path / "ok.duckdb")), health=metrics.capture_health)
    writer.start()
    writer.submit(ResponseBody(_exchange("a"), 200, b'{"id": "run_1", "object": "thread.run", ', False))
    writer.submit(_record("a"))
    assert writer.flush(30)
    writer.stop()
    assert value("runtap_capture_written_total", table="requests") == 1
    assert value("runtap_capture_errors_total", stage="decode") == 1
    assert value("runtap_capture_skipped_total", reason="malformed_json") == 1
    assert value("runtap_capture_store_open") == 0  # closed by stop()

    # A store that cannot be opened and a spool that cannot be written: the batch is lost, counted.
    missing = tmp_path / "a-file"  # a file where a directory should be: nothing can be created under it
    missing.write_text("")
    broken = CaptureWriter(WriterConfig(db_path=str(missing / "x.duckdb"), spool_path=str(missing / "x.spool")),
                           health=metrics.capture_health)
    broken.start()
    broken.submit(_record("b"))
    assert broken.flush(30)
    broken.stop()
    assert value("runtap_capture_errors_total", stage="store_open") >= 1
    assert value("runtap_capture_dropped_total", stage="spool_error") == 1

    # A full queue refuses at submit time.
    full = CaptureWriter(WriterConfig(db_path=str(tmp_path / "full.duckdb"), queue_size=1),
                         health=metrics.capture_health)
    assert full.submit(_record("c")) and not full.submit(_record("d"))
    full.stop()
    assert value("runtap_capture_dropped_total", stage="queue_full") == 1


def test_capture_health_is_one_set_of_counters_that_the_scrape_and_the_stats_both_read(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    writer = CaptureWriter(WriterConfig(db_path=str(tmp_path / "one.duckdb")), health=metrics.capture_health)
    writer.start()
    try:
        writer.submit(ResponseBody(_exchange("a"), 200, b'{"id": "run_1", "object": "thread.run", ', False))
        writer.submit(ResponseBody(_exchange("b"), 200, b'{"id": "run_2", "object": "thread.run", ', False))
        writer.submit(_record("a"))
        assert writer.flush(30)
        metrics.capture_skipped("body_too_large")  # the relay's own skips land in the same family
        stats = writer.stats
        assert value("runtap_capture_written_total", table="requests") == stats["written"] == 1
        assert value("runtap_capture_errors_total", stage="decode") == stats["decode_skipped"] == 2
        assert value("runtap_capture_skipped_total", reason="malformed_json") == 2
        assert value("runtap_capture_skipped_total", reason="body_too_large") == 1
        assert value("runtap_capture_store_open") == 1
        # Scraping again reads the same counters: nothing is counted twice.
        assert value("runtap_capture_errors_total", stage="decode") == 2
    finally:
        writer.stop()
    assert value("runtap_capture_store_open") == 0


def test_capture_health_labels_stay_bounded_whatever_fails() -> None:
    registry = CollectorRegistry()
    health = Metrics(registry).capture_health
    for i in range(500):
        health.failed("store", f"Error{i}")
    stages = [s for f in registry.collect() if f.name == "runtap_capture_errors" for s in f.samples]
    assert [(s.labels, s.value) for s in stages] == [({"stage": "store"}, 500.0)]
    assert len(health.counts()) <= MAX_LABELS + 1
    assert health.total("errors", "store:other") == 500 - MAX_LABELS


def test_every_metric_runtap_exports_is_documented_on_the_metrics_page() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    page = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text(encoding="utf-8")
    names = [f.name + "_total" if f.type == "counter" else f.name for f in registry.collect()]
    assert len(names) >= 25
    assert [n for n in names if f"`{n}`" not in page] == []
