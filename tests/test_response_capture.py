from __future__ import annotations

import gzip
from typing import Any

import duckdb
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtap.analytics.ingest.decode import CaptureDecoder
from runtap.analytics.ingest.records import Exchange, RequestBody, ResponseBody, Snapshot, StreamChunk, StreamEnd
from runtap.analytics.ingest.store import Store

from tests import response_factory as rf

FUZZ = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])


def exchange(op: str = "responses.create", *, xid: str = "ex1", path: str = "/v1/responses",
             encoding: str | None = None, method: str = "POST") -> Exchange:
    return Exchange(id=xid, method=method, path=path, operation=op, api_version=None,
                    key_fingerprint="abc123def456", started_at=1000.0, content_encoding=encoding)


FINAL = rf.response("resp_1", output=[rf.function_call(), rf.message("The weather in Paris is mild.")])
EVENTS = rf.stream_events(FINAL, deltas=6)
STREAM = rf.stream_bytes(EVENTS)


def feed(dec: CaptureDecoder, chunks: list[bytes], ex: Exchange | None = None) -> list[Snapshot]:
    ex = ex or exchange()
    out: list[Snapshot] = []
    for i, chunk in enumerate(chunks):
        out += dec.decode(StreamChunk(ex, chunk, received_at=2000.0 + i))
    out += dec.decode(StreamEnd(ex, complete=True))
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def summary(snaps: list[Snapshot]) -> list[tuple[str, Any, int]]:
    return [(s.kind, s.obj.get("status"), len(s.obj.get("output") or [])) for s in snaps]


EXPECTED = [("response", "in_progress", 0), ("response", "in_progress", 0), ("response", "in_progress", 1),
            ("response", "in_progress", 2), ("response", "completed", 2)]


def test_stream_gives_state_and_finished_item_snapshots() -> None:
    dec = CaptureDecoder()
    snaps = feed(dec, [STREAM])
    assert summary(snaps) == EXPECTED
    assert not dec.skipped
    assert dec.events_seen["response.output_text.delta"] == 6
    last = snaps[-1]
    assert last.obj["usage"]["output_tokens_details"]["reasoning_tokens"] == 10
    assert last.source == "stream" and last.operation == "responses.create" and last.extra["stream"] is True
    # the item snapshot carries the function call before the final event
    assert snaps[2].obj["output"][0]["call_id"] == "call_1"


@FUZZ
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_any_chunking_gives_the_same_snapshots(cuts: list[int]) -> None:
    dec = CaptureDecoder()
    snaps = feed(dec, split(STREAM, cuts))
    assert summary(snaps) == EXPECTED
    assert [s.obj for s in snaps] == [s.obj for s in feed(CaptureDecoder(), [STREAM])]
    assert not dec.skipped


@FUZZ
@given(st.lists(st.integers(min_value=0, max_value=4000), max_size=20))
def test_gzip_stream_any_chunking(cuts: list[int]) -> None:
    dec = CaptureDecoder()
    snaps = feed(dec, split(gzip.compress(STREAM), cuts), exchange(encoding="gzip"))
    assert summary(snaps) == EXPECTED


def test_deltas_are_never_json_decoded() -> None:
    dec = CaptureDecoder()
    bad = b"event: response.output_text.delta\ndata: {not json\n\n"
    created = rf.sse("response.created", {"type": "response.created", "response": rf.response(status="in_progress"),
                                          "sequence_number": 0})
    snaps = feed(dec, [created, bad * 3])
    assert len(snaps) == 1
    assert "malformed_json" not in dec.skipped
    assert dec.events_seen["response.output_text.delta"] == 3


def test_resumed_stream_repeats_make_no_snapshots() -> None:
    dec = CaptureDecoder()
    first = feed(dec, [rf.stream_bytes(EVENTS[:6])], exchange(xid="ex-a"))
    # the client reconnects with starting_after=3: events 4.. again, then the rest
    resume = exchange("responses.retrieve", xid="ex-b", path="/v1/responses/resp_1", method="GET")
    again = feed(dec, [rf.stream_bytes(EVENTS[4:])], resume)
    decoded_again = again
    assert dec.skipped == {}
    assert len(first) == 3  # created, in_progress, first item done
    assert dec._responses.repeated_events == 1  # noqa: SLF001 - the one repeated state-carrying event
    assert summary(decoded_again) == [("response", "in_progress", 2), ("response", "completed", 2)]
    assert decoded_again[-1].operation == "responses.retrieve"
    assert "stream" not in decoded_again[-1].extra


def test_json_bodies_of_responses_operations() -> None:
    dec = CaptureDecoder()
    body = orjson.dumps(rf.response("resp_9"))
    snaps = dec.decode(ResponseBody(exchange(), 200, body, False))
    assert [(s.obj["id"], s.observed_at, s.source, s.extra.get("stream")) for s in snaps] == [
        ("resp_9", 1000.0, "response", False)]
    poll = exchange("responses.retrieve", path="/v1/responses/resp_9", method="GET")
    assert len(dec.decode(ResponseBody(poll, 200, body, False))) == 1
    for op, path, value in (
        ("responses.delete", "/v1/responses/resp_9", {"id": "resp_9", "object": "response.deleted", "deleted": True}),
        ("responses.input_items", "/v1/responses/resp_9/input_items",
         {"object": "list", "data": [{"type": "message"}]}),
        ("conversations.create", "/v1/conversations", {"id": "conv_1", "object": "conversation", "created_at": 1}),
    ):
        ex = exchange(op, path=path)
        assert dec.decode(ResponseBody(ex, 200, orjson.dumps(value), False)) == []
    assert not dec.skipped


def test_prompts_and_outputs_are_stripped_by_default() -> None:
    dec = CaptureDecoder()
    snaps = dec.decode(ResponseBody(exchange(), 200, orjson.dumps(FINAL), False))
    obj = snaps[0].obj
    assert "instructions" not in obj
    assert "arguments" not in obj["output"][0] and obj["output"][0]["name"] == "get_weather"
    assert "text" not in obj["output"][1]["content"][0]
    assert b"Paris" not in orjson.dumps(obj)
    kept = CaptureDecoder(store_prompts=True).decode(ResponseBody(exchange(), 200, orjson.dumps(FINAL), False))
    assert kept[0].obj["output"][0]["arguments"] == '{"city":"Paris"}'


def test_request_body_gives_answered_responses_and_prompts_only_when_asked() -> None:
    dec = CaptureDecoder()
    dec.decode(ResponseBody(exchange(xid="ex-1"), 200, orjson.dumps(rf.response("resp_1", output=[rf.function_call()])),
                            False))
    request = {"model": rf.MODEL, "previous_response_id": "resp_1", "instructions": "secret",
               "input": [{"type": "function_call_output", "call_id": "call_1", "output": "sunny"}]}
    ex2 = exchange(xid="ex-2")
    dec.decode(RequestBody(ex2, orjson.dumps(request), False))
    snaps = dec.decode(ResponseBody(ex2, 200, orjson.dumps(rf.response("resp_2", previous_response_id="resp_1")),
                                    False))
    assert snaps[0].extra["answers"] == ["resp_1"]
    assert "request_input" not in snaps[0].extra and b"secret" not in orjson.dumps(snaps[0].extra)
    # a conversation: no previous_response_id, matched by the call id this process saw
    ex3 = exchange(xid="ex-3")
    dec.decode(RequestBody(ex3, orjson.dumps({"conversation": "conv_1", "input": request["input"]}), False))
    snaps = dec.decode(ResponseBody(ex3, 200, orjson.dumps(rf.response("resp_3")), False))
    assert snaps[0].extra["answers"] == ["resp_1"]
    kept = CaptureDecoder(store_prompts=True)
    ex4 = exchange(xid="ex-4")
    kept.decode(RequestBody(ex4, orjson.dumps(request), False))
    snaps = kept.decode(ResponseBody(ex4, 200, orjson.dumps(rf.response("resp_4")), False))
    assert snaps[0].extra["request_instructions"] == "secret"


def test_odd_events_are_counted_not_raised() -> None:
    dec = CaptureDecoder()
    chunks = [
        b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":[]}\n\n",
        b"event: response.output_item.done\ndata: {\"output_index\":0,\"item\":{}}\n\n",  # no response id yet
        b"event: response.created\ndata: {oops\n\n",
        b"event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"x\"}\n\n",
    ]
    assert feed(dec, chunks) == []
    assert dec.skipped == {"not_response_object": 2, "malformed_json": 1}
    assert dec.events_seen["error"] == 1


def test_built_in_tool_contents_stay_out_without_store_prompts(tmp_path: Any) -> None:
    """Code, queries, retrieved text, search terms, shell commands, patches and generated images are
    the prompt's and the output's content, as function arguments are: not at rest by default."""
    secret = [f"SECRET{i}" for i in range(10)]
    output = [
        {"type": "code_interpreter_call", "id": "ci_1", "status": "completed", "container_id": "cntr_1",
         "code": f"print('{secret[0]}')", "outputs": [{"type": "logs", "logs": secret[1]}]},
        {"type": "file_search_call", "id": "fs_1", "status": "completed", "queries": [secret[2]],
         "results": [{"file_id": "file_1", "filename": "a.pdf", "score": 0.9, "text": secret[3]}]},
        {"type": "web_search_call", "id": "ws_1", "status": "completed",
         "action": {"type": "search", "query": secret[4]}},
        {"type": "image_generation_call", "id": "ig_1", "status": "completed", "result": secret[5]},
        {"type": "local_shell_call", "id": "ls_1", "call_id": "call_ls", "status": "completed",
         "action": {"type": "exec", "command": ["echo", secret[6]], "env": {}}},
        {"type": "apply_patch_call", "id": "ap_1", "call_id": "call_ap", "status": "completed",
         "operation": {"type": "update_file", "path": "a.py", "diff": secret[7]}},
        {"type": "computer_call", "id": "cu_1", "call_id": "call_cu", "status": "completed",
         "action": {"type": "type", "text": secret[8]}, "pending_safety_checks": []},
        {"type": "compaction", "id": "cmp_1", "encrypted_content": secret[9]},
    ]
    body = orjson.dumps(rf.response("resp_t", output=output))
    snaps = CaptureDecoder().decode(ResponseBody(exchange(), 200, body, False))
    dumped = orjson.dumps(snaps[0].obj).decode()
    assert [s for s in secret if s in dumped] == []
    assert [i["type"] for i in snaps[0].obj["output"]] == [i["type"] for i in output]  # the shape is kept
    assert snaps[0].obj["output"][0]["container_id"] == "cntr_1"
    db = str(tmp_path / "c.duckdb")
    store = Store(db)
    store.apply(snaps, [])
    store.close()
    con = duckdb.connect(db)
    row = con.execute("SELECT CAST(raw AS VARCHAR), CAST(tool_calls AS VARCHAR), CAST(tool_types AS VARCHAR) "
                      "FROM responses").fetchone()
    con.close()
    assert row is not None and [s for s in secret if s in row[0] + row[1]] == []
    assert "web_search_call" in row[2] and "file_search_call" in row[2]
    kept = CaptureDecoder(store_prompts=True).decode(ResponseBody(exchange(), 200, body, False))
    assert all(s in orjson.dumps(kept[0].obj).decode() for s in secret)


def test_an_mcp_tool_s_token_and_headers_never_reach_the_database(tmp_path: Any) -> None:
    """A response echoes its tools; an MCP tool carries an OAuth token (`authorization`) and `headers`
    (typically another credential). No key or token at rest, with --store-prompts or without."""
    token, header_value = "oauth-SECRET-token", "Bearer hdr-SECRET"
    tools = [{"type": "mcp", "server_label": "crm", "server_url": "https://mcp.example.test/sse",
              "authorization": token, "headers": {"X-Api-Key": header_value}, "require_approval": "never"},
             {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    body = orjson.dumps(rf.response("resp_m", tools=tools))
    for store_prompts in (False, True):
        snaps = CaptureDecoder(store_prompts=store_prompts).decode(ResponseBody(exchange(), 200, body, False))
        db = str(tmp_path / f"m{store_prompts}.duckdb")
        store = Store(db, store_prompts=store_prompts)
        store.apply(snaps, [])
        store.close()
        con = duckdb.connect(db)
        row = con.execute("SELECT CAST(raw AS VARCHAR), CAST(tools AS VARCHAR) FROM responses").fetchone()
        con.close()
        assert row is not None and "SECRET" not in row[0] + row[1]
        mcp = orjson.loads(row[1])[0]
        # what was configured stays readable: the server, that a token and which headers were sent
        assert (mcp["server_label"], mcp["authorization"], sorted(mcp["headers"])) == (
            "crm", "<redacted>", ["X-Api-Key"])


def test_an_azure_run_s_mcp_headers_never_reach_the_database(tmp_path: Any) -> None:
    """Azure AI Foundry agents echo a run's tool_resources, whose MCP entries carry the server's headers."""
    run = {"id": "run_1", "object": "thread.run", "thread_id": "thread_1", "assistant_id": "asst_1",
           "status": "completed", "created_at": 1_760_000_000, "model": "gpt-4o", "tools": [],
           "tool_resources": {"mcp": [{"server_label": "crm", "headers": {"Authorization": "Bearer SECRET"},
                                       "require_approval": "never"}]}}
    ex = Exchange(id="r1", method="GET", path="/api/projects/p/threads/thread_1/runs/run_1", operation="runs.retrieve",
                  api_version="v1", key_fingerprint=None, started_at=1000.0)
    snaps = CaptureDecoder().decode(ResponseBody(ex, 200, orjson.dumps(run), False))
    db = str(tmp_path / "r.duckdb")
    store = Store(db)
    store.apply(snaps, [])
    store.close()
    con = duckdb.connect(db)
    row = con.execute("SELECT CAST(raw AS VARCHAR) FROM runs").fetchone()
    con.close()
    assert row is not None and "SECRET" not in row[0]
    assert orjson.loads(row[0])["tool_resources"]["mcp"][0] == {
        "server_label": "crm", "headers": {"Authorization": "<redacted>"}, "require_approval": "never"}
