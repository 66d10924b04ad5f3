"""Slow clients (--client-timeout): connections that trickle a request's headers, or stop sending its body,
are closed and counted, and nothing of them reaches the upstream as a complete request; /healthz and
ordinary requests are served meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from tests.fault_helpers import Proxy, get_json, parse_response, proxy_to, query, raw_exchange, request_bytes
from tests.faulty_upstream import FaultyUpstream, echo_target

TIMEOUT = 0.5


def _timeouts(px: Proxy, phase: str) -> float:
    return px.running.runtime.metrics.registry.get_sample_value("runtap_client_timeouts_total",
                                                                {"phase": phase}) or 0.0


async def _trickle(port: int, closed: list[bool]) -> None:
    """Headers one byte every 50 ms, for ever: only the server closing the connection ends it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = request_bytes("GET", "/v1/threads/t/runs/r") * 1000
    try:
        for i in range(len(head)):
            writer.write(head[i:i + 1])
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    if await reader.read(1) == b"":
                        break  # closed by runtap
    except ConnectionError:
        pass
    closed.append(True)
    writer.close()


async def test_trickled_headers_are_cut_off_and_counted_while_others_are_served(tmp_path: Path) -> None:
    async with FaultyUpstream(echo_target()) as up, proxy_to(tmp_path, up.url, client_timeout=TIMEOUT) as px:
        closed: list[bool] = []
        async with asyncio.timeout(30):  # each is cut off after TIMEOUT; the bound only stops a hang
            tricklers = [asyncio.create_task(_trickle(px.port, closed)) for _ in range(50)]
            status, _ = await get_json(px.running.admin_url + "/healthz")
            assert status == 200
            ok = parse_response(await raw_exchange(px.port, request_bytes("GET", "/v1/models")))
            assert ok.status == 200
            await asyncio.gather(*tricklers)
        assert len(closed) == 50
        assert _timeouts(px, "headers") >= 50
        assert [r.target for r in up.requests] == ["/v1/models"]


async def test_a_body_that_stops_arriving_gets_a_408_and_is_counted(tmp_path: Path) -> None:
    async with FaultyUpstream(echo_target()) as up, proxy_to(tmp_path, up.url, client_timeout=TIMEOUT) as px:
        for chunked in (False, True):
            reader, writer = await asyncio.open_connection("127.0.0.1", px.port)
            if chunked:
                writer.write(request_bytes("POST", "/v1/threads/t/runs", headers={
                    "Transfer-Encoding": "chunked", "Content-Type": "application/json"}) + b"5\r\n{\"a\":\r\n")
            else:
                writer.write(request_bytes("POST", "/v1/threads/t/runs", body=b"{\"assistant_id\": \"a\"}")[:-5])
            await writer.drain()
            async with asyncio.timeout(30):
                wire = await reader.read()  # until runtap closes: the client sent no more
            writer.close()
            got = parse_response(wire)
            assert got.status == 408, wire[:300]
            assert b'"code":"client_timeout"' in got.body
        assert _timeouts(px, "body") == 2
        assert px.writer.flush(timeout=30)
        db = str(px.settings.db)
    rows = query(db, "SELECT status_code, error FROM requests ORDER BY started_at")
    assert rows == [(408, "client_timeout"), (408, "client_timeout")]
