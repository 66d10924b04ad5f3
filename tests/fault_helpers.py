"""Shared parts of the fault, shutdown, security and limit tests: an in-process runtap whose capture
health the test reads, a raw HTTP/1.1 client that shows exactly the bytes a client got, runtap and
the simulator as subprocesses, and DuckDB reads."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import httpx2 as httpx
from runtap.analytics.ingest.health import CaptureHealth
from runtap.analytics.ingest.writer import CaptureWriter, WriterConfig, WriterHooks
from runtap.demo import sim as simulator
from runtap.proxy.addons.metrics import Metrics
from runtap.proxy.addons.tracing import Tracing
from runtap.proxy.app import Runtime, build_tap
from runtap.proxy.forward import Forwarder
from runtap.proxy.serve import Running, start
from runtap.settings.config import Settings

from tests.conftest import stack_settings

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk-fault-7d1e0c55aa9b4f03b2c6e81f94d0a7c3"


def runtime_with_health(settings: Settings, **writer_kwargs: Any) -> Runtime:
    """build_runtime's wiring, with a writer configured by `writer_kwargs` (WriterConfig fields); its
    health is the metrics' (`runtime.metrics.capture_health`)."""
    metrics = Metrics()
    tracing = Tracing()
    config = WriterConfig(db_path=settings.db, spool_path=settings.spool_path, spool_max_bytes=settings.spool_max_bytes,
                          queue_size=settings.queue_size, store_prompts=settings.store_prompts, **writer_kwargs)
    writer = CaptureWriter(config, hooks=WriterHooks(on_effects=metrics.on_effects), health=metrics.capture_health)
    forwarder = Forwarder(settings, tap=build_tap(settings, metrics, tracing, writer))
    return Runtime(settings, metrics, tracing, writer, forwarder)


@dataclass
class Proxy:
    running: Running
    health: CaptureHealth
    settings: Settings

    @property
    def port(self) -> int:
        return int(self.running.proxy_url.rsplit(":", 1)[1])

    @property
    def writer(self) -> CaptureWriter:
        assert self.running.runtime.writer is not None
        return self.running.runtime.writer


@contextlib.asynccontextmanager
async def proxy_to(tmp_path: Path, upstream: str, **overrides: Any) -> AsyncIterator[Proxy]:
    """runtap in this process in front of `upstream`; stopped (queue flushed, DB closed) on exit."""
    db = overrides.pop("db", None)
    settings = stack_settings(tmp_path, upstream, **overrides)
    if db is not None:
        settings = dataclasses.replace(settings, db=db)
    runtime = runtime_with_health(settings)
    running = await start(settings, runtime=runtime)
    try:
        yield Proxy(running, runtime.metrics.capture_health, settings)
    finally:
        await running.stop()


# --- a client that shows the bytes ------------------------------------------------------------------

@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes  # payload, de-chunked
    complete: bool  # the framing ended properly (Content-Length reached, or the last 0-size chunk)
    wire: bytes = field(repr=False, default=b"")


def parse_response(wire: bytes) -> RawResponse:
    head, sep, rest = wire.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError(f"no complete response head in {wire[:200]!r}")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    if "content-length" in headers:
        n = int(headers["content-length"])
        return RawResponse(status, headers, rest[:n], len(rest) >= n, wire)
    if headers.get("transfer-encoding", "").lower() != "chunked":
        return RawResponse(status, headers, rest, False, wire)
    parts: list[bytes] = []
    pos = 0
    while True:
        eol = rest.find(b"\r\n", pos)
        if eol < 0:
            return RawResponse(status, headers, b"".join(parts), False, wire)
        size = int(rest[pos:eol].split(b";")[0], 16)
        chunk = rest[eol + 2:eol + 2 + size]
        parts.append(chunk)
        if len(chunk) < size or rest[eol + 2 + size:eol + 4 + size] != b"\r\n":
            return RawResponse(status, headers, b"".join(parts), False, wire)
        pos = eol + 4 + size
        if size == 0:
            return RawResponse(status, headers, b"".join(parts), True, wire)


def request_bytes(method: str, target: str, *, body: bytes | None = None, host: str = "runtap.test",
                  headers: dict[str, str] | None = None, auth: bool = True) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    if auth:
        lines.append(f"Authorization: Bearer {API_KEY}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


async def raw_exchange(port: int, data: bytes, *, timeout: float = 30.0) -> bytes:
    """Send `data`, read until the proxy closes the connection (requests say Connection: close)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        out = bytearray()
        async with asyncio.timeout(timeout):
            with contextlib.suppress(ConnectionResetError):
                while chunk := await reader.read(65536):
                    out += chunk
        return bytes(out)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def get_json(url: str, timeout: float = 10.0) -> tuple[int, Any]:
    async with httpx.AsyncClient(timeout=timeout) as client:
        r = await client.get(url)
        return r.status_code, r.json()


async def eventually(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait for a condition the test cannot be notified of (a count in another component)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


# --- DuckDB ------------------------------------------------------------------------------------------

def query(db: str | Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


@contextlib.contextmanager
def locked(db: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Another process holds `duckdb.connect(db)` (and with it DuckDB's file lock) for the duration."""
    code = ("import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
            "sys.stdin.read(); con.close()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(db)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == b"ready"
        yield proc
    finally:
        proc.stdin.close()
        proc.wait(30)
        proc.stdout.close()


# --- subprocesses ------------------------------------------------------------------------------------

_PROXY_LINE = re.compile(r"runtap proxying (http://[\d.]+:\d+) -> .*; admin on (http://[\d.]+:\d+)")
_SIM_LINE = re.compile(r"listening on (http://[\d.]+:\d+)")


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log: Path
    url: str = ""
    admin_url: str = ""

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    async def wait(self, timeout: float) -> int:
        return await asyncio.to_thread(self.popen.wait, timeout)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(30)


async def _spawn(args: list[str], log: Path, pattern: re.Pattern[str], env: dict[str, str] | None,
                 timeout: float) -> tuple[Proc, re.Match[str]]:
    with open(log, "ab") as out:
        popen = subprocess.Popen([sys.executable, *args], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                 env={**os.environ, **(env or {})})
    proc = Proc(popen, log)
    deadline = time.monotonic() + timeout
    while True:  # waiting for the child's "ready" line: it has no other way to tell us
        if (m := pattern.search(proc.text())) is not None:
            return proc, m
        if popen.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{args[:3]} did not start:\n{proc.text()[-3000:]}")
        await asyncio.sleep(0.02)


# RLIMIT_FSIZE makes a write past the limit fail with EFBIG (Python ignores SIGXFSZ): a full disk, for
# one process and without root.
_LIMITED = ("import os, resource, sys; n = int(sys.argv[1]); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); "
            "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])")


async def start_runtap(upstream: str, db: Path, log: Path, *extra: str, env: dict[str, str] | None = None,
                       timeout: float = 30.0, file_size_limit: int | None = None) -> Proc:
    """`runtap serve` on free ports; ready once it logged where it listens."""
    args = ["-m", "runtap.proxy", "serve", "--upstream", upstream, "--listen", "127.0.0.1:0",
            "--admin", "127.0.0.1:0", "--db", str(db), *extra]
    if file_size_limit is not None:
        args = ["-c", _LIMITED, str(file_size_limit), *args]
    proc, m = await _spawn(args, log, _PROXY_LINE, env, timeout)
    proc.url, proc.admin_url = m.group(1), m.group(2)
    return proc


async def start_sim(log: Path, *extra: str, timeout: float = 30.0) -> Proc:
    proc, m = await _spawn(["-m", "runtap.demo.sim", "--port", "0", *extra], log, _SIM_LINE, None, timeout)
    proc.url = m.group(1)
    return proc


async def terminate(proc: Proc, timeout: float = 60.0) -> int:
    if proc.popen.poll() is None:
        proc.signal(signal.SIGTERM)
    return await proc.wait(timeout)


def requests_total(proxy: Proxy) -> int:
    """Requests runtap answered, from its own Prometheus counter."""
    total = 0.0
    for metric in proxy.running.runtime.metrics.registry.collect():
        if metric.name == "runtap_requests":
            total += sum(s.value for s in metric.samples if s.name == "runtap_requests_total")
    return int(total)


_FLUSHED = re.compile(r"capture flushed: (.*)")


def flushed_stats(log_text: str) -> dict[str, int]:
    """The writer's counters from the last `capture flushed:` line runtap logs on exit."""
    lines = _FLUSHED.findall(log_text)
    assert lines, "runtap did not log its capture counters on exit"
    return {k: int(v) for k, v in (kv.split("=") for kv in lines[-1].split(", "))}


@contextlib.asynccontextmanager
async def sim() -> AsyncIterator[str]:
    """The simulated upstream for a subprocess runtap: yields its origin (runtap appends /v1/...)."""
    runner, url = await simulator.start_sim(simulator.SimConfig())
    try:
        yield url.removesuffix("/v1")
    finally:
        await runner.cleanup()
