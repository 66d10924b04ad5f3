"""Property, for Responses streams: whatever way the upstream splits an SSE stream into writes, the
client gets exactly the upstream's bytes, and capture ends with the response's final status and tokens.
The stack (one runtap, one raw upstream, a background loop) is tests/test_relay_property.py's."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import response_factory as rf
from tests.fault_helpers import parse_response, query, request_bytes
from tests.test_relay_property import Stack, split, stack  # noqa: F401 - the module-scoped fixture

_ids = itertools.count()
_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)


@st.composite
def streams(draw: st.DrawFn) -> tuple[str, tuple[str, int], bytes]:
    """(response id, (final status, output tokens), the whole SSE body) of a spec-shaped stream."""
    rid = f"resp_prop{next(_ids):06d}"
    status = draw(st.sampled_from(["completed", "incomplete", "failed"]))
    output_tokens = draw(st.integers(1, 5000))
    final = rf.response(rid, status, output=[rf.message(draw(_text))])
    final["usage"] = rf.usage(output_tokens=output_tokens, reasoning=0)
    if status == "incomplete":
        final["incomplete_details"] = {"reason": "max_output_tokens"}
    events = rf.stream_events(final, deltas=draw(st.integers(1, 6)))
    eol = draw(st.sampled_from(["\n", "\r\n"])).encode()
    out = bytearray()
    for name, data in events:
        if draw(st.booleans()):
            out += b": keep-alive" + eol
        out += b"event: " + name.encode() + eol + b"data: " + orjson.dumps(data) + eol + eol
    return rid, (status, output_tokens), bytes(out)


async def _exchange(port: int, rid: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_bytes("POST", f"/v1/responses?case={rid}", body=b'{"stream": true, "input": "hi"}',
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
def test_any_chunking_of_a_responses_stream_is_relayed_and_captured(stack: Stack, data: st.DataObject) -> None:  # noqa: F811
    rid, final, body = data.draw(streams())
    pieces = data.draw(split(body))
    stack.pending.append(pieces)
    resp = parse_response(stack.call(_exchange(stack.port, rid)))
    assert resp.status == 200 and resp.complete
    assert resp.body == body
    stack.expected[rid] = final  # type: ignore[assignment]


def test_every_relayed_response_reached_duckdb_with_its_final_status(stack: Stack) -> None:  # noqa: F811
    assert stack.expected, "the property test ran no example"
    expected = dict(stack.expected)
    stack.stop()
    rows = {r[0]: (r[1], r[2]) for r in query(
        stack.db, "SELECT id, status, output_tokens FROM responses WHERE id LIKE 'resp_prop%'")}
    assert rows == expected
