"""The real azure-ai-agents SDK through runtap against the simulator's Azure AI Foundry paths.

Client -> wire recorder -> runtap -> wire recorder -> simulator, on real sockets: every response body
the SDK received is compared (sha256, de-chunked, compression kept) with the one the simulator put on
the wire; then DuckDB must hold exactly the runs and steps the simulator made, with their final status
and usage, the provider `azure` and api-version `v1`, one fingerprint for the one principal whatever
token carried it, and /metrics must count the same.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest
from azure.ai.agents import AgentsClient
from azure.ai.agents.models import (
    AgentEventHandler,
    AgentThreadCreationOptions,
    FunctionTool,
    MessageRole,
    RunStatus,
    ThreadMessageOptions,
    ThreadRun,
    ToolOutput,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from runtap.demo.sim import SimConfig, start_sim
from runtap.demo.sim.responses import SIM
from runtap.proxy.app import build_runtime
from runtap.proxy.serve import Running, start

from tests.azure_client import FakeEntraCredential, agents_client
from tests.conftest import stack_settings
from tests.metrics_scrape import scrape
from tests.wiretap import UpstreamRecorder

PROJECT = "proj-runtap-e2e"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OBJECT_ID = "5b0d2c3e-9f7a-4e61-8d0c-1a2b3c4d5e6f"
APP_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
TERMINAL = {"completed", "failed", "cancelled", "expired", "incomplete"}
POLL_S = 0.02


def get_weather(city: str) -> str:
    """The weather in a city.

    :param city: The city name.
    :return: The weather as JSON.
    """
    return json.dumps({"city": city, "forecast": "sunny", "celsius": 21})


@dataclass
class Seen:
    """What the SDK reported, to compare with what runtap captured."""

    runs: dict[str, ThreadRun] = field(default_factory=dict)
    step_ids: set[str] = field(default_factory=set)
    listed_runs: int = 0
    events: list[str] = field(default_factory=list)
    tool_outputs: int = 0

    def keep(self, run: ThreadRun) -> ThreadRun:
        self.runs[run.id] = run
        return run


def _wait(client: AgentsClient, seen: Seen, run: ThreadRun) -> ThreadRun:
    while run.status not in TERMINAL and run.status != RunStatus.REQUIRES_ACTION:
        time.sleep(POLL_S)  # the SDK's own create_and_process polls the same way
        run = client.runs.get(thread_id=run.thread_id, run_id=run.id)
    return seen.keep(run)


class _Collect(AgentEventHandler):
    def __init__(self, seen: Seen) -> None:
        super().__init__()
        self.seen = seen

    def on_thread_run(self, run: ThreadRun) -> None:
        self.seen.keep(run)

    def on_unhandled_event(self, event_type: str, event_data: Any) -> None:
        self.seen.events.append(event_type)


def workload(client: AgentsClient) -> Seen:
    """Every way the SDK drives a run, as an app would (sync client, run in a worker thread)."""
    seen = Seen()
    functions = FunctionTool({get_weather})
    agent = client.create_agent(model="gpt-4o", name="runtap-e2e", instructions="Answer briefly.",
                                tools=functions.definitions)
    thread = client.threads.create()
    client.messages.create(thread_id=thread.id, role=MessageRole.USER, content="Weather in Oslo?")

    # 1. create_and_process: the SDK's own polling loop, no tools needed.
    run = client.runs.create_and_process(thread_id=thread.id, agent_id=agent.id, polling_interval=POLL_S,
                                         metadata={"sim_scenario": "complete"})
    seen.keep(run)

    # 2. A function-tool run: poll to requires_action, run the function, submit, poll to the end.
    run = client.runs.create(thread_id=thread.id, agent_id=agent.id, metadata={"sim_scenario": "tool_call"})
    run = _wait(client, seen, run)
    assert run.status == RunStatus.REQUIRES_ACTION, run.status
    calls = run.required_action.submit_tool_outputs.tool_calls  # type: ignore[union-attr]
    outputs = [ToolOutput(tool_call_id=c.id, output=get_weather(**json.loads(c.function.arguments)))
               for c in calls]
    seen.tool_outputs += len(outputs)
    run = client.runs.submit_tool_outputs(thread_id=thread.id, run_id=run.id, tool_outputs=outputs)
    _wait(client, seen, run)

    # 3. A streamed run.
    with client.runs.stream(thread_id=thread.id, agent_id=agent.id, event_handler=_Collect(seen),
                            metadata={"sim_scenario": "complete"}) as stream:
        stream.until_done()

    # 4. A streamed function-tool run: the SDK calls the function and streams submit_tool_outputs.
    client.enable_auto_function_calls(functions)
    with client.runs.stream(thread_id=thread.id, agent_id=agent.id, event_handler=_Collect(seen),
                            metadata={"sim_scenario": "tool_call"}) as stream:
        stream.until_done()

    # 5. A cancelled run.
    run = client.runs.create(thread_id=thread.id, agent_id=agent.id, metadata={"sim_scenario": "slow"})
    client.runs.cancel(thread_id=thread.id, run_id=run.id)
    _wait(client, seen, run)

    # 6. create_thread_and_run, polled.
    run = client.create_thread_and_run(
        agent_id=agent.id, metadata={"sim_scenario": "complete"},
        thread=AgentThreadCreationOptions(messages=[ThreadMessageOptions(role=MessageRole.USER, content="Hi")]))
    other = _wait(client, seen, run)

    # 7. List runs two at a time (the SDK follows `after` cursors), list and get steps, read messages.
    listed = list(client.runs.list(thread_id=thread.id, limit=2))
    seen.listed_runs = len(listed)
    for r in [*listed, other]:
        seen.keep(r)
        for step in client.run_steps.list(thread_id=r.thread_id, run_id=r.id, limit=2):
            seen.step_ids.add(step.id)
            got = client.run_steps.get(thread_id=r.thread_id, run_id=r.id, step_id=step.id)
            assert got.id == step.id
    list(client.messages.list(thread_id=thread.id))
    client.delete_agent(agent.id)
    return seen


@dataclass
class AzureStack:
    running: Running
    settings: Any
    registry: CollectorRegistry
    client_wire: UpstreamRecorder
    upstream_wire: UpstreamRecorder
    sim: Any
    endpoint: str
    spans: InMemorySpanExporter


@pytest.fixture
async def azure_stack(tmp_path: Path) -> AsyncIterator[AzureStack]:
    sim_runner, sim_url = await start_sim(SimConfig())
    sim_port = int(sim_url.split(":")[2].split("/")[0])
    upstream_wire = UpstreamRecorder("127.0.0.1", sim_port)
    upstream = await upstream_wire.start()
    settings = stack_settings(tmp_path, upstream)
    registry = CollectorRegistry()
    spans = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    running = await start(settings, runtime=build_runtime(settings, registry=registry, tracer_provider=provider))
    proxy_port = int(running.proxy_url.rsplit(":", 1)[1])
    client_wire = UpstreamRecorder("127.0.0.1", proxy_port)
    front = await client_wire.start()
    try:
        yield AzureStack(running, settings, registry, client_wire, upstream_wire, sim_runner.app[SIM],
                         f"{front}/api/projects/{PROJECT}", spans)
    finally:
        await running.stop()
        await client_wire.close()
        await upstream_wire.close()
        await sim_runner.cleanup()


def _principal_fingerprint(salt: str) -> str:
    who = b"\x00".join((b"jwt", b"tid", TENANT.encode(), b"oid", OBJECT_ID.encode()))
    return hashlib.sha256(salt.encode() + who).hexdigest()[:12]


async def test_azure_agents_sdk_is_relayed_byte_for_byte_and_captured_exactly(azure_stack: AzureStack) -> None:
    s = azure_stack
    credential = FakeEntraCredential(TENANT, OBJECT_ID, APP_ID)
    client = agents_client(s.endpoint, credential)
    try:
        seen = await asyncio.to_thread(workload, client)
    finally:
        await asyncio.to_thread(client.close)

    # Transparency: every body the SDK received is the body the simulator sent, byte for byte.
    got, sent = s.client_wire.digests, s.upstream_wire.digests
    assert len(got) >= 40
    assert set(got) == set(sent)
    differing = [rid for rid in got if got[rid] != sent[rid]]
    assert differing == []
    assert "gzip" in set(s.upstream_wire.encodings.values())  # compressed bodies are among those compared

    # The simulator's truth: every run and step it made.
    sim_runs = {r.obj["id"]: r for t in s.sim.threads.values() for r in t.runs}
    sim_steps = {st["id"]: st for r in sim_runs.values() for st in r.steps}
    assert set(seen.runs) == set(sim_runs)
    assert {r.status for r in seen.runs.values()} == {"completed", "cancelled"}
    assert seen.listed_runs == 5 and seen.tool_outputs == 1
    assert seen.step_ids == set(sim_steps)

    assert s.running.runtime.writer is not None and s.running.runtime.writer.flush(timeout=30)
    con = duckdb.connect(s.settings.db)
    try:
        runs = {r[0]: r[1:] for r in con.execute(
            "SELECT id, status, prompt_tokens, completion_tokens, total_tokens, api_provider, api_version, "
            "key_fingerprint FROM runs").fetchall()}
        fingerprint = _principal_fingerprint(s.settings.key_salt)
        assert set(runs) == set(sim_runs)
        for run_id, run in sim_runs.items():
            usage = run.obj.get("usage") or {}
            assert runs[run_id] == (run.obj["status"], usage.get("prompt_tokens"), usage.get("completion_tokens"),
                                    usage.get("total_tokens"), "azure", "v1", fingerprint), run_id
        steps = {r[0]: r[1:] for r in con.execute(
            "SELECT id, status, type, total_tokens, api_provider, api_version FROM run_steps").fetchall()}
        assert set(steps) == set(sim_steps)
        for step_id, step in sim_steps.items():
            usage = step.get("usage") or {}
            assert steps[step_id] == (step["status"], step["type"], usage.get("total_tokens"), "azure", "v1")
        reqs = con.execute(
            "SELECT count(*), count(DISTINCT key_fingerprint), min(key_fingerprint), "
            "count(*) FILTER (WHERE api_provider = 'azure' AND api_version = 'v1'), "
            "count(*) FILTER (WHERE path LIKE '/api/projects/" + PROJECT + "/%'), "
            "count(*) FILTER (WHERE streamed) FROM requests").fetchone()
        # runs.stream twice, and the SDK's own streamed submit_tool_outputs once
        assert reqs == (len(got), 1, fingerprint, len(got), len(got), 3)
        transitions = con.execute("SELECT count(*) FROM run_events").fetchone()
        assert transitions is not None
        n_transitions = transitions[0]
    finally:
        con.close()
    # Token rotation: many tokens went out, one principal, one fingerprint (checked above).
    assert len(set(credential.issued)) >= 10

    # Metrics count what the database holds.
    m = await scrape(s.running.admin_url)
    by_status: dict[str, int] = {}
    for run in sim_runs.values():
        by_status[run.obj["status"]] = by_status.get(run.obj["status"], 0) + 1
    assert {k[0]: int(v) for k, v in m.by("runtap_runs_finished_total", "status").items()} == by_status
    tokens = {"prompt": sum((r.obj.get("usage") or {}).get("prompt_tokens", 0) for r in sim_runs.values()),
              "completion": sum((r.obj.get("usage") or {}).get("completion_tokens", 0) for r in sim_runs.values())}
    assert {k[0]: int(v) for k, v in m.by("runtap_tokens_total", "type").items()
            if k[0] in tokens} == tokens
    assert int(m.get("runtap_run_transitions_total")) == n_transitions
    assert int(m.get("runtap_steps_finished_total")) == len(sim_steps)
    assert int(m.get("runtap_requests_total")) == len(got)

    # Spans carry the provider and version: every Runs request span, every run span.
    finished = s.spans.get_finished_spans()
    runs_requests = [sp for sp in finished if sp.attributes and "openai.operation" in sp.attributes
                     and sp.attributes["openai.operation"] != "other"]
    run_spans = [sp for sp in finished
                 if sp.attributes and sp.attributes.get("gen_ai.operation.name") == "invoke_agent"]
    assert len(runs_requests) > 20 and len(run_spans) == len(sim_runs)
    for sp in runs_requests:
        assert (sp.attributes or {}).get("openai.api_provider") == "azure", sp.name
        assert (sp.attributes or {}).get("openai.api_version") == "v1", sp.name
    for sp in run_spans:
        assert ((sp.attributes or {}).get("openai.run.api_provider"),
                (sp.attributes or {}).get("openai.run.api_version")) == ("azure", "v1")
