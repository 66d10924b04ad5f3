"""Limits: request body size, header size and concurrent upstream connections, each with a clear error
and nothing half-sent to the upstream."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from tests.fault_helpers import API_KEY, parse_response, proxy_to, query, raw_exchange, request_bytes
from tests.faulty_upstream import FaultyUpstream, echo_target, wait_then_echo

LIMIT = 4096


async def test_body_over_the_limit_with_content_length_is_413_and_never_sent(tmp_path: Path) -> None:
    async with FaultyUpstream(echo_target()) as up, proxy_to(tmp_path, up.url, max_body_bytes=LIMIT) as px:
        body = b'{"pad": "' + b"x" * LIMIT + b'"}'
        resp = parse_response(await raw_exchange(px.port, request_bytes("POST", "/v1/files", body=body)))
        assert resp.status == 413
        error = orjson.loads(resp.body)["error"]
        assert error["code"] == "request_too_large" and str(LIMIT) in error["message"]
        assert "--max-body-bytes" in error["message"]
        # Right at the limit passes.
        ok = await raw_exchange(px.port, request_bytes("POST", "/v1/files", body=b"y" * LIMIT))
        assert parse_response(ok).status == 200
    assert [r.body for r in up.requests] == [b"y" * LIMIT]
    # The refused request is still a request: it has its row, like every other.
    rows = query(px.settings.db, "SELECT status_code, error FROM requests ORDER BY started_at")
    assert rows == [(413, "request_too_large"), (200, None)]


async def test_a_gzip_request_body_reaches_the_upstream_byte_for_byte(tmp_path: Path) -> None:
    """The app compressed the body: runtap must not inflate it (aiohttp's server would by default)."""
    import gzip
    body = gzip.compress(b'{"assistant_id": "asst_1", "metadata": {"k": "' + b"v" * 300 + b'"}}')
    async with FaultyUpstream(echo_target()) as up, proxy_to(tmp_path, up.url) as px:
        for framing in ("length", "chunked"):
            if framing == "length":
                wire = request_bytes("POST", "/v1/threads/t1/runs", body=body,
                                     headers={"Content-Encoding": "gzip"})
            else:
                head = (f"POST /v1/threads/t1/runs HTTP/1.1\r\nHost: runtap.test\r\n"
                        f"Authorization: Bearer {API_KEY}\r\nContent-Encoding: gzip\r\n"
                        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
                wire = head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
            assert parse_response(await asyncio.wait_for(raw_exchange(px.port, wire), 10)).status == 200
    assert [r.body for r in up.requests] == [body, body]


async def test_chunked_body_over_the_limit_is_413_and_the_upstream_never_gets_a_whole_request(
        tmp_path: Path) -> None:
    async with FaultyUpstream(echo_target()) as up, proxy_to(tmp_path, up.url, max_body_bytes=LIMIT) as px:
        reader, writer = await asyncio.open_connection("127.0.0.1", px.port)
        head = (f"POST /v1/files HTTP/1.1\r\nHost: runtap.test\r\nAuthorization: Bearer {API_KEY}\r\n"
                "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
        piece = b"z" * 1024
        writer.write(head + b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(8)))
        await writer.drain()
        wire = await asyncio.wait_for(reader.read(65536), 10)
        writer.close()
        resp = parse_response(wire)
        assert resp.status == 413
        assert orjson.loads(resp.body)["error"]["code"] == "request_too_large"
    # The upstream may have seen the start of the upload, but never a complete request to act on.
    assert all(not r.body_complete for r in up.requests)
    rows = query(px.settings.db, "SELECT status_code, error FROM requests")
    assert rows == [(413, "request_too_large")]


async def test_header_over_the_limit_is_rejected_before_the_upstream(tmp_path: Path) -> None:
    async with FaultyUpstream(echo_target()) as up, proxy_to(tmp_path, up.url, max_header_bytes=1024) as px:
        big = request_bytes("GET", "/v1/models", headers={"X-Padding": "p" * 2048})
        resp = parse_response(await raw_exchange(px.port, big))
        # aiohttp's parser answers before runtap sees the request (its own text/plain error).
        assert resp.status in (400, 431)
        assert b"more than 1024 bytes" in resp.body
        small = request_bytes("GET", "/v1/models", headers={"X-Padding": "p" * 512})
        assert parse_response(await raw_exchange(px.port, small)).status == 200
    assert [r.target for r in up.requests] == ["/v1/models"]


async def test_upstream_connections_never_exceed_max_connections(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with FaultyUpstream(wait_then_echo(release)) as up, \
            proxy_to(tmp_path, up.url, max_connections=2) as px:
        pending = [asyncio.create_task(raw_exchange(px.port, request_bytes("GET", f"/v1/models/m{i}")))
                   for i in range(6)]
        while up.open_now < 2:  # the first two reach the upstream; the rest wait inside runtap
            await up.request_seen.wait()
            up.request_seen.clear()
        release.set()
        responses = [parse_response(w) for w in await asyncio.gather(*pending)]
    assert [r.status for r in responses] == [200] * 6
    assert up.open_max == 2
    assert sorted(r.target for r in up.requests) == sorted(f"/v1/models/m{i}" for i in range(6))


async def test_waiting_for_a_free_upstream_connection_past_the_connect_timeout_says_so(
        tmp_path: Path) -> None:
    release = asyncio.Event()
    async with FaultyUpstream(wait_then_echo(release)) as up, \
            proxy_to(tmp_path, up.url, max_connections=1, connect_timeout=0.5) as px:
        first = asyncio.create_task(raw_exchange(px.port, request_bytes("GET", "/v1/models/a")))
        await up.request_seen.wait()
        second = parse_response(await raw_exchange(px.port, request_bytes("GET", "/v1/models/b")))
        release.set()
        assert parse_response(await first).status == 200
    error = orjson.loads(second.body)["error"]
    assert second.status == 503, error
    assert error["code"] == "connection_limit"
    assert "--max-connections" in error["message"]
