"""What one /metrics scrape costs the relay with `--capture-mode process`.

    .venv/bin/python -m bench.scrape_cost [--scrapes 200] [--seconds 5] [--rounds 2] [--baseline DIR]

Starts bench.upstream and `runtap serve --capture-mode process`, fills the metric families with a few
seconds of mixed, SSE and Responses traffic, then measures:
- idle: relay (whole process, less what it spends idle without scrapes) and capture-process CPU per
  scrape over N back-to-back scrapes (no proxied traffic);
- under load: a c=1 wrk create loop, once without scrapes and once with a scrape every
  --interval seconds (far more often than Prometheus does, to make the cost visible): latency p50/p99,
  relay CPU per request, and the relay loop's lag histogram (bucket bounds) over each window.
With --baseline DIR, another tree's runtap is measured the same way, interleaved round by round.
Bounded: per instance about 20 s plus the scrapes. 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import orjson

from bench import load
from bench.procstats import process_cpu_s
from bench.targets import http_get, lag_summary, scrape, start_runtap, start_upstream


def _capture_pid(admin: int) -> int:
    status, body = http_get(admin, "/readyz")
    pid: int = orjson.loads(body)["capture_process"]["pid"]
    return pid


def _idle(relay: int, capture: int, admin: int, n: int) -> dict[str, float]:
    size = len(http_get(admin, "/metrics")[1])
    r0 = process_cpu_s(relay)
    time.sleep(3)  # what the idle relay spends without scrapes (its loop-lag probe, timers)
    background = (process_cpu_s(relay) - r0) / 3
    r0, c0, t0 = process_cpu_s(relay), process_cpu_s(capture), time.perf_counter()
    for _ in range(n):
        status, _ = http_get(admin, "/metrics", timeout=10)
        assert status == 200
    wall = time.perf_counter() - t0
    return {"scrapes": n, "bytes": size,
            "relay_ms_per_scrape": (process_cpu_s(relay) - r0 - background * wall) / n * 1e3,
            "capture_ms_per_scrape": (process_cpu_s(capture) - c0) / n * 1e3, "wall_ms_per_scrape": wall / n * 1e3,
            "relay_idle_ms_per_s": background * 1e3}


def _loaded(url: str, relay: int, admin: int, seconds: float, interval: float | None) -> dict[str, object]:
    stop = threading.Event()
    done = [0]

    def scraper() -> None:
        while not stop.wait(interval or 0):
            http_get(admin, "/metrics", timeout=10)
            done[0] += 1

    before = scrape(admin)
    thread = threading.Thread(target=scraper) if interval else None
    cpu0 = process_cpu_s(relay)
    if thread:
        thread.start()
    res = load.run_wrk(url, load.WORKLOADS["create"].cycle, connections=1, seconds=seconds)
    stop.set()
    if thread:
        thread.join()
    cpu = process_cpu_s(relay) - cpu0
    lag = lag_summary(before, scrape(admin))
    return {"scrapes": done[0], "requests": res.requests, "p50_ms": res.p50_ms, "p99_ms": res.p99_ms,
            "max_ms": res.max_ms, "relay_cpu_us_per_request": cpu / max(res.requests, 1) * 1e6,
            "loop_lag_p99_ms": lag[1] if lag else None, "loop_lag_max_ms": lag[2] if lag else None}


def _instance(work: Path, upstream: int, args: argparse.Namespace, baseline: bool) -> dict[str, object]:
    """One runtap (the baseline tree's with --baseline), warmed; its idle and loaded rows."""
    # PYTHONPATH ahead of the editable install's finder: that tree's runtap.* is imported instead
    rt = start_runtap(work, upstream, None, None, capture_mode="process",
                      env={"PYTHONPATH": args.baseline} if baseline else None)
    try:
        url = f"http://127.0.0.1:{rt.port}"
        assert rt.admin_port is not None
        for name in ("mixed", "sse12", "resp200"):  # every operation and event family gets series
            load.run_wrk(url, load.WORKLOADS[name].cycle, connections=4, seconds=2)
        time.sleep(1.5)  # let the capture process write what it got (run metrics fill in)
        row: dict[str, object] = {"idle": _idle(rt.pid, _capture_pid(rt.admin_port), rt.admin_port, args.scrapes)}
        for label, interval in (("quiet", None), ("scraped", args.interval)):
            row[label] = _loaded(url, rt.pid, rt.admin_port, args.seconds, interval)
        return row
    finally:
        rt.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scrapes", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--baseline", default="", help="a directory holding another runtap tree as DIR/runtap "
                    "(e.g. `git archive COMMIT proxy analytics settings demo dashboards` extracted there): "
                    "measured interleaved with this tree, and the ratio printed")
    args = ap.parse_args()
    variants = [("current", False)] + ([("baseline", True)] if args.baseline else [])
    per_scrape: dict[str, list[float]] = {name: [] for name, _ in variants}
    with tempfile.TemporaryDirectory(prefix="bench-scrape-") as tmp:
        work = Path(tmp)
        up = start_upstream(work, None)
        try:
            for _ in range(args.rounds):
                for name, baseline in variants:
                    row = _instance(work, up.port, args, baseline)
                    per_scrape[name].append(float(row["idle"]["relay_ms_per_scrape"]))  # type: ignore[index]
                    print(name, orjson.dumps(row).decode(), flush=True)
        finally:
            up.stop()
    for name, values in per_scrape.items():
        print(f"{name}: relay CPU per scrape, median of {len(values)}: {statistics.median(values):.2f} ms")
    if args.baseline:
        ratio = statistics.median(per_scrape["current"]) / statistics.median(per_scrape["baseline"])
        print(f"current / baseline: {ratio:.2f}x")


if __name__ == "__main__":
    main()
