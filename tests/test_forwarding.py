"""HTTP-level fidelity of the forwarding path for cases the SDK never produces."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.fault_helpers import API_KEY, parse_response, proxy_to, raw_exchange, request_bytes
from tests.faulty_upstream import Conn, FaultyUpstream, run_object, sse_event, sse_stream


async def test_head_keeps_the_upstreams_content_length_and_sends_no_body(tmp_path: Path) -> None:
    async def head_only(conn: Conn) -> None:
        await conn.head(200, [("Content-Type", "application/json")], length=1234)

    async with FaultyUpstream(head_only) as up, proxy_to(tmp_path, up.url) as px:
        wire = await raw_exchange(px.port, request_bytes("HEAD", "/v1/files/file_1/content"))
    resp = parse_response(wire)
    assert resp.status == 200
    assert resp.headers["content-length"] == "1234"
    assert wire.endswith(b"\r\n\r\n")  # nothing after the head
    assert [r.method for r in up.requests] == ["HEAD"]


async def test_an_sse_event_reaches_the_client_before_the_upstream_sends_the_next(tmp_path: Path) -> None:
    """The upstream sends one event and then waits until the client has seen it: a proxy that
    buffered (for the next event, a size threshold or the end of the stream) would never deliver it."""
    first = sse_event("thread.run.created", run_object("run_relay", "queued"))
    rest = [sse_event("thread.run.completed", run_object("run_relay", "completed")), b"event: done\ndata: [DONE]\n\n"]
    seen_first = asyncio.Event()
    async with FaultyUpstream(sse_stream([first, *rest], after_first=seen_first)) as up, \
            proxy_to(tmp_path, up.url) as px:
        reader, writer = await asyncio.open_connection("127.0.0.1", px.port)
        writer.write(request_bytes("POST", "/v1/threads/thread_f/runs", body=b'{"stream": true}',
                                   headers={"Content-Type": "application/json"}))
        await writer.drain()
        got = bytearray()
        async with asyncio.timeout(10):  # fails here if the first event is held back
            while first not in got:
                chunk = await reader.read(65536)
                assert chunk, "the proxy closed before relaying the first event"
                got += chunk
        seen_first.set()
        async with asyncio.timeout(10):
            while chunk := await reader.read(65536):
                got += chunk
        writer.close()
    body = parse_response(bytes(got)).body
    assert body == first + b"".join(rest) == bytes(up.conns[0].sent)


async def test_end_to_end_headers_pass_both_ways_and_hop_by_hop_ones_stop_here(tmp_path: Path) -> None:
    """RFC 9110 §7.6.1: Connection, the fields it names, Keep-Alive, TE, Trailer, Upgrade and
    Proxy-Authorization belong to one hop; every other field reaches the far side unchanged."""
    upstream_headers = [
        ("Content-Type", "application/json"), ("x-request-id", "req_123"), ("openai-organization", "org-x"),
        ("openai-processing-ms", "42"), ("x-ratelimit-limit-requests", "5000"),
        ("x-ratelimit-remaining-tokens", "79000"), ("Retry-After", "7"), ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"), ("Keep-Alive", "timeout=5"), ("X-Hop", "upstream-hop"), ("Connection", "X-Hop"),
    ]
    body = b'{"object": "list", "data": []}'

    async def script(conn: Conn) -> None:
        await conn.head(200, upstream_headers, length=len(body))
        await conn.send(body)

    async with FaultyUpstream(script) as up, proxy_to(tmp_path, up.url) as px:
        wire = await raw_exchange(px.port, request_bytes("GET", "/v1/threads/thread_f/runs?limit=2", headers={
            "OpenAI-Beta": "assistants=v1", "OpenAI-Organization": "org-x", "OpenAI-Project": "proj_1",
            "X-Custom": "kept", "X-Client-Hop": "dropped", "Connection": "close, X-Client-Hop",
            "Keep-Alive": "timeout=5", "TE": "trailers", "Proxy-Authorization": "Basic c2VjcmV0",
        }))
    sent = up.requests[0]
    assert sent.target == "/v1/threads/thread_f/runs?limit=2"
    for name, value in (("Authorization", f"Bearer {API_KEY}"), ("OpenAI-Beta", "assistants=v1"),
                        ("OpenAI-Organization", "org-x"), ("OpenAI-Project", "proj_1"), ("X-Custom", "kept")):
        assert sent.header(name) == value, name
    for name in ("X-Client-Hop", "Keep-Alive", "TE", "Proxy-Authorization"):
        assert sent.header(name) is None, name
    assert sent.header("Host") == up.url.removeprefix("http://")  # the upstream's own host, not the app's

    resp = parse_response(wire)
    assert resp.status == 200 and resp.body == body
    raw_head = wire.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
    for name, value in upstream_headers[:8]:
        assert f"{name.lower()}: {value.lower()}" in raw_head, name
    assert "set-cookie: a=1" in raw_head and "set-cookie: b=2" in raw_head  # repeated fields stay repeated
    assert "x-hop" not in raw_head and "keep-alive: timeout" not in raw_head
