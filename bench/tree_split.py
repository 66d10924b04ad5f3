"""`python -m bench.tree_split [--tracing on|off] [--workloads create,retrieve,...] [--seconds 5]`

Where the CPU of `runtap serve --capture-mode process` goes, per process: one runtap (pinned as the
bench pins it), the workloads one after another at c=50 (wrk), and for each the relay's and the
capture process's CPU per request, the capture queue's drain time after the load and each process's
RSS. Run it once with `--tracing on` and once with `--tracing off` to see what span export costs each
process; unlike `python -m bench`, no baseline runs here, so compare µs between runs on a quiet machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import psutil

from bench import load, targets
from bench.__main__ import wait_drain
from bench.targets import HOST


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def measure(workloads: list[str], seconds: float, tracing: bool, connections: int) -> list[str]:
    place = targets.placement()
    lines = [f"tree_split: tracing {'on' if tracing else 'off'}, c={connections}, {seconds:g} s a workload, "
             f"placement: {place.describe()}", "",
             "| workload | req/s | relay µs/req | capture process µs/req | drain ms | RSS relay / capture MiB |",
             "|---|--:|--:|--:|--:|--:|"]
    with tempfile.TemporaryDirectory(prefix="runtap-split-") as tmp:
        work = Path(tmp)
        upstream = targets.start_upstream(work, place.upstream)
        sink = targets.start_upstream(work, place.load, sink=True) if tracing else None
        runtap = None
        try:
            runtap = targets.start_runtap(work, upstream.port, sink.port if sink else None, place.proxy,
                                          capture_mode="process")
            relay = psutil.Process(runtap.pid)
            capture = relay.children()[0]
            admin = runtap.admin_port or 0
            # warmed up as the bench warms its targets: the first workload should not pay for first calls
            load.run_load(HOST, runtap.port, load.WORKLOADS["mixed"], connections=connections, seconds=2,
                          cpus=place.load)
            wait_drain(admin, 60)
            for name in workloads:
                before = _cpu(relay), _cpu(capture)
                res = load.run_load(HOST, runtap.port, load.WORKLOADS[name], connections=connections,
                                    seconds=seconds, cpus=place.load)
                drain = wait_drain(admin, 60)
                n = max(res.requests, 1)
                row = (f"| {name} | {res.rps:,.0f} | {(_cpu(relay) - before[0]) / n * 1e6:,.0f} | "
                       f"{(_cpu(capture) - before[1]) / n * 1e6:,.0f} | "
                       f"{'–' if drain is None else f'{drain:,.0f}'} | "
                       f"{relay.memory_info().rss >> 20} / {capture.memory_info().rss >> 20} |")
                print(row, flush=True)
                lines.append(row)
        finally:
            for p in (runtap, sink, upstream):
                if p is not None:
                    p.stop(timeout=60)
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tree_split", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracing", choices=("on", "off"), default="on",
                   help="on [default]: OTLP spans to a local sink; off: no OTEL endpoint (runtap's default)")
    p.add_argument("--workloads", default="create,retrieve,sse12,resp200,mixed",
                   help=f"comma-separated, run in this order: {', '.join(load.WORKLOADS)}")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds of load per workload [5]")
    p.add_argument("--connections", type=int, default=50)
    args = p.parse_args(argv)
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in names if w not in load.WORKLOADS]
    if unknown or not names:
        p.error(f"unknown workload(s): {unknown}")
    if args.seconds <= 0 or args.connections < 1:
        p.error("--seconds must be > 0 and --connections >= 1")
    print("\n".join(measure(names, args.seconds, args.tracing == "on", args.connections)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
