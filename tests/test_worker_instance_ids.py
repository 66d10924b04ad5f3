"""service.instance.id with `--workers N`: one id per process that exports spans (OTel resource
semantic conventions: unique per instance emitting telemetry). In-process mode every worker exports its
own spans, so each is an instance; in process mode one capture process builds and exports every
worker's spans, so there is one. A configured id (OTEL_RESOURCE_ATTRIBUTES, inherited by every worker)
gets worker i's suffix, as --instance does for exports."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from runtap.demo.sim import SimConfig, start_sim
from runtap.proxy.addons.tracing import instance_id

from tests.fault_helpers import API_KEY, start_runtap, terminate
from tests.otlp_receiver import OTLPReceiver
from tests.test_workers import _free_port, _free_port_pair, _ready

SERVER = 2  # opentelemetry.proto Span.SpanKind


def test_a_configured_instance_id_is_suffixed_for_workers_after_the_first() -> None:
    assert instance_id("pod-a", 0) is None  # the SDK's reading of the variable stands
    assert instance_id("pod-a", 2) == "pod-a-2"
    assert instance_id(None, 3) is None  # unset: the SDK's random id, drawn in each worker process


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("mode", "configured", "expected"), [
    ("inprocess", "service.instance.id=pod-a", {"pod-a", "pod-a-1"}),
    ("inprocess", "", 2),
    ("process", "service.instance.id=pod-a", {"pod-a"}),
])
async def test_each_process_that_exports_spans_is_one_instance(tmp_path: Path, mode: str, configured: str,
                                                               expected: set[str] | int) -> None:
    runner, url = await start_sim(SimConfig())
    port, admin = _free_port(), _free_port_pair()
    with OTLPReceiver() as otlp:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
               "OTEL_RESOURCE_ATTRIBUTES": configured, "OTEL_TRACES_SAMPLER": "always_on"}
        try:
            proc = await start_runtap(url.removesuffix("/v1"), tmp_path / "runtap.duckdb", tmp_path / "runtap.log",
                                      "--workers", "2", "--capture-mode", mode, "--listen", f"127.0.0.1:{port}",
                                      "--admin", f"127.0.0.1:{admin}", env=env)
            try:
                await _ready(f"http://127.0.0.1:{admin + 1}/healthz")
                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                                 headers={"Authorization": f"Bearer {API_KEY}"}) as client:
                    for _ in range(40):  # a new connection each: the kernel hands them to either worker
                        async with client.get(f"http://127.0.0.1:{port}/v1/threads/thread_missing/runs") as r:
                            await r.read()
                assert await asyncio.to_thread(otlp.wait_for, lambda spans: sum(
                    s.kind == SERVER for s in spans) >= 40, 30.0)
            finally:
                assert await terminate(proc) == 0
        finally:
            await runner.cleanup()
        ids = {s.resource.get("service.instance.id") for s in otlp.spans if s.kind == SERVER}
    assert None not in ids
    if isinstance(expected, int):
        assert len(ids) == expected, ids
    else:
        assert ids == expected
