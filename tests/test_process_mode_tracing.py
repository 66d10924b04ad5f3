"""--capture-mode process: run spans are made in the capture process, request spans in the relay; the
run span still links to the requests that changed it (the exchange carries the request span's ids)."""

from __future__ import annotations

from pathlib import Path

import pytest
from runtap.demo import workload as w
from runtap.proxy.addons.run_spans import run_span_id
from runtap.proxy.app import build_runtime
from runtap.proxy.serve import start

from tests.conftest import stack_settings
from tests.otlp_receiver import OTLPReceiver


async def test_run_spans_link_to_their_requests_across_the_capture_process(
        tmp_path: Path, sim_upstream: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with OTLPReceiver() as receiver:
        for var in ("OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME",
                    "OTEL_RESOURCE_ATTRIBUTES", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)  # the capture process inherits it
        settings = stack_settings(tmp_path, sim_upstream, capture_mode="process")
        running = await start(settings, runtime=build_runtime(settings))
        sdk = w.client_for(running.proxy_url + "/v1")
        run = await w.streamed_run(sdk, w.WorkloadResult(), model="gpt-4o", scenario="complete", headers=w.V2)
        await sdk.close()
        await running.stop()  # relays first, then the capture process: both flush their spans
        assert receiver.wait_for(lambda spans: any(s.name.startswith("invoke_agent") for s in spans))
    spans = receiver.spans
    run_span = next(s for s in spans if s.name.startswith("invoke_agent"))
    assert run_span.span_id == run_span_id(run.id)
    creates = [s for s in spans if s.kind == 2 and s.name.endswith("/threads/{thread_id}/runs")]
    assert creates, [s.name for s in spans]
    assert {(s.trace_id, s.span_id) for s in creates} & set(run_span.links), (run_span.links, creates)
