"""Event-loop lag: how late a timer that should fire every PERIOD actually fires.

Everything on the hot path shares one loop, so any call that holds it (a GC pause, a slow callback,
code that should have been in the writer thread) delays every proxied byte by as much. A timer's
lateness measures exactly that delay, at the cost of ten wake-ups a second. Under saturation the
lag also includes queueing behind ready work (the loop is busy, not blocked); read it at moderate load.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Final

from . import background

PERIOD_S: Final = 0.1


async def probe(observe: Callable[[float], None], period_s: float = PERIOD_S) -> None:
    """Forever: sleep `period_s`, report how much later than asked the loop woke us (seconds)."""
    clock = time.perf_counter
    while True:
        t0 = clock()
        await asyncio.sleep(period_s)
        observe(max(clock() - t0 - period_s, 0.0))


def probing(observe: Callable[[float], None],
            period_s: float = PERIOD_S) -> contextlib.AbstractAsyncContextManager[None]:
    return background.running(probe(observe, period_s), "runtap-loop-lag")


class Heartbeat:
    """When the relay's loop last ran the probe: liveness read from another thread (the admin listener's),
    which answers even while the relay's loop is saturated but must still say when it has stopped."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: float | None = None  # None: the probe has not run yet (not started, or no proxy app)

    def beat(self) -> None:
        self.last = time.monotonic()

    def stalled_for(self) -> float:
        """Seconds since the loop last ran the probe (0 before its first run)."""
        last = self.last
        return 0.0 if last is None else max(time.monotonic() - last, 0.0)
