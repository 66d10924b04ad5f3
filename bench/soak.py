"""Soak (issue 5): 100k mixed requests and 10k SSE streams through runtap, in 10 interleaved rounds.

Half the streams are Assistants runs (12 events), half Responses (12 events: created, in_progress,
output items and text deltas, completed), so the count after SIGTERM covers both kinds of object.

    python -m bench.soak [--quick] [--requests 100000] [--streams 10000] [--max-seconds 900]

Reports RSS and open fds at start (after start-up, before load), middle (after half the rounds) and end;
memory is "flat" when end is within 10% of middle (start is before the allocator and caches warm up).
Meanwhile /healthz is probed every 100 ms (a new connection each time, as a kubelet probe does) and the
worst latency is reported. After the rounds: queue drain, SIGTERM, and every created run and response
counted in DuckDB. Bounded by count and by --max-seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import load, procstats, targets
from bench.targets import HOST, Proc, StartError

FLAT_WITHIN = 0.10


@dataclass
class SoakResult:
    target: str
    requests_planned: int
    streams_planned: int
    requests_done: int = 0
    streams_done: int = 0
    errors: int = 0
    rounds: int = 0
    elapsed_s: float = 0.0
    rss_mb: dict[str, float] = field(default_factory=dict)  # start / middle / end
    fds: dict[str, int] = field(default_factory=dict)
    rss_growth_middle_to_end: float | None = None
    healthz_probes: int = 0
    healthz_failures: int = 0
    healthz_worst_ms: float | None = None
    healthz_p99_ms: float | None = None
    created: int | None = None  # runs and responses the upstream created through the proxy
    captured: int | None = None  # of those, ids in DuckDB (runs + responses)
    captured_responses: int | None = None
    abandoned_creates: int | None = None  # run and response creates the client left mid-response (wrk's quota)
    check_received: int | None = None  # creates read to the end after the rounds
    check_missing: int | None = None  # of those, run ids not in DuckDB
    note: str = ""


class HealthProbe:
    """GET /healthz every `interval` s on a fresh connection; keeps every latency (bounded by run time)."""

    def __init__(self, port: int, path: str = "/healthz", interval: float = 0.1) -> None:
        self.port, self.path, self.interval = port, path, interval
        self.latencies_ms: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            t0 = time.perf_counter()
            try:
                status, _ = targets.http_get(self.port, self.path, timeout=5.0)
            except OSError:
                self.failures += 1
                continue
            self.latencies_ms.append((time.perf_counter() - t0) * 1e3)
            if status != 200:
                self.failures += 1


def run_count(port: int, workload: load.Workload, n: int, *, connections: int,
              cpus: tuple[int, ...] | None, deadline: float) -> tuple[int, int]:
    """Drive about n requests (wrk only bounds by time, so each call carries a per-thread quota and a
    duration estimated from the rate so far). Returns (completed, errors)."""
    done = errors = 0
    rate = 1500.0
    while done < n and time.monotonic() < deadline:
        left = n - done
        seconds = min(max(left / rate * 1.1, 1.0), 60.0, max(deadline - time.monotonic(), 1.0))
        res = load.run_load(HOST, port, workload, connections=min(connections, left), seconds=seconds,
                            cpus=cpus, quota=left)
        done += res.requests
        errors += res.non2xx + sum(res.socket_errors.values())
        if res.requests == 0:
            break
        rate = res.requests / res.duration_s if res.duration_s else rate
    return done, errors


def _mb(s: procstats.ProcSample | None) -> float:
    return 0.0 if s is None else s.rss_bytes / 2**20


def soak(target: str, requests: int, streams: int, *, rounds: int, max_seconds: float, pin: bool,
         connections: int, check_runs: int = 1000, capture_mode: str = "inprocess",
         workers: int = 1) -> SoakResult:
    res = SoakResult(target, requests, streams)
    if target == "runtap":
        res.note += f"--capture-mode {capture_mode} --workers {workers}. "
    # Two workers get both cores: pinning them to the proxy's one core would measure nothing.
    place = targets.placement(pin and workers == 1)
    print(f"soak: placement {place.describe()}", flush=True)
    t_start = time.monotonic()
    deadline = t_start + max_seconds
    with tempfile.TemporaryDirectory(prefix="runtap-soak-") as tmp:
        work = Path(tmp)
        upstream = targets.start_upstream(work, place.upstream)
        sink = targets.start_upstream(work, place.load, sink=True) if target == "runtap" else None
        proc: Proc | None = None
        try:
            created0 = targets.upstream_stats(upstream.port)["created"]
            if target == "runtap":
                proc = targets.start_runtap(work, upstream.port, sink.port if sink else None, place.proxy,
                                            capture_mode=capture_mode, workers=workers)
                health_port, health_path = proc.admin_port or 0, "/healthz"
            else:
                proc = targets.start_bare(work, upstream.port, place.proxy)
                health_port, health_path = proc.port, "/__bench/stats"
            print(f"soak: {target} on {HOST}:{proc.port}: {shlex.join(proc.cmd)}", flush=True)
            if place.load:
                os.sched_setaffinity(0, place.load)
            first = procstats.sample(proc.pid)
            res.rss_mb["start"], res.fds["start"] = _mb(first), first.fds
            mixed, sse = load.WORKLOADS["mixed"], load.WORKLOADS["sse12"]
            resp = load.Workload("resp12", "POST responses.create stream=true, 12 SSE events",
                                 (load.Request("POST", "/v1/responses", load.responses_sse_body(12)),), 12)
            with HealthProbe(health_port, health_path) as probe:
                for r in range(rounds):
                    if time.monotonic() >= deadline or not proc.alive():
                        res.note += f"stopped after {r} rounds ({'time bound' if proc.alive() else 'died'}). "
                        break
                    n_req = requests // rounds + (1 if r < requests % rounds else 0)
                    n_str = streams // rounds + (1 if r < streams % rounds else 0)
                    d1, e1 = run_count(proc.port, mixed, n_req, connections=connections, cpus=place.load,
                                       deadline=deadline)
                    d2, e2 = run_count(proc.port, sse, n_str - n_str // 2, connections=connections,
                                       cpus=place.load, deadline=deadline)
                    d3, e3 = run_count(proc.port, resp, n_str // 2, connections=connections, cpus=place.load,
                                       deadline=deadline)
                    res.requests_done += d1
                    res.streams_done += d2 + d3
                    res.errors += e1 + e2 + e3
                    res.rounds = r + 1
                    s = procstats.sample(proc.pid)
                    if r + 1 == (rounds + 1) // 2:
                        res.rss_mb["middle"], res.fds["middle"] = _mb(s), s.fds
                    print(f"soak: round {r + 1}/{rounds}: {res.requests_done} requests, {res.streams_done} "
                          f"streams, {res.errors} errors, RSS {_mb(s):.1f} MB, fds {s.fds}, "
                          f"{time.monotonic() - t_start:.0f}s", flush=True)
            end = procstats.sample(proc.pid)
            res.rss_mb["end"], res.fds["end"] = _mb(end), end.fds
            if "middle" in res.rss_mb and res.rss_mb["middle"]:
                res.rss_growth_middle_to_end = res.rss_mb["end"] / res.rss_mb["middle"] - 1
            lat = sorted(probe.latencies_ms)
            res.healthz_probes, res.healthz_failures = len(lat) + probe.failures, probe.failures
            if lat:
                res.healthz_worst_ms = lat[-1]
                res.healthz_p99_ms = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
            ids, _ = load.check_creates(HOST, proc.port, check_runs, connections=connections)
            stats = targets.upstream_stats(upstream.port)
            res.created = stats["created"] - created0
            if target == "runtap" and proc.db is not None:
                code = proc.stop(timeout=120)
                got = targets.count_captured(proc.db, stats["run_prefix"])
                res.captured = len(got.run_ids) + len(got.response_ids)
                res.captured_responses = len(got.response_ids)
                res.check_received, res.check_missing = len(ids), len(ids - got.run_ids)
                res.abandoned_creates = sum(v for k, v in (got.request_errors or {}).items()
                                            if k.startswith(("runs.create:", "responses.create:")))
                res.note += f"runtap exit {code}. {got.note}"
        except StartError as exc:
            res.note += f"{target} failed to start: {exc}"
        finally:
            for p in (proc, sink, upstream):
                if p is not None:
                    p.stop(timeout=60)
    res.elapsed_s = round(time.monotonic() - t_start, 1)
    return res


def markdown(r: SoakResult) -> str:
    def f(v: float | None, d: int = 1) -> str:
        return "–" if v is None else f"{v:,.{d}f}"

    flat = r.rss_growth_middle_to_end
    rows = [
        f"### Soak: {r.target}, {r.requests_done:,} mixed requests + {r.streams_done:,} SSE streams (runs and "
        f"responses) "
        f"({r.rounds} rounds, {r.elapsed_s:g} s)", "",
        "| measure | start | middle | end |", "|---|--:|--:|--:|",
        f"| RSS MB | {f(r.rss_mb.get('start'))} | {f(r.rss_mb.get('middle'))} | {f(r.rss_mb.get('end'))} |",
        f"| open fds | {r.fds.get('start', '–')} | {r.fds.get('middle', '–')} | {r.fds.get('end', '–')} |",
        "",
        f"- memory flat within {FLAT_WITHIN:.0%} (middle → end): "
        + ("–" if flat is None else f"{flat:+.1%} {'PASS' if abs(flat) <= FLAT_WITHIN else 'MISS'}"),
        f"- /healthz: {r.healthz_probes} probes, {r.healthz_failures} failed, worst "
        f"{f(r.healthz_worst_ms, 2)} ms, p99 {f(r.healthz_p99_ms, 2)} ms",
        f"- errors (non-2xx or socket): {r.errors}",
    ]
    if r.check_received is not None and r.check_missing is not None:
        rows.append(f"- nothing lost: {r.check_received - r.check_missing:,} of {r.check_received:,} runs "
                    "created (and read in full) after the rounds are in DuckDB: "
                    + ("PASS" if r.check_missing == 0 else f"MISS ({r.check_missing} missing)"))
    if r.created is not None and r.captured is not None:
        rows.append(f"- overall: {r.created:,} runs and responses created upstream through the proxy, "
                    f"{r.captured:,} in DuckDB ({f(r.captured_responses, 0)} responses), {r.abandoned_creates} "
                    "creates abandoned by wrk mid-response")
    if r.note:
        rows.append(f"- note: {r.note.strip()}")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="10k requests and 1k streams")
    p.add_argument("--requests", type=int)
    p.add_argument("--streams", type=int)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--max-seconds", type=float, default=900.0)
    p.add_argument("--target", choices=("runtap", "bare"), default="runtap",
                   help="bare: the baseline forwarder, to check the harness itself")
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--capture-mode", choices=("inprocess", "process"), default="inprocess")
    p.add_argument("--workers", type=int, default=1,
                   help="runtap --workers; more than 1 needs --capture-mode process (one database to count)")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    args = p.parse_args(argv)
    if args.workers > 1 and args.capture_mode != "process":
        p.error("--workers above 1 needs --capture-mode process (inprocess writes one file per worker)")
    requests = args.requests or (10_000 if args.quick else 100_000)
    streams = args.streams or (1_000 if args.quick else 10_000)
    res = soak(args.target, requests, streams, rounds=max(1, args.rounds), max_seconds=args.max_seconds,
               pin=not args.no_pin, connections=args.connections, capture_mode=args.capture_mode,
               workers=args.workers)
    text = markdown(res)
    print("\n" + text, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f"soak-{time.strftime('%Y%m%d-%H%M%S')}-{args.target}"
    base.with_suffix(".json").write_text(json.dumps(asdict(res), indent=1) + "\n")
    base.with_suffix(".md").write_text(text)
    print(f"soak: wrote {base}.json and .md", flush=True)
    return 0 if res.rounds and "failed to start" not in res.note else 2


if __name__ == "__main__":
    sys.exit(main())
