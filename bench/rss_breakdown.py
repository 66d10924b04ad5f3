"""Where runtap's RSS goes under a bounded load, and what the cheap cuts buy (issue 16).

    .venv/bin/python -m bench.rss_breakdown --seconds 20 --rounds 2 --variants default,arena2

One fake upstream; for each round, each variant in turn (interleaved, so drift on a shared machine hits
all alike): start `runtap serve` (in-process capture, default settings) with bench/probe_site on its
PYTHONPATH (its SIGUSR2 probe, bench/probe_site/probe_memory.py) and the variant's environment, probe
idle, run `create` then `sse12` (c=50, --seconds each), probe right after the load, idle --idle seconds,
probe again, then malloc_trim(0) once and probe. Each probe: RSS (anon vs file-backed), threads,
DuckDB's buffer pool (runtap_capture_db_memory_bytes from /metrics). Loopback only; bounded by
--seconds and --rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import load, procstats, targets

OFF = {"RUNTAP_IDLE_TRIM": "0"}
VARIANTS: dict[str, dict[str, str]] = {
    "notrim": OFF,  # the defaults before --idle-trim
    "arena2": {**OFF, "MALLOC_ARENA_MAX": "2"},
    "idletrim": {},  # today's defaults: --idle-trim 5
    "arena2+idletrim": {"MALLOC_ARENA_MAX": "2"},
    "tracemalloc": {**OFF, "RUNTAP_PROBE_TRACEMALLOC": "1"},
    "flush8": {**OFF, "RUNTAP_PROBE_DUCKDB_SQL": "SET allocator_flush_threshold = '8MB'"},
    "bgthreads": {**OFF, "RUNTAP_PROBE_DUCKDB_SQL": "SET allocator_background_threads = true"},
    "before": {**OFF, "RUNTAP_PROBE_CACHE_ROWS": "50000",
               "RUNTAP_PROBE_DUCKDB_SQL": "SET allocator_background_threads = false"},  # before this pass
    "after": {},  # with this pass's cuts (idle trim, 10k cache, DuckDB's allocator background thread)
    "cache10k": {**OFF, "RUNTAP_PROBE_CACHE_ROWS": "10000"},
    "cache10k+arena2+idletrim": {"RUNTAP_PROBE_CACHE_ROWS": "10000", "MALLOC_ARENA_MAX": "2"},
}


def probe(proc: targets.Proc, out: Path, *, trim: bool = False) -> dict[str, Any]:
    flag = Path(str(out) + ".trim")
    if trim:
        flag.touch()
    before = out.read_text().count("\n") if out.exists() else 0
    os.kill(proc.pid, signal.SIGUSR2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = out.read_text().splitlines() if out.exists() else []
        if len(lines) > before:
            break
        time.sleep(0.05)
    flag.unlink(missing_ok=True)
    rec: dict[str, Any] = json.loads(lines[-1])
    assert proc.admin_port is not None
    m = targets.scrape(proc.admin_port)
    rec["duckdb"] = m.get("runtap_capture_db_memory_bytes", 0.0)
    rec["tree_rss"] = procstats.sample(proc.pid).rss_bytes
    return rec


def start(work: Path, upstream_port: int, env: dict[str, str], out: Path) -> targets.Proc:
    port, admin = targets.free_port(), targets.free_port()
    db = work / "runtap.duckdb"
    cmd = [sys.executable, "-m", "runtap.proxy", "serve", "--upstream", f"http://{targets.HOST}:{upstream_port}",
           "--listen", f"{targets.HOST}:{port}", "--admin", f"{targets.HOST}:{admin}", "--db", str(db),
           "--grace-period", "5", "--log-level", "warning"]
    site = str(Path(__file__).resolve().parent / "probe_site")
    proc = targets._spawn("runtap", cmd, work, port, env={**env, "RUNTAP_PROBE_OUT": str(out), "PYTHONPATH": site})
    proc.admin_port, proc.db = admin, db
    targets.wait_ready(proc, admin, "/healthz", seconds=30)
    targets.wait_ready(proc, port, "/__bench/stats", seconds=10)
    return proc


def one(work: Path, upstream_port: int, name: str, seconds: float, idle: float) -> dict[str, Any]:
    work.mkdir()
    out = work / "probe.jsonl"
    proc = start(work, upstream_port, VARIANTS[name], out)
    res: dict[str, Any] = {"variant": name}
    try:
        time.sleep(2)
        res["idle"] = probe(proc, out)
        for wl in ("create", "sse12"):
            r = load.run_load(targets.HOST, proc.port, load.WORKLOADS[wl], connections=50, seconds=seconds)
            res[f"rps_{wl}"] = r.rps
        res["loaded"] = probe(proc, out)
        time.sleep(idle)
        res["idle_after"] = probe(proc, out)
        res["trimmed"] = probe(proc, out, trim=True)
    finally:
        res["exit"] = proc.stop()
    return res


def mb(v: float) -> str:
    return f"{v / 2**20:.0f}"


def row(r: dict[str, Any]) -> str:
    i, lo, ia, t = r["idle"], r["loaded"], r["idle_after"], r["trimmed"]
    return (f"| {r['variant']} | {mb(i['rss'])} | {mb(lo['rss'])} ({mb(lo['anon'])} anon, {mb(lo['duckdb'])} duckdb) "
            f"| {mb(ia['rss'])} | {mb(t['rss_after_trim'])} | {lo['os_threads']} | {r['rps_create']:.0f} / "
            f"{r['rps_sse12']:.0f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0, help="per workload (create, then sse12)")
    p.add_argument("--idle", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--variants", default="notrim,arena2,idletrim,arena2+idletrim")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    names = a.variants.split(",")
    results = []
    with tempfile.TemporaryDirectory(prefix="runtap-rss-") as tmp:
        up = targets.start_upstream(Path(tmp), None)
        try:
            for k in range(a.rounds):
                for name in names:
                    r = one(Path(tmp) / f"{name}-{k}", up.port, name, a.seconds, a.idle)
                    results.append(r)
                    print(json.dumps(r), file=sys.stderr, flush=True)
        finally:
            up.stop()
    print("| variant | idle MB | after load MB | after idle MB | after malloc_trim MB | threads "
          "| req/s create / sse12 |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(row(r))
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
