"""Where one process's RSS goes, for bench/probe_site/sitecustomize.py's SIGUSR2 probe (bench only).

The parts are read from the owners of the memory, not guessed by difference:
- the kernel (/proc/self/smaps_rollup): RSS, anonymous, file-backed (shared libraries' pages);
- glibc (mallinfo2): the arenas' bytes in use and free (the free part is what malloc_trim could
  return), and the large blocks glibc mmap'd on its own;
- CPython's allocator (sys._debugmallocstats): the bytes of pymalloc's arenas (objects up to 512 B,
  mmap'd outside glibc's arenas) and how much of them is in use;
- what is left (anonymous minus the three) is DuckDB's jemalloc (its buffer pool and its own
  allocations), thread stacks and any other library's mmap.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import tempfile
import threading
import tracemalloc
from typing import Any


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def rollup() -> dict[str, int]:
    out: dict[str, int] = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) << 10
    return out


def glibc() -> dict[str, int]:
    """Arena bytes obtained (sbrk + mmap'd arenas), in use, free; mmap'd large blocks."""
    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return {}
    fn.restype = _MallInfo2
    m = fn()
    return {"glibc_arena": m.arena, "glibc_used": m.uordblks, "glibc_free": m.fordblks, "glibc_mmap": m.hblkhd}


def pymalloc() -> dict[str, int]:
    """pymalloc's arenas (bytes mmap'd) and the bytes in its used blocks, parsed from _debugmallocstats,
    which writes to the C stderr: redirected to a file for the call."""
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    out = {}
    for key, pattern in (("pymalloc_used", r"# bytes in allocated blocks\s*=\s*([\d,]+)"),
                         ("pymalloc_mapped", r"arenas \* \d+ bytes/arena\s*=\s*([\d,]+)")):
        found = re.search(pattern, text)
        if found:
            out[key] = int(found.group(1).replace(",", ""))
    return out


def snapshot(trim: bool) -> dict[str, Any]:
    r = rollup()
    rec: dict[str, Any] = {"pid": os.getpid(), "rss": r.get("Rss", 0), "anon": r.get("Anonymous", 0),
                           "file": r.get("Rss", 0) - r.get("Anonymous", 0),
                           "threads": threading.active_count(), "os_threads": len(os.listdir("/proc/self/task")),
                           "py_blocks": sys.getallocatedblocks(), **glibc(), **pymalloc()}
    if tracemalloc.is_tracing():
        cur, peak = tracemalloc.get_traced_memory()
        rec["traced"], rec["traced_peak"] = cur, peak
        top = tracemalloc.take_snapshot().statistics("lineno")[:25]
        rec["top"] = [(str(s.traceback), s.size, s.count) for s in top]
    if trim:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        rec["rss_after_trim"] = rollup().get("Rss", 0)
    return rec
