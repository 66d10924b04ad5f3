"""Catch blocking calls on an asyncio event loop, and say which code made them.

Every event-loop callback (a task step, a transport callback, a timer) runs through
`asyncio.events.Handle._run`; the guard wraps it and times each callback on the wall clock. A watchdog
thread samples the loop thread's stack while a callback is still running past half the threshold, so a
report names the blocking line, not only the task.

Attribution decides what fails a test. The outermost frame from the project (settings/, proxy/, analytics/,
demo/ or tests/) is the owner: code in proxy/ or analytics/ blocking the loop is a bug; a test blocking its own
loop on purpose (reading DuckDB, `writer.flush()`) is not; functions listed in ALLOWED block by design
(the shutdown flush). Wall time, not CPU time, because a blocking call is usually a wait (a lock, a
file, a sleep) that uses no CPU; the threshold is generous so a loaded 2-core machine descheduling the
process for a moment does not fail a test. Time spent in garbage collections, and time the process did
not run at all (the watchdog thread woke late), is subtracted unless the loop thread was on the CPU: a
gen-2 pause or a descheduled process is not a call the code made. A computation that holds the GIL
still counts (by the loop thread's CPU time); a GIL hog in another thread is not caught.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_SELF = Path(__file__).resolve().relative_to(ROOT)  # the wrapper's own frame owns nothing
DEFAULT_THRESHOLD_S = 0.25
# Blocking by design, documented where they are: the proxy app's cleanup drains the capture queue into
# DuckDB before the process exits (proxy/app.py, _writer_ctx).
ALLOWED: frozenset[tuple[str, str]] = frozenset({("proxy/app.py", "writer_thread")})


@dataclass(frozen=True)
class Block:
    seconds: float
    callback: str
    owner: str | None  # "proxy/forward.py:123 in handle", or None when no project frame was seen
    stack: tuple[str, ...]  # formatted frames sampled while blocked (empty: no sample was taken)

    def describe(self) -> str:
        where = self.owner or "no project frame"
        lines = [f"event loop blocked {self.seconds:.3f}s by {where} (callback {self.callback})"]
        lines += ["    " + line for line in self.stack[-12:]]
        return "\n".join(lines)


def _rel(filename: str) -> str | None:
    try:
        rel = Path(filename).resolve().relative_to(ROOT)
    except ValueError:
        return None
    parts = rel.parts
    if rel == _SELF or not parts or parts[0] not in ("settings", "proxy", "analytics", "demo", "tests"):
        return None
    return rel.as_posix()


def _owner(frames: list[tuple[str, int, str]]) -> tuple[str | None, bool]:
    """(owner, counts) for frames listed outermost first: counts is False for test code or ALLOWED."""
    owner: str | None = None
    for filename, lineno, func in frames:
        rel = _rel(filename)
        if rel is None:
            continue
        if (rel, func) in ALLOWED:
            return f"{rel}:{lineno} in {func}", False
        if owner is None:
            owner = f"{rel}:{lineno} in {func}"
            if rel.startswith("tests/"):
                return owner, False
    return owner, owner is not None


def _inside(frames: list[tuple[str, int, str]]) -> list[tuple[str, int, str]]:
    """The frames below the guard's own wrapper: what ran inside the callback, not what started the loop
    (a sync test calling asyncio.run is above every callback, and must not own them all)."""
    mine = [i for i, (filename, _, _) in enumerate(frames) if filename == __file__]
    return frames[mine[-1] + 1:] if mine else frames


def _coroutine_frames(handle: asyncio.Handle) -> list[tuple[str, int, str]]:
    """Fallback when no stack was sampled: the awaiting chain of the task the callback stepped."""
    callback: Any = getattr(handle, "_callback", None)
    target = getattr(callback, "__self__", None)
    frames: list[tuple[str, int, str]] = []
    if isinstance(target, asyncio.Task):
        coro: Any = target.get_coro()
        while coro is not None and hasattr(coro, "cr_code"):
            frame = coro.cr_frame
            frames.append((coro.cr_code.co_filename, frame.f_lineno if frame else 0, coro.cr_code.co_name))
            coro = coro.cr_await
    else:
        code = getattr(getattr(callback, "__func__", callback), "__code__", None)
        if code is not None:
            frames.append((code.co_filename, code.co_firstlineno, code.co_name))
    return frames


def _describe(handle: asyncio.Handle) -> str:
    """The callback's name, without formatting its arguments (one may be megabytes of bytes)."""
    callback: Any = getattr(handle, "_callback", None)
    target = getattr(callback, "__self__", None)
    if isinstance(target, asyncio.Task):
        return f"step of {target.get_name()} ({getattr(target.get_coro(), '__qualname__', '?')})"
    return getattr(callback, "__qualname__", type(callback).__name__)


class _Running:
    __slots__ = ("start", "handle", "frames")

    def __init__(self, start: float, handle: asyncio.Handle) -> None:
        self.start = start
        self.handle = handle
        self.frames: list[tuple[str, int, str]] | None = None


class LoopGuard:
    """`install()` wraps Handle._run (process-wide, every loop and thread); `take()` returns and forgets
    the blocks that count. Guards nest when uninstalled in reverse order."""

    def __init__(self, threshold_s: float = DEFAULT_THRESHOLD_S, *, poll_s: float = 0.02) -> None:
        if threshold_s <= 0 or poll_s <= 0:
            raise ValueError("threshold_s and poll_s must be positive")
        self.threshold = threshold_s
        self._poll = poll_s
        self._running: dict[int, _Running] = {}
        self._blocks: list[Block] = []
        self._gc_started = 0.0
        self._gc_spent = 0.0  # seconds spent in garbage collections, all threads (one at a time)
        self._gc_by_thread: dict[int, float] = {}
        self._stalled = 0.0  # seconds the watchdog woke late: the process (or its GIL) was unavailable
        self.ignored: list[Block] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._original: Callable[[asyncio.Handle], None] | None = None

    def install(self) -> None:
        if self._original is not None:
            raise RuntimeError("LoopGuard is already installed")
        original: Callable[[asyncio.Handle], None] = asyncio.events.Handle._run
        self._original = original
        guard = self

        def _run(handle: asyncio.Handle) -> None:
            tid = threading.get_ident()
            entry = _Running(time.perf_counter(), handle)
            cpu0 = time.thread_time()
            gc0, gc_here0, stall0 = guard._gc_spent, guard._gc_by_thread.get(tid, 0.0), guard._stalled
            outer = guard._running.get(tid)
            guard._running[tid] = entry
            try:
                original(handle)
            finally:
                if outer is None:
                    guard._running.pop(tid, None)
                else:
                    guard._running[tid] = outer
                wall = time.perf_counter() - entry.start
                if wall >= guard.threshold:
                    # Not the code's doing: a garbage collection (in any thread, it holds the GIL: mostly
                    # the test's own heap) and time the process did not get to run at all (a loaded
                    # machine; seen as the watchdog thread waking late). Time the loop thread spent on
                    # the CPU always counts, so a long computation holding the GIL is still caught.
                    cpu = time.thread_time() - cpu0 - (guard._gc_by_thread.get(tid, 0.0) - gc_here0)
                    lost = max(guard._gc_spent - gc0, guard._stalled - stall0)
                    took = max(cpu, wall - lost)
                    if took >= guard.threshold:
                        guard._record(took, entry)

        asyncio.events.Handle._run = _run  # type: ignore[method-assign,assignment]
        gc.callbacks.append(self._on_gc)
        self._stop.clear()
        self._watchdog = threading.Thread(target=self._watch, name="loopguard-watchdog", daemon=True)
        self._watchdog.start()

    def uninstall(self) -> None:
        if self._original is None:
            return
        asyncio.events.Handle._run = self._original  # type: ignore[method-assign,assignment]
        self._original = None
        gc.callbacks.remove(self._on_gc)
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join(5)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_started = now
        else:
            spent = now - self._gc_started
            self._gc_spent += spent
            tid = threading.get_ident()
            self._gc_by_thread[tid] = self._gc_by_thread.get(tid, 0.0) + spent

    def take(self) -> list[Block]:
        with self._lock:
            blocks, self._blocks = self._blocks, []
            return blocks

    def _record(self, took: float, entry: _Running) -> None:
        sampled = entry.frames is not None
        frames = entry.frames if entry.frames is not None else _coroutine_frames(entry.handle)
        owner, counts = _owner(frames)
        stack = tuple(f"{f}:{n} in {fn}" for f, n, fn in frames) if sampled else ()
        callback = _describe(entry.handle)
        block = Block(took, callback, owner, stack)
        with self._lock:
            (self._blocks if counts else self.ignored).append(block)

    def _watch(self) -> None:
        half = self.threshold / 2
        last = time.perf_counter()
        while not self._stop.wait(self._poll):
            now = time.perf_counter()
            self._stalled += max(now - last - self._poll, 0.0)
            slow = [(tid, e) for tid, e in list(self._running.items()) if now - e.start >= half]
            if slow:
                self._sample(slow)
            last = time.perf_counter()  # the watchdog's own sampling is not lateness

    def _sample(self, slow: list[tuple[int, _Running]]) -> None:
        # Frame objects are dropped before returning: a frame kept past its function's return keeps
        # that function's locals (a whole capture batch, say) alive.
        current = sys._current_frames()
        try:
            for tid, entry in slow:
                frame = current.get(tid)
                if frame is None:
                    continue
                stack = traceback.StackSummary.extract(traceback.walk_stack(frame), lookup_lines=False)
                del frame
                # Kept only if the callback is still running now, so the frames (captured before this
                # check) are its own, not what the loop went on to do; and only until one names project
                # code (a late sample can catch the callback on its way out).
                if self._running.get(tid) is entry and (entry.frames is None or _owner(entry.frames)[0] is None):
                    entry.frames = _inside([(fs.filename, fs.lineno or 0, fs.name) for fs in reversed(stack)])
        finally:
            current.clear()
