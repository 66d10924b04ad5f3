"""Idle trimming (proxy/memory_trim.py): freed heap goes back to the OS once after each burst of
traffic, never while a request is in flight, and not at all with --idle-trim 0."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from runtap.proxy.capture_admin import fetch_text
from runtap.proxy.capture_supervisor import control_path
from runtap.proxy.memory_trim import IdleTrimmer, libc_trim
from runtap.settings.config import ConfigError, resolve, settings_for

from tests.conftest import start_stack


class Traffic:
    def __init__(self) -> None:
        self.started = 0
        self.inflight = 0
        self.trims = 0

    def trimmer(self) -> IdleTrimmer:
        return IdleTrimmer(lambda: self.started, lambda: self.inflight > 0, self.count)

    def count(self) -> None:
        self.trims += 1


def test_no_trim_before_any_traffic() -> None:
    t = Traffic()
    tr = t.trimmer()
    assert [tr.due() for _ in range(5)] == [False] * 5


def test_one_trim_per_quiet_spell_after_traffic() -> None:
    t = Traffic()
    tr = t.trimmer()
    t.started += 3
    assert not tr.due()  # traffic during this period: not quiet yet
    assert tr.due()  # a whole quiet period after traffic
    assert [tr.due() for _ in range(4)] == [False] * 4  # still quiet: nothing new to give back
    t.started += 1
    assert not tr.due()
    assert tr.due()
    assert tr.trims == 2


def test_no_trim_while_a_request_is_in_flight() -> None:
    t = Traffic()
    tr = t.trimmer()
    t.started, t.inflight = 1, 1  # a long stream: no new requests, but one still open
    assert [tr.due() for _ in range(3)] == [False] * 3
    t.inflight = 0
    assert tr.due()


def test_libc_trim_is_callable_here() -> None:
    trim = libc_trim()
    assert trim is not None  # the test machine and the image run glibc
    assert trim() in (0, 1)


def test_idle_trim_setting_parses_zero_and_rejects_negatives() -> None:
    assert resolve({}, {"RUNTAP_IDLE_TRIM": "0"}).idle_trim == 0.0
    assert resolve({"idle_trim": "2.5"}, {}).idle_trim == 2.5
    assert resolve({}, {}).idle_trim == 5.0
    with pytest.raises(ConfigError):
        resolve({}, {"RUNTAP_IDLE_TRIM": "-1"})
    assert settings_for(idle_trim=0.5).idle_trim == 0.5


async def _create_thread(proxy_url: str) -> int:
    async with aiohttp.ClientSession() as s, s.post(
            f"{proxy_url}/v1/threads", json={}, headers={"Authorization": "Bearer sk-test"}) as r:
        body = await r.json()
        return r.status if str(body.get("id", "")).startswith("thread_") else -r.status


async def test_serve_trims_once_after_a_burst_goes_quiet(tmp_path: Path) -> None:
    stack, sim = await start_stack(tmp_path, idle_trim=0.05)
    try:
        trimmer = stack.running.runtime.extras["trimmer"]
        assert isinstance(trimmer, IdleTrimmer)
        assert trimmer.trims == 0
        assert await _create_thread(stack.proxy_url) == 200
        deadline = time.monotonic() + 10
        while trimmer.trims == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert trimmer.trims == 1
        assert await _create_thread(stack.proxy_url) == 200  # the relay is unaffected by a trim
    finally:
        await stack.running.stop()
        await sim.cleanup()


async def test_serve_without_idle_trim_has_no_trimmer(tmp_path: Path) -> None:
    stack, sim = await start_stack(tmp_path, idle_trim=0.0)
    try:
        assert "trimmer" not in stack.running.runtime.extras
        assert await _create_thread(stack.proxy_url) == 200
    finally:
        await stack.running.stop()
        await sim.cleanup()


async def _capture_trims(stack: Any) -> int | None:
    supervisor = stack.running.runtime.supervisor
    text = await fetch_text(control_path(supervisor.directory), "/status")
    assert text is not None
    trims: int | None = json.loads(text)["idle_trims"]
    return trims


async def _until_trims(stack: Any, n: int) -> None:
    deadline = time.monotonic() + 15
    while await _capture_trims(stack) != n:
        assert time.monotonic() < deadline, f"the capture process did not reach {n} idle trim(s)"
        await asyncio.sleep(0.05)  # polling another process, which has no way to notify us


@pytest.mark.timeout(60)
async def test_the_capture_process_trims_once_per_quiet_spell_after_it_wrote(tmp_path: Path) -> None:
    # --capture-mode process: the capture process allocates the decoded snapshots and batches, so it
    # trims its own heap, once after the writer went quiet, again only after more traffic.
    stack, sim = await start_stack(tmp_path, idle_trim=0.1, capture_mode="process")
    try:
        assert await _capture_trims(stack) == 0
        assert await _create_thread(stack.proxy_url) == 200
        await _until_trims(stack, 1)
        assert await _create_thread(stack.proxy_url) == 200
        await _until_trims(stack, 2)
        await asyncio.sleep(1.5)  # an observation window: 15 periods, 3 of the writer's confirm flushes
        assert await _capture_trims(stack) == 2
    finally:
        await stack.running.stop()
        await sim.cleanup()


async def test_the_capture_process_does_not_trim_with_idle_trim_off(tmp_path: Path) -> None:
    stack, sim = await start_stack(tmp_path, idle_trim=0.0, capture_mode="process")
    try:
        assert await _create_thread(stack.proxy_url) == 200
        assert await _capture_trims(stack) is None
    finally:
        await stack.running.stop()
        await sim.cleanup()


def test_capture_store_lets_duckdb_return_freed_memory(tmp_path: Path) -> None:
    from runtap.analytics.ingest.store import Store

    def setting(store: Store) -> object:
        row = store.connection.execute("SELECT current_setting('allocator_background_threads')").fetchone()
        return row[0] if row else None

    writer_store = Store(str(tmp_path / "w.duckdb"), memory_limit="256MB")  # as the capture writer opens it
    try:
        assert setting(writer_store) is True
    finally:
        writer_store.close()
