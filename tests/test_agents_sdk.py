"""A real agent framework through runtap: the `openai-agents` SDK runs an Agent with a function tool
(Responses API, its tracing off) against the fake upstream; runtap captures its responses and measures
the tool turnaround (the SDK resends the history with the function_call_output: matched by call id)."""

from __future__ import annotations

from pathlib import Path

import agents
import duckdb
from prometheus_client import CollectorRegistry
from runtap.demo import workload as w
from runtap.proxy.app import build_runtime
from runtap.proxy.serve import start

from tests import fake_responses as fr
from tests.conftest import stack_settings
from tests.metrics_scrape import scrape


async def test_an_agent_with_a_function_tool_is_captured_with_its_tool_turnaround(tmp_path: Path) -> None:
    fake_runner, fake_url, fake = await fr.start_fake()
    settings = stack_settings(tmp_path, fake_url)
    running = await start(settings, runtime=build_runtime(settings, registry=CollectorRegistry()))
    client = w.client_for(running.proxy_url + "/v1", "sk-agents-test-1")
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Weather in a city."""
        calls.append(city)
        return f"sunny in {city}"

    try:
        agents.set_tracing_disabled(True)
        agent = agents.Agent(name="weather", instructions="Use the tool.", tools=[get_weather],
                             model=agents.OpenAIResponsesModel(model="gpt-5-mini", openai_client=client))
        result = await agents.Runner.run(agent, "Weather in Paris?")
        assert calls == ["Paris"] and "sunny" in result.final_output
        assert running.runtime.writer is not None and running.runtime.writer.flush(30)
        metrics = await scrape(running.admin_url)
    finally:
        await client.close()
        await running.stop()
        await fake_runner.cleanup()
    assert fake.created == 2
    con = duckdb.connect(settings.db)
    rows = con.execute("SELECT status, function_calls, tool_names::VARCHAR, total_tokens > 0, tool_wait_at "
                       "FROM responses ORDER BY created_at").fetchall()
    con.close()
    assert [r[:4] for r in rows] == [("completed", 1, '["get_weather"]', True), ("completed", 0, None, True)]
    assert rows[0][4] is None  # the round was closed by the request that carried the output
    assert metrics.get("runtap_responses_finished_total") == 2
    assert metrics.get("runtap_response_tool_turnaround_seconds_count") == 1
