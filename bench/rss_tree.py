"""RSS of runtap's whole process tree, per process, idle / under a bounded load / after it (issue 16).

    .venv/bin/python -m bench.rss_tree --seconds 15 --rounds 2 \\
        --variant inprocess --variant process \\
        --variant "before:process@/work/main/.venv/bin/python" \\
        --variant "ckpt16:inprocess+RUNTAP_PROBE_DUCKDB_SQL=SET checkpoint_threshold='16MB'"

A variant is `[LABEL:]MODE[@PYTHON][+VAR=VALUE]...`: the capture mode, optionally another interpreter
(another checkout's venv) and environment variables (PYTHONPATH=DIR with DIR/runtap/{proxy,analytics,...}
from `git archive` runs an older tree on this venv's libraries, for a before/after in one run; RUNTAP_*
settings, MALLOC_ARENA_MAX, or the RUNTAP_PROBE_* knobs of bench/probe_site/sitecustomize.py, which
reach the capture process too). One fake upstream; for each round, each variant in turn (interleaved,
so the shared machine's drift hits all alike): start `runtap serve`, wait --settle seconds, sample
idle; run --workloads (default `create` then `sse12`; c=50, --seconds each) while sampling every process's RSS twice a
second; sample right after; idle --idle seconds (the idle trim runs) and sample again. "load" is the
mean of the samples in the second half of each workload (sustained), "peak" their maximum. Loopback
only; bounded by --seconds, --rounds and the variants.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from bench import load, targets
from bench.procstats import process_cpu_s

PROBE_SITE = Path(__file__).resolve().parent / "probe_site"
MB = 2**20


@dataclass
class Variant:
    label: str
    mode: str
    python: str = sys.executable
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str) -> Variant:
        colon = spec.find(":")
        named = colon > 0 and not any(c in spec[:colon] for c in "=@")
        label, rest = (spec[:colon], spec[colon + 1:]) if named else (spec, spec)
        head, *pairs = rest.split("+")
        mode, _, python = head.partition("@")
        if mode not in ("inprocess", "process"):
            raise ValueError(f"{spec!r}: mode must be inprocess or process")
        env = dict(p.split("=", 1) for p in pairs)
        return cls(label, mode, python or sys.executable, env)


def _rollup(pid: int) -> tuple[int, int]:
    """(RSS, anonymous) bytes. File-backed RSS (mostly _duckdb.so) depends on the page cache, so
    the anonymous part is the one to compare across runs of different files."""
    rss = anon = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if parts[0] == "Rss:":
                    rss = int(parts[1]) << 10
                elif parts[0] == "Anonymous:":
                    anon = int(parts[1]) << 10
    except OSError:
        pass
    return rss, anon


def _rss(pids: dict[str, int]) -> dict[str, int]:
    out = {}
    for role, pid in pids.items():
        out[role], out[role + "_anon"] = _rollup(pid)
    out["tree"] = sum(out[r] for r in pids)
    out["tree_anon"] = sum(out[r + "_anon"] for r in pids)
    return out


def _cpu(pids: dict[str, int]) -> float:
    total = 0.0
    for pid in pids.values():
        try:
            total += process_cpu_s(pid)
        except psutil.Error:
            pass
    return total


def _pids(root: int) -> dict[str, int]:
    kids = psutil.Process(root).children()
    return {"relay": root, **({"capture": kids[0].pid} if kids else {})}


def _depth(admin_port: int) -> int:
    """Items waiting for the writer: its queue (and in process mode the relay's channel), from /readyz."""
    try:
        _status, body = targets.http_get(admin_port, "/readyz")
        return int(json.loads(body).get("capture_queue_depth", 0))
    except (OSError, ValueError):
        return -1


class Sampler(threading.Thread):
    def __init__(self, pids: dict[str, int], admin_port: int) -> None:
        super().__init__(daemon=True)
        self.pids, self.admin_port = pids, admin_port
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            self.samples.append((time.monotonic(), {**_rss(self.pids), "depth": _depth(self.admin_port)}))


def start(work: Path, upstream_port: int, v: Variant) -> targets.Proc:
    port, admin = targets.free_port(), targets.free_port()
    db = work / "runtap.duckdb"
    cmd = [v.python, "-m", "runtap.proxy", "serve", "--upstream", f"http://{targets.HOST}:{upstream_port}",
           "--listen", f"{targets.HOST}:{port}", "--admin", f"{targets.HOST}:{admin}", "--db", str(db),
           "--grace-period", "5", "--log-level", "warning", "--capture-mode", v.mode]
    env = {**v.env, "PYTHONPATH": ":".join(filter(None, (v.env.get("PYTHONPATH"), str(PROBE_SITE)))),
           "RUNTAP_PROBE_OUT": str(work / "probe.jsonl")}
    proc = targets._spawn("runtap", cmd, work, port, env=env)
    proc.admin_port, proc.db = admin, db
    targets.wait_ready(proc, admin, "/readyz", seconds=30)
    return proc


def one(work: Path, upstream_port: int, v: Variant, a: argparse.Namespace) -> dict[str, Any]:
    work.mkdir()
    proc = start(work, upstream_port, v)
    res: dict[str, Any] = {"variant": v.label, "workloads": a.workloads.split(",")}
    try:
        time.sleep(a.settle)
        pids = _pids(proc.pid)
        res["idle"] = _rss(pids)
        sustained: list[dict[str, int]] = []
        assert proc.admin_port is not None
        sampler = Sampler(pids, proc.admin_port)
        sampler.start()
        for wl in a.workloads.split(","):
            t0 = time.monotonic()
            cpu0 = _cpu(pids)
            probe = threading.Timer(a.seconds * 0.75, _probe, (pids,))  # a breakdown under load
            probe.start()
            r = load.run_load(targets.HOST, proc.port, load.WORKLOADS[wl], connections=50, seconds=a.seconds)
            probe.join()
            res[f"rps_{wl}"] = r.rps
            res[f"us_{wl}"] = (_cpu(pids) - cpu0) * 1e6 / max(r.requests, 1)
            sustained += [s for t, s in sampler.samples if t >= t0 + a.seconds / 2]
        sampler.stopped.set()
        sampler.join()
        res["load"] = {k: int(statistics.mean(s[k] for s in sustained)) for k in sustained[0]} if sustained else {}
        res["peak"] = {k: max(s[k] for _, s in sampler.samples) for k in sampler.samples[0][1]}
        res["after"] = _rss(pids)
        try:
            m = targets.scrape(proc.admin_port)
        except OSError:  # a capture process slowed by tracemalloc may answer too late
            m = {}
        res["duckdb"] = m.get("runtap_capture_db_memory_bytes", 0.0)
        res["dropped"] = m.get("runtap_capture_dropped_total", 0.0)
        res["samples"] = [(round(t, 2), s["tree"]) for t, s in sampler.samples]  # the tree's RSS over time
        time.sleep(a.idle)
        res["settled"] = _rss(pids)
        _probe(pids)
        time.sleep(1)
        res["probes"] = _probes(work / "probe.jsonl")
    finally:
        res["exit"] = proc.stop()
    return res


def _probe(pids: dict[str, int]) -> None:
    """Ask every process for its breakdown (bench/probe_site/probe_memory.py, written on SIGUSR2)."""
    for pid in pids.values():
        try:
            os.kill(pid, signal.SIGUSR2)
        except OSError:
            pass


def _probes(path: Path) -> list[dict[str, Any]]:
    """The breakdowns in order (one in each workload, then settled), each process's (with tracemalloc's top lines when
    RUNTAP_PROBE_TRACEMALLOC=1)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def breakdown(results: list[dict[str, Any]]) -> str:
    """MiB per process: anonymous = glibc arenas + glibc mmap + pymalloc arenas + the rest (DuckDB's
    jemalloc, thread stacks)."""
    lines = ["| variant | probe | role | rss | anon | glibc arenas (free) | glibc mmap | pymalloc (used) | "
             "rest | py blocks | probe trims (ms CPU each) |", "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in results:
        phases = [*r.get("workloads", ()), "settled"]
        probes = r.get("probes", [])
        by_role: dict[str, list[dict[str, Any]]] = {}
        for p in probes:
            by_role.setdefault(p.get("role", "?"), []).append(p)
        for role, ps in by_role.items():
            for phase, p in zip(phases, ps, strict=False):
                known = p.get("glibc_arena", 0) + p.get("glibc_mmap", 0) + p.get("pymalloc_mapped", 0)
                lines.append(
                    f"| {r['variant']} | {phase} | {role} | {p['rss'] / MB:.0f} | {p['anon'] / MB:.0f} | "
                    f"{p.get('glibc_arena', 0) / MB:.0f} ({p.get('glibc_free', 0) / MB:.0f}) | "
                    f"{p.get('glibc_mmap', 0) / MB:.0f} | {p.get('pymalloc_mapped', 0) / MB:.0f} "
                    f"({p.get('pymalloc_used', 0) / MB:.0f}) | {(p['anon'] - known) / MB:.0f} | "
                    f"{p.get('py_blocks', 0) / 1e6:.2f}M | {p.get('trims', 0)} "
                    f"({p.get('trim_cpu_s', 0) * 1e3 / max(p.get('trims', 0), 1):.2f}) |")
    return "\n".join(lines)


def _cell(r: dict[str, Any], phase: str) -> str:
    p = r.get(phase, {})
    parts = [f"{p[k] / MB:.0f}" for k in ("relay", "capture") if k in p]
    tree = f"**{p.get('tree', 0) / MB:.0f}**/{p.get('tree_anon', 0) / MB:.0f}"
    return tree + (f" ({' + '.join(parts)})" if len(parts) > 1 else "")


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| variant | idle | under load (mean) | peak | right after | after idle | duckdb pool | queue peak | "
             "req/s per workload (tree µs CPU/req) |", "|---|--:|--:|--:|--:|--:|--:|--:|---|"]
    for r in results:
        cells = " | ".join(_cell(r, ph) for ph in ("idle", "load", "peak", "after", "settled"))
        wls = [k[4:] for k in r if k.startswith("rps_")]
        rps = (" / ".join(f"{r[f'rps_{w}']:.0f}" for w in wls) + " ("
               + " / ".join(f"{r[f'us_{w}']:.0f}" for w in wls) + ")")
        depth = r.get("peak", {}).get("depth", 0)
        lines.append(f"| {r['variant']} | {cells} | {r.get('duckdb', 0) / MB:.0f} | {depth} | {rps} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", action="append", default=[], help="[LABEL:]MODE[@PYTHON][+VAR=VALUE]...")
    p.add_argument("--seconds", type=float, default=15.0, help="per workload")
    p.add_argument("--workloads", default="create,sse12", help="bench/load.py workloads, run one after the other")
    p.add_argument("--settle", type=float, default=3.0, help="seconds after start before the idle sample")
    p.add_argument("--idle", type=float, default=12.0, help="seconds after the load before the last sample")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    variants = [Variant.parse(s) for s in a.variant or ["inprocess", "process"]]
    results = []
    with tempfile.TemporaryDirectory(prefix="runtap-rss-tree-") as tmp:
        up = targets.start_upstream(Path(tmp), None)
        try:
            for k in range(a.rounds):
                for i, v in enumerate(variants):
                    r = one(Path(tmp) / f"{i}-{k}", up.port, v, a)
                    results.append(r)
                    print(json.dumps(r), file=sys.stderr, flush=True)
        finally:
            up.stop()
    print("MiB: tree RSS/anonymous (relay + capture process RSS)")
    print(table(results))
    print("\nWhere the anonymous memory is (MiB; probes at 3/4 of each workload and after idle)")
    print(breakdown(results))
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
