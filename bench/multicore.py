"""Multi-core: runtap with `--workers 1` and `--workers 2` on one port (SO_REUSEPORT), same load.

    python -m bench.multicore [--seconds 8] [--out bench/results]

The main bench pins the proxy under test to one core so its CPU per request is clean; here nothing
is pinned, because the point is to see what a second worker process buys when the kernel spreads
connections over both. The fake upstream and wrk share the same two cores, so the ratio is the
figure to read, not the absolute req/s. Each phase is the create-run JSON workload at concurrency 50
(tracing to a local OTLP sink, capture into DuckDB); afterwards every worker's DuckDB file is counted
so the runs the upstream created are all accounted for.

The reference, measured in the same run and interleaved with runtap's phases: the bare aiohttp
forwarder (bench/bare_forwarder.py) as 1 and 2 processes on one SO_REUSEPORT port, as runtap's
workers share theirs. Its 2-to-1 ratio is what this machine lets any 2-process Python proxy gain
while wrk and the upstream take their share of the same cores; runtap's ratio is read against it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil  # type: ignore[import-untyped]
from runtap.proxy.workers import suffixed

from bench import load, procstats, targets
from bench.targets import HOST


@dataclass
class Phase:
    mode: str
    workers: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    cpu_us: float | None
    created: int
    captured: int
    other_cores: float | None = None  # cores other work on the machine took meanwhile (shared machines)
    repeat: int = 0


@dataclass
class _Measured:
    result: load.LoadResult
    cpu_us: float | None
    other_cores: float | None


def _measure(port: int, pids: list[int], helpers: list[int], seconds: float) -> _Measured:
    """The create workload at c=50 on `port`: CPU per request of the proxy's processes (`pids`, with their
    children), and the cores taken by anything else than them, `helpers` (upstream, sink) and wrk."""
    before = [procstats.try_sample(p) for p in pids + helpers]
    sys0 = procstats.system_sample()
    result = load.run_load(HOST, port, load.WORKLOADS["create"], connections=50, seconds=seconds)
    sys1 = procstats.system_sample()
    after = [procstats.try_sample(p) for p in pids + helpers]
    used = [a.cpu_s - b.cpu_s for a, b in zip(after, before, strict=True) if a is not None and b is not None]
    if len(used) != len(after) or result.requests <= 0:
        return _Measured(result, None, None)
    cpu = sum(used[:len(pids)]) * 1e6 / result.requests
    return _Measured(result, cpu, procstats.background_cores(sys0, sys1, sum(used)))


def _phase(workdir: Path, upstream: targets.Proc, sink: targets.Proc, workers: int, seconds: float,
           mode: str, repeat: int = 0) -> Phase:
    port, admin = targets.free_port(), targets.free_port()
    db = workdir / f"w{workers}-{mode}-{repeat}.duckdb"
    cmd = [sys.executable, "-m", "runtap.proxy", "serve", "--upstream", f"http://{HOST}:{upstream.port}",
           "--listen", f"{HOST}:{port}", "--admin", f"{HOST}:{admin}", "--db", str(db),
           "--workers", str(workers), "--grace-period", "5", "--log-level", "warning", "--capture-mode", mode]
    proc = targets._spawn(f"runtap-w{workers}", cmd, workdir, port, env=targets.runtap_env(sink.port))
    try:
        targets.wait_ready(proc, admin, "/healthz", seconds=30)
        targets.wait_ready(proc, port, "/__bench/stats", seconds=10)
        c0 = int(targets.upstream_stats(upstream.port)["created"])
        load.run_load(HOST, port, load.WORKLOADS["create"], connections=50, seconds=2)  # warm every worker
        m = _measure(port, [proc.pid], [upstream.pid, sink.pid], seconds)
        created_total = int(targets.upstream_stats(upstream.port)["created"])
    finally:
        proc.stop(timeout=60)
    prefix = str(targets.upstream_stats(upstream.port)["run_prefix"])
    # In process mode every worker hands its capture to one capture process and one database file.
    files = [db] if mode == "process" else [Path(suffixed(str(db), i)) for i in range(workers)]
    captured = sum(len(targets.count_captured(f, prefix).run_ids) for f in files)
    r = m.result
    return Phase(mode, workers, r.rps, r.p50_ms, r.p99_ms, m.cpu_us, created_total - c0, captured, m.other_cores,
                 repeat)


def _listening(pid: int, port: int) -> bool:
    try:
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
                   for c in psutil.Process(pid).net_connections(kind="tcp"))
    except psutil.Error:
        return False


def _bare_phase(workdir: Path, upstream: targets.Proc, processes: int, seconds: float) -> Phase:
    """The bare forwarder as `processes` processes on one SO_REUSEPORT port (runtap's workers' layout)."""
    port = targets.free_port()
    cmd = [sys.executable, "-m", "bench.bare_forwarder", "--upstream", f"http://{HOST}:{upstream.port}",
           "--port", str(port), "--reuse-port", "--uvloop"]
    procs = [targets._spawn(f"bare-p{processes}-{i}", cmd, workdir, port) for i in range(processes)]
    try:
        deadline = time.monotonic() + 30
        # Each process must listen before the load starts, or the kernel gives all connections to the first.
        while not all(_listening(p.pid, port) for p in procs):
            if time.monotonic() > deadline or not all(p.alive() for p in procs):
                raise targets.StartError(f"bare forwarder x{processes} not listening on {port}:\n"
                                         + "\n".join(p.log_tail() for p in procs))
            time.sleep(0.05)
        c0 = int(targets.upstream_stats(upstream.port)["created"])
        load.run_load(HOST, port, load.WORKLOADS["create"], connections=50, seconds=2)  # warm every process
        m = _measure(port, [p.pid for p in procs], [upstream.pid], seconds)
        created = int(targets.upstream_stats(upstream.port)["created"]) - c0
    finally:
        for p in procs:
            p.stop(timeout=10)
    r = m.result
    return Phase("bare", processes, r.rps, r.p50_ms, r.p99_ms, m.cpu_us, created, 0, m.other_cores)


def _ratios(phases: list[Phase], mode: str) -> list[float]:
    """2-process req/s over 1-process req/s, per repeat."""
    out = []
    for rep in sorted({p.repeat for p in phases}):
        one, two = (next(p for p in phases if p.mode == mode and p.repeat == rep and p.workers == n) for n in (1, 2))
        out.append(two.rps / one.rps)
    return out


def _report(phases: list[Phase], modes: tuple[str, ...], seconds: float) -> str:
    lines = [f"### runtap on every core ({time.strftime('%Y-%m-%d %H:%M:%S')})", "",
             f"`python -m bench.multicore --seconds {seconds:g}` · create-run JSON, wrk c=50, nothing "
             "pinned (upstream, wrk and the proxy share both cores); `bare` is the bare aiohttp forwarder "
             "(uvloop, no capture) as 1 and 2 SO_REUSEPORT processes, the machine's own reference", "",
             "| repeat | proxy | workers | req/s | p50 ms | p99 ms | µs CPU/req (all processes) | runs created | "
             "in DuckDB (all files) | other load, cores |",
             "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for p in phases:
        label = "bare forwarder" if p.mode == "bare" else f"runtap, capture {p.mode}"
        captured = "–" if p.mode == "bare" else f"{p.captured:,}"
        other = "–" if p.other_cores is None else f"{p.other_cores:.2f}"
        lines.append(f"| {p.repeat + 1} | {label} | {p.workers} | {p.rps:,.0f} | {p.p50_ms or 0:.2f} | "
                     f"{p.p99_ms or 0:.2f} | {p.cpu_us or 0:,.0f} | {p.created:,} | {captured} | {other} |")
    lines.append("")
    median = {}
    for mode in ("bare", *modes):
        ratios = _ratios(phases, mode)
        median[mode] = statistics.median(ratios)
        name = "bare forwarder (the machine's reference)" if mode == "bare" else f"runtap, capture {mode}"
        lines.append(f"- {name}: 2 processes / 1 **{median[mode]:.2f}×** req/s (median; per repeat "
                     f"{', '.join(f'{r:.2f}×' for r in ratios)}).")
    for mode in modes:
        lines.append(f"- runtap {mode} gains {median[mode] / median['bare']:.0%} of what the bare forwarder gains "
                     "from a second process on this machine (ratio of the medians).")
    lines += ["", "Runs created counts the warm-up too; the few not in DuckDB were abandoned by wrk "
              "mid-response when its time was up (the client never got them either). wrk and the upstream "
              "run on the same 2 cores, so on a quiet machine no proxy reaches 2× here: read runtap's ratio "
              "against the bare one. Other load is CPU taken by work outside the benchmark during the phase; "
              "a 2-process proxy also takes CPU from that work, and a pair whose other load differs (a ratio "
              "over 2×, say) is noise: repeat and read the medians."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.multicore", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds of load per phase [8]")
    ap.add_argument("--out", type=Path, default=Path("bench/results"), help="directory for multicore.json/.md")
    ap.add_argument("--capture-mode", choices=("inprocess", "process", "both"), default="inprocess",
                    help="runtap's --capture-mode; both runs each mode's pair of phases, interleaved [inprocess]")
    ap.add_argument("--repeats", type=int, default=1, help="rounds of every phase, interleaved [1]")
    args = ap.parse_args(argv)
    modes = ("inprocess", "process") if args.capture_mode == "both" else (args.capture_mode,)
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="runtap-multicore-") as tmp:
        workdir = Path(tmp)
        upstream = targets.start_upstream(workdir, None)
        sink = targets.start_upstream(workdir, None, sink=True)
        try:
            for rep in range(args.repeats):
                for n in (1, 2):
                    print(f"multicore: bare forwarder x{n}, create c=50 for {args.seconds:g} s", flush=True)
                    phases.append(_bare_phase(workdir, upstream, n, args.seconds))
                    phases[-1].repeat = rep
                    for mode in modes:
                        print(f"multicore: --workers {n} --capture-mode {mode}, create c=50 for "
                              f"{args.seconds:g} s", flush=True)
                        phases.append(_phase(workdir, upstream, sink, n, args.seconds, mode, rep))
        finally:
            sink.stop()
            upstream.stop()
    text = _report(phases, modes, args.seconds)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "multicore.md").write_text(text + "\n")
    (args.out / "multicore.json").write_text(json.dumps([asdict(p) for p in phases], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
