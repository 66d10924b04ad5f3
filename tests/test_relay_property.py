"""Property: whatever way the upstream splits an SSE stream into writes, the client gets exactly the
upstream's bytes, and capture ends with the run's final status.

One runtap and one raw upstream serve every example (on an event loop in a background thread, so
hypothesis drives a plain function and each example is one real request over 127.0.0.1). The
upstream writes each generated piece separately: chunk borders fall inside field names, inside
`\r\n`, inside multi-byte UTF-8 characters, between the `data:` lines of one event.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fault_helpers import parse_response, proxy_to, query, request_bytes
from tests.faulty_upstream import SSE_HEADERS, Conn, FaultyUpstream, run_object

LIFECYCLES = (
    ("queued", "in_progress", "completed"),
    ("queued", "in_progress", "requires_action"),
    ("queued", "in_progress", "failed"),
    ("queued", "in_progress", "incomplete"),
    ("queued", "cancelling", "cancelled"),
)


@dataclass
class Stack:
    loop: asyncio.AbstractEventLoop
    port: int = 0
    db: str = ""
    pending: list[list[bytes]] = field(default_factory=list)  # pieces for the next request
    expected: dict[str, str] = field(default_factory=dict)  # run id -> final status relayed
    stopped: asyncio.Event | None = None  # created on the stack's loop
    server: Any = None

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        """Stop runtap (its queue flushed into the DuckDB file) and the upstream; idempotent."""
        if self.server is not None and not self.server.done() and self.stopped is not None:
            self.loop.call_soon_threadsafe(self.stopped.set)
            self.server.result(60)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="relay-property-loop", daemon=True)
    thread.start()
    st_ = Stack(loop)
    ready = threading.Event()

    async def script(conn: Conn) -> None:
        await conn.head(200, SSE_HEADERS)
        for piece in st_.pending.pop(0):
            await conn.send(piece)
        await conn.end()

    async def serve() -> None:
        st_.stopped = asyncio.Event()
        async with FaultyUpstream(script) as up, proxy_to(tmp_path_factory.mktemp("relay"), up.url) as px:
            st_.port, st_.db = px.port, str(px.settings.db)
            ready.set()
            await st_.stopped.wait()

    st_.server = asyncio.run_coroutine_threadsafe(serve(), loop)
    assert ready.wait(30), "runtap did not start"
    try:
        yield st_
    finally:
        st_.stop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


_ids = itertools.count()
_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


@st.composite
def streams(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """(run id, final status, the whole SSE body): a run's status events with comments, message
    deltas of any Unicode text, multi-line data fields and either line ending."""
    run_id = f"run_prop{next(_ids):06d}"
    statuses = draw(st.sampled_from(LIFECYCLES))
    eol = draw(st.sampled_from(["\n", "\r\n"])).encode()
    out = bytearray()
    for status in statuses:
        if draw(st.booleans()):
            out += b": keep-alive " + draw(_text).encode() + eol
        payload = orjson.dumps(run_object(run_id, status, note=draw(_text)), option=orjson.OPT_INDENT_2)
        data = eol.join(b"data: " + line for line in payload.split(b"\n")) if draw(st.booleans()) \
            else b"data: " + orjson.dumps(orjson.loads(payload))
        out += b"event: thread.run." + status.encode() + eol + data + eol + eol
        if draw(st.booleans()):
            delta = {"id": "msg_1", "object": "thread.message.delta",
                     "delta": {"content": [{"index": 0, "type": "text", "text": {"value": draw(_text)}}]}}
            out += b"event: thread.message.delta" + eol + b"data: " + orjson.dumps(delta) + eol + eol
    out += b"event: done" + eol + b"data: [DONE]" + eol + eol
    return run_id, statuses[-1], bytes(out)


@st.composite
def split(draw: st.DrawFn, body: bytes) -> list[bytes]:
    cuts = sorted(set(draw(st.lists(st.integers(1, len(body) - 1), max_size=40))))
    return [body[a:b] for a, b in itertools.pairwise([0, *cuts, len(body)])]


async def _exchange(port: int, run_id: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_bytes("POST", f"/v1/threads/thread_f/runs?case={run_id}", body=b'{"stream": true}',
                                   headers={"Content-Type": "application/json"}))
        await writer.drain()
        return await reader.read(-1)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_any_chunking_is_relayed_byte_for_byte_and_captured(stack: Stack, data: st.DataObject) -> None:
    run_id, final, body = data.draw(streams())
    pieces = data.draw(split(body))
    stack.pending.append(pieces)
    resp = parse_response(stack.call(_exchange(stack.port, run_id)))
    assert resp.status == 200 and resp.complete
    assert resp.body == body
    stack.expected[run_id] = final


def test_every_relayed_run_reached_duckdb_with_its_final_status(stack: Stack) -> None:
    """Runs after the property test (same module fixture): flushes by stopping runtap, then reads."""
    assert stack.expected, "the property test ran no example"
    expected = dict(stack.expected)
    stack.stop()  # now rather than at module teardown, so the file can be read here
    rows = dict(query(stack.db, "SELECT id, status FROM runs WHERE id LIKE 'run_prop%'"))
    assert rows == expected
