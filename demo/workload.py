"""A realistic Runs workload driven with the real `openai` SDK: used by `runtap demo`, tests and benches.

Scenarios are chosen through run metadata (`sim_scenario`), which the built-in simulated upstream
understands; against a real upstream the same calls simply run the assistant.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import openai
from openai import AsyncOpenAI

V1 = {"OpenAI-Beta": "assistants=v1"}
V2 = {"OpenAI-Beta": "assistants=v2"}

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@dataclass
class WorkloadResult:
    runs: dict[str, str] = field(default_factory=dict)  # run id -> final status the SDK saw
    usage: dict[str, tuple[int, int]] = field(default_factory=dict)  # run id -> (prompt, completion)
    errors: Counter[str] = field(default_factory=Counter)  # expected API errors, by class name
    calls: int = 0
    assistants: dict[tuple[str, str, str], Any] = field(default_factory=dict)

    def record(self, run: Any) -> None:
        self.runs[run.id] = run.status
        if run.usage is not None:
            self.usage[run.id] = (run.usage.prompt_tokens, run.usage.completion_tokens)


def client_for(base_url: str, api_key: str = "sk-runtap-demo-key", **kwargs: Any) -> AsyncOpenAI:
    """An SDK client with no retries: a test or demo must see each upstream answer as it was."""
    return AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, **kwargs)


async def _assistant(client: AsyncOpenAI, result: WorkloadResult, model: str, headers: dict[str, str],
                     name: str, tools: list[dict[str, Any]]) -> Any:
    """Apps create an assistant once and run it many times: reuse one per name, model and API version."""
    key = (name, model, headers.get("OpenAI-Beta", ""))
    if key not in result.assistants:
        result.assistants[key] = await client.beta.assistants.create(
            model=model, name=name, instructions="You are helpful.", tools=tools,  # type: ignore[arg-type]
            extra_headers=headers)
        result.calls += 1
    return result.assistants[key]


_TENANTS = ("acme", "globex", "initech")


def _tags(scenario: str) -> dict[str, str]:
    """Run metadata: the simulator's scenario, and a tenant, as apps tag runs for cost reports
    (`runtap report cost --by metadata.tenant`)."""
    return {"sim_scenario": scenario, "tenant": _TENANTS[len(scenario) % len(_TENANTS)]}


async def _thread(client: AsyncOpenAI, headers: dict[str, str], text: str) -> Any:
    return await client.beta.threads.create(messages=[{"role": "user", "content": text}],
                                            extra_headers=headers)


async def polled_run(client: AsyncOpenAI, result: WorkloadResult, *, model: str, scenario: str,
                     headers: dict[str, str], tools: list[dict[str, Any]] | None = None,
                     **run_kwargs: Any) -> Any:
    a = await _assistant(client, result, model, headers, f"{scenario}-bot", tools or [])
    t = await _thread(client, headers, f"Please do the {scenario} thing for me.")
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=t.id, assistant_id=a.id, metadata=_tags(scenario), extra_headers=headers,
        poll_interval_ms=20, **run_kwargs)
    result.calls += 3
    if run.status == "requires_action" and run.required_action is not None:
        outputs = [{"tool_call_id": c.id, "output": '{"temp_c": 21}'}
                   for c in run.required_action.submit_tool_outputs.tool_calls]
        run = await client.beta.threads.runs.submit_tool_outputs_and_poll(
            run_id=run.id, thread_id=t.id, tool_outputs=outputs, extra_headers=headers,  # type: ignore[arg-type]
            poll_interval_ms=20)
    if any(t.get("type") != "function" for t in tools or []):
        # Apps show what code_interpreter / file_search did by listing the steps: tool fees come from them.
        await client.beta.threads.runs.steps.list(run_id=run.id, thread_id=t.id, extra_headers=headers)
        result.calls += 1
    result.record(run)
    return run


async def streamed_run(client: AsyncOpenAI, result: WorkloadResult, *, model: str, scenario: str,
                       headers: dict[str, str], tools: list[dict[str, Any]] | None = None,
                       **run_kwargs: Any) -> Any:
    a = await _assistant(client, result, model, headers, f"{scenario}-streamer", tools or [])
    t = await _thread(client, headers, f"Stream the {scenario} thing.")
    async with client.beta.threads.runs.stream(
            thread_id=t.id, assistant_id=a.id, metadata=_tags(scenario), extra_headers=headers,
            **run_kwargs) as stream:
        await stream.until_done()
        run = await stream.get_final_run()
    result.calls += 3
    if run.status == "requires_action" and run.required_action is not None:
        outputs = [{"tool_call_id": c.id, "output": "42"}
                   for c in run.required_action.submit_tool_outputs.tool_calls]
        async with client.beta.threads.runs.submit_tool_outputs_stream(
                run_id=run.id, thread_id=t.id, tool_outputs=outputs,  # type: ignore[arg-type]
                extra_headers=headers) as stream2:
            await stream2.until_done()
            run = await stream2.get_final_run()
    result.record(run)
    return run


async def create_and_run_streamed(client: AsyncOpenAI, result: WorkloadResult, *, model: str,
                                  headers: dict[str, str]) -> Any:
    a = await _assistant(client, result, model, headers, "car-bot", [])
    stream = await client.beta.threads.create_and_run(
        assistant_id=a.id, thread={"messages": [{"role": "user", "content": "hello there"}]},
        stream=True, extra_headers=headers)
    final = None
    async for event in stream:
        if event.event.startswith("thread.run.") and not event.event.startswith("thread.run.step"):
            final = event.data
    result.calls += 2
    if final is not None:
        result.record(final)
    return final


async def create_and_run_polled(client: AsyncOpenAI, result: WorkloadResult, *, model: str,
                                headers: dict[str, str]) -> Any:
    a = await _assistant(client, result, model, headers, "car-poll-bot", [])
    run = await client.beta.threads.create_and_run_poll(
        assistant_id=a.id, thread={"messages": [{"role": "user", "content": "hi"}]},
        extra_headers=headers, poll_interval_ms=20)
    result.calls += 3
    result.record(run)
    return run


async def raw_streamed_run(client: AsyncOpenAI, result: WorkloadResult, *, model: str, scenario: str,
                           headers: dict[str, str]) -> Any:
    """`runs.create(stream=True)`: the low-level iterator of server-sent events."""
    a = await _assistant(client, result, model, headers, "raw-streamer", [])
    t = await _thread(client, headers, "stream raw")
    stream = await client.beta.threads.runs.create(thread_id=t.id, assistant_id=a.id, stream=True,
                                                   metadata=_tags(scenario), extra_headers=headers)
    final = None
    async for event in stream:
        if event.event.startswith("thread.run.") and not event.event.startswith("thread.run.step"):
            final = event.data
    result.calls += 3
    if final is not None:
        result.record(final)
    return final


async def cancelled_run(client: AsyncOpenAI, result: WorkloadResult, *, model: str,
                        headers: dict[str, str]) -> Any:
    a = await _assistant(client, result, model, headers, "slow-bot", [])
    t = await _thread(client, headers, "take your time")
    run = await client.beta.threads.runs.create(thread_id=t.id, assistant_id=a.id,
                                                metadata=_tags("slow"), extra_headers=headers)
    await client.beta.threads.runs.cancel(run_id=run.id, thread_id=t.id, extra_headers=headers)
    run = await client.beta.threads.runs.poll(run.id, thread_id=t.id, extra_headers=headers,
                                              poll_interval_ms=20)
    result.calls += 5
    result.record(run)
    return run


async def browse(client: AsyncOpenAI, result: WorkloadResult, run: Any, headers: dict[str, str]) -> None:
    """What dashboards and apps do after a run: list runs and steps, tag the run."""
    await client.beta.threads.runs.list(thread_id=run.thread_id, extra_headers=headers)
    steps = await client.beta.threads.runs.steps.list(run_id=run.id, thread_id=run.thread_id,
                                                      extra_headers=headers)
    for step in steps.data[:1]:
        await client.beta.threads.runs.steps.retrieve(step_id=step.id, run_id=run.id,
                                                      thread_id=run.thread_id, extra_headers=headers)
    await client.beta.threads.runs.update(run_id=run.id, thread_id=run.thread_id,
                                          metadata={**(run.metadata or {}), "reviewed": "yes"},
                                          extra_headers=headers)
    result.calls += 4


async def expected_errors(client: AsyncOpenAI, result: WorkloadResult, thread_id: str,
                          headers: dict[str, str]) -> None:
    with contextlib.suppress(openai.NotFoundError):
        await client.beta.threads.runs.retrieve(run_id="run_does_not_exist", thread_id=thread_id,
                                                extra_headers=headers)
        result.errors["unexpected_success"] += 1
    result.errors["NotFoundError"] += 1
    with contextlib.suppress(openai.RateLimitError):
        await client.beta.threads.runs.list(thread_id=thread_id, extra_headers={**headers,
                                                                               "x-sim-status": "429"})
        result.errors["unexpected_success"] += 1
    result.errors["RateLimitError"] += 1
    result.calls += 2


async def run_workload(base_url: str, *, rounds: int = 1, api_key: str = "sk-runtap-demo-key",
                       progress: Callable[[str], None] | None = None, **client_kwargs: Any) -> WorkloadResult:
    """One round = 11 runs across every lifecycle the API has, over v1 and v2, polled and streamed."""
    result = WorkloadResult()
    say = progress or (lambda _msg: None)
    async with client_for(base_url, api_key, **client_kwargs) as client:
        for i in range(rounds):
            say(f"round {i + 1}/{rounds}: polled, tool-call, streamed, v1, failed, incomplete, cancelled runs")
            done = await polled_run(client, result, model="gpt-4o", scenario="complete", headers=V2)
            await polled_run(client, result, model="gpt-4o-mini", scenario="tool_call", headers=V2,
                             tools=[WEATHER_TOOL])
            await polled_run(client, result, model="gpt-4o", scenario="code_interpreter", headers=V2,
                             tools=[{"type": "code_interpreter"}])
            await polled_run(client, result, model="gpt-4-turbo", scenario="complete", headers=V1)
            await polled_run(client, result, model="gpt-4-turbo", scenario="file_search", headers=V1,
                             tools=[{"type": "retrieval"}])
            await polled_run(client, result, model="gpt-4o", scenario="fail", headers=V2)
            await polled_run(client, result, model="gpt-4o-mini", scenario="incomplete", headers=V2,
                             max_completion_tokens=256)
            await streamed_run(client, result, model="gpt-4o-mini", scenario="complete", headers=V2)
            await streamed_run(client, result, model="gpt-4o", scenario="tool_call", headers=V2,
                               tools=[WEATHER_TOOL])
            await create_and_run_streamed(client, result, model="gpt-4.1-mini", headers=V2)
            await cancelled_run(client, result, model="gpt-4o", headers=V2)
            await browse(client, result, done, V2)
            await expected_errors(client, result, done.thread_id, V2)
    return result
