from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtap.analytics.ingest.decode import CaptureDecoder
from runtap.analytics.ingest.records import (
    Exchange,
    RequestBody,
    RequestRecord,
    ResponseBody,
    Snapshot,
    StreamChunk,
    StreamEnd,
)

FUZZ = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])


def exchange(op: str | None = "runs.create", *, xid: str = "ex1", encoding: str | None = None) -> Exchange:
    return Exchange(id=xid, method="POST", path="/v1/threads/thread_1/runs", operation=op,
                    api_version="v2", key_fingerprint="abc123def456", started_at=1000.0,
                    content_encoding=encoding)


def run(status: str = "queued", rid: str = "run_1", **extra: Any) -> dict[str, Any]:
    return {"id": rid, "object": "thread.run", "created_at": 1710348075, "assistant_id": "asst_1",
            "thread_id": "thread_1", "status": status, "model": "gpt-4o", "instructions": "be terse",
            "tools": [], "metadata": {}, "usage": None, **extra}


def step(status: str = "in_progress", sid: str = "step_1") -> dict[str, Any]:
    return {"id": sid, "object": "thread.run.step", "run_id": "run_1", "thread_id": "thread_1",
            "type": "message_creation", "status": status,
            "step_details": {"type": "message_creation", "message_creation": {"message_id": "msg_1"}},
            "usage": None}


def sse(event: str, data: Any) -> bytes:
    # stdlib json: it writes integers beyond 64 bits, which the decoder must survive.
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"event: {event}\ndata: {payload}\n\n".encode()


# A create-and-run stream as the spec documents it (openapi.yaml, createThreadAndRun streaming example),
# with message and step deltas, a comment and CRLF line ends mixed in.
STREAM = b"".join([
    sse("thread.created", {"id": "thread_1", "object": "thread"}),
    sse("thread.run.created", run("queued")),
    sse("thread.run.queued", run("queued")),
    b": keep-alive\r\n\r\n",
    sse("thread.run.in_progress", run("in_progress")),
    sse("thread.run.step.created", step("in_progress")),
    sse("thread.run.step.in_progress", step("in_progress")),
    sse("thread.message.created", {"id": "msg_1", "object": "thread.message"}),
    sse("thread.message.delta", {"id": "msg_1", "object": "thread.message.delta",
                                 "delta": {"content": [{"type": "text", "text": {"value": "Hé ✓"}}]}}),
    sse("thread.run.step.delta", {"id": "step_1", "object": "thread.run.step.delta", "delta": {}}),
    sse("thread.message.completed", {"id": "msg_1", "object": "thread.message"}),
    sse("thread.run.step.completed", step("completed")).replace(b"\n", b"\r\n"),
    sse("thread.run.completed", run("completed", usage={"prompt_tokens": 20, "completion_tokens": 11,
                                                        "total_tokens": 31})),
    b"event: done\ndata: [DONE]\n\n",
])
STREAM_STATES = [("run", "queued"), ("run", "queued"), ("run", "in_progress"), ("step", "in_progress"),
                 ("step", "in_progress"), ("step", "completed"), ("run", "completed")]


def feed_stream(dec: CaptureDecoder, chunks: list[bytes], ex: Exchange | None = None,
                complete: bool = True) -> list[Snapshot]:
    ex = ex or exchange("threads.create_and_run")
    out: list[Snapshot] = []
    for i, chunk in enumerate(chunks):
        out += dec.decode(StreamChunk(ex, chunk, received_at=2000.0 + i))
    out += dec.decode(StreamEnd(ex, complete=complete))
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def states(snaps: list[Snapshot]) -> list[tuple[str, str]]:
    return [(s.kind, s.obj["status"]) for s in snaps]


# --- streams -------------------------------------------------------------------------------------------


def test_stream_yields_run_and_step_states_in_order() -> None:
    dec = CaptureDecoder()
    ex = exchange("threads.create_and_run", xid="ex-stream")
    snaps = feed_stream(dec, [STREAM], ex)
    assert states(snaps) == STREAM_STATES
    assert {(s.source, s.operation, s.api_version, s.key_fingerprint, s.request_id) for s in snaps} == {
        ("stream", "threads.create_and_run", "v2", "abc123def456", "ex-stream")}
    assert {s.observed_at for s in snaps} == {2000.0}  # the chunk's arrival, not the request's start
    assert dec.open_streams() == 0
    assert not dec.skipped
    assert dec.events_seen["thread.message.delta"] == 1 and dec.events_seen["done"] == 1


@FUZZ
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_any_chunking_gives_the_same_snapshots(cuts: list[int]) -> None:
    whole = feed_stream(CaptureDecoder(), [STREAM])
    pieces = feed_stream(CaptureDecoder(), split(STREAM, cuts))
    assert [(s.kind, s.obj) for s in pieces] == [(s.kind, s.obj) for s in whole]


@FUZZ
@given(st.lists(st.integers(min_value=0, max_value=4000), max_size=20))
def test_gzip_stream_any_chunking(cuts: list[int]) -> None:
    body = gzip.compress(STREAM)
    dec = CaptureDecoder()
    snaps = feed_stream(dec, split(body, cuts), exchange(encoding="gzip"))
    assert states(snaps) == STREAM_STATES
    assert not dec.skipped


def test_corrupt_gzip_stream_keeps_what_decoded_before() -> None:
    dec = CaptureDecoder()
    chunks = [gzip.compress(STREAM), b"this is not a gzip member", gzip.compress(STREAM)]
    assert states(feed_stream(dec, chunks, exchange(encoding="gzip"))) == STREAM_STATES
    assert dec.skipped == {"bad_gzip": 1}


def test_malformed_event_is_counted_and_the_stream_continues() -> None:
    dec = CaptureDecoder()
    data = sse("thread.run.created", run()) + sse("thread.run.queued", '{"id": "run_1", "obj') + \
        sse("thread.run.in_progress", [1, 2]) + sse("thread.run.completed", run("completed"))
    assert states(feed_stream(dec, [data])) == [("run", "queued"), ("run", "completed")]
    assert dec.skipped == {"malformed_json": 1, "not_run_object": 1}


def test_unknown_and_non_run_events_are_not_snapshots() -> None:
    dec = CaptureDecoder()
    data = b"".join([
        sse("thread.assistant.created", run()),  # a run-shaped payload under a non-run event name
        sse("some.future.event", run()),
        b"data: " + orjson.dumps(run()) + b"\n\n",  # no event name: "message"
        sse("error", {"error": {"message": "boom"}}),
        sse("thread.run.step.delta", step()),
    ])
    assert feed_stream(dec, [data]) == []
    assert dec.events_seen["some.future.event"] == 1 and dec.events_seen["message"] == 1
    assert not dec.skipped


def test_step_event_must_carry_a_step() -> None:
    dec = CaptureDecoder()
    assert feed_stream(dec, [sse("thread.run.step.created", run())]) == []
    assert dec.skipped["not_run_object"] == 1


def test_oversized_and_invalid_utf8_events_are_counted() -> None:
    dec = CaptureDecoder(max_event_bytes=2048)
    big = run(metadata={"k": "x" * 4096})
    data = sse("thread.run.created", big) + b"event: thread.run.queued\ndata: \xff\xfe\n\n" + \
        sse("thread.run.completed", run("completed"))
    assert states(feed_stream(dec, [data[:100], data[100:]])) == [("run", "completed")]
    assert dec.skipped == {"oversized_event": 1, "invalid_utf8": 1}


def test_broken_stream_keeps_what_was_decoded() -> None:
    dec = CaptureDecoder()
    cut = STREAM.index(b"event: thread.run.step.created")
    partial = STREAM[:cut] + b"event: thread.run.step.created\ndata: {\"id\": \"st"
    snaps = feed_stream(dec, [partial], complete=False)
    assert states(snaps) == STREAM_STATES[:3]
    assert dec.streams_incomplete == 1 and dec.open_streams() == 0


def test_open_streams_are_bounded() -> None:
    dec = CaptureDecoder(max_open_streams=2)
    one = sse("thread.run.created", run())
    for xid in ("a", "b", "c"):
        dec.decode(StreamChunk(exchange(xid=xid), one, 1.0))
    assert dec.open_streams() == 2 and dec.skipped["too_many_streams"] == 1
    dec.decode(StreamEnd(exchange(xid="a"), complete=True))
    assert len(dec.decode(StreamChunk(exchange(xid="c"), one, 1.0))) == 1
    # The request's own record ends an exchange whose StreamEnd was lost.
    dec.decode(RequestRecord(id="b", started_at=1.0, method="POST", path="/", operation=None,
                             status_code=200, streamed=True, duration_ms=1.0, upstream_ttfb_ms=None,
                             bytes_in=0, bytes_out=0, upstream_request_id=None, key_fingerprint=None,
                             error=None))
    assert dec.open_streams() == 1


def test_stream_with_unsupported_encoding_is_counted_once() -> None:
    dec = CaptureDecoder()
    assert feed_stream(dec, [b"\x00\x01", b"\x02"], exchange(encoding="br")) == []
    assert dec.skipped == {"unsupported_encoding": 1}


# --- whole responses -------------------------------------------------------------------------------------


def response(op: str, value: Any, *, status: int = 200, encoding: str | None = None,
             body: bytes | None = None) -> ResponseBody:
    return ResponseBody(exchange(op, encoding=encoding), status,
                        json.dumps(value).encode() if body is None else body, truncated=False)


def test_single_run_response_observed_at_request_start() -> None:
    dec = CaptureDecoder()
    [snap] = dec.decode(response("runs.retrieve", run("in_progress")))
    assert (snap.kind, snap.obj["status"], snap.source, snap.operation) == \
        ("run", "in_progress", "response", "runs.retrieve")
    # A response reflects upstream state at or after the request left: ordered by the request's start.
    assert snap.observed_at == 1000.0


def test_list_responses_give_one_snapshot_per_item() -> None:
    dec = CaptureDecoder()
    runs = {"object": "list", "data": [run(rid=f"run_{i}") for i in range(3)] + [{"object": "thread"}],
            "first_id": "run_0", "last_id": "run_2", "has_more": False}
    assert [s.obj["id"] for s in dec.decode(response("runs.list", runs))] == ["run_0", "run_1", "run_2"]
    steps = {"object": "list", "data": [step(sid="step_1"), step(sid="step_2")], "has_more": False}
    got = dec.decode(response("steps.list", steps))
    assert [(s.kind, s.obj["id"]) for s in got] == [("step", "step_1"), ("step", "step_2")]
    assert [s.kind for s in dec.decode(response("steps.retrieve", step()))] == ["step"]
    assert dec.skipped == {"not_run_object": 1}


def test_compressed_bodies_decode() -> None:
    raw = orjson.dumps(run("completed"))
    dec = CaptureDecoder()
    for encoding, body in [("gzip", gzip.compress(raw)), ("x-gzip", gzip.compress(raw)),
                           ("deflate", zlib.compress(raw)),
                           ("deflate", _raw_deflate(raw)),  # what some servers send for "deflate"
                           ("gzip, identity", gzip.compress(raw)),
                           ("deflate, gzip", gzip.compress(zlib.compress(raw)))]:
        [snap] = dec.decode(response("runs.retrieve", None, encoding=encoding, body=body))
        assert snap.obj["status"] == "completed", encoding
    assert not dec.skipped


def _raw_deflate(data: bytes) -> bytes:
    comp = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return comp.compress(data) + comp.flush()


def test_bad_bodies_are_counted_not_raised() -> None:
    raw = orjson.dumps(run())
    dec = CaptureDecoder()
    gz = gzip.compress(raw)
    assert dec.decode(response("runs.retrieve", None, encoding="gzip", body=gz[: len(gz) // 2])) == []
    assert dec.decode(response("runs.retrieve", None, encoding="gzip", body=b"not gzip at all")) == []
    assert dec.decode(response("runs.retrieve", None, encoding="br", body=raw)) == []
    assert dec.decode(response("runs.retrieve", None, body=b'{"id": "run_1", ')) == []
    assert dec.decode(response("runs.retrieve", {"object": "thread.run"})) == []
    assert dec.decode(response("runs.retrieve", {"error": {"message": "nope"}}, status=404)) == []
    assert dec.decode(ResponseBody(exchange("runs.retrieve"), 200, b"", truncated=True)) == []
    assert dec.skipped == {"bad_gzip": 2, "unsupported_encoding": 1, "malformed_json": 1, "missing_id": 1,
                           "upstream_error_status": 1, "truncated": 1}


def test_decompression_is_bounded() -> None:
    dec = CaptureDecoder(max_body_bytes=10_000)
    body = gzip.compress(orjson.dumps(run(metadata={"k": "x" * 50_000})))
    assert dec.decode(response("runs.retrieve", None, encoding="gzip", body=body)) == []
    assert dec.skipped == {"oversized_body": 1}


# --- prompts -------------------------------------------------------------------------------------------


def test_instructions_are_stripped_by_default() -> None:
    dec = CaptureDecoder()
    [snap] = dec.decode(response("runs.create", run()))
    assert snap.obj["instructions"] is None and snap.extra == {}
    [snap] = feed_stream(dec, [sse("thread.run.created", run())])
    assert snap.obj["instructions"] is None
    # Without --store-prompts a request body is never looked at.
    ex = exchange(xid="p")
    dec.decode(RequestBody(ex, orjson.dumps({"additional_messages": [{"role": "user"}]}), False))
    [snap] = dec.decode(ResponseBody(ex, 200, orjson.dumps(run()), False))
    assert snap.extra == {}


def test_store_prompts_keeps_instructions_and_attaches_request_fields_once() -> None:
    dec = CaptureDecoder(store_prompts=True)
    ex = exchange("runs.create", xid="p")
    request = {"assistant_id": "asst_1", "instructions": "be kind", "additional_messages": [
        {"role": "user", "content": "hi"}], "stream": True}
    assert dec.decode(RequestBody(ex, orjson.dumps(request), truncated=False)) == []
    snaps = feed_stream(dec, [sse("thread.run.created", run()) + sse("thread.run.queued", run())], ex)
    assert [s.extra for s in snaps] == [
        {"instructions": "be kind", "additional_messages": [{"role": "user", "content": "hi"}]}, {}]
    assert snaps[0].obj["instructions"] == "be terse"
    # The request fields went with the exchange's first run; nothing is left over afterwards.
    [later] = dec.decode(ResponseBody(ex, 200, orjson.dumps(run()), False))
    assert later.extra == {}


def test_store_prompts_counts_unusable_request_bodies() -> None:
    dec = CaptureDecoder(store_prompts=True)
    dec.decode(RequestBody(exchange(xid="t"), b'{"instructions": "x"', truncated=True))
    dec.decode(RequestBody(exchange(xid="m"), b'{"instructions": ', truncated=False))
    assert dec.skipped == {"request_truncated": 1, "request_malformed_json": 1}


# --- never raises ----------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
ENCODINGS = st.sampled_from([None, "gzip", "deflate", "br", "identity", "gzip, deflate", "zstd"])
OPERATIONS = st.sampled_from([None, "runs.create", "runs.list", "steps.list", "steps.retrieve", "x"])


@FUZZ
@given(body=st.binary(max_size=300), status=st.integers(0, 999), encoding=ENCODINGS, op=OPERATIONS,
       truncated=st.booleans())
def test_arbitrary_body_bytes_never_raise(body: bytes, status: int, encoding: str | None, op: str | None,
                                          truncated: bool) -> None:
    dec = CaptureDecoder(store_prompts=True)
    ex = exchange(op, encoding=encoding)
    dec.decode(RequestBody(ex, body, truncated))
    snaps = dec.decode(ResponseBody(ex, status, body, truncated))
    assert all(s.obj.get("object") in ("thread.run", "thread.run.step") for s in snaps)
    assert "internal_error" not in dec.skipped


@FUZZ
@given(value=JSON, wrap=st.sampled_from(["bare", "list", "run", "event"]))
def test_arbitrary_json_values_never_raise(value: Any, wrap: str) -> None:
    dec = CaptureDecoder()
    if wrap == "list":
        value = {"object": "list", "data": value}
    elif wrap == "run":
        value = {**run(), "instructions": value, "metadata": value}
    if wrap == "event":
        events = [sse("thread.run.in_progress", value), sse("thread.run.step.created", value)]
        snaps = feed_stream(dec, events)
    else:
        snaps = dec.decode(response("runs.list", value))
    for s in snaps:
        assert isinstance(s.obj["id"], str) and s.obj["object"] in ("thread.run", "thread.run.step")
    assert "internal_error" not in dec.skipped


@FUZZ
@given(chunks=st.lists(st.binary(max_size=200), max_size=10), encoding=ENCODINGS, complete=st.booleans())
def test_arbitrary_stream_bytes_never_raise(chunks: list[bytes], encoding: str | None,
                                            complete: bool) -> None:
    dec = CaptureDecoder(max_event_bytes=256)
    feed_stream(dec, chunks, exchange(encoding=encoding), complete=complete)
    assert dec.open_streams() == 0
    assert "internal_error" not in dec.skipped


def test_streams_whose_end_was_lost_do_not_keep_new_streams_out_for_ever() -> None:
    # A stream's StreamEnd and RequestRecord can both be lost (dropped by a full queue or channel, a relay
    # worker that died mid-stream in process mode): its parser stays open. Once max_open_streams of them
    # piled up, every later stream was refused ("too_many_streams") for the rest of the process.
    dec = CaptureDecoder(max_open_streams=2)
    one = sse("thread.run.created", run())
    for xid in ("lost_a", "lost_b"):
        dec.decode(StreamChunk(exchange(xid=xid), one, 1.0))
    assert dec.decode(StreamChunk(exchange(xid="busy"), one, 2.0)) == []  # both may still be streaming
    # feed_stream's chunks arrive at 2000.0: over half an hour without a byte, no client waits that long
    snaps = feed_stream(dec, [STREAM], exchange("threads.create_and_run", xid="later"))
    assert states(snaps) == STREAM_STATES
    assert dec.skipped["too_many_streams"] == 1 and dec.skipped["stream_evicted"] == 2
    assert dec.open_streams() == 0


@FUZZ
@given(st.lists(st.integers(min_value=0, max_value=20_000), max_size=12), st.booleans())
def test_event_counts_are_exact_and_capped_under_any_chunking(cuts: list[int], bytewise: bool) -> None:
    # Long runs of deltas (counted per name in one step) among 80 distinct names: the first 64 names are
    # kept, later ones are `other`, and every event is counted once whatever the chunking.
    names = [f"thread.custom.e{i}" for i in range(80)]
    stream = b"".join(sse("thread.message.delta", {"i": i}) for i in range(300)) + \
        b"".join(sse(n, {}) for n in names) + b"".join(sse("thread.message.delta", {}) for _ in range(40))
    dec = CaptureDecoder()
    feed_stream(dec, [stream[i:i + 1] for i in range(len(stream))] if bytewise else split(stream, cuts))
    assert dec.events_seen["thread.message.delta"] == 340
    assert sum(dec.events_seen.values()) == 420
    assert dec.events_seen["other"] == 80 - 63  # the delta's name took the first of the 64 places
    assert set(dec.events_seen) == {"thread.message.delta", *names[:63], "other"}
