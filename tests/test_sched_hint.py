"""The relay's loop thread asks Linux for a short slice (sched_hint.py); the capture process asks for the
default back. Read from /proc, on kernels that support custom slices (6.12+); skipped elsewhere."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from runtap.proxy import sched_hint

from tests.fault_helpers import start_runtap, terminate
from tests.test_relay_footprint import _children
from tests.test_workers import _ready


def _custom_slices() -> bool:
    """Linux 6.12+ honours a fair task's slice request; older kernels accept and ignore it."""
    release = os.uname().release.split("-")[0].split(".")
    try:
        return os.uname().sysname == "Linux" and (int(release[0]), int(release[1])) >= (6, 12)
    except (IndexError, ValueError):
        return False


pytestmark = pytest.mark.skipif(not _custom_slices(), reason="per-task slices need Linux 6.12+")


def _sched_slice(sched: Path) -> int | None:
    """The `se.slice` of a task's sched file; None on a kernel that has no per-task slice."""
    for line in sched.read_text().splitlines():
        if line.startswith("se.slice"):
            return int(line.split(":")[1])
    return None


def _slice_of(tid: int) -> int | None:
    path = Path(f"/proc/self/task/{tid}/sched")
    return _sched_slice(path) if path.exists() else None


def test_a_thread_gets_the_short_slice_and_can_give_it_back() -> None:
    seen: dict[str, object] = {}

    def run() -> None:  # in a thread of its own: the slice is per thread, the test runner's stays as it was
        tid = threading.get_native_id()
        seen["before"] = _slice_of(tid)
        seen["granted"] = sched_hint.request_slice(sched_hint.SLICE_NS)
        seen["short"] = _slice_of(tid)
        seen["reset"] = sched_hint.request_slice(0)
        seen["after"] = _slice_of(tid)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if seen["before"] is None or not seen["granted"]:
        pytest.skip("no per-task slice on this kernel")
    assert seen["short"] == sched_hint.SLICE_NS
    assert seen["reset"] is True
    assert seen["after"] == seen["before"] != sched_hint.SLICE_NS


@pytest.mark.parametrize("policy", ["SCHED_BATCH", "SCHED_IDLE"])
def test_an_operators_policy_is_kept(policy: str) -> None:
    """sched_setattr sets the policy with the slice: a sidecar started under chrt / systemd's
    CPUSchedulingPolicy must keep it (BATCH with the short slice, IDLE untouched)."""
    seen: dict[str, object] = {}

    def run() -> None:
        os.sched_setscheduler(0, getattr(os, policy), os.sched_param(0))  # lowering needs no privilege
        seen["granted"] = sched_hint.request_slice(sched_hint.SLICE_NS)
        seen["policy"] = os.sched_getscheduler(0)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen["policy"] == getattr(os, policy)
    assert seen["granted"] is (policy == "SCHED_BATCH")


def _task_slices(pid: int) -> dict[int, int | None]:
    out: dict[int, int | None] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        out[int(task.name)] = _sched_slice(task / "sched")
    return out


@contextlib.asynccontextmanager
async def _serving(tmp_path: Path, upstream: str, mode: str) -> AsyncIterator[Any]:
    """A real `runtap serve --capture-mode MODE` that has relayed one request: tune_runtime runs on the
    loop before it serves its first request, so after one the loop thread's slice is what it will be."""
    probe = _slice_of(threading.get_native_id())
    if probe is None or not sched_hint.request_slice(0):
        pytest.skip("no per-task slice on this kernel")
    proc = await start_runtap(upstream, tmp_path / "runtap.duckdb", tmp_path / "runtap.log", "--capture-mode", mode)
    try:
        await _ready(proc.admin_url + "/readyz")
        async with aiohttp.ClientSession() as session, session.get(proc.url + "/v1/models") as resp:
            await resp.read()
        yield proc
    finally:
        await terminate(proc)


@pytest.mark.timeout(90)
async def test_the_running_relay_loop_has_the_short_slice_and_the_capture_process_does_not(
        tmp_path: Path, sim_upstream: str) -> None:
    async with _serving(tmp_path, sim_upstream, "process") as proc:
        relay = proc.popen.pid
        [capture] = _children(relay)
        assert _task_slices(relay)[relay] == sched_hint.SLICE_NS
        assert sched_hint.SLICE_NS not in _task_slices(capture).values()


@pytest.mark.timeout(90)
async def test_an_in_process_relay_keeps_the_default_slice(tmp_path: Path, sim_upstream: str) -> None:
    """In-process the writer is a thread of the relay's interpreter: a loop thread that preempts it while
    it holds the GIL waits for the GIL instead (c=1 p99 tails 2-3x longer in the bench), so no hint."""
    async with _serving(tmp_path, sim_upstream, "inprocess") as proc:
        assert _task_slices(proc.popen.pid)[proc.popen.pid] not in (None, sched_hint.SLICE_NS)
