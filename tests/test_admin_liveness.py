"""The admin listener answers from its own thread: probes do not queue behind the relay's loop, and
/healthz still reports a relay loop that has stopped running."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from typing import Any

import aiohttp
import pytest
from runtap.proxy import admin

from tests.conftest import Stack


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - 127.0.0.1 only
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _while_loop_blocked(probe: Any) -> dict[str, Any]:
    """Run `probe` on another thread while this thread (the relay's event loop) waits for it."""
    done, result = threading.Event(), {}

    def run() -> None:
        try:
            result["value"] = probe()
        except Exception as exc:  # noqa: BLE001 - reported to the test below
            result["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    done.wait(timeout=60)  # blocks the relay's loop: the test's loop is runtap's
    thread.join()
    return result


async def _until_ready(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(400):  # the writer thread opens DuckDB after start-up
            async with session.get(url + "/readyz") as response:
                if response.status == 200:
                    return
            await asyncio.sleep(0.05)
    raise AssertionError("runtap never became ready")


async def test_probes_answer_while_the_relays_loop_is_blocked(stack: Stack) -> None:
    base = stack.running.admin_url
    await _until_ready(base)

    def probe() -> list[tuple[int, Any]]:
        return [_get(base + "/healthz"), _get(base + "/readyz")]

    result = _while_loop_blocked(probe)
    assert "error" not in result, result
    (health, healthz), (ready, readyz) = result["value"]
    assert (health, healthz) == (200, {"status": "ok"})
    assert ready == 200 and readyz["status"] == "ok", readyz


async def test_healthz_fails_when_the_relays_loop_stops_running(stack: Stack,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin, "LOOP_STALL_S", 0.3)
    url = stack.running.admin_url + "/healthz"

    def until_stalled() -> tuple[int, Any]:
        for _ in range(400):  # the probe must notice the blocked loop within a few of its periods
            status, body = _get(url)
            if status != 200:
                return status, body
            threading.Event().wait(0.05)
        return status, body

    result = _while_loop_blocked(until_stalled)
    assert "error" not in result, result
    status, body = result["value"]
    assert status == 503 and body["status"] == "stalled" and body["event_loop_stalled_s"] >= 0.3
    async with aiohttp.ClientSession() as session:
        for _ in range(200):  # the loop runs again: healthy at its next probe
            async with session.get(url) as response:
                if response.status == 200:
                    break
            await asyncio.sleep(0.05)
        assert response.status == 200
