"""The real `openai` SDK through runtap against the simulated upstream, v1 and v2.

Every response body the client received is compared (sha256) with the bytes the upstream put on the
wire, gzip included; then DuckDB must hold every run with the upstream's final status and usage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import duckdb
import httpx2 as httpx
import openai
import pytest
from runtap.demo import workload as w
from runtap.demo.sim import SimConfig, start_sim
from runtap.proxy.app import build_runtime
from runtap.proxy.serve import Running, start

from tests.conftest import stack_settings
from tests.wiretap import HashingTransport, UpstreamRecorder

API_KEY = "sk-e2e-secret-4f1c9a7be2d04c8e"


@pytest.fixture(params=["inprocess", "process"], ids=["capture=inprocess", "capture=process"])
async def witnessed(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    sim_runner, sim_url = await start_sim(SimConfig())
    port = int(sim_url.split(":")[2].split("/")[0])
    recorder = UpstreamRecorder("127.0.0.1", port)
    upstream = await recorder.start()
    settings = stack_settings(tmp_path, upstream, capture_mode=request.param)
    running = await start(settings, runtime=build_runtime(settings))
    transport = HashingTransport()
    http_client = httpx.AsyncClient(transport=transport)
    client = w.client_for(running.proxy_url + "/v1", API_KEY, http_client=http_client)
    try:
        yield {"client": client, "recorder": recorder, "transport": transport, "running": running,
               "settings": settings, "tmp_path": tmp_path}
    finally:
        await client.close()
        if not witnessed_stopped(running):
            await running.stop()
        await recorder.close()
        await sim_runner.cleanup()


@pytest.mark.parametrize("headers", [w.V1, w.V2], ids=["assistants=v1", "assistants=v2"])
async def test_every_runs_operation_is_relayed_byte_for_byte_and_captured(
        witnessed: dict[str, Any], headers: dict[str, str]) -> None:
    client = witnessed["client"]
    result = w.WorkloadResult()
    done = await w.polled_run(client, result, model="gpt-4o", scenario="complete", headers=headers)
    await w.polled_run(client, result, model="gpt-4o-mini", scenario="tool_call", headers=headers,
                       tools=[w.WEATHER_TOOL])
    await w.raw_streamed_run(client, result, model="gpt-4o", scenario="complete", headers=headers)
    await w.streamed_run(client, result, model="gpt-4o-mini", scenario="tool_call", headers=headers,
                         tools=[w.WEATHER_TOOL])
    await w.cancelled_run(client, result, model="gpt-4o", headers=headers)
    await w.create_and_run_polled(client, result, model="gpt-4-turbo", headers=headers)
    await w.create_and_run_streamed(client, result, model="gpt-4-turbo", headers=headers)
    await w.polled_run(client, result, model="gpt-4o", scenario="fail", headers=headers)
    await w.browse(client, result, done, headers)
    await w.expected_errors(client, result, done.thread_id, headers)

    assert set(result.runs.values()) >= {"completed", "cancelled", "failed"}
    assert result.errors == {"NotFoundError": 1, "RateLimitError": 1}

    # Transparency: each body the client got is the body the upstream sent.
    got, sent = witnessed["transport"].digests, witnessed["recorder"].digests
    assert len(got) >= 30
    for rid, digest in got.items():
        assert sent.get(rid) == digest, f"body of {rid} differs between upstream and client"
    # The SDK asks for gzip and the simulator compresses bodies of 256 bytes or more: compressed
    # bodies are among those compared, still compressed on both sides.
    assert "gzip" in {witnessed["recorder"].encodings[rid] for rid in got}
    statuses = witnessed["transport"].statuses
    assert 404 in statuses.values() and 429 in statuses.values()

    con = await captured_db(witnessed)
    rows = {r[0]: r[1:] for r in con.execute(
        "SELECT id, status, prompt_tokens, completion_tokens, api_version FROM runs").fetchall()}
    for run_id, status in result.runs.items():
        assert run_id in rows, f"run {run_id} was not captured"
        assert rows[run_id][0] == status
        if run_id in result.usage:
            assert rows[run_id][1:3] == result.usage[run_id]
        assert rows[run_id][3] == headers["OpenAI-Beta"].split("=")[1]
    # The cancelled run went through cancelling (or straight to cancelled) and started from nothing.
    first = con.execute("SELECT count(*) FROM run_events WHERE from_status IS NULL").fetchone()
    assert first is not None and first[0] == len(rows)
    steps = con.execute("SELECT count(*) FROM run_steps").fetchone()
    assert steps is not None and steps[0] > 0
    reqs = con.execute("SELECT count(*), count(DISTINCT key_fingerprint) FROM requests").fetchone()
    assert reqs is not None and reqs[0] >= len(got) and reqs[1] == 1
    con.close()


def witnessed_stopped(running: Running) -> bool:
    return running.runtime.extras.get("stopped", False) is True


async def captured_db(witnessed: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    """The capture database with everything relayed so far in it. In process mode the capture process
    holds DuckDB's lock until it exits, so the proxy stops first (it flushes on the way out)."""
    running: Running = witnessed["running"]
    assert (running.runtime.channel is not None) == (witnessed["settings"].capture_mode == "process")
    if running.runtime.writer is not None:
        assert running.runtime.writer.flush(timeout=30)
        return duckdb.connect(witnessed["settings"].db)
    await running.stop()
    running.runtime.extras["stopped"] = True
    return duckdb.connect(witnessed["settings"].db, read_only=True)


async def test_gzip_bodies_pass_through_compressed(witnessed: dict[str, Any]) -> None:
    running = witnessed["running"]
    transport, recorder = witnessed["transport"], witnessed["recorder"]
    async with httpx.AsyncClient(transport=transport) as raw:
        r = await raw.post(running.proxy_url + "/v1/assistants",
                           json={"model": "gpt-4o", "instructions": "be brief. " * 60},
                           headers={"Authorization": f"Bearer {API_KEY}", "Accept-Encoding": "gzip"})
        assert r.headers.get("content-encoding") == "gzip"
        assert r.json()["model"] == "gpt-4o"
        plain = await raw.get(running.proxy_url + f"/v1/assistants/{r.json()['id']}",
                              headers={"Authorization": f"Bearer {API_KEY}", "Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert plain.json()["id"] == r.json()["id"]
    # The compressed bytes the client received are the ones the upstream sent (not re-compressed).
    for resp, encoding in ((r, "gzip"), (plain, "identity")):
        rid = resp.headers["x-request-id"]
        assert recorder.encodings[rid] == encoding
        assert transport.digests[rid] == recorder.digests[rid]


async def test_unreachable_upstream_gives_openai_shaped_502(tmp_path: Path) -> None:
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    settings = stack_settings(tmp_path, f"http://127.0.0.1:{dead}")
    running = await start(settings, runtime=build_runtime(settings))
    try:
        client = w.client_for(running.proxy_url + "/v1", API_KEY)
        with pytest.raises(openai.APIStatusError) as info:
            await client.beta.threads.runs.retrieve(run_id="run_x", thread_id="thread_x")
        assert info.value.status_code == 502
        body = info.value.body
        assert isinstance(body, dict)
        assert body["code"] == "upstream_refused"
        assert f"127.0.0.1:{dead}" in body["message"]
        await client.close()
    finally:
        await running.stop()
