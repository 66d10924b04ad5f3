"""Workloads and the load generator: wrk (Debian package) with a generated Lua script, or a Python
closed-loop client when wrk is missing.

The Lua script pre-formats every request once per thread and reports its own summary as one JSON
line (`BENCHJSON {...}`) from wrk's `done` hook, so nothing depends on wrk's human-readable output.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from bench import client
from bench.upstream import RETRIEVE_RUN_ID

THREAD: Final = "thread_bench000000000000000"
RUNS_PATH: Final = f"/v1/threads/{THREAD}/runs"
HEADERS: Final = {"Authorization": "Bearer sk-bench-0000000000000000", "OpenAI-Beta": "assistants=v2",
                  "Content-Type": "application/json", "User-Agent": "runtap-bench"}
CREATE_BODY: Final = b'{"assistant_id":"asst_bench0000000000000000","metadata":{"tenant":"bench"}}'
# The SDK's create_and_poll retrieves once right after the create, then once per poll interval
# (1000 ms default, or the upstream's openai-poll-after-ms) until a terminal status
# (openai/lib/_assistants_runs.py, async_runs_poll). For a run that takes ~4-5 s, a typical single
# model call, that is 5 retrieves per create.
POLLS_PER_CREATE: Final = 5


def sse_body(events: int, gap_us: int = 0) -> bytes:
    meta = {"bench_events": str(events)}
    if gap_us:
        meta["bench_gap_us"] = str(gap_us)
    return json.dumps({"assistant_id": "asst_bench0000000000000000", "stream": True, "metadata": meta},
                      separators=(",", ":")).encode()


def responses_sse_body(events: int) -> bytes:
    return json.dumps({"model": "gpt-5-mini", "input": "bench", "stream": True,
                       "metadata": {"bench_events": str(events)}}, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    body: bytes | None = None


CREATE: Final = Request("POST", RUNS_PATH, CREATE_BODY)
RETRIEVE: Final = Request("GET", f"{RUNS_PATH}/{RETRIEVE_RUN_ID}")


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    about: str
    cycle: tuple[Request, ...]
    stream_events: int = 0  # events per SSE stream; 0 for JSON


WORKLOADS: Final = {
    w.name: w for w in (
        Workload("create", "POST runs.create, ~1.2 KB run JSON back (new run id each)", (CREATE,)),
        Workload("retrieve", "GET runs.retrieve, ~1.2 KB run JSON", (RETRIEVE,)),
        Workload("sse12", "POST runs.create stream=true, 12 SSE events (~12 KB)",
                 (Request("POST", RUNS_PATH, sse_body(12)),), 12),
        Workload("sse200", "POST runs.create stream=true, 200 SSE events (~33 KB)",
                 (Request("POST", RUNS_PATH, sse_body(200)),), 200),
        Workload("resp200", "POST responses.create stream=true, 200 SSE events (192 output_text deltas)",
                 (Request("POST", "/v1/responses", responses_sse_body(200)),), 200),
        Workload("mixed", f"create_and_poll traffic: 1 create : {POLLS_PER_CREATE} retrieves",
                 (CREATE,) + (RETRIEVE,) * POLLS_PER_CREATE),
    )
}


@dataclass
class LoadResult:
    generator: str
    requests: int
    duration_s: float
    rps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    mean_ms: float | None
    max_ms: float | None
    non2xx: int
    socket_errors: dict[str, int] = field(default_factory=dict)
    command: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _lua_str(value: str | bytes) -> str:
    raw = value if isinstance(value, bytes) else value.encode()
    # Decimal escapes for anything but plain printable ASCII: valid in Lua 5.1 / LuaJIT (wrk's Lua).
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\{b:03d}" for b in raw) + '"'



def lua_script(cycle: Sequence[Request], *, quota: int = 0) -> str:
    """A wrk script cycling through `cycle` on every connection; `quota` > 0 stops each thread after
    that many responses (wrk itself only bounds by time)."""
    lines = ["local cycle = {}", "local i = 0", "local seen = 0", f"local quota = {quota}",
             "function init(args)"]
    for r in cycle:
        hdrs = dict(HEADERS)
        if r.body is None:
            hdrs.pop("Content-Type")
        table = "{" + ", ".join(f"[{_lua_str(k)}] = {_lua_str(v)}" for k, v in hdrs.items()) + "}"
        body = _lua_str(r.body) if r.body is not None else "nil"
        lines.append(f"  cycle[#cycle + 1] = wrk.format({_lua_str(r.method)}, {_lua_str(r.path)}, "
                     f"{table}, {body})")
    lines += ["end", "function request()", "  i = i % #cycle + 1", "  return cycle[i]", "end"]
    if quota:
        lines += ["function response(status, headers, body)", "  seen = seen + 1",
                  "  if seen >= quota then wrk.thread:stop() end", "end"]
    lines += [
        "function done(summary, latency, requests)",
        "  local e = summary.errors",
        "  io.write(string.format('BENCHJSON {\"requests\":%d,\"duration_us\":%d,\"connect\":%d,"
        "\"read\":%d,\"write\":%d,\"status\":%d,\"timeout\":%d,\"p50_us\":%d,\"p90_us\":%d,"
        "\"p99_us\":%d,\"p999_us\":%d,\"mean_us\":%.1f,\"max_us\":%d}\\n', summary.requests, "
        "summary.duration, e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(50), "
        "latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.mean, "
        "latency.max))",
        "end",
    ]
    return "\n".join(lines) + "\n"


def parse_wrk(stdout: str, command: str) -> LoadResult:
    line = next((ln for ln in stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {stdout[-500:]!r}")
    d = json.loads(line.removeprefix("BENCHJSON "))
    dur = d["duration_us"] / 1e6
    n = d["requests"]

    def ms(key: str) -> float | None:
        return d[key] / 1e3 if n else None

    return LoadResult("wrk", n, dur, n / dur if dur else 0.0, ms("p50_us"), ms("p90_us"), ms("p99_us"),
                      ms("p999_us"), ms("mean_us"), ms("max_us"), d["status"],
                      {k: d[k] for k in ("connect", "read", "write", "timeout") if d[k]}, command)


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(url: str, cycle: Sequence[Request], *, connections: int, seconds: float, threads: int = 1,
            cpus: Sequence[int] | None = None, quota: int = 0, timeout_s: float = 10.0) -> LoadResult:
    threads = max(1, min(threads, connections))
    seconds = max(1, math.ceil(seconds))  # wrk takes whole seconds only
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-", delete=False) as f:
        f.write(lua_script(cycle, quota=-(-quota // threads) if quota else 0))
        script = f.name
    try:
        cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout_s:g}s",
               "-s", script, url]
        if cpus:
            cmd = ["taskset", "-c", ",".join(map(str, cpus)), *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + timeout_s + 30)
        if out.returncode != 0:
            raise RuntimeError(f"wrk exited {out.returncode}: {out.stderr.strip()[-500:]}")
        return parse_wrk(out.stdout, " ".join(cmd[:-3] + ["<script>", url]))
    finally:
        Path(script).unlink(missing_ok=True)


def run_python(host: str, port: int, cycle: Sequence[Request], *, connections: int, seconds: float,
               quota: int = 0) -> LoadResult:
    raws = [client.format_request(r.method, r.path, {k: v for k, v in HEADERS.items()
                                                     if r.body is not None or k != "Content-Type"}, r.body)
            for r in cycle]
    res = asyncio.run(client.closed_loop(host, port, raws, concurrency=connections, seconds=seconds,
                                         max_requests=quota or None))
    lat = res.latencies_us
    n = len(lat)
    non2xx = sum(v for k, v in res.statuses.items() if not 200 <= k < 300)

    def ms(p: float) -> float | None:
        v = client.percentile(lat, p)
        return None if v is None else v / 1e3

    return LoadResult("python", n, res.duration_s, n / res.duration_s if res.duration_s else 0.0,
                      ms(50), ms(90), ms(99), ms(99.9), (sum(lat) / n / 1e3) if n else None,
                      (max(lat) / 1e3) if n else None, non2xx,
                      {"socket": res.errors} if res.errors else {}, f"python closed loop c={connections}")


def check_creates(host: str, port: int, n: int, *, connections: int = 50,
                  seconds: float = 60.0) -> tuple[set[str], int]:
    """n run creates, each read to the end (no abandoned responses): (run ids received, failures)."""
    raw = client.format_request(CREATE.method, CREATE.path, HEADERS, CREATE.body)
    ids, res = asyncio.run(client.create_runs(host, port, raw, n=n, concurrency=connections, seconds=seconds))
    failures = res.errors + sum(v for k, v in res.statuses.items() if not 200 <= k < 300)
    return ids, failures


def run_load(host: str, port: int, workload: Workload, *, connections: int, seconds: float,
             cpus: Sequence[int] | None = None, quota: int = 0) -> LoadResult:
    if have_wrk():
        return run_wrk(f"http://{host}:{port}", workload.cycle, connections=connections, seconds=seconds,
                       threads=len(cpus) if cpus else 2, cpus=cpus, quota=quota)
    return run_python(host, port, workload.cycle, connections=connections, seconds=seconds, quota=quota)
