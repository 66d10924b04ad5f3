"""Not an open proxy: whatever the request line or Host header says, runtap only ever calls the
configured upstream, under its base path. Each case is checked at the upstream: what path arrived."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from proxy.config import Settings
from tests.fault_helpers import parse_response, proxy_to, raw_exchange, request_bytes
from tests.faulty_upstream import FaultyUpstream, echo_target, respond

BASE = "/base"

# (request line target, method, status the client gets)
REJECTED = {
    "absolute-form": ("GET", "http://evil.example/v1/models", 400),
    "absolute-form to the upstream": ("GET", "http://127.0.0.1:9/v1/models", 400),
    # aiohttp's router answers 404 itself: an authority-form target matches no route, so runtap's
    # handler (and its 405) is never reached. Either way nothing is forwarded.
    "CONNECT": ("CONNECT", "evil.example:443", 404),
    "scheme-relative": ("GET", "//evil.example/v1/models", 400),
    "dot-dot": ("GET", "/../admin", 400),
    "dot-dot inside": ("GET", "/v1/../../admin", 400),
    "encoded dots": ("GET", "/v1/%2e%2e/%2e%2e/admin", 400),
    "encoded dots upper": ("GET", "/v1/%2E%2E/admin", 400),
    "half-encoded dot": ("GET", "/v1/.%2e/admin", 400),
    "dots and encoded slash": ("GET", "/v1/..%2f..%2fadmin", 400),
    "double-encoded dots": ("GET", "/v1/%252e%252e/admin", 400),
    "backslash": ("GET", "/v1/..%5cadmin", 400),
    "NUL": ("GET", "/v1/models%00.json", 400),
}


@pytest.mark.parametrize("case", list(REJECTED))
async def test_targets_that_could_leave_the_upstream_base_are_refused(tmp_path: Path, case: str) -> None:
    method, target, status = REJECTED[case]
    async with FaultyUpstream(echo_target()) as up, proxy_to(tmp_path, up.url + BASE) as px:
        resp = parse_response(await raw_exchange(px.port, request_bytes(method, target)))
        assert resp.status == status, resp.body
        if method != "CONNECT":
            assert orjson.loads(resp.body)["error"]["type"] == "runtap_error"
    assert up.requests == []


# (target sent to runtap, target the upstream must receive)
FORWARDED = {
    "plain": ("/v1/models", f"{BASE}/v1/models"),
    "encoded slash stays encoded": ("/v1/files/%2Fetc", f"{BASE}/v1/files/%2Fetc"),
    "dots in the query are data": ("/v1/threads?after=../../x", f"{BASE}/v1/threads?after=../../x"),
    "userinfo-looking segment": ("/@evil.example/v1/models", f"{BASE}/@evil.example/v1/models"),
    "dot inside a name": ("/v1/files/file..json", f"{BASE}/v1/files/file..json"),
}


@pytest.mark.parametrize("case", list(FORWARDED))
async def test_allowed_targets_stay_under_the_upstream_base(tmp_path: Path, case: str) -> None:
    sent, arrived = FORWARDED[case]
    async with FaultyUpstream(echo_target()) as up, proxy_to(tmp_path, up.url + BASE) as px:
        resp = parse_response(await raw_exchange(px.port, request_bytes("GET", sent, host="evil.example")))
        assert resp.status == 200
    [request] = up.requests
    assert request.target == arrived
    # A crafted Host header does not travel: the upstream is addressed as itself.
    assert request.header("Host") == f"127.0.0.1:{up.port}"


async def test_upstream_redirects_are_relayed_not_followed(tmp_path: Path) -> None:
    async with FaultyUpstream(echo_target()) as elsewhere:
        redirect = respond(b"", status=302, headers=[("Location", elsewhere.url + "/stolen")])
        async with FaultyUpstream(redirect) as up, proxy_to(tmp_path, up.url) as px:
            resp = parse_response(await raw_exchange(px.port, request_bytes("GET", "/v1/models")))
            assert resp.status == 302 and resp.headers["location"] == elsewhere.url + "/stolen"
    assert elsewhere.requests == []


def test_admin_listener_is_loopback_only_unless_asked() -> None:
    assert Settings().admin.host == "127.0.0.1"
    assert Settings().listen.host == "127.0.0.1"
