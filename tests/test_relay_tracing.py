"""--capture-mode process builds request spans in the capture process from what the relay recorded
(proxy/addons/relay_tracing.py); the OTLP sink must receive the same spans as from the in-process mode,
and the relay process must not load the OpenTelemetry SDK."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import sampling
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context
from runtap.demo import workload as w
from runtap.proxy.addons.otel_env import TRACE_ID_LIMIT, sampler_from_env
from runtap.proxy.app import build_runtime
from runtap.proxy.serve import start
from runtap.settings.config import ConfigError

from tests.conftest import stack_settings
from tests.otlp_receiver import OTLPReceiver

SAMPLERS = ("always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
            "parentbased_traceidratio", "no_such_sampler", "ALWAYS_OFF")
_OTEL_VARS = ("OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
              "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG")


def _trace_to(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Only this test's OTEL_* settings: tracing on, exporting to `endpoint`."""
    for var in _OTEL_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(SAMPLERS), arg=st.sampled_from(["", "0", "0.25", "0.5", "1", "abc", " 0.75 "]),
       trace_id=st.integers(1, (1 << 128) - 1), parent=st.sampled_from([None, True, False]))
def test_the_relay_samples_as_the_sdk_sampler_from_the_same_variables(
        name: str, arg: str, trace_id: int, parent: bool | None) -> None:
    env = {"OTEL_TRACES_SAMPLER": name, "OTEL_TRACES_SAMPLER_ARG": arg}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        sdk = sampling._get_from_env_or_default()  # what TracerProvider() reads  # noqa: SLF001
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    ctx = None
    if parent is not None:
        flags = TraceFlags(TraceFlags.SAMPLED if parent else TraceFlags.DEFAULT)
        ctx = set_span_in_context(NonRecordingSpan(SpanContext(trace_id, 7, is_remote=True, trace_flags=flags)))
    decision = sdk.should_sample(ctx, trace_id, "GET").decision
    assert decision.is_sampled() == decision.is_recording()
    assert sampler_from_env(env).sampled(trace_id, parent) == decision.is_sampled()


def test_a_sampler_ratio_out_of_range_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="OTEL_TRACES_SAMPLER_ARG"):
        sampler_from_env({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"})


@pytest.mark.parametrize("mode", ["inprocess", "process"])
@pytest.mark.parametrize("arg", ["1.5", "-0.1", "nan", "inf"])
def test_both_capture_modes_refuse_the_same_sampler_ratio_out_of_range(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, arg: str) -> None:
    # The SDK alone would warn and sample every trace at 1.0: in-process runtap then traced everything
    # while --capture-mode process refused to start on the same variables.
    _trace_to(monkeypatch, "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    with pytest.raises(ConfigError, match="OTEL_TRACES_SAMPLER_ARG"):
        build_runtime(stack_settings(tmp_path, "http://127.0.0.1:9", capture_mode=mode))


def test_otel_batch_settings_the_sdk_refuses_are_one_line_at_start_up_in_both_modes(tmp_path: Path) -> None:
    # The SDK raises ValueError for an export batch above its queue: a traceback from the relay
    # (in-process) or from the capture process (process) instead of the brief's one line.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="100000")
    for mode in ("inprocess", "process"):
        done = subprocess.run(
            [sys.executable, "-m", "runtap.proxy", "serve", "--upstream", "http://127.0.0.1:9", "--listen",
             "127.0.0.1:0", "--admin", "127.0.0.1:0", "--db", str(tmp_path / f"{mode}.duckdb"), "--capture-mode",
             mode], env=env, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode != 0, (mode, done.stderr)
        assert "Traceback" not in done.stderr, (mode, done.stderr)
        assert "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" in done.stderr, (mode, done.stderr)

# --- the same spans from both modes -------------------------------------------------------------------

_IDS = re.compile(r"\b(?:thread|run|step|resp|msg|asst|call|rs|fc)_[0-9a-zA-Z]{8,}\b")
_RATIO = 0.5
_BOUND = round(_RATIO * (TRACE_ID_LIMIT + 1))


class _Parents:
    """One traceparent per call, the same sequence in both modes: every call is its own trace."""

    def __init__(self) -> None:
        self.i = 0
        self.sampled: set[int] = set()
        self.unsampled: set[int] = set()

    def __call__(self, *, sampled: bool = True, state: str | None = None) -> dict[str, str]:
        self.i += 1
        trace_id = (self.i * 0x9E3779B97F4A7C15F39CC0605CEDC835) % (1 << 128)
        (self.sampled if sampled else self.unsampled).add(trace_id)
        headers = {**w.V2, "traceparent": f"00-{trace_id:032x}-{self.i:016x}-{'03' if sampled else '00'}"}
        if state is not None:
            headers["tracestate"] = state
        return headers


async def _workload(sdk: openai.AsyncOpenAI, tp: _Parents) -> None:
    a = await sdk.beta.assistants.create(model="gpt-4o", name="spans", extra_headers=tp())
    t = await sdk.beta.threads.create(messages=[{"role": "user", "content": "hi"}], extra_headers=tp())
    async with sdk.beta.threads.runs.stream(thread_id=t.id, assistant_id=a.id, extra_headers=tp()) as stream:
        await stream.until_done()
        run = await stream.get_final_run()
    polled = await sdk.beta.threads.runs.create(thread_id=t.id, assistant_id=a.id,
                                                extra_headers=tp(state="vendor=a, other=b"))
    await sdk.beta.threads.runs.retrieve(polled.id, thread_id=t.id, extra_headers=tp(state="not valid"))
    await sdk.beta.threads.runs.steps.list(run.id, thread_id=t.id, extra_headers=tp())
    await sdk.beta.threads.runs.retrieve(run.id, thread_id=t.id, extra_headers=tp(sampled=False))
    await sdk.responses.create(model="gpt-5-mini", input="Say hello.", extra_headers=tp())
    streamed = await sdk.responses.create(model="gpt-5-mini", input="Stream.", stream=True, extra_headers=tp())
    async for _ in streamed:
        pass
    with pytest.raises(openai.NotFoundError):
        await sdk.beta.threads.runs.retrieve("run_missing00", thread_id="thread_missing00", extra_headers=tp())
    for _ in range(20):  # traces that start here: the ratio decides
        with pytest.raises(openai.NotFoundError):
            await sdk.beta.threads.runs.retrieve("run_missing00", thread_id="thread_missing00", extra_headers=w.V2)


async def _spans_of(mode: str, tmp_path: Path, upstream: str, receiver: OTLPReceiver) -> tuple[list[Any], _Parents,
                                                                                               int, int]:
    settings_ = stack_settings(tmp_path / mode, upstream, capture_mode=mode)
    (tmp_path / mode).mkdir()
    before = len(receiver.raw)
    began = time.time_ns()
    running = await start(settings_, runtime=build_runtime(settings_))
    if mode == "process":
        assert type(running.runtime.tracing).__name__ == "RelayTracing"
    tp = _Parents()
    sdk = w.client_for(running.proxy_url + "/v1")
    try:
        await _workload(sdk, tp)
    finally:
        await sdk.close()
        await running.stop()  # flushes the relay's provider, or the capture process's
    ended = time.time_ns()
    expected = 2 * (tp.i - len(tp.unsampled))  # a server and a client span per sampled parented call
    assert receiver.wait_for(lambda spans: len([s for s in receiver.raw[before:] if s.kind in (2, 3)
                                                and int.from_bytes(s.trace_id, "big") in tp.sampled]) >= expected)
    return [s for s in receiver.raw[before:] if s.kind in (2, 3)], tp, began, ended


class _Placeholders:
    def __init__(self) -> None:
        self.seen: dict[Any, str] = {}

    def __call__(self, value: Any) -> str:
        return self.seen.setdefault(value, f"<{len(self.seen)}>")


def _normalized(spans: list[Any], tp: _Parents, began: int, ended: int) -> Iterator[dict[str, Any]]:
    """Each parented trace's (server, client) pair with ids, times and the proxy's port checked, then
    replaced by placeholders in order of appearance; everything else as received."""
    from google.protobuf.json_format import MessageToDict

    by_trace: dict[int, list[Any]] = {}
    for s in spans:
        by_trace.setdefault(int.from_bytes(s.trace_id, "big"), []).append(s)
    assert not set(by_trace) & tp.unsampled
    names = _Placeholders()
    for trace_id in _call_order(tp):
        pair = sorted(by_trace[trace_id], key=lambda s: s.kind)  # server (2), then client (3)
        assert [s.kind for s in pair] == [2, 3], pair
        server, client = pair
        assert client.parent_span_id == server.span_id and server.span_id != client.span_id
        assert began <= server.start_time_unix_nano <= client.start_time_unix_nano
        assert client.end_time_unix_nano == server.end_time_unix_nano <= ended
        for s in pair:
            d = MessageToDict(s)
            for key in ("traceId", "spanId", "parentSpanId", "startTimeUnixNano", "endTimeUnixNano"):
                d.pop(key, None)
            d["attributes"] = [a for a in d.get("attributes", []) if a["key"] != "server.port"]
            for link in d.get("links", []):
                link["traceId"], link["spanId"] = names(link["traceId"]), names(link["spanId"])
            text = _IDS.sub(lambda m: names(m.group(0)), json.dumps(d, sort_keys=True))
            yield {"parent": f"{int.from_bytes(server.parent_span_id, 'big'):x}", **json.loads(text)}


def _call_order(tp: _Parents) -> list[int]:
    return [(i * 0x9E3779B97F4A7C15F39CC0605CEDC835) % (1 << 128) for i in range(1, tp.i + 1)
            if (i * 0x9E3779B97F4A7C15F39CC0605CEDC835) % (1 << 128) in tp.sampled]


async def test_process_mode_exports_the_same_request_spans_as_in_process(
        tmp_path: Path, sim_upstream: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with OTLPReceiver() as receiver:
        _trace_to(monkeypatch, receiver.endpoint)  # the capture process inherits it
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", str(_RATIO))
        got = {mode: await _spans_of(mode, tmp_path, sim_upstream, receiver) for mode in ("inprocess", "process")}
        # service.instance.id names the process that exports (each provider draws its own): the relay's or
        # the capture process's; the rest of the resource is the same
        resources = {json.dumps({**s.resource, "service.instance.id": ""}, sort_keys=True)
                     for s in receiver.spans if s.kind in (2, 3)}
    shapes = {mode: list(_normalized(*found)) for mode, found in got.items()}
    assert len(shapes["process"]) == 2 * 9  # ten parented calls, one of them unsampled
    for mine, theirs in zip(shapes["inprocess"], shapes["process"], strict=True):
        assert mine == theirs
    assert any("traceState" in s for s in shapes["process"])  # the valid tracestate went along
    for mode, (spans, tp, _, _) in got.items():
        roots = {int.from_bytes(s.trace_id, "big") for s in spans if s.kind == 2} - tp.sampled
        assert 0 < len(roots) < 20, mode  # ~half of 20, decided by each trace id
        assert all(t & TRACE_ID_LIMIT < _BOUND for t in roots), mode
    assert len(resources) == 1, resources  # one resource (service name, version) for both modes' spans


# --- no SDK in the relay -------------------------------------------------------------------------------

_RELAY = """
import asyncio, json, sys
import aiohttp
from runtap.proxy.app import build_runtime
from runtap.proxy.serve import start
from pathlib import Path
from tests.conftest import stack_settings

async def main(upstream, db):
    settings = stack_settings(Path(db), upstream, capture_mode="process")
    running = await start(settings, runtime=build_runtime(settings))
    async with aiohttp.ClientSession() as s:
        for headers in ({}, {"traceparent": "00-%032x-%016x-01" % (5, 6), "tracestate": "k=v"}):
            async with s.get(running.proxy_url + "/v1/threads/thread_a/runs/run_b",
                             headers={"OpenAI-Beta": "assistants=v2", **headers}) as r:
                await r.read()
    tracer = type(running.runtime.tracing).__name__
    await running.stop()
    print(json.dumps({"tracer": tracer, "sdk": sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk"))}))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_the_relay_of_process_mode_loads_no_otel_sdk(
        tmp_path: Path, sim_upstream: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with OTLPReceiver() as receiver:
        _trace_to(monkeypatch, receiver.endpoint)
        # the simulated upstream runs on this test's loop: the relay process is awaited, not waited for
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _RELAY, sim_upstream, str(tmp_path), cwd=Path(__file__).parents[1],
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 100)
        assert proc.returncode == 0, err.decode()[-3000:]
        report = json.loads(out.decode().strip().splitlines()[-1])
        assert report == {"tracer": "RelayTracing", "sdk": []}
        # ...and the spans still reach the sink, built by the capture process
        assert receiver.wait_for(lambda spans: len([s for s in spans if s.kind == 2]) >= 2)
    parented = [s for s in receiver.spans if s.kind == 2 and s.trace_id == 5]
    assert len(parented) == 1 and parented[0].parent_span_id == 6


def test_a_relayed_span_that_cannot_be_built_is_counted_and_its_record_kept() -> None:
    from types import SimpleNamespace

    from opentelemetry.sdk.trace import TracerProvider
    from runtap.analytics.ingest.health import CaptureHealth, Event, Kind
    from runtap.analytics.ingest.records import RequestRecord
    from runtap.proxy.addons.tracing import Tracing
    from runtap.proxy.capture_process import Ingest

    health = CaptureHealth()
    tracing = Tracing(TracerProvider(), upstream="http://127.0.0.1:9")
    ingest = Ingest(SimpleNamespace(health=health), tracing.remember_request,  # type: ignore[arg-type]
                    tracing.finish_relayed)
    record = RequestRecord("req-1", 0.0, "GET", "/v1/models", None, 200, False, 1.0, 0.5, 0, 10, None, None, None,
                           span=("not", "a", "span"))
    ingest.request_span(record)
    assert record.span is None  # stored without it
    assert health.events().get(Event(Kind.ERRORS, "tracing", "ValueError")) == 1


async def test_the_process_mode_relay_propagates_the_exported_client_span_upstream(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_tracing import HeaderRecorder

    upstream = HeaderRecorder()
    url = await upstream.start()
    with OTLPReceiver() as receiver:
        _trace_to(monkeypatch, receiver.endpoint)
        settings_ = stack_settings(tmp_path, url, capture_mode="process")
        running = await start(settings_, runtime=build_runtime(settings_))
        try:
            sdk = w.client_for(running.proxy_url + "/v1")
            parented = {**w.V2, "traceparent": f"00-{0xABC:032x}-{0xDEF:016x}-01", "tracestate": "a=1,b=2"}
            unsampled = {**w.V2, "traceparent": f"00-{0x123:032x}-{0x456:016x}-00"}
            for headers in (parented, unsampled, w.V2):
                await sdk.beta.threads.runs.list("thread_t", extra_headers=headers)
            await sdk.close()
        finally:
            await running.stop()
            await upstream.close()
        assert receiver.wait_for(lambda spans: len([s for s in spans if s.kind == 3]) >= 2)
    clients = {s.trace_id: s for s in receiver.spans if s.kind == 3}
    sent = [h["traceparent"].split("-") for h in upstream.headers]
    assert [h.get("tracestate") for h in upstream.headers] == ["a=1,b=2", None, None]
    # the parented call: the app's trace, the exported client span's id, sampled
    assert sent[0][1:] == [f"{0xABC:032x}", f"{clients[0xABC].span_id:016x}", "01"]
    # the unsampled parent: its trace, a fresh span id, not sampled, nothing exported
    assert sent[1][1] == f"{0x123:032x}" and sent[1][3] == "00" and 0x123 not in clients
    # a trace that starts here: sampled (parent-based always-on), random trace id flag (W3C level 2)
    root = int(sent[2][1], 16)
    assert sent[2][2] == f"{clients[root].span_id:016x}" and sent[2][3] == "03"


# --- failures: the same spans from both modes ----------------------------------------------------------

async def _failure_spans(mode: str, tmp_path: Path, sim: str, receiver: OTLPReceiver) -> list[str]:
    """Spans of a 404, a run stream the client leaves after its first bytes, and calls to an upstream
    that refuses connections (502), each with a sampled parent; ids, times and ports left out."""
    from google.protobuf.json_format import MessageToDict

    before = len(receiver.raw)
    expected = 0
    for n, upstream in enumerate((sim, "http://127.0.0.1:9")):
        settings_ = stack_settings(tmp_path / f"{mode}{n}", upstream, capture_mode=mode)
        (tmp_path / f"{mode}{n}").mkdir()
        running = await start(settings_, runtime=build_runtime(settings_))
        try:
            async with aiohttp.ClientSession(headers={**w.V2, "Authorization": "Bearer sk-test"}) as http:
                expected += 2
                url = running.proxy_url + "/v1/threads/thread_nope/runs/run_nope"
                async with http.get(url, headers={"traceparent": f"00-{n + 1:032x}-{1:016x}-01"}) as r:
                    await r.read()
                if upstream == sim:
                    async with http.post(running.proxy_url + "/v1/assistants", json={"model": "gpt-4o"}) as r:
                        assistant = (await r.json())["id"]
                    body = {"assistant_id": assistant, "stream": True,
                            "thread": {"messages": [{"role": "user", "content": "hi"}]}}
                    async with http.post(running.proxy_url + "/v1/threads/runs", json=body,
                                         headers={"traceparent": f"00-{9:032x}-{2:016x}-01"}) as r:
                        assert r.status == 200
                        await r.content.readany()
                        r.close()  # the client leaves mid-stream
                    expected += 2
        finally:
            await running.stop()
    traced = {f"{t:032x}" for t in (1, 2, 9)}
    assert receiver.wait_for(lambda s: len([x for x in receiver.raw[before:]
                                            if x.kind in (2, 3) and x.trace_id.hex() in traced]) >= expected)
    out = []
    for s in receiver.raw[before:]:
        if s.kind not in (2, 3) or s.trace_id.hex() not in traced:
            continue
        d = MessageToDict(s)
        for key in ("spanId", "parentSpanId", "startTimeUnixNano", "endTimeUnixNano"):
            d.pop(key, None)
        d["attributes"] = sorted((a for a in d.get("attributes", []) if a["key"] != "server.port"),
                                 key=lambda a: a["key"])
        out.append(json.dumps(d, sort_keys=True))
    return sorted(out)


async def test_errors_disconnects_and_an_unreachable_upstream_give_the_same_spans_in_both_modes(
        tmp_path: Path, sim_upstream: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with OTLPReceiver() as receiver:
        _trace_to(monkeypatch, receiver.endpoint)
        inprocess = await _failure_spans("inprocess", tmp_path, sim_upstream, receiver)
        process = await _failure_spans("process", tmp_path, sim_upstream, receiver)
    assert len(inprocess) == 6
    assert process == inprocess
    errors = " ".join(inprocess)
    for kind in ("client_disconnected", "404", "refused"):
        assert f'"stringValue": "{kind}' in errors, kind
