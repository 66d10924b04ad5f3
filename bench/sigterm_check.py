"""`python -m bench.sigterm_check [--runs 10] [--capture-mode process] [--tree DIR] [--keep DIR]`

Repeats the bench's check phase on its own to hunt capture loss at SIGTERM: per run, a fresh fake
upstream, OTLP sink and runtap (pinned as the bench pins them), a short c=50 load per workload (wrk),
then 2,000 run creates read to the end, a /metrics scrape, SIGTERM, and the checked run ids missing
from DuckDB. Each run's directory (runtap's log at --log-level info, which also holds the capture
process's stderr and its "capture flushed" line; the DuckDB file) is kept under --keep, with one JSON
line per run in results.jsonl. `--tree DIR` runs another checkout's runtap (its `.typecheck/runtap`
symlinks on PYTHONPATH) with this checkout's bench. Loopback only; every phase is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import load, targets
from bench.targets import HOST, Proc

DROP_KEYS = ("drop", "lost", "error", "spool", "restart")


def _capture_metrics(admin_port: int) -> dict[str, float]:
    m = targets.scrape(admin_port)
    return {k: v for k, v in m.items() if k.startswith("runtap_capture") and "{le=" not in k
            and not k.endswith(("_created", "_bucket"))}


def _log_lines(log: Path, *needles: str) -> list[str]:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if any(n in line for n in needles)]


def _capture_policies(log: Path) -> dict[str, int] | None:
    """Scheduling policies of the capture process's threads (to see --capture-priority idle is on)."""
    found = _log_lines(log, "capture process pid")
    if not found:
        return None
    pid = found[0].rsplit("capture process pid ", 1)[1].rstrip(")")
    names = {os.SCHED_OTHER: "other", os.SCHED_IDLE: "idle", os.SCHED_BATCH: "batch"}
    out: dict[str, int] = {}
    try:
        for tid in os.listdir(f"/proc/{int(pid)}/task"):
            with contextlib.suppress(ProcessLookupError):
                name = names.get(os.sched_getscheduler(int(tid)), "rt")
                out[name] = out.get(name, 0) + 1
    except (OSError, ValueError):
        return None
    return out


def _handover(lines: list[str]) -> dict[str, int]:
    """Items the relay sent and the capture process read, from their shutdown lines (when logged)."""
    out: dict[str, int] = {}
    for line in lines:
        for key, label in (("capture channel closed: ", "sent"), ("capture flushed: ", "relayed")):
            if key in line:
                fields = dict(kv.split("=", 1) for kv in line.split(key, 1)[1].split(", ") if "=" in kv)
                if label in fields:
                    out[label] = int(fields[label])
    return out


def one_run(workdir: Path, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    place = targets.placement(pin=not args.no_pin)
    out: dict[str, Any] = {"dir": str(workdir), "loadavg_before": os.getloadavg()[0]}
    upstream = targets.start_upstream(workdir, place.upstream)
    sink = targets.start_upstream(workdir, place.load, sink=True)
    runtap: Proc | None = None
    hog: subprocess.Popen[bytes] | None = None
    try:
        runtap = targets.start_runtap(workdir, upstream.port, sink.port, place.proxy,
                                      capture_mode=args.capture_mode, log_level="info", env=env)
        assert runtap.admin_port is not None and runtap.db is not None
        if args.hog:
            # A CPU-bound neighbour on runtap's core from now until the end of the run (a shared machine)
            hog = subprocess.Popen(targets.pinned([sys.executable, "-c", "while True: pass"], place.proxy))
        if place.load:
            os.sched_setaffinity(0, place.load)  # the check's Python client, as the bench pins it
        for name in args.workloads.split(","):
            res = load.run_load(HOST, runtap.port, load.WORKLOADS[name], connections=50,
                                seconds=args.seconds, cpus=place.load)
            out[f"load_{name}"] = res.requests
        c0 = int(targets.upstream_stats(upstream.port)["created"])
        ids, failures = load.check_creates(HOST, runtap.port, args.check, seconds=max(30.0, args.check / 100))
        out.update(check_received=len(ids), check_failures=failures)
        out["capture_threads"] = _capture_policies(runtap.log)
        out["metrics_before_sigterm"] = _capture_metrics(runtap.admin_port)
        stats = targets.upstream_stats(upstream.port)
        out["created_in_check"] = int(stats["created"]) - c0
        t0 = time.monotonic()
        out["exit_code"] = runtap.stop(timeout=90)
        out["shutdown_s"] = round(time.monotonic() - t0, 3)
        got = targets.count_captured(runtap.db, stats["run_prefix"])
        out["missing"] = len(ids - got.run_ids)
        out["captured_runs"] = len(got.run_ids)
        out["db_note"] = got.note
        out["log"] = _log_lines(runtap.log, "capture flushed", "channel", "ERROR", "Error", "WARNING",
                                "Traceback", "killing", "restarting", "dropped", "lost")[-40:]
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
        for p in (runtap, sink, upstream):
            if p is not None:
                p.stop(timeout=60)
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    out["loadavg_after"] = os.getloadavg()[0]
    out["handover"] = _handover(out.get("log", []))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.sigterm_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--capture-mode", default="process", choices=("process", "inprocess"))
    p.add_argument("--workloads", default="create", help="comma-separated bench workloads, c=50 each")
    p.add_argument("--seconds", type=float, default=2.0, help="per workload (wrk takes whole seconds)")
    p.add_argument("--check", type=int, default=2000, help="creates read to the end, then SIGTERM")
    p.add_argument("--tree", type=Path, help="run this checkout's runtap (via its .typecheck symlinks)")
    p.add_argument("--keep", type=Path, default=Path("bench/results/sigterm"), help="kept run dirs")
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--hog", action="store_true", help="a busy loop on runtap's core once it is ready")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env: dict[str, str] = {}
    if args.tree is not None:
        pkg = args.tree.resolve() / ".typecheck"
        if not (pkg / "runtap" / "proxy").is_dir():
            print(f"sigterm_check: error: {pkg}/runtap/proxy not found", file=sys.stderr)
            return 2
        env["PYTHONPATH"] = str(pkg)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    root = args.keep / f"{stamp}-{args.capture_mode}"
    root.mkdir(parents=True, exist_ok=True)
    lost_runs = 0
    with open(root / "results.jsonl", "a") as results:
        for i in range(args.runs):
            workdir = root / f"run{i:02d}"
            workdir.mkdir()
            try:
                res = one_run(workdir, args, env)
            except (targets.StartError, RuntimeError, OSError) as exc:
                res = {"dir": str(workdir), "error": str(exc)}
            res["run"] = i
            results.write(json.dumps(res) + "\n")
            results.flush()
            lost_runs += bool(res.get("missing"))
            m = res.get("metrics_before_sigterm", {})
            drops = {k: v for k, v in m.items() if v and any(d in k for d in DROP_KEYS)}
            print(f"run {i}: missing {res.get('missing')} of {res.get('check_received')}; shutdown "
                  f"{res.get('shutdown_s')}s exit {res.get('exit_code')}; load {res.get('loadavg_before', 0):.2f}"
                  f"; threads {res.get('capture_threads')}; {res.get('handover') or ''} {drops or 'no drops'}"
                  + (f"; ERROR {res['error']}" if "error" in res else ""),
                  flush=True)
    print(f"{lost_runs} of {args.runs} runs lost checked rows; kept in {root}")
    return 1 if lost_runs else 0


if __name__ == "__main__":
    sys.exit(main())
