"""`runtap serve --workers N`: processes sharing one port, each capturing into its own DuckDB file."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp
import pytest
from runtap.demo.sim import SimConfig, start_sim
from runtap.proxy.workers import for_worker, suffixed
from runtap.settings.config import ConfigError, HostPort, settings_for

from tests.fault_helpers import API_KEY, query, start_runtap, terminate


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _free_port_pair() -> int:
    """A port p with p+1 free too: worker i's admin listener is the admin port + i."""
    for _ in range(100):
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            p: int = a.getsockname()[1]
            try:
                b.bind(("127.0.0.1", p + 1))
            except OSError:
                continue
            return p
    raise RuntimeError("no two adjacent free ports on 127.0.0.1")


def test_each_worker_gets_its_own_db_spool_admin_port_and_instance() -> None:
    s = settings_for(db="/data/runtap.duckdb", listen=HostPort("0.0.0.0", 8080), workers=3,
                     admin=HostPort("127.0.0.1", 9464), instance="pod-a")
    assert for_worker(s, 0) == s
    w2 = for_worker(s, 2)
    assert (w2.db, w2.spool_path, w2.admin, w2.instance_id) == (
        "/data/runtap-2.duckdb", "/data/runtap-2.duckdb.spool.jsonl", HostPort("127.0.0.1", 9466), "pod-a-2")
    assert suffixed("runtap", 1) == "runtap-1"


def test_workers_need_a_fixed_listen_port() -> None:
    with pytest.raises(ConfigError, match="fixed --listen port"):
        for_worker(settings_for(listen=HostPort("127.0.0.1", 0), workers=2), 0)


@pytest.mark.timeout(120)
async def test_two_workers_share_the_port_and_together_capture_every_request(tmp_path: Path) -> None:
    runner, url = await start_sim(SimConfig())
    port, admin = _free_port(), _free_port_pair()
    db = tmp_path / "runtap.duckdb"
    try:
        proc = await start_runtap(url.removesuffix("/v1"), db, tmp_path / "runtap.log", "--workers", "2",
                                  "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}")
        try:
            await _ready(f"http://127.0.0.1:{admin + 1}/healthz")  # worker 1 starts after worker 0
            # A new connection per request, so the kernel can hand them to either worker.
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                             headers={"Authorization": f"Bearer {API_KEY}"}) as client:
                for _ in range(40):
                    async with client.get(f"http://127.0.0.1:{port}/v1/threads/thread_missing/runs") as r:
                        await r.read()
                        assert r.status in (200, 404)
        finally:
            assert await terminate(proc) == 0
    finally:
        await runner.cleanup()
    counts = [query(f, "SELECT count(*) FROM requests")[0][0]
              for f in (db, tmp_path / "runtap-1.duckdb") if f.exists()]
    assert sum(counts) == 40
    assert len(counts) == 2


async def _ready(url: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as client:
        while True:
            try:
                async with client.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert asyncio.get_running_loop().time() < deadline, f"{url} not ready after {timeout:.0f}s"
            await asyncio.sleep(0.05)  # polling a subprocess that has no other ready signal
