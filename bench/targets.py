"""Starting, pinning, probing and stopping the processes a benchmark runs: the fake upstream, the OTLP
sink, and the proxies under test (nginx, the bare aiohttp forwarder, runtap). Loopback only.

Every wait here is bounded; a process that fails to come up raises StartError carrying the tail of its
log, so the harness can report it and go on with the other targets.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from bench import nginx

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent


class StartError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Placement:
    """CPU sets for each role; None means unpinned. On 2 cores the proxy under test gets a core to
    itself and the upstream shares the other with the load generator (direct: the generator takes the
    proxy's core, since there is no proxy)."""

    upstream: tuple[int, ...] | None
    proxy: tuple[int, ...] | None
    load: tuple[int, ...] | None
    load_direct: tuple[int, ...] | None

    def describe(self) -> str:
        if self.proxy is None:
            return "not pinned (fewer than 2 CPUs, or --no-pin)"

        def c(cpus: tuple[int, ...] | None) -> str:
            return "any" if cpus is None else "cpu" + ",".join(map(str, cpus))

        return (f"taskset: upstream {c(self.upstream)}; proxy under test {c(self.proxy)}; load generator "
                f"and SSE client {c(self.load)} (direct: {c(self.load_direct)})")


def placement(pin: bool = True) -> Placement:
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2 or shutil.which("taskset") is None:
        return Placement(None, None, None, None)
    if len(cpus) == 2:
        return Placement((cpus[0],), (cpus[1],), (cpus[0],), (cpus[1],))
    rest = tuple(cpus[2:])
    return Placement((cpus[0],), (cpus[1],), rest, rest)


def pinned(cmd: list[str], cpus: Sequence[int] | None) -> list[str]:
    return ["taskset", "-c", ",".join(map(str, cpus)), *cmd] if cpus else cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@dataclass
class Proc:
    name: str
    cmd: list[str]
    popen: subprocess.Popen[bytes]
    log: Path
    port: int
    admin_port: int | None = None
    db: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 12) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit code (None if it would not die)."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                try:
                    self.popen.wait(5)
                except subprocess.TimeoutExpired:
                    return None
        return self.popen.returncode


def _spawn(name: str, cmd: list[str], workdir: Path, port: int, *, env: dict[str, str] | None = None,
           cpus: Sequence[int] | None = None) -> Proc:
    log = workdir / f"{name}.log"
    full = pinned(cmd, cpus)
    with open(log, "wb") as out:
        popen = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 cwd=REPO, env={**os.environ, **(env or {})})
    return Proc(name, full, popen, log, port)


def wait_ready(proc: Proc, port: int, path: str, *, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    last = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            raise StartError(f"{proc.name} exited with code {proc.popen.returncode} before it was ready:\n"
                             f"{proc.log_tail()}")
        try:
            status, _ = http_get(port, path, timeout=1.0)
            if status < 500:
                return
            last = f"HTTP {status}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.05)
    proc.stop()
    raise StartError(f"{proc.name} not ready on port {port} after {seconds:.0f}s ({last}):\n"
                     f"{proc.log_tail()}")


def start_upstream(workdir: Path, cpus: Sequence[int] | None, *, sink: bool = False) -> Proc:
    name = "otlp-sink" if sink else "upstream"
    port = free_port()
    cmd = [sys.executable, "-m", "bench.upstream", "--port", str(port)] + (["--sink"] if sink else [])
    proc = _spawn(name, cmd, workdir, port, cpus=cpus)
    wait_ready(proc, port, "/__bench/stats", seconds=15)
    return proc


def upstream_stats(port: int) -> dict[str, Any]:
    status, body = http_get(port, "/__bench/stats")
    if status != 200:
        raise RuntimeError(f"upstream stats: HTTP {status}")
    stats: dict[str, Any] = orjson.loads(body)
    return stats


def start_bare(workdir: Path, upstream_port: int, cpus: Sequence[int] | None, *, uvloop: bool = False) -> Proc:
    port = free_port()
    cmd = [sys.executable, "-m", "bench.bare_forwarder", "--upstream", f"http://{HOST}:{upstream_port}",
           "--port", str(port), *(["--uvloop"] if uvloop else [])]
    proc = _spawn("bare", cmd, workdir, port, cpus=cpus)
    wait_ready(proc, port, "/__bench/stats")
    return proc


def start_nginx(workdir: Path, binary: str, upstream_port: int, cpus: Sequence[int] | None) -> Proc:
    port = free_port()
    ndir = workdir / "nginx"
    ndir.mkdir(exist_ok=True)
    nginx.write_config(ndir, listen_port=port, upstream_port=upstream_port)
    proc = _spawn("nginx", nginx.command(binary, ndir), workdir, port, cpus=cpus)
    try:
        wait_ready(proc, port, "/__bench/stats", seconds=10)
    except StartError as exc:
        raise StartError(f"{exc}\n{(ndir / 'error.log').read_text(errors='replace')[-800:]}") from None
    return proc


def runtap_env(sink_port: int | None) -> dict[str, str]:
    """Tracing on, exporting OTLP/HTTP to the local sink (an exporter pointing nowhere would be 'off')."""
    if sink_port is None:
        return {}
    return {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{sink_port}",
            "OTEL_SERVICE_NAME": "runtap-bench", "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none"}


def start_runtap(workdir: Path, upstream_port: int, sink_port: int | None,
                 cpus: Sequence[int] | None, *, capture_mode: str = "inprocess", workers: int = 1,
                 log_level: str = "warning", env: dict[str, str] | None = None) -> Proc:
    port, admin = free_port(), free_port()
    db = workdir / "runtap.duckdb"
    cmd = [sys.executable, "-m", "runtap.proxy", "serve", "--upstream", f"http://{HOST}:{upstream_port}",
           "--listen", f"{HOST}:{port}", "--admin", f"{HOST}:{admin}", "--db", str(db),
           "--grace-period", "5", "--log-level", log_level, "--capture-mode", capture_mode,
           "--workers", str(workers)]
    proc = _spawn("runtap", cmd, workdir, port, env={**runtap_env(sink_port), **(env or {})}, cpus=cpus)
    proc.admin_port, proc.db = admin, db
    wait_ready(proc, admin, "/healthz", seconds=30)
    wait_ready(proc, port, "/__bench/stats", seconds=10)
    return proc


def scrape(admin_port: int, timeout: float = 2.0) -> dict[str, float]:
    """runtap's /metrics as {sample name: value summed over labels}; histogram buckets keyed by `le`."""
    status, body = http_get(admin_port, "/metrics", timeout=timeout)
    if status != 200:
        raise RuntimeError(f"/metrics: HTTP {status}")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            key = s.name + (f"{{le={s.labels['le']}}}" if "le" in s.labels else "")
            out[key] = out.get(key, 0.0) + s.value
    return out


def histogram_quantile(metrics: dict[str, float], name: str, q: float) -> float | None:
    """Upper bound of the bucket holding quantile q, as Prometheus would estimate (no interpolation)."""
    found = buckets(metrics, name)
    if not found or found[-1][1] <= 0:
        return None
    rank = q * found[-1][1]
    return next(le for le, v in found if v >= rank)


def buckets(metrics: dict[str, float], name: str) -> list[tuple[float, float]]:
    """(le, cumulative count) of a histogram in a scrape, ascending."""
    return sorted((float(k.split("le=")[1].rstrip("}")), v) for k, v in metrics.items()
                  if k.startswith(name + "_bucket{"))


def lag_summary(before: dict[str, float], after: dict[str, float],
                name: str = "runtap_event_loop_lag_seconds") -> tuple[int, float | None, float | None, int] | None:
    """(probes, p99 bucket bound ms, max bucket bound ms, probes over 10 ms) between two scrapes."""
    b0 = dict(buckets(before, name))
    delta = [(le, v - b0.get(le, 0.0)) for le, v in buckets(after, name)]
    if not delta or delta[-1][1] <= 0:
        return None
    total = delta[-1][1]
    p99 = next(le for le, v in delta if v >= 0.99 * total)
    top = next(le for le, v in delta if v >= total)
    at_10ms = next((v for le, v in delta if le >= 0.01), total)
    return int(total), p99 * 1e3, top * 1e3, int(total - at_10ms)


@dataclass
class Captured:
    run_ids: set[str]
    requests: int | None = None
    # The fake upstream numbers runs and Responses streams from one counter (resp_ ids): both are created.
    response_ids: set[str] = field(default_factory=set)
    request_errors: dict[str, int] | None = None  # requests.error -> rows, e.g. client_disconnected
    note: str = ""


def count_captured(db: Path, run_prefix: str) -> Captured:
    """What the stopped runtap's DuckDB file holds: ids of runs this upstream created, and requests."""
    import duckdb

    out = Captured(set())
    try:
        con = duckdb.connect(str(db), read_only=True)
    except duckdb.Error as exc:
        out.note = f"cannot open {db.name}: {exc}"
        return out
    notes = []
    try:
        try:
            rows = con.execute("SELECT DISTINCT id FROM runs WHERE id LIKE ?", [run_prefix + "%"]).fetchall()
            out.run_ids = {r[0] for r in rows}
        except duckdb.Error as exc:
            notes.append(f"runs: {exc}")
        try:
            rows = con.execute("SELECT DISTINCT id FROM responses WHERE id LIKE ?",
                               ["resp_" + run_prefix.removeprefix("run_") + "%"]).fetchall()
            out.response_ids = {r[0] for r in rows}
        except duckdb.Error as exc:
            notes.append(f"responses: {exc}")
        try:
            row = con.execute("SELECT count(*) FROM requests").fetchone()
            out.requests = int(row[0]) if row else 0
            out.request_errors = dict(con.execute(
                "SELECT coalesce(operation, 'other') || ':' || error, count(*) FROM requests "
                "WHERE error IS NOT NULL GROUP BY 1").fetchall())
        except duckdb.Error as exc:
            notes.append(f"requests: {exc}")
    finally:
        con.close()
    out.note = "; ".join(notes)
    return out
