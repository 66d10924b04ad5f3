"""What one /metrics scrape costs the relay with `--capture-mode process`.

    .venv/bin/python -m bench.scrape_cost [--scrapes 300] [--seconds 10]

Starts bench.upstream and `runtap serve --capture-mode process`, fills the metric families with a few
seconds of mixed, SSE and Responses traffic, then measures:
- idle: relay and capture-process CPU per scrape over N back-to-back scrapes (no proxied traffic);
- under load: a c=1 wrk create loop, once without scrapes and once with a scrape every
  --interval seconds (far more often than Prometheus does, to make the cost visible), interleaved
  quiet/scraped/quiet/scraped: latency p50/p99, relay CPU per request, and the relay loop's lag
  histogram (bucket bounds) over each window.
Bounded: about 2 x seconds x 2 + a few seconds of warm-up. 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import orjson
import psutil  # type: ignore[import-untyped]

from bench import load
from bench.targets import http_get, lag_summary, scrape, start_runtap, start_upstream


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def _capture_pid(admin: int) -> int:
    status, body = http_get(admin, "/readyz")
    pid: int = orjson.loads(body)["capture_process"]["pid"]
    return pid


def _idle(relay: int, capture: int, admin: int, n: int) -> dict[str, float]:
    size = len(http_get(admin, "/metrics")[1])
    r0, c0, t0 = _cpu(relay), _cpu(capture), time.perf_counter()
    for _ in range(n):
        status, _ = http_get(admin, "/metrics", timeout=10)
        assert status == 200
    wall = time.perf_counter() - t0
    return {"scrapes": n, "bytes": size, "relay_ms_per_scrape": (_cpu(relay) - r0) / n * 1e3,
            "capture_ms_per_scrape": (_cpu(capture) - c0) / n * 1e3, "wall_ms_per_scrape": wall / n * 1e3}


def _loaded(url: str, relay: int, admin: int, seconds: float, interval: float | None) -> dict[str, object]:
    stop = threading.Event()
    done = [0]

    def scraper() -> None:
        while not stop.wait(interval or 0):
            http_get(admin, "/metrics", timeout=10)
            done[0] += 1

    before = scrape(admin)
    thread = threading.Thread(target=scraper) if interval else None
    cpu0 = _cpu(relay)
    if thread:
        thread.start()
    res = load.run_wrk(url, load.WORKLOADS["create"].cycle, connections=1, seconds=seconds)
    stop.set()
    if thread:
        thread.join()
    cpu = _cpu(relay) - cpu0
    lag = lag_summary(before, scrape(admin))
    return {"scrapes": done[0], "requests": res.requests, "p50_ms": res.p50_ms, "p99_ms": res.p99_ms,
            "max_ms": res.max_ms, "relay_cpu_us_per_request": cpu / max(res.requests, 1) * 1e6,
            "loop_lag_p99_ms": lag[1] if lag else None, "loop_lag_max_ms": lag[2] if lag else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scrapes", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=0.2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scrape-") as tmp:
        work = Path(tmp)
        up = start_upstream(work, None)
        try:
            rt = start_runtap(work, up.port, None, None, capture_mode="process")
            try:
                url = f"http://127.0.0.1:{rt.port}"
                assert rt.admin_port is not None
                for name in ("mixed", "sse12", "resp200"):  # every operation and event family gets series
                    load.run_wrk(url, load.WORKLOADS[name].cycle, connections=4, seconds=2)
                time.sleep(1.5)  # let the capture process write what it got (run metrics fill in)
                print("idle", orjson.dumps(_idle(rt.pid, _capture_pid(rt.admin_port), rt.admin_port,
                                                  args.scrapes)).decode())
                for label, interval in (("quiet", None), ("scraped", args.interval)) * 2:
                    row = _loaded(url, rt.pid, rt.admin_port, args.seconds, interval)
                    print(label, orjson.dumps(row).decode())
            finally:
                rt.stop()
        finally:
            up.stop()


if __name__ == "__main__":
    main()
