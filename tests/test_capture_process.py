"""`--capture-mode process`: relays hand what they relayed to one capture process over a Unix socket.

Real processes, sockets and DuckDB: the frame format under any chunking; --workers 2 writing one
database with every run in it after SIGTERM; a capture process killed mid-load failing no request,
counted and replaced; and one /metrics scrape with relay and run metrics, nothing counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runtap.analytics.ingest import wire
from runtap.analytics.ingest.records import (
    CaptureItem,
    Exchange,
    RequestBody,
    RequestRecord,
    ResponseBody,
    StreamChunk,
    StreamEnd,
)
from runtap.demo.sim import SimConfig, start_sim
from runtap.proxy.app import build_runtime
from runtap.proxy.serve import start

from tests.conftest import stack_settings
from tests.fault_helpers import API_KEY, query, start_runtap, terminate
from tests.metrics_scrape import Scrape, scrape
from tests.test_workers import _free_port_pair, _ready

HEADERS = {"Authorization": f"Bearer {API_KEY}", "OpenAI-Beta": "assistants=v2"}


def _items() -> list[CaptureItem]:
    ex = Exchange("ex1", "POST", "/v1/threads/t/runs", "runs.create", "v2", "fp12", 1.5e9, "gzip", "openai")
    return [
        RequestBody(ex, b'{"assistant_id": "a"}', False),
        ResponseBody(ex, 200, b"\x1f\x8b binary \x00", True),
        StreamChunk(ex, b"event: thread.run.created\ndata: {}\n\n", 1.5e9 + 0.25),
        StreamEnd(ex, complete=False),
        RequestRecord("ex1", 1.5e9, "POST", "/v1/threads/t/runs", None, None, True, 12.5, None, 10, 20,
                      None, None, "client_disconnected", None, "azure"),
    ]


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_frames_decode_to_the_same_items_under_any_chunking(cuts: list[int]) -> None:
    items = _items()
    data = wire.encode(items[:2]) + wire.encode(items[2:]) + wire.encode([])
    reader = wire.FrameReader()
    got: list[CaptureItem] = []
    pos = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts) + [len(data)]:
        for frame in reader.feed(data[pos:cut]):
            got.extend(frame)
        pos = max(pos, cut)
    assert got == items
    assert reader.pending == 0


def test_a_frame_that_is_not_runtaps_is_refused() -> None:
    with pytest.raises(wire.FrameError):
        wire.FrameReader().feed(wire.HEADER.pack(wire.MAX_FRAME + 1))
    with pytest.raises(wire.FrameError):
        wire.FrameReader().feed(wire.HEADER.pack(3) + b"\x00\x01\x02")
    bogus = wire.encode([]).replace(b"[", b"(")  # a tuple, not a list
    with pytest.raises(wire.FrameError):
        wire.FrameReader().feed(bogus)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _assistant(client: aiohttp.ClientSession, base: str) -> str:
    async with client.post(f"{base}/v1/assistants", json={"model": "gpt-4o"}, headers=HEADERS) as r:
        assert r.status == 200, await r.text()
        aid: str = (await r.json())["id"]
        return aid


async def _thread_and_run(client: aiohttp.ClientSession, base: str, assistant: str) -> str:
    async with client.post(f"{base}/v1/threads/runs", json={"assistant_id": assistant}, headers=HEADERS) as r:
        assert r.status == 200, await r.text()
        rid: str = (await r.json())["id"]
        return rid


def _run_ids(db: Path) -> set[str]:
    return {r[0] for r in query(db, "SELECT id FROM runs")}


async def _until(what: str, check: Any, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"{what} not within {timeout:.0f}s"
        await asyncio.sleep(0.05)  # polling another process, which has no way to notify us


@pytest.mark.timeout(120)
async def test_two_workers_write_one_database_and_lose_nothing_after_sigterm(tmp_path: Path) -> None:
    runner, url = await start_sim(SimConfig())
    base = url.removesuffix("/v1")
    port, admin = _free_port(), _free_port_pair()
    db = tmp_path / "runtap.duckdb"
    try:
        proc = await start_runtap(base, db, tmp_path / "runtap.log", "--workers", "2", "--capture-mode",
                                  "process", "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}")
        proxy = f"http://127.0.0.1:{port}"
        try:
            # Either process may log its listening line first: both admin listeners answer once both serve.
            await _ready(f"http://127.0.0.1:{admin}/healthz")
            await _ready(f"http://127.0.0.1:{admin + 1}/healthz")
            # A new connection per request, so the kernel hands them to both workers.
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client:
                assistant = await _assistant(client, proxy)
                runs = await asyncio.gather(*(_thread_and_run(client, proxy, assistant) for _ in range(60)))
        finally:
            assert await terminate(proc) == 0
    finally:
        await runner.cleanup()
    assert sorted(p.name for p in tmp_path.glob("*.duckdb")) == ["runtap.duckdb"]
    assert set(runs) <= _run_ids(db)
    assert query(db, "SELECT count(*) FROM requests")[0][0] == 61
    assert not list(tmp_path.glob("runtap-capture-*"))


@pytest.mark.timeout(180)
async def test_killing_the_capture_process_fails_no_request_is_counted_and_capture_resumes(
        tmp_path: Path) -> None:
    runner, url = await start_sim(SimConfig())
    base = url.removesuffix("/v1")
    db = tmp_path / "runtap.duckdb"
    try:
        proc = await start_runtap(base, db, tmp_path / "runtap.log", "--capture-mode", "process")
        try:
            async with aiohttp.ClientSession() as client:
                assistant = await _assistant(client, proc.url)
                ready = await _json(client, proc.admin_url + "/readyz")
                pid = ready["capture_process"]["pid"]
                load = asyncio.gather(*(_thread_and_run(client, proc.url, assistant) for _ in range(200)))
                await asyncio.sleep(0)  # let the load start before the kill
                os.kill(pid, signal.SIGKILL)
                during = await load  # every request answered 200 (asserted inside)

                async def restarted() -> bool:
                    return (await scrape(proc.admin_url)).get("runtap_capture_restarts_total") == 1

                await _until("restart counted", restarted)

                async def store_open() -> bool:
                    body = await _json(client, proc.admin_url + "/readyz")
                    return bool(body.get("status") == "ok" and body["capture_process"]["pid"] != pid)

                await _until("new capture process ready", store_open)
                after = [await _thread_and_run(client, proc.url, assistant) for _ in range(20)]
                metrics = await scrape(proc.admin_url)
        finally:
            assert await terminate(proc) == 0
    finally:
        await runner.cleanup()
    assert len(during) == 200
    assert metrics.get("runtap_capture_process_up") == 1
    captured = _run_ids(db)
    assert set(after) <= captured
    # What the killed process had taken but not confirmed is counted (an upper bound of what is lost);
    # every run the clients got that is not in DuckDB is within that count.
    missing = set(during) - captured
    unconfirmed = metrics.get("runtap_capture_dropped_total", stage="capture_unconfirmed")
    assert len(missing) <= unconfirmed
    assert len(set(during) & captured) > 0


async def _json(client: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with client.get(url) as r:
        body: dict[str, Any] = await r.json()
        return body


@pytest.mark.parametrize("mode", ["inprocess", "process"])
async def test_one_scrape_shows_relay_and_run_metrics_without_double_counting(tmp_path: Path, mode: str) -> None:
    sim_runner, sim_url = await start_sim(SimConfig())
    settings_ = stack_settings(tmp_path, sim_url.removesuffix("/v1"), capture_mode=mode)
    running = await start(settings_, runtime=build_runtime(settings_))
    try:
        async with aiohttp.ClientSession() as client:
            assistant = await _assistant(client, running.proxy_url)
            for _ in range(10):
                await _thread_and_run(client, running.proxy_url, assistant)

            async def all_written() -> bool:
                return (await scrape(running.admin_url)).get("runtap_capture_written_total", table="requests") >= 11

            await _until("11 requests rows", all_written)
            m: Scrape = await scrape(running.admin_url)
            # /reports reads the one database, wherever it is held
            async with client.get(running.admin_url + "/reports/status?format=json") as r:
                assert r.status == 200, await r.text()
                assert r.headers["X-Runtap-Columns"]
                report = await r.json()
            ready = await _json(client, running.admin_url + "/readyz")
    finally:
        await running.stop()
        await sim_runner.cleanup()
    types = re.findall(r"^# TYPE (\S+)", m.text, re.M)
    assert len(types) == len(set(types)), "a family appears twice in one scrape"
    assert m.get("runtap_requests_total") == 11
    assert m.get("runtap_capture_written_total", table="requests") == 11
    assert m.get("runtap_capture_written_total", table="runs") >= 10
    assert m.get("runtap_run_transitions_total") >= 10
    assert m.get("runtap_capture_store_open") == 1
    assert sum(row["runs"] for row in report) == 10, report
    assert ready["status"] == "ok" and ready["store"] == "open"
    if mode == "process":
        assert m.get("runtap_capture_process_up") == 1
        assert m.get("runtap_capture_restarts_total") == 0


def test_a_chunk_run_decodes_to_one_chunk_per_part_with_its_own_time() -> None:
    ex = _items()[0].exchange
    other = Exchange("ex2", "POST", "/v1/responses", "responses.create", None, None, 1.6e9)
    run = wire.ChunkRun(ex, b"event: a\n", 1.0)
    run.add(b"data: {}\n\n", 2.0)
    frame = wire.encode([run, StreamChunk(other, b"x", 3.0), StreamEnd(ex, complete=True)])
    (got,) = wire.FrameReader().feed(frame)
    assert got == [StreamChunk(ex, b"event: a\n", 1.0), StreamChunk(ex, b"data: {}\n\n", 2.0),
                   StreamChunk(other, b"x", 3.0), StreamEnd(ex, complete=True)]
    assert got[0].exchange is got[1].exchange is got[3].exchange  # one Exchange per exchange and frame
    assert wire.entry_items(run) == 2
    run.times.append(4.0)  # a run whose times do not match its chunks is not runtap's
    with pytest.raises(wire.FrameError):
        wire.FrameReader().feed(wire.encode([run]))


async def test_the_channel_gathers_a_streams_chunks_per_frame_and_keeps_every_chunk_in_order(
        tmp_path: Path) -> None:
    from runtap.proxy.capture_channel import CaptureChannel

    received: list[CaptureItem] = []
    frames = 0
    reader = wire.FrameReader()

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal frames
        while data := await r.read(1 << 16):
            for frame in reader.feed(data):
                frames += 1
                received.extend(frame)
                w.write(wire.ACK.pack(len(received)))
        w.close()
        await w.wait_closed()
        served.set()

    served = asyncio.Event()  # the connection is closed on this side too: no socket left to the GC
    path = str(tmp_path / "cap.sock")
    server = await asyncio.start_unix_server(serve, path)
    dropped: list[tuple[str, int]] = []
    channel = CaptureChannel(path, max_items=50, on_dropped=lambda reason, n: dropped.append((reason, n)))
    await channel.start()
    await _until("the channel connects", lambda: _true(channel.connected))
    a, b = (Exchange(i, "POST", "/v1/responses", "responses.create", None, None, 1.0) for i in ("a", "b"))
    sent: list[CaptureItem] = []
    for i in range(35):
        for ex in (a, b):
            chunk = StreamChunk(ex, f"data: {i}\n\n".encode(), float(i))
            assert channel.submit_chunk(ex, chunk.data, chunk.received_at)
            sent.append(chunk)
        if i == 9:
            await asyncio.sleep(0.2)  # a frame is cut in mid-stream: the runs go on in the next one
    assert channel.depth() == 50  # counted in chunks, not in entries
    assert not channel.submit_chunk(a, b"over", 99.0)
    assert dropped == [("channel_full", 1)]
    end = StreamEnd(a, complete=True)
    channel.submit(end)  # refused too: the channel is full
    await channel.close()
    await _until("every item arrives", lambda: _true(len(received) == len(sent)))
    server.close()
    for ex in (a, b):
        assert [x for x in received if x.exchange.id == ex.id] == [x for x in sent if x.exchange.id == ex.id]
    assert frames >= 2
    assert dropped == [("channel_full", 1), ("channel_full", 1)]
    assert channel.stats["sent"] == len(received) == channel.stats["submitted"] == 70


async def _true(value: bool) -> bool:
    return value


async def test_a_backlog_goes_out_in_frames_of_bounded_size_in_order(tmp_path: Path) -> None:
    """Chunks gathered while the capture process is away leave in frames of at most FRAME_MAX_ITEMS
    chunks each, however long one stream's run grew, and in order."""
    from runtap.proxy.capture_channel import FRAME_MAX_ITEMS, CaptureChannel

    received: list[CaptureItem] = []
    sizes: list[int] = []
    reader = wire.FrameReader()

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(1 << 16):
                for frame in reader.feed(data):
                    sizes.append(len(frame))
                    received.extend(frame)
                    w.write(wire.ACK.pack(len(received)))
        finally:
            w.close()
            with contextlib.suppress(ConnectionError):
                await w.wait_closed()
            served.set()

    served = asyncio.Event()  # the connection is closed on this side too: no socket left to the GC
    path = str(tmp_path / "cap.sock")
    channel = CaptureChannel(path, max_items=100_000)
    await channel.start()  # nothing listens yet: the channel keeps what it is given
    a, b = (Exchange(i, "POST", "/v1/responses", "responses.create", None, None, 1.0) for i in ("a", "b"))
    sent: list[CaptureItem] = []
    n = FRAME_MAX_ITEMS * 5 // 2
    for i in range(n):
        ex = a if i % 50 else b
        chunk = StreamChunk(ex, f"data: {i}\n\n".encode(), float(i))
        assert channel.submit_chunk(ex, chunk.data, chunk.received_at)
        sent.append(chunk)
    server = await asyncio.start_unix_server(serve, path)
    await _until("every item arrives", lambda: _true(len(received) == len(sent)))
    await channel.close()
    await asyncio.wait_for(served.wait(), 30)
    server.close()
    await server.wait_closed()
    assert max(sizes) <= FRAME_MAX_ITEMS and len(sizes) >= 3
    for ex in (a, b):
        assert [x for x in received if x.exchange.id == ex.id] == [x for x in sent if x.exchange.id == ex.id]
