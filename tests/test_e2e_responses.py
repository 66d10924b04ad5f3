"""The real `openai` SDK's Responses API through runtap against a faithful fake upstream
(tests/fake_responses.py): every body byte-for-byte (gzip included), then DuckDB holds every response
with the upstream's final status and exact tokens, and the metrics count each response once."""

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
from runtap.proxy.app import build_runtime
from runtap.proxy.serve import start

from tests import fake_responses as fr
from tests.conftest import stack_settings
from tests.metrics_scrape import scrape
from tests.wiretap import HashingTransport, UpstreamRecorder

API_KEY = "sk-e2e-responses-7d2a91c4"
MODEL = "gpt-5-mini"
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
           "strict": True}


@pytest.fixture
async def witnessed(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    fake_runner, fake_url, fake = await fr.start_fake()
    recorder = UpstreamRecorder("127.0.0.1", int(fake_url.rsplit(":", 1)[1]))
    upstream = await recorder.start()
    settings = stack_settings(tmp_path, upstream)
    registry = CollectorRegistry()
    running = await start(settings, runtime=build_runtime(settings, registry=registry))
    transport = HashingTransport()
    http_client = httpx.AsyncClient(transport=transport)
    client = w.client_for(running.proxy_url + "/v1", API_KEY, http_client=http_client)
    try:
        yield {"client": client, "recorder": recorder, "transport": transport, "running": running,
               "settings": settings, "fake": fake}
    finally:
        await client.close()
        await running.stop()
        await recorder.close()
        await fake_runner.cleanup()


def _usage(resp: Any) -> tuple[int, int, int, int, int] | None:
    u = resp.usage
    if u is None:
        return None
    return (u.input_tokens, u.input_tokens_details.cached_tokens, u.output_tokens,
            u.output_tokens_details.reasoning_tokens, u.total_tokens)



async def poll_background(client: openai.AsyncOpenAI, model: str) -> Any:
    """A background create polled to its end, then once more (a poll after the end counts nothing new)."""
    bg = await client.responses.create(model=model, input="Think in the background.", background=True)
    polled = bg
    while polled.status in ("queued", "in_progress"):
        polled = await client.responses.retrieve(bg.id)
    await client.responses.retrieve(bg.id)
    return polled


async def stream_then_resume(client: openai.AsyncOpenAI, model: str) -> Any:
    """A background stream dropped after a few events, resumed with starting_after; its final response."""
    started = await client.responses.create(model=model, input="Stream me, then resume.", background=True,
                                            stream=True)
    seen, rid = -1, ""
    async for event in started:
        seen = event.sequence_number
        if event.type == "response.created":
            rid = event.response.id
        if seen >= 3:
            break
    await started.close()
    final = None
    resumed = await client.responses.retrieve(rid, stream=True, starting_after=seen)
    async for event in resumed:
        if event.type in ("response.completed", "response.incomplete", "response.failed"):
            final = event.response
    assert final is not None, f"the resumed stream of {rid} did not end"
    return final

async def _drive(client: openai.AsyncOpenAI) -> tuple[dict[str, Any], dict[str, int]]:
    """Every Responses operation the issue names; returns {id: final response} and errors by class."""
    final: dict[str, Any] = {}
    errors: dict[str, int] = {}
    # plain create
    plain = await client.responses.create(model=MODEL, input="Say hello.", metadata={"tenant": "acme"})
    final[plain.id] = plain
    # streamed create
    stream = await client.responses.create(model=MODEL, input="Say hello, streaming.", stream=True)
    async for event in stream:
        if event.type == "response.completed":
            final[event.response.id] = event.response
    # background create + polling
    polled = await poll_background(client, MODEL)
    final[polled.id] = polled
    # background + stream, dropped after a few events, resumed with starting_after
    resumed = await stream_then_resume(client, MODEL)
    final[resumed.id] = resumed
    # cancel a queued background response
    doomed = await client.responses.create(model=MODEL, input="Cancel me.", background=True)
    cancelled = await client.responses.cancel(doomed.id)
    final[doomed.id] = cancelled
    # function-tool round trip with previous_response_id
    asked = await client.responses.create(model=MODEL, input="Weather in Paris?", tools=[WEATHER])  # type: ignore[list-item]
    final[asked.id] = asked
    call = next(o for o in asked.output if o.type == "function_call")
    answered = await client.responses.create(
        model=MODEL, previous_response_id=asked.id, tools=[WEATHER],  # type: ignore[list-item]
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'}])
    final[answered.id] = answered
    # a conversation
    conv = await client.conversations.create()
    first = await client.responses.create(model=MODEL, input="Remember: blue.", conversation=conv.id)
    second = await client.responses.create(model=MODEL, input="What colour?", conversation=conv.id)
    final[first.id], final[second.id] = first, second
    # incomplete by max_output_tokens, failed
    cut = await client.responses.create(model=MODEL, input="Write a long essay.", max_output_tokens=16)
    final[cut.id] = cut
    failed = await client.responses.create(model=fr.FAIL_MODEL, input="Fail.")
    final[failed.id] = failed
    # input_items, delete
    items = await client.responses.input_items.list(plain.id)
    assert items.data
    await client.responses.delete(plain.id)
    # a 4xx and a 5xx pass through
    for model in (fr.MISSING_MODEL, fr.BOOM_MODEL):
        try:
            await client.responses.create(model=model, input="x")
        except openai.APIStatusError as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
    return final, errors


async def test_every_responses_operation_is_relayed_byte_for_byte_and_captured(witnessed: dict[str, Any]) -> None:
    final, errors = await _drive(witnessed["client"])
    assert errors == {"NotFoundError": 1, "InternalServerError": 1}
    statuses = {r.status for r in final.values()}
    assert statuses == {"completed", "cancelled", "incomplete", "failed"}
    assert len(final) == witnessed["fake"].created == 11

    got, sent = witnessed["transport"].digests, witnessed["recorder"].digests
    assert len(got) >= 20
    for rid, digest in got.items():
        assert sent.get(rid) == digest, f"body of {rid} differs between upstream and client"
    assert "gzip" in {witnessed["recorder"].encodings[rid] for rid in got}

    running = witnessed["running"]
    assert running.runtime.writer.flush(timeout=30)
    con = duckdb.connect(witnessed["settings"].db)
    rows = {r[0]: r[1:] for r in con.execute(
        "SELECT id, status, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, total_tokens, "
        "stream, background, finished_counted FROM responses").fetchall()}
    assert set(rows) == set(final)
    for rid, resp in final.items():
        assert rows[rid][0] == resp.status, rid
        usage = _usage(resp)
        if usage is not None:
            assert rows[rid][1:6] == usage, rid
        assert rows[rid][8] is True
    streamed = [rid for rid, r in rows.items() if r[6]]
    assert len(streamed) == 2  # the streamed create and the background stream
    conv = con.execute("SELECT count(*) FROM responses WHERE conversation_id LIKE 'conv_%'").fetchone()
    assert conv == (2,)
    first = con.execute("SELECT count(*) FROM response_events WHERE from_status IS NULL").fetchone()
    assert first == (len(rows),)
    chained = con.execute(
        "SELECT count(*) FROM (SELECT response_id, to_status, lead(from_status) OVER (PARTITION BY response_id "
        "ORDER BY observed_at) AS nxt FROM response_events) WHERE nxt IS NOT NULL AND nxt <> to_status").fetchone()
    assert chained == (0,)
    # privacy: no prompt, output text or function arguments at rest
    raw = " ".join(r[0] for r in con.execute("SELECT raw::VARCHAR FROM responses").fetchall())
    assert "Paris" not in raw and "Hello!" not in raw and "Be terse" not in raw
    ops = dict(con.execute("SELECT operation, count(*) FROM requests GROUP BY operation").fetchall())
    assert ops["responses.create"] == 13 and ops["responses.delete"] == 1
    assert ops["responses.input_items"] == 1 and ops["conversations.create"] == 1 and ops["responses.cancel"] == 1
    con.close()

    metrics = await scrape(running.admin_url)
    finished = metrics.by("runtap_responses_finished_total", "status")
    want: dict[tuple[str, ...], float] = {}
    for r in final.values():
        want[(r.status,)] = want.get((r.status,), 0) + 1
    assert finished == want
    for kind, index in (("input", 0), ("cached_input", 1), ("output", 2), ("reasoning", 3)):
        total = sum(u[index] for r in final.values() if (u := _usage(r)) is not None)
        assert metrics.get("runtap_response_tokens_total", type=kind) == total, kind
    assert metrics.get("runtap_response_tool_turnaround_seconds_count") == 1
    assert metrics.get("runtap_responses_incomplete_total", reason="max_output_tokens") == 1
    assert metrics.get("runtap_response_errors_total", code="server_error") == 1
    assert metrics.get("runtap_response_queue_seconds_count") >= 1
    # the streamed create, and the background stream if an output delta got through before it was dropped
    assert metrics.get("runtap_response_stream_first_output_seconds_count") >= 1
    assert metrics.get("runtap_response_token_budget_ratio_bucket", le="1.0") == 1
    # the 404 and the 500 are relayed, not captured; nothing else is skipped
    assert metrics.by("runtap_capture_skipped_total", "reason") == {("upstream_error_status",): 2.0}
    assert metrics.get("runtap_capture_errors_total") == 0
