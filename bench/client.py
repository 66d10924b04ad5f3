"""A small asyncio HTTP/1.1 client for what wrk cannot measure: SSE per-event relay delay, and a
closed-loop fallback load generator for machines without wrk.

Raw streams rather than aiohttp's client: the client's own overhead is part of every number measured
here, so it is kept to a read per chunk and no header objects.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

SENT_RE: Final = re.compile(rb'"bench_sent_ns":(\d+)')
RUN_ID_RE: Final = re.compile(rb'^\{"id":"(run_[0-9A-Za-z]+)"')


def format_request(method: str, path: str, headers: dict[str, str], body: bytes | None,
                   host: str = "127.0.0.1") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


class HttpError(Exception):
    pass


class HttpConn:
    """One keep-alive connection; requests are sent one at a time (no pipelining)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._length: int | None = None
        self._chunked = False
        self.closing = False

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConn:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(reader, writer)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass

    async def send(self, raw: bytes) -> int:
        """Send one request; return the response status once its head has arrived."""
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise HttpError(f"bad status line {lines[0]!r}")
        self._length, self._chunked = None, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            low = name.strip().lower()
            if low == b"content-length":
                self._length = int(value)
            elif low == b"transfer-encoding" and b"chunked" in value.lower():
                self._chunked = True
            elif low == b"connection" and value.strip().lower() == b"close":
                self.closing = True
        return int(parts[1])

    async def body(self) -> AsyncIterator[tuple[bytes, int]]:
        """The response body as it arrives: (piece, time.monotonic_ns() when it was read)."""
        if self._chunked:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    return
                data = await self.reader.readexactly(size + 2)
                yield data[:-2], time.monotonic_ns()
        elif self._length is not None:
            if self._length:
                yield await self.reader.readexactly(self._length), time.monotonic_ns()
        else:
            self.closing = True
            while data := await self.reader.read(1 << 16):
                yield data, time.monotonic_ns()

    async def drain(self) -> int:
        n = 0
        async for piece, _ in self.body():
            n += len(piece)
        return n

    async def read_body(self) -> bytes:
        return b"".join([piece async for piece, _ in self.body()])


@dataclass
class ClosedLoopResult:
    latencies_us: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    duration_s: float = 0.0


async def closed_loop(host: str, port: int, cycle: Sequence[bytes], *, concurrency: int, seconds: float,
                      max_requests: int | None = None,
                      on_body: Callable[[bytes], None] | None = None) -> ClosedLoopResult:
    """`concurrency` connections, each sending the cycle of raw requests back to back; bounded by time
    and (optionally) by count. Unlike wrk at the end of its duration, every request sent is read to the
    end, so no response is abandoned mid-flight."""
    res = ClosedLoopResult()
    deadline = time.monotonic() + seconds
    budget = [max_requests if max_requests is not None else 1 << 62]

    async def worker(offset: int) -> None:
        conn: HttpConn | None = None
        i = offset
        while time.monotonic() < deadline and budget[0] > 0:
            budget[0] -= 1
            raw = cycle[i % len(cycle)]
            i += 1
            try:
                if conn is None or conn.closing:
                    if conn is not None:
                        await conn.close()
                    conn = await HttpConn.open(host, port)
                t0 = time.perf_counter()
                status = await conn.send(raw)
                if on_body is None:
                    await conn.drain()
                else:
                    on_body(await conn.read_body())
                res.latencies_us.append((time.perf_counter() - t0) * 1e6)
                res.statuses[status] = res.statuses.get(status, 0) + 1
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, HttpError, ValueError):
                res.errors += 1
                if conn is not None:
                    await conn.close()
                conn = None
        if conn is not None:
            await conn.close()

    t0 = time.monotonic()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    res.duration_s = time.monotonic() - t0
    return res


async def create_runs(host: str, port: int, raw: bytes, *, n: int, concurrency: int,
                      seconds: float) -> tuple[set[str], ClosedLoopResult]:
    """Send n run creates to completion; the run ids the client actually received."""
    ids: set[str] = set()

    def keep(body: bytes) -> None:
        m = RUN_ID_RE.match(body)
        if m is not None:
            ids.add(m.group(1).decode())

    res = await closed_loop(host, port, [raw], concurrency=concurrency, seconds=seconds, max_requests=n,
                            on_body=keep)
    return ids, res


@dataclass
class RelayResult:
    delays_us: list[float] = field(default_factory=list)
    streams: int = 0
    broken: int = 0  # streams that failed or did not end with `done`
    held_back: int = 0  # events a whole inter-event gap late: held for the next one, or descheduled
    gap_us: int = 0


async def relay_delay(host: str, port: int, raw_request: bytes, *, streams: int, gap_us: int,
                      seconds: float) -> RelayResult:
    """Sequential SSE streams on one connection; per event, receipt time minus the upstream's
    `bench_sent_ns`. Bounded by `streams` and `seconds`."""
    res = RelayResult(gap_us=gap_us)
    deadline = time.monotonic() + seconds
    conn: HttpConn | None = None
    try:
        for _ in range(streams):
            if time.monotonic() >= deadline:
                break
            if conn is None or conn.closing:
                conn = await HttpConn.open(host, port)
            res.streams += 1
            buf = b""
            done = False
            try:
                if await conn.send(raw_request) != 200:
                    res.broken += 1
                    await conn.drain()
                    continue
                async for piece, t_ns in conn.body():
                    buf += piece
                    *events, buf = buf.split(b"\n\n")
                    for ev in events:
                        m = SENT_RE.search(ev)
                        if m is not None:
                            delay = (t_ns - int(m.group(1))) / 1e3
                            res.delays_us.append(delay)
                            if gap_us and delay >= gap_us:
                                res.held_back += 1
                        elif b"[DONE]" in ev:
                            done = True
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, HttpError, ValueError):
                await conn.close()
                conn = None
            if not done:
                res.broken += 1
    finally:
        if conn is not None:
            await conn.close()
    return res


def percentile(values: Sequence[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100.0 * (len(ordered) - 1))))
    return ordered[k]
