"""The simulator's Responses API, driven by the real `openai` SDK and checked against the OpenAPI spec."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
import yaml
from runtap.demo.sim import SimConfig, start_sim
from runtap.demo.sim.responses_stream import _slices

from tests.test_sim import V2_SPEC, Spec

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    "strict": True,
}
LONG_INPUT = "Tell me about the sea. " * 250  # ~1,400 tokens: past the 1,024 where caching starts


class Clock:
    """The simulator's time, moved by the test: a background response's lifecycle without waiting."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.25

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def spec() -> Spec:
    return Spec(V2_SPEC, getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@pytest.fixture(scope="module")
def event_schemas(spec: Spec) -> dict[str, str]:
    """Event type -> its schema name, from the spec's ResponseStreamEvent union."""
    out = {}
    for ref in spec.components["schemas"]["ResponseStreamEvent"]["anyOf"]:
        name = ref["$ref"].rsplit("/", 1)[1]
        out[spec.components["schemas"][name]["properties"]["type"]["enum"][0]] = name
    return out


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    runner, url = await start_sim(SimConfig())
    yield url
    await runner.cleanup()


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
    yield sdk
    await sdk.close()


async def _raw(client: openai.AsyncOpenAI, **kwargs: Any) -> dict[str, Any]:
    raw = await client.responses.with_raw_response.create(**kwargs)
    body: dict[str, Any] = raw.http_response.json()
    return body


async def _sse(base_url: str, path: str, body: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The raw events of a stream: (event name, payload), as the bytes say."""
    headers = {"Authorization": "Bearer sk-test"}
    async with aiohttp.ClientSession() as session:
        call = session.post(base_url + path, json=body, headers=headers) if body is not None else \
            session.get(base_url + path, headers=headers)
        async with call as resp:
            assert resp.status == 200 and resp.content_type == "text/event-stream"
            text = (await resp.read()).decode()
    assert "[DONE]" not in text  # the Responses API ends a stream without a sentinel
    events = []
    for frame in text.split("\n\n"):
        if frame.strip():
            name_line, data_line = frame.split("\n")
            payload = json.loads(data_line.removeprefix("data: "))
            assert name_line == f"event: {payload['type']}"
            events.append(payload)
    return events


def _check_events(events: list[dict[str, Any]], spec: Spec, event_schemas: dict[str, str], first: int = 0) -> None:
    assert [e["sequence_number"] for e in events] == list(range(first, first + len(events)))
    for event in events:
        spec.validate(event_schemas[event["type"]], event)


async def test_create_plain_matches_the_spec(client: openai.AsyncOpenAI, spec: Spec) -> None:
    body = await _raw(client, model="gpt-4o-mini", input="What is the weather in Paris?",
                      metadata={"team": "a"}, max_output_tokens=500)
    spec.validate("Response", body)
    assert body["status"] == "completed" and body["background"] is False
    assert body["completed_at"] >= body["created_at"] and body["metadata"] == {"team": "a"}
    usage = body["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
    response = await client.responses.retrieve(body["id"])
    assert response.output_text.startswith("You asked: 'What is the weather in Paris?'")
    assert response.usage is not None and response.usage.output_tokens == usage["output_tokens"]


async def test_stream_events_are_the_specs_numbered_from_zero(
        client: openai.AsyncOpenAI, base_url: str, spec: Spec, event_schemas: dict[str, str]) -> None:
    events = await _sse(base_url, "/responses", {"model": "gpt-4o", "input": "Say hi.", "stream": True})
    _check_events(events, spec, event_schemas)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") >= 5
    final = events[-1]["response"]
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert final["output"][0]["content"][0]["text"] == text
    # The SDK's stream helper reads the same thing.
    async with client.responses.stream(model="gpt-4o", input="Say hi.") as stream:
        seen = [event.type async for event in stream]
        done = await stream.get_final_response()
    assert seen == kinds and done.status == "completed" and done.output_text == text
    # Once its stream is over, a poll of the stored response gives the stream's final object.
    raw = await client.responses.with_raw_response.retrieve(final["id"])
    assert raw.http_response.json() == final


def test_stream_bytes_are_written_in_uneven_slices() -> None:
    data = bytes(range(256)) * 20
    pieces = _slices(data, random.Random(7), SimConfig().sse_max_chunk)  # noqa: S311
    assert b"".join(pieces) == data
    assert len({len(p) for p in pieces}) > 10 and max(len(p) for p in pieces) <= SimConfig().sse_max_chunk


async def _http_chunks(config: SimConfig) -> list[bytes]:
    """A stream's HTTP chunks: one per write of the server's, whatever TCP made of them."""
    runner, url = await start_sim(config)
    chunks: list[bytes] = []
    try:
        async with aiohttp.ClientSession() as session, session.post(
                url + "/responses", json={"model": "gpt-4o", "input": "x", "stream": True},
                headers={"Authorization": "Bearer k"}) as resp:
            part = b""
            async for data, end_of_chunk in resp.content.iter_chunks():
                part += data
                if end_of_chunk:
                    chunks.append(part)
                    part = b""
    finally:
        await runner.cleanup()
    return [c for c in chunks if c]


async def test_stream_writes_split_events_anywhere_unless_asked_not_to() -> None:
    uneven = await _http_chunks(SimConfig())
    assert len({len(c) for c in uneven}) > 5 and max(len(c) for c in uneven) <= SimConfig().sse_max_chunk
    assert any(b"\n\n" not in c for c in uneven) and not all(c.startswith(b"event: ") for c in uneven)
    whole = await _http_chunks(SimConfig(sse_max_chunk=0))
    assert whole and all(c.startswith(b"event: ") and c.count(b"\n\n") == 1 for c in whole)


async def test_background_lifecycle_follows_the_clock(spec: Spec) -> None:
    clock = Clock()
    runner, url = await start_sim(SimConfig(queued_s=2.0, step_s=3.0), clock=clock)
    sdk = openai.AsyncOpenAI(base_url=url, api_key="sk-test", max_retries=0)
    try:
        created = await sdk.responses.create(model="gpt-4o", input="Think in the background.", background=True)
        assert created.status == "queued" and created.background is True and created.usage is None
        seen = [created.status]
        for step in (1.0, 1.5, 1.0, 2.0):
            clock.now += step
            polled = await sdk.responses.retrieve(created.id)
            seen.append(polled.status)
        assert seen == ["queued", "queued", "in_progress", "in_progress", "completed"]
        raw = await sdk.responses.with_raw_response.retrieve(created.id)
        body = raw.http_response.json()
        spec.validate("Response", body)
        assert body["completed_at"] == int(created.created_at + 5)
    finally:
        await sdk.close()
        await runner.cleanup()


async def test_a_background_stream_resumes_after_any_sequence_number(
        client: openai.AsyncOpenAI, base_url: str, spec: Spec, event_schemas: dict[str, str]) -> None:
    stream = await client.responses.create(model="gpt-4o", input="Stream, then reconnect.", background=True,
                                           stream=True)
    first: list[Any] = []
    async for event in stream:
        first.append(event)
        if len(first) == 4:
            break
    await stream.close()  # the connection drops; a background response carries on
    assert [e.sequence_number for e in first] == [0, 1, 2, 3]
    rid = first[0].response.id
    resumed = await client.responses.retrieve(rid, stream=True, starting_after=3)
    tail = [event async for event in resumed]
    assert [e.sequence_number for e in tail] == list(range(4, 4 + len(tail)))
    assert tail[-1].type == "response.completed" and tail[-1].response.status == "completed"
    # A replay from the start gives the same events, each valid against the spec.
    full = await _sse(base_url, f"/responses/{rid}?stream=true")
    _check_events(full, spec, event_schemas)
    assert [e["type"] for e in full[:3]] == ["response.created", "response.queued", "response.in_progress"]
    assert full[0]["response"]["status"] == "queued"
    assert [e["type"] for e in full[4:]] == [e.type for e in tail]
    assert (await _sse(base_url, f"/responses/{rid}?stream=true&starting_after={len(full) - 2}"))[0] == full[-1]


async def test_only_background_responses_stream_again(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model="gpt-4o", input="hi")
    with pytest.raises(openai.BadRequestError):
        await client.responses.retrieve(response.id, stream=True)


async def test_cancel_a_background_response(client: openai.AsyncOpenAI, spec: Spec) -> None:
    slow = await client.responses.create(model="gpt-4o", input="Take your time.", background=True,
                                         metadata={"sim_scenario": "slow"})
    cancelled = await client.responses.cancel(slow.id)
    assert cancelled.status == "cancelled"
    assert (await client.responses.retrieve(slow.id)).status == "cancelled"
    raw = await client.responses.with_raw_response.cancel(slow.id)  # idempotent
    spec.validate("Response", raw.http_response.json())
    assert raw.http_response.json()["status"] == "cancelled"
    done = await client.responses.create(model="gpt-4o", input="quick")
    with pytest.raises(openai.BadRequestError, match="background"):
        await client.responses.cancel(done.id)


async def test_function_tool_round_trip_with_previous_response_id(client: openai.AsyncOpenAI, spec: Spec) -> None:
    first = await _raw(client, model="gpt-4o-mini", input="What is the weather in Paris?", tools=[WEATHER])
    spec.validate("Response", first)
    assert first["status"] == "completed"
    (call,) = first["output"]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Paris", "unit": "c"}
    with pytest.raises(openai.BadRequestError, match="No tool output found"):
        await client.responses.create(model="gpt-4o-mini", previous_response_id=first["id"], input="and?",
                                      tools=[WEATHER])
    second = await _raw(client, model="gpt-4o-mini", previous_response_id=first["id"], tools=[WEATHER],
                        input=[{"type": "function_call_output", "call_id": call["call_id"], "output": "21 C"}])
    spec.validate("Response", second)
    assert second["previous_response_id"] == first["id"] and second["status"] == "completed"
    assert second["output"][0]["type"] == "message" and "21 C" in second["output"][0]["content"][0]["text"]
    # The second turn re-reads the first: its input counts the first's input and output.
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"] + first["usage"]["output_tokens"]
    with pytest.raises(openai.BadRequestError, match="No tool call found"):
        await client.responses.create(model="gpt-4o-mini", input=[
            {"type": "function_call_output", "call_id": "call_unknown", "output": "x"}])


async def test_a_conversation_groups_turns(client: openai.AsyncOpenAI, spec: Spec) -> None:
    conversation = await client.conversations.create(metadata={"topic": "sea"})
    raw = await client.conversations.with_raw_response.retrieve(conversation.id)
    spec.validate("ConversationResource", raw.http_response.json())
    one = await client.responses.create(model="gpt-4o", input="First question.", conversation=conversation.id)
    two = await _raw(client, model="gpt-4o", input="Second question.", conversation={"id": conversation.id})
    spec.validate("Response", two)
    assert one.conversation is not None and one.conversation.id == conversation.id
    assert two["conversation"] == {"id": conversation.id}
    assert one.usage is not None
    assert two["usage"]["input_tokens"] > one.usage.input_tokens + one.usage.output_tokens
    items = await client.conversations.items.list(conversation.id, order="asc")
    assert [i.type for i in items.data] == ["message"] * 4
    with pytest.raises(openai.BadRequestError, match="Mutually exclusive"):
        await client.responses.create(model="gpt-4o", input="x", conversation=conversation.id,
                                      previous_response_id=one.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="gpt-4o", input="x", conversation="conv_missing")


async def test_a_function_call_answered_in_its_conversation(client: openai.AsyncOpenAI) -> None:
    conversation = await client.conversations.create()
    asked = await client.responses.create(model="gpt-4o", input="Weather in Rome?", tools=[WEATHER],  # type: ignore[list-item]
                                          conversation=conversation.id)
    (call,) = asked.output
    assert call.type == "function_call"
    with pytest.raises(openai.BadRequestError, match=call.call_id):
        await client.responses.create(model="gpt-4o", input="never mind", conversation=conversation.id)
    answered = await client.responses.create(
        model="gpt-4o", conversation=conversation.id, tools=[WEATHER],  # type: ignore[list-item]
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18 C"}])
    assert answered.status == "completed" and "18 C" in answered.output_text
    items = await client.conversations.items.list(conversation.id, order="asc")
    assert [i.type for i in items.data] == ["message", "function_call", "function_call_output", "message"]


async def test_input_items_list_and_delete(client: openai.AsyncOpenAI, spec: Spec) -> None:
    response = await client.responses.create(model="gpt-4o", input=[
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "input_text", "text": "Hello there"}]}])
    raw = await client.responses.input_items.with_raw_response.list(response.id)
    body = raw.http_response.json()
    spec.validate("ResponseItemList", body)
    assert [(i["role"], i["content"][0]["text"]) for i in body["data"]] == [
        ("user", "Hello there"), ("developer", "Be brief.")]  # newest first by default
    page = await client.responses.input_items.list(response.id, order="asc", limit=1)
    assert [i.id for i in page.data] == [body["data"][1]["id"]] and page.has_more
    await client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError, match=response.id):
        await client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.delete(response.id)


async def test_reasoning_cached_incomplete_and_failed(client: openai.AsyncOpenAI, spec: Spec) -> None:
    reasoning = await _raw(client, model="o4-mini", input="Why is the sky blue?",
                           reasoning={"effort": "high", "summary": "auto"})
    spec.validate("Response", reasoning)
    assert [i["type"] for i in reasoning["output"]] == ["reasoning", "message"]
    assert reasoning["output"][0]["summary"][0]["type"] == "summary_text"
    details = reasoning["usage"]["output_tokens_details"]
    assert details["reasoning_tokens"] == 512 < reasoning["usage"]["output_tokens"]

    long = await _raw(client, model="gpt-4o", input=LONG_INPUT)
    follow = await _raw(client, model="gpt-4o", input="And the ocean?", previous_response_id=long["id"])
    repeat = await _raw(client, model="gpt-4o", input=LONG_INPUT)
    assert long["usage"]["input_tokens_details"]["cached_tokens"] == 0
    for body in (follow, repeat):
        spec.validate("Response", body)
        hit = body["usage"]["input_tokens_details"]["cached_tokens"]
        assert 1024 <= hit <= body["usage"]["input_tokens"] and hit % 128 == 0

    cut = await _raw(client, model="gpt-4o", input="Explain everything.", max_output_tokens=16,
                     metadata={"sim_scenario": "long"})
    spec.validate("Response", cut)
    assert cut["status"] == "incomplete" and cut["incomplete_details"] == {"reason": "max_output_tokens"}
    assert cut["usage"]["output_tokens"] == 16 and cut["output"][0]["status"] == "incomplete"
    thought_out = await _raw(client, model="o3", input="Hard one.", max_output_tokens=100,
                             reasoning={"effort": "medium"})
    assert thought_out["status"] == "incomplete"
    assert thought_out["usage"]["output_tokens_details"]["reasoning_tokens"] == 100
    assert [i["type"] for i in thought_out["output"]] == ["reasoning"]

    failed = await _raw(client, model="gpt-4o", input="x",
                        metadata={"sim_scenario": "fail", "sim_error_code": "rate_limit_exceeded"})
    spec.validate("Response", failed)
    assert failed["status"] == "failed" and failed["error"]["code"] == "rate_limit_exceeded"


async def test_failed_and_incomplete_streams_end_with_their_events(
        base_url: str, spec: Spec, event_schemas: dict[str, str]) -> None:
    failed = await _sse(base_url, "/responses", {"model": "gpt-4o", "input": "x", "stream": True,
                                                 "metadata": {"sim_scenario": "fail"}})
    _check_events(failed, spec, event_schemas)
    assert failed[-1]["type"] == "response.failed" and failed[-1]["response"]["error"]["code"] == "server_error"
    errored = await _sse(base_url, "/responses", {"model": "gpt-4o", "input": "x", "stream": True, "metadata": {
        "sim_scenario": "stream_error", "sim_error_code": "invalid_prompt"}})
    _check_events(errored, spec, event_schemas)
    assert [e["type"] for e in errored[-2:]] == ["error", "response.failed"]
    assert errored[-2]["code"] == errored[-1]["response"]["error"]["code"] == "invalid_prompt"
    cut = await _sse(base_url, "/responses", {"model": "gpt-4o", "input": "x", "stream": True,
                                              "max_output_tokens": 16, "metadata": {"sim_scenario": "long"}})
    _check_events(cut, spec, event_schemas)
    assert cut[-1]["type"] == "response.incomplete"
    tools = await _sse(base_url, "/responses", {"model": "gpt-4o", "input": "Weather in Oslo?", "stream": True,
                                                "tools": [WEATHER]})
    _check_events(tools, spec, event_schemas)
    assert "response.function_call_arguments.done" in [e["type"] for e in tools]
    long = await _sse(base_url, "/responses", {"model": "gpt-4o", "input": "x", "stream": True,
                                               "metadata": {"sim_scenario": "long"}})
    assert [e["type"] for e in long].count("response.output_text.delta") >= 200


@pytest.mark.parametrize("kwargs, match", [
    ({"model": "gpt-4o", "input": "x", "extra_body": {"bogus": 1}}, "Unknown parameter: 'bogus'"),
    ({"input": "x", "extra_body": {"model": None}}, "Missing required parameter: 'model'"),
    ({"model": "gpt-4o", "input": "x", "max_output_tokens": 4}, "max_output_tokens"),
    ({"model": "gpt-4o", "input": "x", "reasoning": {"effort": "low"}}, "reasoning.effort"),
    ({"model": "gpt-4o", "input": "x", "background": True, "store": False}, "store"),
    ({"model": "gpt-4o", "input": 5}, "input"),
])
async def test_bad_requests_are_400s(client: openai.AsyncOpenAI, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(openai.BadRequestError, match=match) as caught:
        await client.responses.create(**kwargs)
    assert caught.value.status_code == 400


async def test_store_false_responses_are_not_kept(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model="gpt-4o", input="x", store=False)
    assert response.status == "completed" and response.store is False
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)


async def test_azure_prefixes() -> None:
    runner, url = await start_sim(SimConfig(prefix="/openai"))
    origin = url.removesuffix("/openai")
    try:
        sdk = openai.AsyncOpenAI(base_url=origin + "/openai/v1", api_key="k", max_retries=0)
        response = await sdk.responses.create(model="gpt-4o", input="hi")
        assert (await sdk.responses.retrieve(response.id)).status == "completed"
        await sdk.close()
        async with aiohttp.ClientSession() as session, session.post(
                origin + "/openai/responses?api-version=2025-04-01-preview", headers={"api-key": "k"},
                json={"model": "gpt-4o", "input": "hi"}) as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "completed"
    finally:
        await runner.cleanup()
