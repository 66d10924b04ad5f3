"""Hand freed heap back to the OS once the relay goes quiet (glibc's malloc_trim).

A load burst leaves glibc holding the pages its arenas grew to (request buffers, parsed JSON, the
writer's batches): freed, but still in RSS until the next burst reuses them. A sidecar is judged by
RSS, so once the relay has handled requests and then seen none for a whole period, one malloc_trim(0)
returns that memory. It runs only after activity (never in a loop while idle) and never while a request
is in flight; on a libc without malloc_trim (musl, macOS) it is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

from . import background

log = logging.getLogger("runtap")

Trim = Callable[[], object]


def libc_trim() -> Trim | None:
    """glibc's malloc_trim(0), or None where the C library has none."""
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if fn is None:
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: fn(0)


class IdleTrimmer:
    """Decides, once a period, whether to trim: after traffic (`activity()`, a counter of requests
    started, moved since the last trim), then a whole period in which it did not move and `busy()`
    (requests in flight) is false."""

    def __init__(self, activity: Callable[[], int], busy: Callable[[], bool], trim: Trim) -> None:
        self._activity, self._busy, self.trim = activity, busy, trim
        self._seen = activity()
        self._trimmed_at = self._seen
        self.trims = 0

    def due(self) -> bool:
        now = self._activity()
        quiet = now == self._seen
        self._seen = now
        if not quiet or now == self._trimmed_at or self._busy():
            return False
        self._trimmed_at = now
        self.trims += 1
        return True


def idle_trimmer(period_s: float, activity: Callable[[], int], busy: Callable[[], bool]) -> IdleTrimmer | None:
    """The idle trimmer of one process (the relay's, the capture process's), or None: --idle-trim 0, or a
    C library without malloc_trim."""
    trim = libc_trim() if period_s > 0 else None
    return IdleTrimmer(activity, busy, trim) if trim is not None else None


async def _run(trimmer: IdleTrimmer, period_s: float) -> None:
    while True:
        await asyncio.sleep(period_s)
        if not trimmer.due():
            continue
        try:
            # In a thread: trimming walks the heap, and the relay's loop must not wait for that.
            await asyncio.to_thread(trimmer.trim)
        except Exception:
            log.exception("malloc_trim failed; idle trimming stops")
            return


def trimming(trimmer: IdleTrimmer | None, period_s: float) -> contextlib.AbstractAsyncContextManager[None]:
    """Runs the trimmer while entered; nothing for None (trimming off)."""
    if trimmer is None:
        return contextlib.nullcontext()
    return background.running(_run(trimmer, period_s), "runtap-malloc-trim")
