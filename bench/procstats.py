"""CPU, memory and descriptors of a server process tree, from /proc (through psutil).

CPU is utime+stime of the process and its live children (nginx's workers), so a proxy's capture thread,
DuckDB's threads and nginx's worker all count. Per-request CPU is the delta over a load window divided
by the requests the load generator completed in it.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass

import psutil  # type: ignore[import-untyped]


@dataclass(frozen=True, slots=True)
class ProcSample:
    at: float  # time.monotonic()
    cpu_s: float  # user + system seconds, whole tree
    rss_bytes: int
    fds: int
    threads: int
    root_cpu_s: float = 0.0  # the top process alone (runtap's relay, without its capture process)


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return [root]


def sample(pid: int) -> ProcSample:
    cpu = root_cpu = 0.0
    rss = fds = threads = 0
    for p in _tree(pid):
        try:
            with p.oneshot():
                t = p.cpu_times()
                cpu += t.user + t.system
                if p.pid == pid:
                    root_cpu = t.user + t.system
                rss += p.memory_info().rss
                fds += p.num_fds()
                threads += p.num_threads()
        except psutil.Error:
            continue  # a worker that exited between listing and reading
    return ProcSample(time.monotonic(), cpu, rss, fds, threads, root_cpu)


def process_cpu_s(pid: int) -> float:
    """User + system seconds of one process alone (not its children); psutil.Error when it is gone."""
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def try_sample(pid: int | None) -> ProcSample | None:
    if pid is None:
        return None
    try:
        return sample(pid)
    except psutil.Error:
        return None


def cpu_us_per_request(before: ProcSample | None, after: ProcSample | None, requests: int) -> float | None:
    if before is None or after is None or requests <= 0:
        return None
    return (after.cpu_s - before.cpu_s) * 1e6 / requests


def root_cpu_us_per_request(before: ProcSample | None, after: ProcSample | None, requests: int) -> float | None:
    if before is None or after is None or requests <= 0:
        return None
    return (after.root_cpu_s - before.root_cpu_s) * 1e6 / requests


def utilisation(before: ProcSample | None, after: ProcSample | None) -> float | None:
    """Cores busy over the window (1.0 = one core fully used)."""
    if before is None or after is None or after.at <= before.at:
        return None
    return (after.cpu_s - before.cpu_s) / (after.at - before.at)


@dataclass(frozen=True, slots=True)
class SystemSample:
    """Machine-wide busy CPU and what this process and its waited-for children (wrk) used, to tell how
    much of the machine other work took during a measurement (shared machines drift)."""

    at: float
    busy_s: float
    own_s: float


def system_sample() -> SystemSample:
    t = psutil.cpu_times()
    # guest time is already inside user; steal is the hypervisor's, not work done here.
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return SystemSample(time.monotonic(), busy, me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime)


def background_cores(before: SystemSample, after: SystemSample, servers_cpu_s: float) -> float | None:
    """Cores used by processes that are not part of the benchmark over the window."""
    span = after.at - before.at
    if span <= 0:
        return None
    other = (after.busy_s - before.busy_s) - (after.own_s - before.own_s) - servers_cpu_s
    return max(other, 0.0) / span
