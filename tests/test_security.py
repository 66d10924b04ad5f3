"""Not an open proxy: whatever the request line or Host header says, runtap only ever calls the
configured upstream, under its base path. Each case is checked at the upstream: what path arrived."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

import httpx2 as httpx
import orjson
import pytest
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from runtap.demo import workload as w
from runtap.demo.sim import SimConfig, start_sim
from runtap.proxy.errors import RedactParserErrors
from runtap.settings.config import Settings

from tests.fault_helpers import (
    locked,
    parse_response,
    proxy_to,
    query,
    raw_exchange,
    request_bytes,
    start_runtap,
    terminate,
)
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


# --- no key at rest -------------------------------------------------------------------------------------

BEARER_KEY = "sk-proj-SECRETbearer7Qx2v9LmZp4Rt6Wy8Ab1Cd3Ef5Gh"
AZURE_KEY = "azkeySECRET0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"
QUERY_KEY = "qkeySECRET5a5b5c5d5e5f5g5h5i5j5k5l5m"
KEYS = (BEARER_KEY, AZURE_KEY, QUERY_KEY)


class Sink:
    """An OTLP/HTTP endpoint that keeps every export body runtap sends it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        return web.Response(status=200, content_type="application/x-protobuf", body=b"")


async def _error_paths(proxy_url: str, port: int) -> None:
    """Every way a request can fail, each carrying a key."""
    bearer = {"Authorization": f"Bearer {BEARER_KEY}", "OpenAI-Beta": "assistants=v2"}
    async with httpx.AsyncClient(base_url=proxy_url, timeout=30) as client:
        azure = {"api-key": AZURE_KEY, "OpenAI-Beta": "assistants=v2"}
        assert (await client.get("/v1/threads/thread_nope/runs/run_nope", headers=azure)).status_code == 404
        r = await client.get(f"/v1/threads/thread_nope/runs?api-key={QUERY_KEY}", headers=bearer)
        assert r.status_code == 404
        r = await client.get("/v1/threads/t/runs", headers={**bearer, "x-sim-delay-ms": "2500"})
        assert r.status_code == 504
        r = await client.post("/v1/files", content=b"x" * (200 << 10), headers=bearer)
        assert r.status_code == 413
    wire = await raw_exchange(port, f"GET /v1/%2e%2e/x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {BEARER_KEY}"
                              "\r\nConnection: close\r\n\r\n".encode())
    assert parse_response(wire).status == 400
    # A streamed run the client abandons after its first bytes.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = orjson.dumps({"assistant_id": "asst_nope", "stream": True})
    writer.write(f"POST /v1/threads/thread_nope/runs HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {BEARER_KEY}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    await reader.read(1)
    writer.transport.abort()


async def _scrape(admin_url: str) -> bytes:
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(admin_url + "/metrics")
        assert r.status_code == 200
        return r.content


@pytest.mark.timeout(180)
async def test_no_key_reaches_any_artefact_after_a_full_workload_and_every_error_path(tmp_path: Path) -> None:
    sink = Sink()
    sink_app = web.Application()
    sink_app.router.add_post("/v1/traces", sink.handle)
    sink_runner = web.AppRunner(sink_app, access_log=None)
    await sink_runner.setup()
    await web.TCPSite(sink_runner, "127.0.0.1", 0).start()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_runner.addresses[0][1]}",
           "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    flags = ("--log-level", "debug", "--read-timeout", "1", "--max-body-bytes", "64K")
    db = tmp_path / "runtap.duckdb"
    spool = Path(str(db) + ".spool.jsonl")
    sim_runner, sim_url = await start_sim(SimConfig())
    artefacts: dict[str, bytes] = {}
    try:
        # Phase 1: the database is locked, so everything goes through the spool.
        with locked(db):
            proc = await start_runtap(sim_url.removesuffix("/v1"), db, tmp_path / "spooling.log", *flags, env=env)
            try:
                result = await w.run_workload(proc.url + "/v1", api_key=BEARER_KEY)
                assert result.errors == {"NotFoundError": 1, "RateLimitError": 1}
                await _error_paths(proc.url, int(proc.url.rsplit(":", 1)[1]))
                artefacts["metrics while spooling"] = await _scrape(proc.admin_url)
                assert await terminate(proc) == 0
            finally:
                proc.kill()
        artefacts["spool"] = spool.read_bytes()
        assert len(artefacts["spool"]) > 10_000
        # Phase 2: writable again; the spool is replayed. Then the upstream goes away: 502s.
        proc2 = await start_runtap(sim_url.removesuffix("/v1"), db, tmp_path / "replaying.log", *flags, env=env)
        try:
            await sim_runner.cleanup()
            async with httpx.AsyncClient(base_url=proc2.url, timeout=30) as client:
                for headers in ({"Authorization": f"Bearer {BEARER_KEY}"}, {"api-key": AZURE_KEY}):
                    r = await client.get(f"/v1/threads/t/runs/r?api-key={QUERY_KEY}", headers=headers)
                    assert r.status_code == 502
            artefacts["metrics after replay"] = await _scrape(proc2.admin_url)
            assert await terminate(proc2) == 0
        finally:
            proc2.kill()
    finally:
        await sim_runner.cleanup()
        await sink_runner.cleanup()
    for name in ("runtap.duckdb", "runtap.duckdb.wal", "runtap.duckdb.spool.jsonl"):
        if (tmp_path / name).exists():
            artefacts[name] = (tmp_path / name).read_bytes()
    artefacts["log while spooling"] = (tmp_path / "spooling.log").read_bytes()
    artefacts["log while replaying"] = (tmp_path / "replaying.log").read_bytes()
    artefacts["OTLP spans"] = b"".join(sink.bodies)

    # The needles are findable: each key went through runtap (its fingerprint is in the database).
    fingerprints = {r[0] for r in query(db, "SELECT DISTINCT key_fingerprint FROM requests")}
    assert {hashlib.sha256(b"runtap" + k.encode()).hexdigest()[:12] for k in (BEARER_KEY, AZURE_KEY)} <= fingerprints
    assert query(db, "SELECT count(*) FROM runs")[0][0] == len(result.runs)
    assert b"runtap_requests_total" in artefacts["metrics after replay"]
    leaks = [(name, key[:12]) for name, data in artefacts.items() for key in KEYS
             for needle in (key.encode(), key[-16:].encode()) if needle in data]
    assert leaks == []
    # Prompt content is not stored without --store-prompts: the assistants' instructions are absent.
    assert b"You are helpful." not in artefacts["runtap.duckdb"] + artefacts.get("runtap.duckdb.wal", b"")
    assert b"You are helpful." not in artefacts["spool"]


async def test_an_oversized_authorization_header_is_not_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with FaultyUpstream(echo_target()) as up, proxy_to(tmp_path, up.url, max_header_bytes=1024) as px:
        padded = f"Bearer {BEARER_KEY}" + " " * 2048
        wire = await raw_exchange(px.port, f"GET /v1/models HTTP/1.1\r\nHost: h\r\nAuthorization: {padded}\r\n"
                                  "Connection: close\r\n\r\n".encode())
        assert parse_response(wire).status in (400, 431)
    assert up.requests == []
    logged = "\n".join(r.getMessage() + str(r.exc_info and r.exc_info[1]) for r in caplog.records)
    assert BEARER_KEY[:20] not in logged


def test_the_parser_error_filter_keeps_the_event_and_drops_the_key() -> None:
    # runtap.proxy.errors.RedactParserErrors, as it would see aiohttp's record for an oversized header value.
    exc = LineTooLong(f"Bearer {BEARER_KEY}".encode(), 1024)
    record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s",
                               ("127.0.0.1",), (type(exc), exc, None))
    assert RedactParserErrors().filter(record)
    text = logging.Formatter().format(record)
    assert BEARER_KEY[:20] not in text and "LineTooLong" in text and record.levelno == logging.INFO
