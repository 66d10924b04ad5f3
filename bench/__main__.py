"""`python -m bench [--quick] [--only WORKLOAD] [--targets LIST] [--out bench/results]`

One run measures every target against the same fake upstream, so the ratios are comparable:
direct (no proxy), nginx, the bare aiohttp forwarder and runtap (capture into DuckDB on disk, metrics,
OTLP tracing to a local sink unless --tracing off). All targets start first and are warmed up; SSE
relay delay is probed on each while all are quiet; then every cell (workload x concurrency 1 and 50)
runs through each target in turn; finally runtap gets a check phase, SIGTERM, and its DuckDB file is counted.
Writes bench-<time>-<mode>.json/.md (and latest.*) under --out and prints the markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from bench import client, load, nginx, procstats, report, targets
from bench.targets import HOST, Proc, StartError

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    proc: Proc | None  # None for direct
    port: int
    cpus: tuple[int, ...] | None  # where the load generator runs against it


@dataclass(frozen=True, slots=True)
class Plan:
    mode: str
    seconds: float  # wrk -d per cell
    warmup_s: float
    concurrencies: tuple[int, ...]
    relay_streams: dict[int, int]  # events per stream -> streams probed
    relay_gap_us: int
    drain_bound_s: float
    check_runs: int  # creates read to the end whose ids must all be in DuckDB
    budget_s: float  # cells left when this is spent are skipped, so the run stays bounded


QUICK = Plan("quick", 2.0, 1.0, (1, 50), {12: 10, 200: 2}, 2000, 15.0, 2000, 165.0)
FULL = Plan("full", 5.0, 1.0, (1, 50), {12: 40, 200: 5}, 2000, 30.0, 10000, 840.0)


class DepthSampler:
    """Peak capture queue depth during a load window, read 4x a second from /readyz.

    Not from /metrics: a full scrape costs the relay process tens of milliseconds of GIL time (in
    process mode it also fetches and merges the capture process's families), and at 4 Hz that showed
    up in the c=1 cells' p99 and in runtap's CPU per request, a cost no compared target paid (a real
    Prometheus scrapes every 15-60 s). /readyz reports the same depth (channel + capture queue) cheaply.
    """

    def __init__(self, admin_port: int) -> None:
        self.admin_port = admin_port
        self.peak: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DepthSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            try:
                depth = queue_depth(self.admin_port)
            except (OSError, ValueError, AttributeError):
                continue
            if depth is not None:
                self.peak = depth if self.peak is None else max(self.peak, depth)


def queue_depth(admin_port: int) -> float | None:
    """runtap's capture queue depth (channel + capture process) from /readyz; None when it has none."""
    _status, body = targets.http_get(admin_port, "/readyz", timeout=1.0)
    depth = json.loads(body).get("capture_queue_depth")
    return None if depth is None else float(depth)


def wait_drain(admin_port: int, bound_s: float) -> float | None:
    """ms from now until runtap's capture queue is empty (None: metric absent or bound reached)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < bound_s:
        try:
            depth = queue_depth(admin_port)  # not a /metrics scrape per poll: see DepthSampler
        except (OSError, ValueError, AttributeError):
            return None
        if depth is None:
            return None
        if depth <= 0:
            return (time.monotonic() - t0) * 1e3
        time.sleep(0.02)
    return None


def _scrape_or_none(admin: int | None) -> dict[str, float] | None:
    if admin is None:
        return None
    try:
        return targets.scrape(admin)
    except OSError:
        return None


class Bench:
    def __init__(self, plan: Plan, workloads: list[load.Workload], names: list[str], workdir: Path,
                 place: targets.Placement, *, install: bool, bare_loop: str = "asyncio",
                 capture_mode: str = "inprocess", tracing: bool = True) -> None:
        self.plan, self.workloads, self.names = plan, workloads, names
        self.tracing = tracing
        self.workdir, self.place, self.install = workdir, place, install
        self.bare_loop = bare_loop
        self.capture_mode = capture_mode
        self.cells: list[report.Cell] = []
        self.relays: list[report.Relay] = []
        self.capture: report.Capture | None = None
        self.status: dict[str, dict[str, str]] = {}
        self.t0 = time.monotonic()
        self.upstream: Proc | None = None
        self.sink: Proc | None = None
        self.runtap_requests = 0
        self.runtap_created = 0

    def say(self, msg: str) -> None:
        print(f"bench [{time.monotonic() - self.t0:6.1f}s] {msg}", flush=True)

    def run(self) -> None:
        self.upstream = targets.start_upstream(self.workdir, self.place.upstream)
        self.say(f"fake upstream on {HOST}:{self.upstream.port}: {shlex.join(self.upstream.cmd)}")
        if "runtap" in self.names and self.tracing:
            self.sink = targets.start_upstream(self.workdir, self.place.load, sink=True)
            self.say(f"OTLP/HTTP sink on {HOST}:{self.sink.port}")
        running: list[Target] = []
        try:
            for name in self.names:
                t = self.start(name)
                if t is not None:
                    running.append(t)
            for t in running:
                self.tracked(t, self.warm, t)
            # Relay delay first, on quiet proxies, so every target is probed in the same state.
            for t in running:
                self.tracked(t, self.probe_relay, t)
            # Targets interleaved within each cell: the machine's drift (other work on shared machines)
            # then hits the numbers a ratio compares at nearly the same time.
            for w in self.workloads:
                for c in self.plan.concurrencies:
                    for t in running:
                        self.cells.append(self.tracked(t, self.cell, t, w, c))
            for t in running:
                if t.name == "runtap" and t.proc is not None:
                    self.finish_runtap(t)
        finally:
            for p in [t.proc for t in running] + [self.sink, self.upstream]:
                if p is not None:
                    p.stop(timeout=60)

    def tracked(self, t: Target, fn: Callable[..., R], *args: Any) -> R:
        """Run fn, adding the runs the upstream created meanwhile to runtap's count when t is runtap
        (one target at a time is ever under load, so the delta is that target's)."""
        if t.name != "runtap":
            return fn(*args)
        c0 = self.created()
        try:
            return fn(*args)
        finally:
            self.runtap_created += self.created() - c0

    def created(self) -> int:
        assert self.upstream is not None
        return int(targets.upstream_stats(self.upstream.port)["created"])

    def start(self, name: str) -> Target | None:
        assert self.upstream is not None
        cpus = self.place.load_direct if name == "direct" else self.place.load
        try:
            if name == "direct":
                proc = None
            elif name == "bare":
                proc = targets.start_bare(self.workdir, self.upstream.port, self.place.proxy,
                                          uvloop=self.bare_loop == "uvloop")
            elif name == "nginx":
                binary, note = nginx.ensure_nginx(install=self.install)
                if binary is None:
                    raise StartError(note)
                version = f"nginx {nginx.version(binary)} {note}".strip()
                self.status["nginx"] = {"status": "ok", "note": version}
                proc = targets.start_nginx(self.workdir, binary, self.upstream.port, self.place.proxy)
            else:
                sink = self.sink.port if self.sink is not None else None
                proc = targets.start_runtap(self.workdir, self.upstream.port, sink, self.place.proxy,
                                            capture_mode=self.capture_mode)
        except StartError as exc:
            kind = "skipped" if name == "nginx" and "not found" in str(exc) else "failed to start"
            self.status[name] = {"status": kind, "note": str(exc)}
            self.say(f"{name}: {kind.upper()}: {exc}\n  (continuing with the other targets)")
            return None
        self.status.setdefault(name, {"status": "ok", "note": ""})
        self.status[name]["cmd"] = shlex.join(proc.cmd) if proc else "(none)"
        if proc:
            self.say(f"{name} on {HOST}:{proc.port}: {shlex.join(proc.cmd)}")
        return Target(name, proc, proc.port if proc else self.upstream.port, cpus)

    def cell(self, t: Target, w: load.Workload, c: int) -> report.Cell:
        if t.proc is not None and not t.proc.alive():
            return report.Cell(t.name, w.name, c, error=f"{t.name} died: {t.proc.log_tail(3)}")
        if time.monotonic() - self.t0 > self.plan.budget_s:
            return report.Cell(t.name, w.name, c, error="skipped: time budget spent")
        return self.measure(t, w, c)

    def pin_self(self, t: Target) -> None:
        if t.cpus:
            os.sched_setaffinity(0, t.cpus)  # the Python clients run in this process

    def warm(self, t: Target) -> None:
        try:
            res = load.run_load(HOST, t.port, load.WORKLOADS["mixed"], connections=50,
                                seconds=self.plan.warmup_s, cpus=t.cpus)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            self.say(f"{t.name}: warm-up failed: {exc}")
            return
        if t.name == "runtap":
            self.runtap_requests += res.requests
        if t.proc is not None and t.proc.admin_port is not None:
            wait_drain(t.proc.admin_port, self.plan.drain_bound_s)

    def measure(self, t: Target, w: load.Workload, c: int) -> report.Cell:
        assert self.upstream is not None
        name, proc, port, cpus = t.name, t.proc, t.port, t.cpus
        cell = report.Cell(name, w.name, c)
        pid = proc.pid if proc else None
        before, up0, sys0 = procstats.try_sample(pid), procstats.try_sample(self.upstream.pid), \
            procstats.system_sample()
        admin = proc.admin_port if proc is not None and name == "runtap" else None
        lag0 = _scrape_or_none(admin)
        try:
            if admin is not None:
                with DepthSampler(admin) as sampler:
                    res = load.run_load(HOST, port, w, connections=c, seconds=self.plan.seconds, cpus=cpus)
                cell.capture_max_depth = sampler.peak
                cell.capture_drain_ms = wait_drain(admin, self.plan.drain_bound_s)
            else:
                res = load.run_load(HOST, port, w, connections=c, seconds=self.plan.seconds, cpus=cpus)
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
            cell.error = str(exc)
            self.say(f"{name:<7} {w.name:<8} c={c:<3} ERROR {exc}")
            return cell
        after, up1, sys1 = procstats.try_sample(pid), procstats.try_sample(self.upstream.pid), \
            procstats.system_sample()
        lag1 = _scrape_or_none(admin)
        if lag0 is not None and lag1 is not None:
            lag = targets.lag_summary(lag0, lag1)
            if lag is not None:
                cell.loop_lag_probes, cell.loop_lag_p99_ms, cell.loop_lag_max_ms, cell.loop_lag_over_10ms = lag
            # lag1 is scraped after the queue drained, so the delta holds the cell's requests (but for a
            # batch still committing, which the next runtap cell counts)
            captured = targets.lag_summary(lag0, lag1, "runtap_capture_lag_seconds")
            if captured is not None:
                cell.capture_lag_p99_ms = captured[1]
        if name == "runtap":
            self.runtap_requests += res.requests
        cell.load = res.to_json()
        cell.proxy_cpu_us = procstats.cpu_us_per_request(before, after, res.requests)
        cell.relay_cpu_us = procstats.root_cpu_us_per_request(before, after, res.requests)
        cell.proxy_cores = procstats.utilisation(before, after)
        cell.upstream_cpu_us = procstats.cpu_us_per_request(up0, up1, res.requests)
        feeder = procstats.utilisation(up0, up1)
        if feeder is not None and self.place.upstream and cpus and set(self.place.upstream) & set(cpus):
            feeder += (sys1.own_s - sys0.own_s) / max(sys1.at - sys0.at, 1e-9)
        cell.feeder_cores = feeder
        servers = sum(b.cpu_s - a.cpu_s for a, b in ((before, after), (up0, up1)) if a and b)
        cell.background_cores = procstats.background_cores(sys0, sys1, servers)
        if after is not None:
            cell.rss_mb, cell.fds = after.rss_bytes / 2**20, after.fds
        bad = res.non2xx + sum(res.socket_errors.values())
        self.say(f"{name:<7} {w.name:<8} c={c:<3} {res.rps:>9,.0f} req/s  p50 {res.p50_ms or 0:7.3f} ms  "
                 f"p99 {res.p99_ms or 0:7.2f} ms  cpu {report._f(cell.proxy_cpu_us):>5} us/req"
                 + (f"  drain {report._f(cell.capture_drain_ms)} ms" if admin is not None else "")
                 + (f"  ERRORS {bad}" if bad else ""))
        return cell

    def probe_relay(self, t: Target) -> None:
        name, port = t.name, t.port
        self.pin_self(t)
        for events, streams in self.plan.relay_streams.items():
            if f"sse{events}" not in {w.name for w in self.workloads}:
                continue
            gap = self.plan.relay_gap_us
            raw = client.format_request("POST", load.RUNS_PATH, load.HEADERS, load.sse_body(events, gap))
            bound = streams * events * gap / 1e6 * 3 + 5
            res = asyncio.run(client.relay_delay(HOST, port, raw, streams=streams, gap_us=gap, seconds=bound))
            if name == "runtap":
                self.runtap_requests += res.streams
            d = res.delays_us
            rel = report.Relay(name, events, gap, res.streams, res.broken, len(d), res.held_back,
                               client.percentile(d, 50), client.percentile(d, 99), max(d) if d else None)
            self.relays.append(rel)
            self.say(f"{name:<7} relay {events:>3} ev x {res.streams} streams: p50 {report._f(rel.p50_us)} "
                     f"us  p99 {report._f(rel.p99_us)} us  max {report._f(rel.max_us)} us  late "
                     f"{res.held_back}  broken {res.broken}")

    def finish_runtap(self, t: Target) -> None:
        proc = t.proc
        assert self.upstream is not None and proc is not None and proc.admin_port is not None
        assert proc.db is not None
        n = self.plan.check_runs
        self.pin_self(t)
        c0 = self.created()
        ids, failures = load.check_creates(HOST, proc.port, n, seconds=max(30.0, n / 100))
        self.runtap_requests += len(ids)
        cap = report.Capture(check_sent=n, check_received=len(ids), requests_sent=self.runtap_requests,
                             note=f"{failures} check creates failed. " if failures else "")
        self.say(f"runtap check: {len(ids)} runs created and received in full; {failures} failed")
        try:
            m = targets.scrape(proc.admin_port)
            cap.metrics = {k: v for k, v in m.items()
                           if k.startswith(("runtap_capture", "runtap_upstream_errors", "runtap_requests"))
                           and "{le=" not in k}
            lag = next((k.partition("_bucket")[0] for k in m if "capture_lag" in k and "_bucket{" in k), None)
            cap.lag_p99_s = targets.histogram_quantile(m, lag, 0.99) if lag else None
        except (OSError, RuntimeError, ValueError) as exc:
            cap.note += f"metrics scrape failed: {exc}. "
        stats = targets.upstream_stats(self.upstream.port)
        cap.created = self.runtap_created + stats["created"] - c0
        t0 = time.monotonic()
        cap.exit_code = proc.stop(timeout=90)  # SIGTERM: drain in-flight, flush the queue, close DuckDB
        cap.shutdown_s = time.monotonic() - t0
        got = targets.count_captured(proc.db, stats["run_prefix"])
        cap.captured, cap.request_rows = len(got.run_ids) + len(got.response_ids), got.requests
        cap.check_missing = len(ids - got.run_ids)
        cap.request_errors = got.request_errors or {}
        cap.abandoned_creates = sum(v for k, v in cap.request_errors.items()
                                    if k.startswith(("runs.create:", "responses.create:")))
        cap.note += got.note
        if self.sink is not None:
            cap.spans_exported_posts = targets.upstream_stats(self.sink.port)["requests"]
        self.capture = cap
        self.say(f"runtap capture: check {len(ids) - cap.check_missing} of {len(ids)} received runs in "
                 f"DuckDB; overall {cap.captured} of {cap.created} created runs and responses, {cap.abandoned_creates} "
                 f"creates abandoned by the client; {report._f(cap.request_rows)} request rows; shutdown "
                 f"{cap.shutdown_s:.1f}s exit {cap.exit_code}" + (f"; {cap.note}" if cap.note else ""))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 s per cell (default 5 s); whole run < 3 min")
    p.add_argument("--only", action="append", default=[], metavar="WORKLOAD",
                   help=f"run only these workloads (repeat or comma-separate): {', '.join(load.WORKLOADS)}")
    p.add_argument("--targets", default=",".join(report.TARGETS), help="comma-separated subset of "
                   f"{','.join(report.TARGETS)} [default all]")
    p.add_argument("--out", default="bench/results", type=Path, help="directory for JSON and markdown")
    p.add_argument("--seconds", type=float, help="override seconds per cell")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument("--no-install", action="store_true", help="never apt-get install nginx or wrk")
    p.add_argument("--capture-mode", choices=("inprocess", "process"), default="inprocess",
                   help="runtap's --capture-mode (process: its capture process is a child, pinned like it)")
    p.add_argument("--tracing", choices=("on", "off"), default="on",
                   help="on [default]: runtap exports OTLP spans to a local sink; off: no OTEL endpoint, "
                        "runtap's default (what tracing costs is the difference between two runs)")
    p.add_argument("--bare-loop", choices=("asyncio", "uvloop"), default="asyncio",
                   help="event loop of the bare forwarder [asyncio]; runtap runs on uvloop when the fast extra "
                        "is installed, so uvloop compares like with like")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.seconds:
        plan = dataclasses.replace(plan, seconds=args.seconds)
    only = [w.strip() for item in args.only for w in item.split(",") if w.strip()]
    unknown = [w for w in only if w not in load.WORKLOADS]
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    if unknown or not set(names) <= set(report.TARGETS):
        print(f"bench: unknown workload or target: {unknown or names}", file=sys.stderr)
        return 2
    names = [t for t in report.TARGETS if t in names]
    workloads = [load.WORKLOADS[w] for w in (only or load.WORKLOADS)]
    place = targets.placement(not args.no_pin)
    # Before the generator is named: on a fresh machine this installs wrk (and nginx) first.
    if "nginx" in names or not load.have_wrk():
        nginx.ensure_nginx(install=not args.no_install)
    generator = "wrk " + subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1] \
        if load.have_wrk() else "python closed loop (wrk not found: apt-get install wrk)"
    started = time.time()
    print(f"bench: {plan.mode} mode, {plan.seconds:g} s per cell, workloads {[w.name for w in workloads]}, "
          f"targets {names}\nbench: generator {generator}\nbench: placement {place.describe()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="runtap-bench-") as tmp:
        bench = Bench(plan, workloads, names, Path(tmp), place, install=not args.no_install,
                      bare_loop=args.bare_loop, capture_mode=args.capture_mode,
                      tracing=args.tracing == "on")
        try:
            bench.run()
        except StartError as exc:
            print(f"bench: cannot start the fake upstream: {exc}", file=sys.stderr)
            return 1
    meta = {
        "mode": plan.mode, "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "started_epoch": started, "elapsed_s": round(time.time() - started, 1),
        "command": "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv),
        "cpus": os.cpu_count(), "cpu_model": _cpu_model(), "generator": generator, "seconds": plan.seconds,
        "placement": place.describe(), "bare_loop": args.bare_loop,
        "capture_mode": args.capture_mode, "tracing": args.tracing, "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "polls_per_create": load.POLLS_PER_CREATE, "loadavg_end": os.getloadavg(),
        "workloads": {w.name: w.about for w in workloads},
    }
    doc = report.document(meta, bench.status, bench.cells, bench.relays, bench.capture)
    js, md = report.write(doc, args.out)
    print("\n" + report.markdown(doc), flush=True)
    print(f"bench: wrote {js} and {md} in {meta['elapsed_s']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
