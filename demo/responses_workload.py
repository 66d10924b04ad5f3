"""A realistic Responses API workload driven with the real `openai` SDK: used by `runtap demo` and tests.

One round covers every lifecycle the API has: plain and streamed creates, a background response
polled to its end, a background stream dropped and resumed, a cancel, a function-tool round trip
over `previous_response_id`, a two-turn conversation, a reasoning model, a long prompt re-read from
the cache, a cut-off (`incomplete`) and a failed response, input items, a delete and a 400. Scenarios
go through `metadata.sim_scenario`, which the built-in simulator understands.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import openai
from openai import AsyncOpenAI

from .workload import client_for

WEATHER_FUNCTION: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False},
    "strict": True,
}
LONG_PROMPT = "Summarise the history of sailing, with dates. " * 120  # past the 1,024 tokens caching needs
_TENANTS = ("acme", "globex", "initech")
POLL_S = 0.02


@dataclass
class ResponsesResult:
    responses: dict[str, str] = field(default_factory=dict)  # response id -> final status the SDK saw
    # response id -> (input, cached input, output, reasoning) tokens, as the SDK saw them
    usage: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    calls: int = 0

    def record(self, response: Any) -> Any:
        self.responses[response.id] = response.status
        u = response.usage
        if u is not None:
            self.usage[response.id] = (u.input_tokens, u.input_tokens_details.cached_tokens, u.output_tokens,
                                       u.output_tokens_details.reasoning_tokens)
        return response


def _meta(scenario: str, n: int) -> dict[str, str]:
    return {"sim_scenario": scenario, "tenant": _TENANTS[n % len(_TENANTS)]}


async def _poll(client: AsyncOpenAI, result: ResponsesResult, response: Any) -> Any:
    while response.status in ("queued", "in_progress"):
        await asyncio.sleep(POLL_S)
        response = await client.responses.retrieve(response.id)
        result.calls += 1
    return response


async def _streamed(client: AsyncOpenAI, result: ResponsesResult, model: str) -> None:
    async with client.responses.stream(model=model, input="Stream a short answer.",
                                       metadata=_meta("complete", 1)) as stream:
        async for _event in stream:
            pass
        result.record(await stream.get_final_response())
    result.calls += 1


async def _background(client: AsyncOpenAI, result: ResponsesResult) -> None:
    created = await client.responses.create(model="gpt-4o", input="Work on this in the background.",
                                            background=True, metadata=_meta("complete", 2))
    result.calls += 1
    result.record(await _poll(client, result, created))


async def _resumed(client: AsyncOpenAI, result: ResponsesResult) -> None:
    """A background stream whose connection drops after a few events, resumed where it stopped."""
    stream = await client.responses.create(model="gpt-4o-mini", input="Stream in the background.",
                                           background=True, stream=True, metadata=_meta("complete", 0))
    seen: list[Any] = []
    async for event in stream:
        seen.append(event)
        if len(seen) == 3:
            break
    await stream.close()
    response_id = seen[0].response.id
    resumed = await client.responses.retrieve(response_id, stream=True, starting_after=seen[-1].sequence_number)
    final = None
    async for event in resumed:
        if event.type in ("response.completed", "response.incomplete", "response.failed"):
            final = event.response
    result.calls += 2
    if final is not None:
        result.record(final)


async def _cancelled(client: AsyncOpenAI, result: ResponsesResult) -> None:
    created = await client.responses.create(model="gpt-4o", input="Take your time.", background=True,
                                            metadata=_meta("slow", 1))
    result.record(await client.responses.cancel(created.id))
    result.calls += 2


async def _tool_round_trip(client: AsyncOpenAI, result: ResponsesResult) -> None:
    first = result.record(await client.responses.create(
        model="gpt-4o-mini", input="What is the weather in Paris?", tools=[WEATHER_FUNCTION],  # type: ignore[list-item]
        metadata=_meta("complete", 2)))
    outputs = [{"type": "function_call_output", "call_id": item.call_id, "output": '{"temp_c": 21}'}
               for item in first.output if item.type == "function_call"]
    result.record(await client.responses.create(
        model="gpt-4o-mini", previous_response_id=first.id, input=outputs,  # type: ignore[arg-type]
        tools=[WEATHER_FUNCTION], metadata=_meta("complete", 2)))  # type: ignore[list-item]
    result.calls += 2


async def _conversation(client: AsyncOpenAI, result: ResponsesResult) -> None:
    conversation = await client.conversations.create(metadata={"topic": "demo"})
    for text in ("Hello, who are you?", "And what can you do?"):
        result.record(await client.responses.create(model="gpt-4.1-mini", input=text,
                                                    conversation=conversation.id, metadata=_meta("complete", 0)))
    result.calls += 3


async def _reasoning_and_cache(client: AsyncOpenAI, result: ResponsesResult) -> None:
    result.record(await client.responses.create(model="o4-mini", input="Why is the sky blue?",
                                                reasoning={"effort": "medium", "summary": "auto"},
                                                metadata=_meta("complete", 1)))
    long = result.record(await client.responses.create(model="gpt-4o", input=LONG_PROMPT,
                                                       metadata=_meta("complete", 2)))
    result.record(await client.responses.create(model="gpt-4o", input="Now in one line.",
                                                previous_response_id=long.id, metadata=_meta("complete", 2)))
    result.calls += 3


async def _endings(client: AsyncOpenAI, result: ResponsesResult) -> None:
    result.record(await client.responses.create(model="gpt-4o-mini", input="Tell me everything.",
                                                max_output_tokens=32, metadata=_meta("long", 0)))
    result.record(await client.responses.create(model="gpt-4o", input="This one fails.",
                                                metadata=_meta("fail", 1)))
    result.calls += 2


async def _housekeeping(client: AsyncOpenAI, result: ResponsesResult) -> None:
    """What apps do around responses: list a response's input, delete one, and get a 400 wrong."""
    kept = result.record(await client.responses.create(model="gpt-4o-mini", input="Keep this one short.",
                                                       metadata=_meta("complete", 0)))
    await client.responses.input_items.list(kept.id)
    scratch = result.record(await client.responses.create(model="gpt-4o-mini", input="Scratch, then delete.",
                                                          metadata=_meta("complete", 1)))
    await client.responses.delete(scratch.id)
    result.calls += 4
    with contextlib.suppress(openai.BadRequestError):
        await client.responses.create(model="gpt-4o", input="x", max_output_tokens=1)
        result.errors["unexpected_success"] += 1
    result.errors["BadRequestError"] += 1
    result.calls += 1


async def run_responses_workload(base_url: str, *, rounds: int = 1, api_key: str = "sk-runtap-demo-key",
                                 progress: Callable[[str], None] | None = None,
                                 **client_kwargs: Any) -> ResponsesResult:
    result = ResponsesResult()
    say = progress or (lambda _msg: None)
    async with client_for(base_url, api_key, **client_kwargs) as client:
        for i in range(rounds):
            say(f"responses round {i + 1}/{rounds}: plain, streamed, background, resumed, cancelled,\n"
                "  tool round trip, conversation, reasoning, cached, incomplete, failed")
            result.record(await client.responses.create(model="gpt-4o", input="Say hello.",
                                                        metadata=_meta("complete", i)))
            result.calls += 1
            await _streamed(client, result, "gpt-4o-mini")
            await _background(client, result)
            await _resumed(client, result)
            await _cancelled(client, result)
            await _tool_round_trip(client, result)
            await _conversation(client, result)
            await _reasoning_and_cache(client, result)
            await _endings(client, result)
            await _housekeeping(client, result)
    return result
