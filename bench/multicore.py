"""Multi-core: runtap with `--workers 1` and `--workers 2` on one port (SO_REUSEPORT), same load.

    python -m bench.multicore [--seconds 8] [--out bench/results]

The main bench pins the proxy under test to one core so its CPU per request is clean; here nothing
is pinned, because the point is to see what a second worker process buys when the kernel spreads
connections over both. The fake upstream and wrk share the same two cores, so the ratio is the
figure to read, not the absolute req/s. Each phase is the create-run JSON workload at concurrency 50
(tracing to a local OTLP sink, capture into DuckDB); afterwards every worker's DuckDB file is counted
so the runs the upstream created are all accounted for.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

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


def _phase(workdir: Path, upstream: targets.Proc, sink: targets.Proc, workers: int, seconds: float,
           mode: str) -> Phase:
    port, admin = targets.free_port(), targets.free_port()
    db = workdir / f"w{workers}-{mode}.duckdb"
    cmd = [sys.executable, "-m", "runtap.proxy", "serve", "--upstream", f"http://{HOST}:{upstream.port}",
           "--listen", f"{HOST}:{port}", "--admin", f"{HOST}:{admin}", "--db", str(db),
           "--workers", str(workers), "--grace-period", "5", "--log-level", "warning", "--capture-mode", mode]
    proc = targets._spawn(f"runtap-w{workers}", cmd, workdir, port, env=targets.runtap_env(sink.port))
    try:
        targets.wait_ready(proc, admin, "/healthz", seconds=30)
        targets.wait_ready(proc, port, "/__bench/stats", seconds=10)
        workload = load.WORKLOADS["create"]
        c0 = int(targets.upstream_stats(upstream.port)["created"])
        load.run_load(HOST, port, workload, connections=50, seconds=2)  # warm every worker
        before = procstats.try_sample(proc.pid)
        result = load.run_load(HOST, port, workload, connections=50, seconds=seconds)
        after = procstats.try_sample(proc.pid)
        created_total = int(targets.upstream_stats(upstream.port)["created"])
    finally:
        proc.stop(timeout=60)
    prefix = str(targets.upstream_stats(upstream.port)["run_prefix"])
    # In process mode every worker hands its capture to one capture process and one database file.
    files = [db] if mode == "process" else [Path(suffixed(str(db), i)) for i in range(workers)]
    captured = sum(len(targets.count_captured(f, prefix).run_ids) for f in files)
    return Phase(mode, workers, result.rps, result.p50_ms, result.p99_ms,
                 procstats.cpu_us_per_request(before, after, result.requests), created_total - c0, captured)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.multicore", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds of load per phase [8]")
    ap.add_argument("--out", type=Path, default=Path("bench/results"), help="directory for multicore.json/.md")
    ap.add_argument("--capture-mode", choices=("inprocess", "process", "both"), default="inprocess",
                    help="runtap's --capture-mode; both runs each mode's pair of phases, interleaved [inprocess]")
    args = ap.parse_args(argv)
    modes = ("inprocess", "process") if args.capture_mode == "both" else (args.capture_mode,)
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="runtap-multicore-") as tmp:
        workdir = Path(tmp)
        upstream = targets.start_upstream(workdir, None)
        sink = targets.start_upstream(workdir, None, sink=True)
        try:
            for n in (1, 2):
                for mode in modes:
                    print(f"multicore: --workers {n} --capture-mode {mode}, create c=50 for {args.seconds:g} s",
                          flush=True)
                    phases.append(_phase(workdir, upstream, sink, n, args.seconds, mode))
        finally:
            sink.stop()
            upstream.stop()
    lines = [f"### runtap on every core ({time.strftime('%Y-%m-%d %H:%M:%S')})", "",
             f"`python -m bench.multicore --seconds {args.seconds:g}` · create-run JSON, wrk c=50, nothing "
             "pinned (upstream, wrk and runtap share both cores)", "",
             "| capture mode | workers | req/s | p50 ms | p99 ms | µs CPU/req (all processes) | runs created | "
             "in DuckDB (all files) |",
             "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for p in phases:
        lines.append(f"| {p.mode} | {p.workers} | {p.rps:,.0f} | {p.p50_ms or 0:.2f} | {p.p99_ms or 0:.2f} | "
                     f"{p.cpu_us or 0:,.0f} | {p.created:,} | {p.captured:,} |")
    lines.append("")
    for mode in modes:
        one, two = (p for p in phases if p.mode == mode)
        lines.append(f"- {mode}: 2 workers / 1 worker **{two.rps / one.rps:.2f}×** req/s.")
    lines += ["", "Runs created counts the warm-up too; the few not in DuckDB were abandoned by wrk "
              "mid-response when its time was up (the client never got them either)."]
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "multicore.md").write_text(text + "\n")
    (args.out / "multicore.json").write_text(json.dumps([asdict(p) for p in phases], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
