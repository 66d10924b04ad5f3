"""Upstream faults: what the client sees, and what DuckDB holds afterwards.

Each test puts runtap (in this process) in front of a misbehaving raw-socket upstream
(tests/faulty_upstream.py), talks to it with a raw HTTP/1.1 client that shows the exact bytes received,
and then reads the DuckDB file runtap leaves behind after a clean stop.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import socket
import tracemalloc
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import orjson
import pytest
from runtap.demo import workload as w

from tests.fault_helpers import (
    API_KEY,
    eventually,
    get_json,
    parse_response,
    proxy_to,
    query,
    raw_exchange,
    request_bytes,
)
from tests.faulty_upstream import (
    JSON_HEADERS,
    FaultyUpstream,
    endless_comments,
    hang,
    respond,
    run_object,
    slow_runs,
    sse_event,
    sse_stream,
    tls_garbage,
)

RUNS_PATH = "/v1/threads/thread_f/runs"
STREAM_BODY = orjson.dumps({"assistant_id": "asst_f", "stream": True})
BAD_HOST = "upstream.runtap-test.invalid"


@pytest.fixture(autouse=True)
def no_error_logs(caplog: pytest.LogCaptureFixture) -> Any:
    """An upstream fault is the upstream's problem: runtap must not log it as its own error."""
    yield
    records = caplog.get_records("setup") + caplog.get_records("call")
    errors = [f"{r.name}: {r.getMessage()}" for r in records if r.levelno >= logging.ERROR]
    assert errors == []


def _requests_rows(db: str) -> list[tuple[Any, ...]]:
    return query(db, "SELECT status_code, error, streamed, operation FROM requests ORDER BY started_at")


def _runs(db: str) -> dict[str, tuple[Any, ...]]:
    return {r[0]: r[1:] for r in query(db, "SELECT id, status, ended_at IS NULL FROM runs")}


def _transitions(db: str, run_id: str) -> set[tuple[str | None, str]]:
    # Events relayed in one chunk share an observed_at, so the set is what can be compared.
    return {(a, b) for a, b in query(db, "SELECT from_status, to_status FROM run_events WHERE run_id = ?",
                                     [run_id])}


# --- the upstream cannot be reached -------------------------------------------------------------------

def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("fault", ["refused", "dns", "tls"])
async def test_unreachable_upstream_is_a_502_naming_the_cause(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    garbage = FaultyUpstream(tls_garbage(), parse_request=False)
    async with garbage:
        if fault == "refused":
            upstream = f"http://127.0.0.1:{_dead_port()}"
        elif fault == "dns":
            # No resolver is reachable from the test machine, so the lookup itself is the fault:
            # getaddrinfo fails for this one name the way a resolver's NXDOMAIN does.
            real = socket.getaddrinfo

            def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
                if host == BAD_HOST:
                    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
                return real(host, *args, **kwargs)

            monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
            upstream = f"http://{BAD_HOST}"
        else:
            upstream = f"https://127.0.0.1:{garbage.port}"  # speaks garbage where TLS should be
        async with proxy_to(tmp_path, upstream, connect_timeout=5.0) as px:
            client = w.client_for(px.running.proxy_url + "/v1", API_KEY)
            with pytest.raises(openai.APIStatusError) as info:
                await client.beta.threads.runs.retrieve(run_id="run_x", thread_id="thread_x")
            await client.close()
            assert info.value.status_code == 502
            body = info.value.body
            assert isinstance(body, dict)
            assert body["code"] == f"upstream_{fault}"
            assert body["type"] == "runtap_error"
            assert upstream.split("//")[1] in body["message"]
            status, health = await get_json(px.running.admin_url + "/healthz")
            assert (status, health) == (200, {"status": "ok"})
    assert _requests_rows(px.settings.db) == [(502, fault, False, "runs.retrieve")]
    assert _runs(px.settings.db) == {}


async def test_upstream_that_hangs_before_headers_is_a_504_and_the_proxy_stays_healthy(tmp_path: Path) -> None:
    async with FaultyUpstream(hang()) as up, proxy_to(tmp_path, up.url, read_timeout=1.0) as px:
        pending = asyncio.create_task(raw_exchange(px.port, request_bytes("GET", RUNS_PATH + "/run_h")))
        await up.request_seen.wait()
        # While that request hangs, the proxy keeps answering.
        status, _ = await get_json(px.running.admin_url + "/healthz")
        assert status == 200
        resp = parse_response(await pending)
        assert resp.status == 504
        error = orjson.loads(resp.body)["error"]
        assert error["code"] == "upstream_timeout" and up.url.split("//")[1] in error["message"]
        # runtap gave up on the upstream connection: the upstream sees it closed.
        await asyncio.wait_for(up.conns[0].peer_closed.wait(), 5)
    assert _requests_rows(px.settings.db) == [(504, "timeout", False, "runs.retrieve")]


# --- the stream breaks ----------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["reset", "close"])
async def test_upstream_reset_mid_stream_reaches_the_client_as_a_drop_with_no_invented_bytes(
        tmp_path: Path, how: str) -> None:
    events = [
        sse_event("thread.run.created", run_object("run_r", "queued")),
        sse_event("thread.run.in_progress", run_object("run_r", "in_progress")),
        sse_event("thread.run.completed", run_object("run_r", "completed"))[:40],  # cut mid-event
    ]
    async with FaultyUpstream(sse_stream(events, then=how)) as up, proxy_to(tmp_path, up.url) as px:  # type: ignore[arg-type]
        wire = await raw_exchange(px.port, request_bytes("POST", RUNS_PATH, body=STREAM_BODY))
        resp = parse_response(wire)
        assert resp.status == 200
        assert resp.body == bytes(up.conns[0].sent)  # every byte the upstream sent, and nothing else
        assert not resp.complete, "runtap must not end a broken stream cleanly (no final 0-size chunk)"
        assert not wire.endswith(b"0\r\n\r\n")
    db = px.settings.db
    assert _runs(db) == {"run_r": ("in_progress", True)}  # captured up to the break, not finished
    assert _transitions(db, "run_r") == {(None, "queued"), ("queued", "in_progress")}
    [(status, error, streamed, _op)] = _requests_rows(db)
    assert (status, streamed) == (200, True) and error.startswith("upstream_"), error


async def test_sdk_sees_an_upstream_reset_as_a_broken_stream(tmp_path: Path) -> None:
    events = [sse_event("thread.run.created", run_object("run_s", "queued")),
              sse_event("thread.run.in_progress", run_object("run_s", "in_progress"))]
    async with FaultyUpstream(sse_stream(events, then="reset")) as up, proxy_to(tmp_path, up.url) as px:
        client = w.client_for(px.running.proxy_url + "/v1", API_KEY)
        seen: list[str] = []
        # The stream raises instead of ending as if the run were done.
        with pytest.raises((httpx.RemoteProtocolError, openai.APIConnectionError)):
            stream = await client.beta.threads.runs.create(thread_id="thread_f", assistant_id="asst_f",
                                                           stream=True)
            async for event in stream:
                seen.append(event.event)
        await client.close()
        assert seen == ["thread.run.created", "thread.run.in_progress"]
    assert _runs(px.settings.db) == {"run_s": ("in_progress", True)}


async def test_client_disconnect_mid_stream_closes_the_upstream_request_promptly(tmp_path: Path) -> None:
    first = sse_event("thread.run.created", run_object("run_c", "queued"))
    async with FaultyUpstream(sse_stream([first], then="hang")) as up, proxy_to(tmp_path, up.url) as px:
        before = asyncio.all_tasks()
        reader, writer = await asyncio.open_connection("127.0.0.1", px.port)
        writer.write(request_bytes("POST", RUNS_PATH, body=STREAM_BODY))
        got = b""
        while first not in got:
            got += await asyncio.wait_for(reader.read(65536), 10)
        writer.transport.abort()  # the app dies mid-stream
        # The upstream's side of runtap's connection sees the close, though the upstream sends nothing.
        await asyncio.wait_for(up.conns[0].peer_closed.wait(), 5)
        forwarder = px.running.runtime.forwarder
        await eventually(lambda: forwarder.inflight == 0, what="the handler to finish")
        await eventually(lambda: not {t for t in asyncio.all_tasks() - before if not t.done()}
                         - {asyncio.current_task()}, what="no task left behind")
    db = px.settings.db
    assert _runs(db) == {"run_c": ("queued", True)}  # what was relayed is captured
    assert _requests_rows(db) == [(200, "client_disconnected", True, "runs.create")]


# --- garbled bodies: relayed unchanged, skipped by capture with a counted reason --------------------

_BIG = 1_500_000  # bytes of one SSE event: over the tap's 1 MiB event bound
_COMPLETED = sse_event("thread.run.completed", run_object("run_g", "completed"))
_GARBLED: dict[str, tuple[Any, str, str | None, str | None]] = {
    # case: (script, method, reason counted, status the run ends with in DuckDB)
    "malformed_json": (respond(b'{"id": "run_g", "object": "thread.run", "status": "compl'),
                       "GET", "malformed_json", None),
    "truncated_gzip": (respond(gzip.compress(orjson.dumps(run_object("run_g", "completed")))[:-12],
                               headers=(*JSON_HEADERS, ("Content-Encoding", "gzip"))),
                       "GET", "bad_gzip", None),
    "invalid_utf8": (sse_stream([b"event: thread.run.created\ndata: {\"id\": \"run_g\", \"object\": "
                                 b"\"thread.run\", \"status\": \"queued\", \"name\": \"\xff\xfe\"}\n\n",
                                 _COMPLETED]),
                     "POST", "invalid_utf8", "completed"),
    "oversized_event": (sse_stream([sse_event("thread.run.in_progress",
                                              run_object("run_g", "in_progress", metadata={"x": "y" * _BIG})),
                                    _COMPLETED]),
                        "POST", "oversized_event", "completed"),
}


@pytest.mark.parametrize("case", list(_GARBLED))
async def test_garbled_upstream_bodies_are_relayed_unchanged_and_skipped_with_a_reason(
        tmp_path: Path, case: str) -> None:
    script, method, reason, final = _GARBLED[case]
    async with FaultyUpstream(script) as up, proxy_to(tmp_path, up.url) as px:
        if method == "GET":
            data = request_bytes("GET", RUNS_PATH + "/run_g", headers={"Accept-Encoding": "gzip"})
        else:
            data = request_bytes("POST", RUNS_PATH, body=STREAM_BODY)
        resp = parse_response(await raw_exchange(px.port, data))
        assert resp.status == 200 and resp.complete
        sent = bytes(up.conns[0].sent)
        assert hashlib.sha256(resp.body).digest() == hashlib.sha256(sent).digest()
        assert px.writer.flush(30)
        assert px.health.total("errors", f"decode:{reason}") == 1
    runs = _runs(px.settings.db)
    assert runs == ({} if final is None else {"run_g": (final, False)})


@pytest.mark.timeout(90)
async def test_endless_comment_stream_is_relayed_with_bounded_memory_until_the_client_leaves(
        tmp_path: Path) -> None:
    total = 24 << 20
    async with FaultyUpstream(endless_comments()) as up, proxy_to(tmp_path, up.url) as px:
        tracemalloc.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", px.port)
            writer.write(request_bytes("POST", RUNS_PATH, body=STREAM_BODY))
            received = 0
            while received < total:
                chunk = await asyncio.wait_for(reader.read(1 << 20), 10)
                assert chunk
                received += len(chunk)
            writer.transport.abort()
            await asyncio.wait_for(up.conns[0].peer_closed.wait(), 5)
            # Twice: the writer thread lets go of a batch only when it picks up the next one.
            assert px.writer.flush(60) and px.writer.flush(60)
            # Everything relayed went through the tap and was let go: what is still allocated is a
            # small fraction of what streamed through.
            held, _peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert held < total // 8, f"{held} bytes still held after relaying {received}"
        assert px.health.total("errors") == 0  # comments are not errors, only skipped
    assert _runs(px.settings.db) == {}
    assert _requests_rows(px.settings.db) == [(200, "client_disconnected", True, "runs.create")]


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_1000_concurrent_slow_streams_leave_healthz_answering_and_are_all_captured(
        tmp_path: Path) -> None:
    n = 1000
    probes_wanted = 10
    # The streams stay open until /healthz has answered enough probes while most of them were open,
    # so a loaded machine makes the test slower, not flaky.
    release = asyncio.Event()
    async with FaultyUpstream(slow_runs(events=8, gap=0.25, hold=release)) as up, \
            proxy_to(tmp_path, up.url, max_connections=n + 50) as px:
        latencies: list[float] = []
        failures: list[str] = []
        streams_done = asyncio.Event()

        async def probe() -> None:
            # /healthz on a fresh connection every 50 ms while the streams run, as a kubelet would.
            loop = asyncio.get_running_loop()
            while not streams_done.is_set():
                t0 = loop.time()
                crowded = up.open_now >= n // 2
                try:
                    status, _ = await get_json(px.running.admin_url + "/healthz", timeout=5.0)
                except (httpx.HTTPError, OSError) as exc:
                    failures.append(repr(exc))
                else:
                    if crowded:
                        latencies.append(loop.time() - t0)
                    if status != 200:
                        failures.append(f"status {status}")
                if len(latencies) >= probes_wanted or len(failures) >= probes_wanted:
                    release.set()
                await asyncio.sleep(0.05)

        prober = asyncio.create_task(probe())
        wires = await asyncio.gather(*(raw_exchange(px.port, request_bytes("POST", RUNS_PATH, body=STREAM_BODY),
                                                    timeout=120) for _ in range(n)))
        streams_done.set()
        await prober
        assert up.open_max >= n // 2, "the streams were meant to overlap"
        responses = [parse_response(wire) for wire in wires]
        assert all(r.status == 200 and r.complete for r in responses)
        assert sorted(r.body for r in responses) == sorted(bytes(c.sent) for c in up.conns)
        assert failures == [] and len(latencies) >= probes_wanted
        # The worst latency is reported by bench/soak.py, not asserted here (machine-dependent).
    runs = dict(query(px.settings.db, "SELECT id, status FROM runs"))
    assert len(runs) == n and set(runs.values()) == {"completed"}
