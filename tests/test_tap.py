"""The tap and the capture addon, driven by a fake relay (no sockets): the hooks in the relay's order."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, cast

import pytest
from runtap.analytics.ingest.records import (
    Exchange,
    RequestBody,
    RequestRecord,
    ResponseBody,
    StreamChunk,
    StreamEnd,
)
from runtap.analytics.ingest.writer import CaptureWriter, WriterConfig
from runtap.proxy.addons.capture import Capture
from runtap.proxy.tap import CLIENT_DISCONNECTED, HOOKS, Flow, Tap

from tests.test_writer import rows


class FakeWriter:
    def __init__(self) -> None:
        self.items: list[object] = []

    def submit(self, item: object) -> bool:
        self.items.append(item)
        return True


def capture(max_body: int = 100, store_prompts: bool = True) -> tuple[Capture, FakeWriter, list[str]]:
    writer, skipped = FakeWriter(), []
    addon = Capture(cast(CaptureWriter, writer), store_prompts=store_prompts, capture_max_body=max_body,
                    on_skipped=skipped.append)
    return addon, writer, skipped


def flow(operation: str | None = "runs.retrieve") -> Flow:
    exchange = Exchange(id="x1", method="GET", path="/v1/threads/t/runs/r", operation=operation,
                        api_version="v2", key_fingerprint="fp", started_at=1.0)
    return Flow(exchange, operation or "other", 0.0)


def relay(tap: Tap, f: Flow, status: int, chunks: list[bytes], *, streamed: bool = False,
          fail: str | None = None) -> None:
    """What Forwarder does, minus the sockets."""
    f.status, f.streamed = status, streamed
    tap.response_headers(f)
    for chunk in chunks:
        f.bytes_out += len(chunk)
        tap.chunk(f, chunk)
    if fail is None:
        tap.end(f)
    else:
        tap.error(f, fail)
    f.duration = 0.5
    tap.done(f)


def kinds(items: list[object]) -> list[str]:
    return [type(i).__name__ for i in items]


def test_a_2xx_json_body_is_captured_whole_and_the_request_recorded() -> None:
    addon, writer, skipped = capture()
    relay(Tap([addon]), f := flow(), 200, [b'{"id":', b'"run_1"}'])
    assert kinds(writer.items) == ["ResponseBody", "RequestRecord"]
    body, record = cast(ResponseBody, writer.items[0]), cast(RequestRecord, writer.items[1])
    assert body.body == b'{"id":"run_1"}' and body.status == 200 and body.exchange is f.exchange
    assert (record.status_code, record.bytes_out, record.duration_ms, record.key_fingerprint) == (200, 14, 500.0, "fp")
    assert skipped == []


@pytest.mark.parametrize(("status", "chunks", "reason"), [
    (404, [b'{"error":{}}'], "upstream_error_status"),
    (200, [b"x" * 60, b"y" * 60], "body_too_large"),
])
def test_bodies_not_captured_are_counted_with_their_reason(status: int, chunks: list[bytes], reason: str) -> None:
    addon, writer, skipped = capture(max_body=100)
    relay(Tap([addon]), flow(), status, chunks)
    assert kinds(writer.items) == ["RequestRecord"] and skipped == [reason]


def test_a_stream_goes_chunk_by_chunk_and_ends_once_even_when_the_client_leaves_after_the_end() -> None:
    addon, writer, _ = capture()
    tap = Tap([addon])
    relay(tap, f := flow(), 200, [b"data: 1\n\n", b"data: 2\n\n"], streamed=True)
    tap.error(f, CLIENT_DISCONNECTED)  # a late disconnect must not add a second, incomplete end
    assert kinds(writer.items) == ["StreamChunk", "StreamChunk", "StreamEnd", "RequestRecord"]
    assert [cast(StreamChunk, i).data for i in writer.items[:2]] == [b"data: 1\n\n", b"data: 2\n\n"]
    assert cast(StreamEnd, writer.items[2]).complete


def test_a_stream_cut_by_the_upstream_ends_incomplete() -> None:
    addon, writer, _ = capture()
    relay(Tap([addon]), flow(), 200, [b"data: 1\n\n"], streamed=True, fail="payload")
    assert kinds(writer.items) == ["StreamChunk", "StreamEnd", "RequestRecord"]
    assert not cast(StreamEnd, writer.items[1]).complete


def test_unrouted_calls_are_relayed_but_only_recorded() -> None:
    addon, writer, skipped = capture()
    f = flow(operation=None)
    assert not addon.keeps_request_body(f)
    relay(Tap([addon]), f, 200, [b"{}"], streamed=True)
    assert kinds(writer.items) == ["RequestRecord"] and skipped == []


def test_request_bodies_are_kept_only_when_prompts_are_stored() -> None:
    addon, writer, _ = capture(store_prompts=False)
    assert not Tap([addon]).keeps_request_body(flow())
    addon, writer, _ = capture(store_prompts=True)
    tap = Tap([addon])
    assert tap.keeps_request_body(f := flow())
    tap.request_body(f, b"{}", False)
    assert cast(RequestBody, writer.items[0]).body == b"{}"


class Recorder:
    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail

    def done(self, flow: Flow) -> None:
        self.log.append(self.name)
        if self.fail:
            raise RuntimeError("addon bug")


def test_hooks_run_in_addon_order_and_one_failing_addon_costs_the_others_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    tap = Tap([Recorder("metrics", calls, fail=True), Recorder("tracing", calls), object()])
    with caplog.at_level(logging.ERROR, "runtap.tap"):
        tap.done(flow())
    assert calls == ["metrics", "tracing"]
    assert "addon hook done failed" in caplog.text
    # a hook nobody defines is a no-op
    tap.chunk(flow(), b"x")
    assert not tap.sees_chunks and Tap([capture()[0]]).sees_chunks


class Broken:
    """An addon whose every hook raises, as a bug would."""

    def __getattr__(self, name: str) -> Any:
        if name in HOOKS or name == "keeps_request_body":
            def hook(*_args: Any) -> None:
                raise RuntimeError(f"addon bug in {name}")
            return hook
        raise AttributeError(name)


def test_an_addon_alone_whose_hooks_raise_never_reaches_the_relay(caplog: pytest.LogCaptureFixture) -> None:
    # The relay calls the tap bare (no try of its own): any exception here would be a 500 or a cut stream.
    tap = Tap([Broken()])
    f = flow()
    with caplog.at_level(logging.ERROR, "runtap.tap"):
        tap.request(f, cast(Any, None))
        tap.upstream_request(f, cast(Any, {}))
        assert tap.keeps_request_body(f) is False
        tap.request_body(f, b"{}", False)
        relay(tap, f, 200, [b"data: x\n\n"] * 100, streamed=True)
        tap.error(f, CLIENT_DISCONNECTED)
    failed = {r.getMessage().split()[2] for r in caplog.records}
    assert failed == {*HOOKS, "keeps_request_body"}
    # a per-chunk bug logs its traceback for the 1st, 2nd, 4th... failure, not once per chunk
    assert sum("hook chunk" in r.getMessage() for r in caplog.records) <= 8


def _event(name: str, status: str, **extra: Any) -> bytes:
    obj = {"id": "run_1", "object": "thread.run", "status": status, "model": "gpt-4o", **extra}
    return f"event: {name}\ndata: {json.dumps(obj)}\n\n".encode()


def test_a_stream_whose_chunk_the_full_queue_dropped_stores_no_object_that_no_event_held(tmp_path: Path) -> None:
    # Chunks cut where TCP cuts them: inside the in_progress event's status, and inside the completed one's.
    body = (_event("thread.run.queued", "queued") + _event("thread.run.in_progress", "in_progress")
            + _event("thread.run.completed", "completed", usage={"prompt_tokens": 5, "completion_tokens": 7,
                                                                 "total_tokens": 12}))
    a = body.index(b'"in_progress"') + 4
    b = body.index(b'"completed"', a) + 4
    db = tmp_path / "c.duckdb"
    writer = CaptureWriter(WriterConfig(db_path=str(db), queue_size=2))  # started once the queue is full
    skipped: list[str] = []
    tap = Tap([Capture(writer, store_prompts=False, capture_max_body=1 << 20, on_skipped=skipped.append)])
    f = flow("runs.create")
    f.status, f.streamed = 200, True
    tap.response_headers(f)
    tap.chunk(f, body[:a])
    assert writer.submit(RequestRecord("other", 1.0, "GET", "/", None, 200, False, 1.0, None, 0, 0, None, None,
                                       None))  # the queue is full now
    tap.chunk(f, body[a:b])  # refused: queue_full
    writer.start()
    try:
        assert writer.flush(timeout=30)
        tap.chunk(f, body[b:])  # room again
        tap.end(f)
        tap.done(f)
        assert writer.flush(timeout=30)
    finally:
        writer.stop()
    # Joined across the gap, the two halves were one valid run object: status "in_pleted", the usage of
    # the completed event. Now the stream ends at its gap, with what was decoded before it.
    assert rows(db, "SELECT status, total_tokens FROM runs") == [("queued", None)]
    assert skipped == ["stream_gap"] and writer.stats["dropped"] == 1
