"""A scheduling hint for the event-loop thread of a `--capture-mode process` relay: a short EEVDF slice.

A relay thread that wakes for an SSE event must run now, not when whatever holds its core (the capture
process decoding a frame, on a core the two share) finishes its slice. Since Linux 6.12 a fair task may
ask for a shorter slice (sched_attr.sched_runtime, 0.1-100 ms, no privilege needed); a waking task with
a shorter slice preempts the running one at once instead of waiting for it to reach its slice's end.
The CPU share is unchanged (that is the weight, i.e. nice). Linux only; elsewhere, or on an older
kernel that refuses it, nothing changes. Not in-process: there the capture writer is a thread of the
same interpreter, and preempting it while it holds the GIL only makes the loop wait for the GIL later.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import struct
from typing import Final

log = logging.getLogger("runtap.sched_hint")

SLICE_NS: Final = 100_000  # the kernel's minimum
_SCHED_SETATTR: Final = {"x86_64": 314, "aarch64": 274}
# struct sched_attr (SCHED_ATTR_SIZE_VER1): size, policy, flags, nice, priority, runtime, deadline,
# period, util_min, util_max.
_ATTR: Final = struct.Struct("=IIQiIQQQII")


def request_slice(slice_ns: int) -> bool:
    """Ask for a slice of `slice_ns` for the calling thread and the threads and processes it starts
    afterwards (policy and nice kept); 0 asks for the kernel's default. Only a fair policy (SCHED_OTHER,
    SCHED_BATCH) is touched: sched_setattr sets the policy too, and one an operator chose (chrt,
    systemd's CPUSchedulingPolicy=idle) must stay."""
    # platform.machine() names the kernel's architecture: a 32-bit userland on it has other numbers.
    nr = _SCHED_SETATTR.get(platform.machine()) if struct.calcsize("P") == 8 else None
    if nr is None or not hasattr(os, "sched_getscheduler"):
        return False
    try:
        policy = os.sched_getscheduler(0)
        if policy not in (os.SCHED_OTHER, os.SCHED_BATCH):
            return False
        libc = ctypes.CDLL(None, use_errno=True)
        attr = ctypes.create_string_buffer(_ATTR.pack(_ATTR.size, policy, 0, os.getpriority(os.PRIO_PROCESS, 0),
                                                      0, slice_ns, 0, 0, 0, 0))
        if libc.syscall(nr, 0, attr, 0) != 0:
            log.debug("short slice refused: %s", os.strerror(ctypes.get_errno()))
            return False
    except (OSError, AttributeError) as exc:
        log.debug("short slice unavailable: %s", exc)
        return False
    return True
