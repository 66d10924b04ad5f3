"""The real `openai` SDK's Responses API through runtap against the real simulator (proxy.sim, streams
written in uneven chunks, background lifecycle in wall-clock time): every body byte-for-byte, every
response in DuckDB with the upstream's final status and exact tokens, each counted once in the metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import duckdb
import httpx2 as httpx
import openai
import pytest
from prometheus_client import CollectorRegistry
from runtap.demo import workload as w
from runtap.demo.sim import SimConfig, start_sim
from runtap.proxy.app import build_runtime
from runtap.proxy.serve import start

from tests.conftest import stack_settings
from tests.metrics_scrape import scrape
from tests.test_e2e_responses import API_KEY, WEATHER, _usage, poll_background, stream_then_resume
from tests.wiretap import HashingTransport, UpstreamRecorder

MODEL = "gpt-5-mini"


@pytest.fixture
async def witnessed(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    sim_runner, sim_url = await start_sim(SimConfig())
    port = int(sim_url.rstrip("/").removesuffix("/v1").rsplit(":", 1)[1])
    recorder = UpstreamRecorder("127.0.0.1", port)
    upstream = await recorder.start()
    settings = stack_settings(tmp_path, upstream)
    running = await start(settings, runtime=build_runtime(settings, registry=CollectorRegistry()))
    transport = HashingTransport()
    client = w.client_for(running.proxy_url + "/v1", API_KEY, http_client=httpx.AsyncClient(transport=transport))
    try:
        yield {"client": client, "recorder": recorder, "transport": transport, "running": running,
               "settings": settings}
    finally:
        await client.close()
        await running.stop()
        await recorder.close()
        await sim_runner.cleanup()


async def _drive(client: openai.AsyncOpenAI) -> dict[str, Any]:
    final: dict[str, Any] = {}
    plain = await client.responses.create(model=MODEL, input="Say hello.")
    final[plain.id] = plain
    stream = await client.responses.create(model=MODEL, input="Say hello, streaming.", stream=True)
    async for event in stream:
        if event.type in ("response.completed", "response.incomplete", "response.failed"):
            final[event.response.id] = event.response
    polled = await poll_background(client, MODEL)
    final[polled.id] = polled
    resumed = await stream_then_resume(client, MODEL)
    final[resumed.id] = resumed
    asked = await client.responses.create(model=MODEL, input="Weather in Paris?", tools=[WEATHER])  # type: ignore[list-item]
    final[asked.id] = asked
    call = next(o for o in asked.output if o.type == "function_call")
    answered = await client.responses.create(
        model=MODEL, previous_response_id=asked.id, tools=[WEATHER],  # type: ignore[list-item]
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'}])
    final[answered.id] = answered
    conv = await client.conversations.create()
    first = await client.responses.create(model=MODEL, input="Remember: blue.", conversation=conv.id)
    final[first.id] = first
    cut = await client.responses.create(model=MODEL, input="Write a long essay.", max_output_tokens=16)
    final[cut.id] = cut
    failed = await client.responses.create(model=MODEL, input="Fail.", metadata={"sim_scenario": "fail"})
    final[failed.id] = failed
    with pytest.raises(openai.BadRequestError):
        await client.responses.create(model=MODEL, input="x", temperature=9)
    return final


async def test_sdk_through_runtap_against_the_real_simulator(witnessed: dict[str, Any]) -> None:
    final = await _drive(witnessed["client"])
    assert {r.status for r in final.values()} >= {"completed", "incomplete", "failed"}

    got, sent = witnessed["transport"].digests, witnessed["recorder"].digests
    assert len(got) >= 12
    for request_id, digest in got.items():
        assert sent.get(request_id) == digest, f"body of {request_id} differs between upstream and client"

    running = witnessed["running"]
    assert running.runtime.writer.flush(timeout=30)
    con = duckdb.connect(witnessed["settings"].db)
    rows = {r[0]: r[1:] for r in con.execute(
        "SELECT id, status, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, total_tokens, "
        "finished_counted FROM responses").fetchall()}
    con.close()
    assert set(rows) == set(final)
    for rid, resp in final.items():
        assert rows[rid][0] == resp.status, rid
        usage = _usage(resp)
        if usage is not None:
            assert rows[rid][1:6] == usage, rid
        assert rows[rid][6] is True, rid

    metrics = await scrape(running.admin_url)
    want: dict[tuple[str, ...], float] = {}
    for r in final.values():
        want[(r.status,)] = want.get((r.status,), 0) + 1
    assert metrics.by("runtap_responses_finished_total", "status") == want
    for kind, index in (("input", 0), ("cached_input", 1), ("output", 2), ("reasoning", 3)):
        total = sum(u[index] for r in final.values() if (u := _usage(r)) is not None)
        assert metrics.get("runtap_response_tokens_total", type=kind) == total, kind
    assert metrics.get("runtap_capture_errors_total") == 0
