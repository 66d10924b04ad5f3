"""HTTP-level fidelity of the forwarding path for cases the SDK never produces."""

from __future__ import annotations

from pathlib import Path

from tests.fault_helpers import parse_response, proxy_to, raw_exchange, request_bytes
from tests.faulty_upstream import Conn, FaultyUpstream


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
