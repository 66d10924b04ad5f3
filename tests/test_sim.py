"""The simulated upstream, driven by the real `openai` SDK (and raw HTTP where the SDK hides bytes)."""

from __future__ import annotations

import asyncio
import gzip
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import openai
import pytest
import yaml
from runtap.demo.sim import SimConfig, start_sim

from tests import spec_files

# The SDK's @deprecated wrappers warn "deprecated" attributed to the caller (this module), which the
# pyproject filters (module openai.*, or "The Assistants API is deprecated") do not match.
pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")

V2_SPEC = spec_files.v2_spec()
V1_SPEC = spec_files.v1_spec()
V1 = {"OpenAI-Beta": "assistants=v1"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["location", "unit"],
        },
    },
}


# -- spec schemas ----------------------------------------------------------------------------------


class _LenientLoader(yaml.SafeLoader):
    """The v1 spec repeats YAML anchors (see tests/data/openai-openapi/README.md); let a later one win."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if not self.check_event(yaml.events.AliasEvent):
            anchor = getattr(self.peek_event(), "anchor", None)
            if anchor is not None:
                self.anchors.pop(anchor, None)
        return super().compose_node(parent, index)


def _to_jsonschema(node: Any) -> Any:
    # The spec mixes OpenAPI 3.0's `nullable: true` into 3.1 schemas; JSON Schema spells it `null`.
    if isinstance(node, list):
        return [_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _to_jsonschema(value) for key, value in node.items() if key != "nullable"}
    return {"anyOf": [out, {"type": "null"}]} if node.get("nullable") is True else out


class Spec:
    def __init__(self, path: Path, loader: type[yaml.SafeLoader]) -> None:
        with path.open() as handle:
            document = yaml.load(handle, Loader=loader)  # noqa: S506 - SafeLoader subclasses
        self.components = {"schemas": _to_jsonschema(document["components"]["schemas"])}

    def validate(self, name: str, instance: Any) -> None:
        schema = {"$ref": f"#/components/schemas/{name}", "components": self.components}
        jsonschema.Draft202012Validator(schema).validate(instance)


@pytest.fixture(scope="module")
def v2_spec() -> Spec:
    return Spec(V2_SPEC, getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@pytest.fixture(scope="module")
def v1_spec() -> Spec:
    return Spec(V1_SPEC, _LenientLoader)


# -- fixtures --------------------------------------------------------------------------------------


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


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": "Bearer sk-test", "OpenAI-Beta": "assistants=v2"}
    async with aiohttp.ClientSession(base_url + "/", headers=headers, auto_decompress=False) as session:
        yield session


async def _assistant(client: openai.AsyncOpenAI, **kwargs: Any) -> Any:
    return await client.beta.assistants.create(model="gpt-4o-mini", instructions="Be brief.", **kwargs)


async def _thread(
    client: openai.AsyncOpenAI, text: str = "What is the weather in Paris?", **kwargs: Any
) -> Any:
    return await client.beta.threads.create(messages=[{"role": "user", "content": text}], **kwargs)


def _raw(response: Any) -> Any:
    return json.loads(response.http_response.content)


def _squeeze(names: list[str]) -> list[str]:
    return [name for i, name in enumerate(names) if i == 0 or name != names[i - 1]]


async def _json(resp: aiohttp.ClientResponse) -> Any:
    body = await resp.read()
    return json.loads(gzip.decompress(body) if resp.headers.get("Content-Encoding") == "gzip" else body)


def _events(raw_sse: str) -> Iterator[tuple[str, str]]:
    for block in raw_sse.split("\n\n"):
        if block:
            event, data = block.split("\n")
            assert event.startswith("event: ") and data.startswith("data: "), block
            yield event.removeprefix("event: "), data.removeprefix("data: ")


# -- lifecycle -------------------------------------------------------------------------------------


async def test_create_and_poll_completes_with_usage_and_reply(client: openai.AsyncOpenAI) -> None:
    assistant = await _assistant(client)
    thread = await _thread(client, "hello simulator")
    run = await client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)

    assert run.status == "completed"
    assert run.model == "gpt-4o-mini" and run.instructions == "Be brief."
    assert run.usage is not None and run.usage.prompt_tokens > 0 and run.usage.completion_tokens > 0
    assert run.usage.total_tokens == run.usage.prompt_tokens + run.usage.completion_tokens
    assert run.started_at is not None and run.completed_at is not None and run.expires_at is None
    assert run.created_at <= run.started_at <= run.completed_at
    messages = await client.beta.threads.messages.list(thread_id=thread.id, order="asc")
    assert [m.role for m in messages.data] == ["user", "assistant"]
    reply = messages.data[1]
    assert reply.run_id == run.id and reply.status == "completed"
    assert "hello simulator" in reply.content[0].text.value  # type: ignore[union-attr]


async def test_usage_is_deterministic(client: openai.AsyncOpenAI) -> None:
    assistant = await _assistant(client)
    usages = []
    for _ in range(2):
        thread = await _thread(client, "same question")
        run = await client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
        usages.append(run.usage)
    assert usages[0] == usages[1]


async def test_tool_call_requires_action_then_completes(client: openai.AsyncOpenAI) -> None:
    assistant = await _assistant(client, tools=[WEATHER_TOOL], metadata={"sim_scenario": "tool_call"})
    thread = await _thread(client)
    run = await client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)

    assert run.status == "requires_action" and run.usage is None
    assert run.required_action is not None
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [c.function.name for c in calls] == ["get_current_weather"]
    assert json.loads(calls[0].function.arguments) == {"location": "San Francisco, CA", "unit": "c"}

    outputs = [{"tool_call_id": calls[0].id, "output": "22C and sunny"}]
    run = await client.beta.threads.runs.submit_tool_outputs_and_poll(
        thread_id=thread.id, run_id=run.id, tool_outputs=outputs
    )
    assert run.status == "completed" and run.required_action is None and run.usage is not None
    steps = await client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc")
    assert [(s.type, s.status) for s in steps.data] == [
        ("tool_calls", "completed"),
        ("message_creation", "completed"),
    ]
    tool_call = steps.data[0].step_details.tool_calls[0]  # type: ignore[union-attr]
    assert tool_call.function.output == "22C and sunny"  # type: ignore[union-attr]
    assert sum(s.usage.total_tokens for s in steps.data if s.usage) == run.usage.total_tokens
    last = (await client.beta.threads.messages.list(thread_id=thread.id, limit=1)).data[0]
    assert "22C and sunny" in last.content[0].text.value  # type: ignore[union-attr]


async def test_submit_tool_outputs_rejects_wrong_ids_and_wrong_status(client: openai.AsyncOpenAI) -> None:
    assistant = await _assistant(client)
    thread = await _thread(client)
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, metadata={"sim_scenario": "tool_call"}
    )
    with pytest.raises(openai.BadRequestError, match="Expected tool outputs for call_ids"):
        await client.beta.threads.runs.submit_tool_outputs(
            thread_id=thread.id, run_id=run.id, tool_outputs=[{"tool_call_id": "call_nope", "output": "x"}]
        )
    with pytest.raises(openai.BadRequestError, match="already has an active run"):
        await client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    with pytest.raises(openai.BadRequestError, match="while a run"):
        await client.beta.threads.messages.create(thread_id=thread.id, role="user", content="more")
    await client.beta.threads.runs.cancel(thread_id=thread.id, run_id=run.id)
    run = await client.beta.threads.runs.poll(thread_id=thread.id, run_id=run.id)
    assert run.status == "cancelled"
    with pytest.raises(openai.BadRequestError, match='Runs in status "cancelled" do not accept tool outputs'):
        await client.beta.threads.runs.submit_tool_outputs(
            thread_id=thread.id, run_id=run.id, tool_outputs=[]
        )


async def test_fail_scenarios_set_last_error(client: openai.AsyncOpenAI) -> None:
    assistant = await _assistant(client)
    for code in ("server_error", "rate_limit_exceeded", "invalid_prompt"):
        thread = await _thread(client)
        meta = (
            {"sim_scenario": "fail"}
            if code == "server_error"
            else {"sim_scenario": "fail", "sim_error_code": code}
        )
        run = await client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, metadata=meta
        )
        assert run.status == "failed" and run.failed_at is not None and run.completed_at is None
        assert run.last_error is not None and run.last_error.code == code and run.last_error.message
        assert run.usage is not None
        steps = await client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id)
        if code == "invalid_prompt":
            assert steps.data == []
        else:
            assert [s.status for s in steps.data] == ["failed"]
            assert steps.data[0].last_error is not None and steps.data[0].last_error.code == code


async def test_incomplete_scenario_and_token_caps(client: openai.AsyncOpenAI) -> None:
    assistant = await _assistant(client)
    thread = await _thread(client)
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        max_completion_tokens=256,
        metadata={"sim_scenario": "incomplete"},
    )
    assert run.status == "incomplete" and run.completed_at is not None
    assert run.incomplete_details is not None and run.incomplete_details.reason == "max_completion_tokens"
    assert run.usage is not None and run.usage.completion_tokens == 256
    reply = (await client.beta.threads.messages.list(thread_id=thread.id, limit=1)).data[0]
    assert reply.status == "incomplete" and reply.incomplete_details is not None

    # No scenario needed: a prompt longer than max_prompt_tokens ends the run the same way.
    thread = await _thread(client, "tell me everything " * 100)
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, max_prompt_tokens=256
    )
    assert run.status == "incomplete"
    assert run.incomplete_details is not None and run.incomplete_details.reason == "max_prompt_tokens"
    assert run.usage is not None and run.usage.prompt_tokens == 256

    with pytest.raises(openai.BadRequestError, match="Expected a value >= 256"):
        await client.beta.threads.runs.create(
            thread_id=thread.id, assistant_id=assistant.id, max_prompt_tokens=10
        )


async def test_expire_scenario(client: openai.AsyncOpenAI) -> None:
    assistant = await _assistant(client, metadata={"sim_scenario": "expire"})
    thread = await _thread(client)
    run = await client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    # The run waits on tool outputs until its (short) deadline; a poll delayed past it on a loaded
    # machine sees it expired already, which is the outcome under test too.
    assert run.status in ("requires_action", "expired")
    if run.status == "requires_action":
        assert run.expires_at is not None
    deadline = time.monotonic() + 5
    while run.status == "requires_action" and time.monotonic() < deadline:
        await asyncio.sleep(0.02)  # polling, as the SDK's poll helper does, until the run's deadline passes
        run = await client.beta.threads.runs.retrieve(thread_id=thread.id, run_id=run.id)
    assert run.status == "expired"
    steps = await client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id)
    assert [(s.status, s.expired_at is not None) for s in steps.data] == [("expired", True)]


# -- streaming -------------------------------------------------------------------------------------

COMPLETE_EVENTS = [
    "thread.run.created",
    "thread.run.queued",
    "thread.run.in_progress",
    "thread.run.step.created",
    "thread.run.step.in_progress",
    "thread.message.created",
    "thread.message.in_progress",
    "thread.message.delta",  # several in a row, see _squeeze
    "thread.message.completed",
    "thread.run.step.completed",
    "thread.run.completed",
]


async def test_stream_helper_matches_what_polling_sees(client: openai.AsyncOpenAI) -> None:
    assistant = await _assistant(client)
    thread = await _thread(client, "stream please")
    texts: list[str] = []

    class Handler(openai.AsyncAssistantEventHandler):
        async def on_text_delta(self, delta: Any, snapshot: Any) -> None:
            texts.append(delta.value)

    async with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant.id, event_handler=Handler()
    ) as stream:
        seen = [event.event async for event in stream]
        final = await stream.get_final_run()
        messages = await stream.get_final_messages()

    assert _squeeze(seen) == COMPLETE_EVENTS and seen.count("thread.message.delta") > 1
    assert "".join(texts) == messages[0].content[0].text.value  # type: ignore[union-attr]
    polled = await client.beta.threads.runs.retrieve(thread_id=thread.id, run_id=final.id)
    assert (polled.status, polled.usage, polled.completed_at) == (
        "completed",
        final.usage,
        final.completed_at,
    )
    stored = await client.beta.threads.messages.retrieve(thread_id=thread.id, message_id=messages[0].id)
    assert stored.content == messages[0].content


async def test_stream_true_pauses_at_requires_action_and_resumes(client: openai.AsyncOpenAI) -> None:
    assistant = await _assistant(client, tools=[WEATHER_TOOL])
    stream = await client.beta.threads.create_and_run(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": "weather?"}]},
        metadata={"sim_scenario": "tool_call"},
        stream=True,
    )
    events = [event async for event in stream]
    names = [e.event for e in events]
    assert names[:3] == ["thread.created", "thread.run.created", "thread.run.queued"]
    assert names[-1] == "thread.run.requires_action"
    assert "thread.run.step.delta" in names and "thread.run.completed" not in names
    run = events[-1].data
    call = run.required_action.submit_tool_outputs.tool_calls[0]  # type: ignore[union-attr]
    # The streamed argument fragments add up to the arguments the run asks for.
    fragments = [
        tc.function.arguments
        for e in events
        if e.event == "thread.run.step.delta"
        for tc in e.data.delta.step_details.tool_calls  # type: ignore[union-attr]
        if tc.function and tc.function.arguments
    ]
    assert "".join(fragments) == call.function.arguments

    resumed = await client.beta.threads.runs.submit_tool_outputs(
        thread_id=run.thread_id,
        run_id=run.id,
        tool_outputs=[{"tool_call_id": call.id, "output": "ok"}],
        stream=True,
    )
    names = [event.event async for event in resumed]
    assert names[:3] == ["thread.run.queued", "thread.run.in_progress", "thread.run.step.completed"]
    assert names[-1] == "thread.run.completed"


async def test_cancel_during_stream(client: openai.AsyncOpenAI) -> None:
    assistant = await _assistant(client)
    thread = await _thread(client)
    stream = await client.beta.threads.runs.create(
        thread_id=thread.id, assistant_id=assistant.id, metadata={"sim_scenario": "slow"}, stream=True
    )
    names: list[str] = []
    run_id = ""
    async for event in stream:
        names.append(event.event)
        if event.event == "thread.run.created":
            run_id = event.data.id
        if event.event == "thread.message.delta" and names.count("thread.message.delta") == 1:
            cancelled = await client.beta.threads.runs.cancel(thread_id=thread.id, run_id=run_id)
            assert cancelled.status == "cancelling"
    assert names[-4:] == [
        "thread.run.cancelling",
        "thread.message.incomplete",
        "thread.run.step.cancelled",
        "thread.run.cancelled",
    ]
    run = await client.beta.threads.runs.retrieve(thread_id=thread.id, run_id=run_id)
    assert run.status == "cancelled" and run.cancelled_at is not None and run.completed_at is None
    with pytest.raises(openai.BadRequestError, match="Cannot cancel run with status 'cancelled'"):
        await client.beta.threads.runs.cancel(thread_id=thread.id, run_id=run_id)


async def test_raw_sse_format_and_payloads_match_spec(http: aiohttp.ClientSession, v2_spec: Spec) -> None:
    async with http.post(
        "assistants", json={"model": "gpt-4o"}, headers={"Accept-Encoding": "identity"}
    ) as resp:
        assistant = json.loads(await resp.read())
    schema_of = {
        "thread": "ThreadObject",
        "thread.run": "RunObject",
        "thread.run.step": "RunStepObject",
        "thread.message": "MessageObject",
        "thread.message.delta": "MessageDeltaObject",
        "thread.run.step.delta": "RunStepDeltaObject",
    }
    for scenario in ("code_interpreter", "file_search", "tool_call"):
        body = {
            "assistant_id": assistant["id"],
            "thread": {"messages": [{"role": "user", "content": "hi"}]},
            "metadata": {"sim_scenario": scenario},
            "stream": True,
        }
        async with http.post("threads/runs", json=body, headers={"Accept-Encoding": "gzip"}) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            assert "Content-Encoding" not in resp.headers
            chunks, pending = [], b""
            async for data, end_of_chunk in resp.content.iter_chunks():
                pending += data
                if end_of_chunk:
                    chunks.append(pending.decode())
                    pending = b""
        # One HTTP chunk per event: a relay sees each event as soon as the service emits it.
        assert all(len(list(_events(chunk))) == 1 for chunk in chunks)
        events = list(_events("".join(chunks)))
        assert events[-1] == ("done", "[DONE]")
        for name, data in events[:-1]:
            payload = json.loads(data)
            v2_spec.validate(schema_of[payload["object"]], payload)
            assert name.startswith(payload["object"]) or payload["object"] == "thread.run.step.delta"


# -- reading ---------------------------------------------------------------------------------------


async def test_steps_list_and_retrieve(client: openai.AsyncOpenAI) -> None:
    assistant = await _assistant(client)
    thread = await _thread(client)
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, metadata={"sim_scenario": "code_interpreter"}
    )
    newest_first = await client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id)
    assert [s.type for s in newest_first.data] == ["message_creation", "tool_calls"]
    code = newest_first.data[1]
    assert code.step_details.tool_calls[0].code_interpreter.outputs[0].logs == "3.875\n"  # type: ignore[union-attr]
    one = await client.beta.threads.runs.steps.retrieve(thread_id=thread.id, run_id=run.id, step_id=code.id)
    assert one == code and one.status == "completed" and one.completed_at is not None
    with pytest.raises(openai.NotFoundError):
        await client.beta.threads.runs.steps.retrieve(thread_id=thread.id, run_id=run.id, step_id="step_nope")


async def test_runs_list_pagination(client: openai.AsyncOpenAI) -> None:
    assistant = await _assistant(client)
    thread = await _thread(client)
    ids = []
    for _ in range(5):
        run = await client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
        ids.append(run.id)
    first = await client.beta.threads.runs.list(thread_id=thread.id, limit=2)
    assert [r.id for r in first.data] == ids[::-1][:2] and first.has_more
    raw = _raw(await client.beta.threads.runs.with_raw_response.list(thread_id=thread.id, limit=2))
    assert (raw["object"], raw["first_id"], raw["last_id"], raw["has_more"]) == ("list", ids[4], ids[3], True)
    assert [r.id async for r in client.beta.threads.runs.list(thread_id=thread.id, limit=2)] == ids[::-1]
    asc = await client.beta.threads.runs.list(thread_id=thread.id, order="asc", after=ids[1], limit=10)
    assert [r.id for r in asc.data] == ids[2:] and not asc.has_more
    before = await client.beta.threads.runs.list(thread_id=thread.id, order="asc", before=ids[3], limit=2)
    assert [r.id for r in before.data] == ids[1:3]


async def test_v1_header_gives_v1_shapes(client: openai.AsyncOpenAI, v1_spec: Spec) -> None:
    raw_assistant = _raw(
        await client.beta.assistants.with_raw_response.create(
            model="gpt-4-turbo",
            tools=[{"type": "retrieval"}],
            extra_headers=V1,  # type: ignore[list-item]
        )
    )
    assert "file_ids" in raw_assistant and "tool_resources" not in raw_assistant
    assert raw_assistant["tools"] == [{"type": "retrieval"}]
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "hi"}], extra_headers=V1)
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=raw_assistant["id"],
        metadata={"sim_scenario": "file_search"},
        extra_headers=V1,
    )
    raw_run = _raw(
        await client.beta.threads.runs.with_raw_response.retrieve(
            thread_id=thread.id, run_id=run.id, extra_headers=V1
        )
    )
    assert raw_run["status"] == "completed" and raw_run["file_ids"] == []
    assert "parallel_tool_calls" not in raw_run
    v1_spec.validate("RunObject", raw_run)
    raw_steps = _raw(
        await client.beta.threads.runs.steps.with_raw_response.list(
            thread_id=thread.id, run_id=run.id, order="asc", extra_headers=V1
        )
    )
    for step in raw_steps["data"]:
        v1_spec.validate("RunStepObject", step)
    assert raw_steps["data"][0]["step_details"]["tool_calls"][0]["type"] == "retrieval"
    raw_messages = _raw(
        await client.beta.threads.messages.with_raw_response.list(thread_id=thread.id, extra_headers=V1)
    )
    for message in raw_messages["data"]:
        assert "file_ids" in message and "attachments" not in message
        v1_spec.validate("MessageObject", message)

    # v1 has no `incomplete` status: a capped run completes with its usage held to the cap.
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=raw_assistant["id"],
        max_completion_tokens=256,
        metadata={"sim_scenario": "incomplete"},
        extra_headers=V1,
    )
    assert run.status == "completed" and run.incomplete_details is None
    assert run.usage is not None and run.usage.completion_tokens <= 256


async def test_v2_objects_match_spec(client: openai.AsyncOpenAI, v2_spec: Spec) -> None:
    assistant = await _assistant(
        client, tools=[WEATHER_TOOL, {"type": "file_search"}, {"type": "code_interpreter"}]
    )
    v2_spec.validate(
        "AssistantObject", _raw(await client.beta.assistants.with_raw_response.retrieve(assistant.id))
    )
    for scenario in ("complete", "tool_call", "code_interpreter", "file_search", "fail", "incomplete"):
        thread = await _thread(client)
        v2_spec.validate(
            "ThreadObject", _raw(await client.beta.threads.with_raw_response.retrieve(thread.id))
        )
        run = await client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, metadata={"sim_scenario": scenario}
        )
        raw_runs = _raw(await client.beta.threads.runs.with_raw_response.list(thread_id=thread.id))
        v2_spec.validate("ListRunsResponse", raw_runs)
        steps = _raw(
            await client.beta.threads.runs.steps.with_raw_response.list(thread_id=thread.id, run_id=run.id)
        )
        v2_spec.validate("ListRunStepsResponse", steps)
        messages = _raw(await client.beta.threads.messages.with_raw_response.list(thread_id=thread.id))
        v2_spec.validate("ListMessagesResponse", messages)


# -- errors, headers, encoding ---------------------------------------------------------------------


async def test_unknown_ids_are_404_with_openai_error_body(client: openai.AsyncOpenAI) -> None:
    thread = await _thread(client)
    with pytest.raises(openai.NotFoundError) as caught:
        await client.beta.threads.runs.retrieve(thread_id=thread.id, run_id="run_missing")
    assert caught.value.body == {
        "message": "No run found with id 'run_missing'.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    with pytest.raises(openai.NotFoundError, match="No thread found with id 'thread_missing'"):
        await client.beta.threads.runs.list(thread_id="thread_missing")
    with pytest.raises(openai.NotFoundError, match="No assistant found"):
        await client.beta.threads.runs.create(thread_id=thread.id, assistant_id="asst_missing")


async def test_bad_requests_are_400(client: openai.AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    with pytest.raises(openai.BadRequestError, match="Missing required parameter: 'model'"):
        await client.beta.assistants.create(model=None)  # type: ignore[arg-type]
    assistant = await _assistant(client)
    thread = await _thread(client)
    with pytest.raises(openai.BadRequestError, match="Unknown sim_scenario 'nope'"):
        await client.beta.threads.runs.create(
            thread_id=thread.id, assistant_id=assistant.id, metadata={"sim_scenario": "nope"}
        )
    async with http.post(f"threads/{thread.id}/runs", data=b"{not json") as resp:
        assert resp.status == 400
        assert (await _json(resp))["error"]["type"] == "invalid_request_error"
    async with http.get("vector_stores") as resp:
        assert resp.status == 404
        assert (await _json(resp))["error"]["message"].startswith("Invalid URL (GET ")


async def test_x_sim_status_faults(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        await client.beta.assistants.list(extra_headers={"x-sim-status": "429"})
    headers = caught.value.response.headers
    assert headers["retry-after"] == "1" and headers["x-ratelimit-remaining-requests"] == "0"
    assert caught.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError):
        await client.beta.assistants.list(extra_headers={"x-sim-status": "503"})
    started = time.perf_counter()
    await client.beta.assistants.list(extra_headers={"x-sim-delay-ms": "150"})
    assert time.perf_counter() - started >= 0.15


async def test_openai_headers_on_every_response(client: openai.AsyncOpenAI) -> None:
    first = await client.beta.assistants.with_raw_response.list()
    second = await client.beta.assistants.with_raw_response.list()
    for response in (first, second):
        headers = response.headers
        assert headers["openai-version"] == "2020-10-01"
        assert int(headers["openai-processing-ms"]) >= 0
        assert headers["openai-poll-after-ms"] == "10"
        assert int(headers["x-ratelimit-limit-requests"]) >= int(headers["x-ratelimit-remaining-requests"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_gzip_only_when_accepted_and_large_enough(http: aiohttp.ClientSession) -> None:
    body = {"model": "gpt-4o", "name": "Gzip check", "instructions": "Answer in one short sentence."}
    async with http.post("assistants", json=body, headers={"Accept-Encoding": "gzip"}) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        assistant = json.loads(gzip.decompress(await resp.read()))
    assert assistant["object"] == "assistant"
    async with http.get(f"assistants/{assistant['id']}", headers={"Accept-Encoding": "identity"}) as resp:
        assert "Content-Encoding" not in resp.headers
        assert json.loads(await resp.read()) == assistant
    async with http.delete(f"assistants/{assistant['id']}", headers={"Accept-Encoding": "gzip"}) as resp:
        assert "Content-Encoding" not in resp.headers  # a small body is not worth compressing
        assert json.loads(await resp.read())["deleted"] is True


async def test_azure_style_prefix() -> None:
    runner, url = await start_sim(SimConfig(prefix="/openai"))
    try:
        assert url.endswith("/openai")
        sdk = openai.AsyncOpenAI(
            base_url=url,
            api_key="sk-test",
            max_retries=0,
            default_query={"api-version": "2024-05-01-preview"},
        )
        assistant = await _assistant(sdk)
        thread = await _thread(sdk)
        run = await sdk.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
        assert run.status == "completed"
        await sdk.close()
    finally:
        await runner.cleanup()


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="prefix"):
        SimConfig(prefix="v1/")
    with pytest.raises(ValueError, match="step_s"):
        SimConfig(step_s=-1)


def test_cli_prints_address_and_serves() -> None:
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "runtap.demo.sim", "--host", "127.0.0.1", "--port", "0", "--prefix", "/v1"]
    with subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line.startswith("listening on http://127.0.0.1:")
            sdk = openai.OpenAI(
                base_url=line.removeprefix("listening on ") + "/v1", api_key="sk-test", max_retries=0
            )
            assert sdk.beta.assistants.list().data == []
            sdk.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
