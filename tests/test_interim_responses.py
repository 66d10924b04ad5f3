"""1xx responses: RFC 9110 §15.2 says a proxy MUST forward them (101 excepted). runtap cannot: aiohttp's
client reads and discards every 1xx before the final response (`ClientResponse.start` loops past codes
100-199 except 101 and offers no hook), and its server has no API to send one. This documents the gap:
an upstream `103 Early Hints` is dropped, and the final response reaches the client byte for byte."""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.fault_helpers import parse_response, proxy_to, query, raw_exchange, request_bytes
from tests.faulty_upstream import Conn, FaultyUpstream, run_object


async def test_early_hints_are_not_forwarded_and_the_final_response_is_unchanged(tmp_path: Path) -> None:
    body = orjson.dumps(run_object("run_hints", "completed", usage={"prompt_tokens": 7, "completion_tokens": 3,
                                                                    "total_tokens": 10}))

    async def script(conn: Conn) -> None:
        conn.writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
        await conn.head(200, [("Content-Type", "application/json"), ("x-request-id", "req_hints")], length=len(body))
        await conn.send(body)
        await conn.end()

    async with FaultyUpstream(script) as up, proxy_to(tmp_path, up.url) as px:
        wire = await raw_exchange(px.port, request_bytes("GET", "/v1/threads/thread_f/runs/run_hints"))
        assert px.writer.flush(timeout=30)
        db = str(px.settings.db)
    assert b" 103 " not in wire and b"rel=preload" not in wire  # the gap, as documented
    got = parse_response(wire)
    assert (got.status, got.body, got.complete) == (200, body, True)
    assert got.headers["x-request-id"] == "req_hints"
    assert query(db, "SELECT status, prompt_tokens, completion_tokens FROM runs") == [("completed", 7, 3)]
