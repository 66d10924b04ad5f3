"""Raw asyncio HTTP/1.1 upstreams that misbehave on purpose, for the fault-injection tests.

aiohttp's own server cannot be made to reset a connection mid-body, send a truncated gzip body with a
matching Content-Length, or speak garbage where TLS is expected, so these are written on bare streams.
Each connection serves one request (every response says `Connection: close`) with a *script*: an async
callable given a `Conn`. The server records what arrived (method, target, headers, body) and, per
connection, the body bytes it put on the wire and whether the peer closed its side.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import struct
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import orjson

Script = Callable[["Conn"], Awaitable[None]]
_MAX_HEAD = 64 << 10


@dataclass
class RawRequest:
    method: str
    target: str  # exactly as on the request line: the path the upstream was asked for
    headers: list[tuple[str, str]]
    body: bytes
    body_complete: bool = True  # False when the sender broke off mid-body

    def header(self, name: str) -> str | None:
        low = name.lower()
        found = [v for k, v in self.headers if k.lower() == low]
        return found[-1] if found else None


@dataclass
class Conn:
    """One upstream connection as a script sees it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    request: RawRequest | None = None
    sent: bytearray = field(default_factory=bytearray)  # body payload written (chunk framing excluded)
    sent_total: int = 0
    record: bool = True  # False: count the payload but do not keep it (endless streams)
    peer_closed: asyncio.Event = field(default_factory=asyncio.Event)
    chunked: bool = False

    async def head(self, status: int = 200, headers: Iterable[tuple[str, str]] = (), *,
                   length: int | None = None) -> None:
        """Status line and headers; chunked framing unless `length` is given."""
        lines = [f"HTTP/1.1 {status} {'OK' if status < 400 else 'Error'}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers]
        if length is None:
            self.chunked = True
            lines.append("Transfer-Encoding: chunked")
        else:
            lines.append(f"Content-Length: {length}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await self.writer.drain()

    async def send(self, data: bytes) -> None:
        if self.chunked:
            self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.writer.write(data)
        self.sent_total += len(data)
        if self.record:
            self.sent += data
        await self.writer.drain()

    async def end(self) -> None:
        if self.chunked:
            self.writer.write(b"0\r\n\r\n")
            await self.writer.drain()

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0), the way a crashed or killed upstream looks."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def until_peer_closes(self) -> None:
        await self.peer_closed.wait()


class FaultyUpstream:
    """`async with FaultyUpstream(script) as up:` serves on 127.0.0.1:`up.port` (`up.url`)."""

    def __init__(self, script: Script, *, parse_request: bool = True) -> None:
        self.script = script
        self.parse_request = parse_request
        self.requests: list[RawRequest] = []
        self.conns: list[Conn] = []
        self.open_now = 0
        self.open_max = 0
        self.request_seen = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FaultyUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=_MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for conn in self.conns:
            conn.writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Conn(reader, writer)
        self.conns.append(conn)
        self.open_now += 1
        self.open_max = max(self.open_max, self.open_now)
        watcher: asyncio.Task[None] | None = None
        try:
            if self.parse_request:
                conn.request = await _read_request(reader)
                if conn.request is None:
                    return
                self.requests.append(conn.request)
                self.request_seen.set()
                if not conn.request.body_complete:
                    return
            watcher = asyncio.create_task(_watch_close(conn))
            await self.script(conn)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            conn.peer_closed.set()
        finally:
            self.open_now -= 1
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            writer.transport.abort()
            self._tasks.discard(task)


async def _watch_close(conn: Conn) -> None:
    # The proxy sends nothing after its request (one request per connection), so any read returning
    # means its side is gone: EOF, or an error from a reset.
    with contextlib.suppress(ConnectionError, OSError):
        while await conn.reader.read(65536):
            pass
    conn.peer_closed.set()


async def _read_request(reader: asyncio.StreamReader) -> RawRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line)]
    req = RawRequest(method, target, headers, b"")
    try:
        if req.header("transfer-encoding") == "chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
                if size == 0:
                    break
            req.body = b"".join(parts)
        elif (length := req.header("content-length")) is not None:
            req.body = await reader.readexactly(int(length))
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        req.body_complete = False
    return req


# --- scripts ------------------------------------------------------------------------------------------

SSE_HEADERS = (("Content-Type", "text/event-stream; charset=utf-8"), ("x-request-id", "req_faulty"))
JSON_HEADERS = (("Content-Type", "application/json"), ("x-request-id", "req_faulty"))


def run_object(run_id: str, status: str, **extra: object) -> dict[str, object]:
    return {"id": run_id, "object": "thread.run", "created_at": 1_700_000_000, "thread_id": "thread_f",
            "assistant_id": "asst_f", "status": status, "model": "gpt-4o", "instructions": None,
            "tools": [], "metadata": {}, "usage": None, **extra}


def sse_event(name: str, data: bytes | dict[str, object]) -> bytes:
    payload = data if isinstance(data, bytes) else orjson.dumps(data)
    return b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n"


def respond(body: bytes, *, status: int = 200, headers: Iterable[tuple[str, str]] = JSON_HEADERS) -> Script:
    """A whole response with Content-Length (malformed JSON, truncated gzip...)."""
    async def script(conn: Conn) -> None:
        await conn.head(status, headers, length=len(body))
        await conn.send(body)
    return script


def echo_target() -> Script:
    """200 with the target the upstream was asked for: a request that arrives is visible to the client."""
    async def script(conn: Conn) -> None:
        assert conn.request is not None
        body = orjson.dumps({"object": "echo", "target": conn.request.target})
        await conn.head(200, JSON_HEADERS, length=len(body))
        await conn.send(body)
    return script


def sse_stream(events: list[bytes], *, then: Literal["end", "reset", "close", "hang"] = "end",
               after_first: asyncio.Event | None = None) -> Script:
    """Send `events` one write each (chunked), then end cleanly, reset (RST), close (FIN, no final
    chunk) or hang until the peer goes away. `after_first`: wait for it after the first event."""
    async def script(conn: Conn) -> None:
        await conn.head(200, SSE_HEADERS)
        for i, event in enumerate(events):
            await conn.send(event)
            if i == 0 and after_first is not None:
                await after_first.wait()
        if then == "end":
            await conn.end()
        elif then == "reset":
            conn.reset()
        elif then == "close":
            conn.writer.close()
        else:
            await conn.until_peer_closes()
    return script


def endless_comments(chunk: int = 64 << 10) -> Script:
    """An SSE stream of `:` comment lines that never ends: only the client going away stops it."""
    line = b": keep-alive " + b"." * 50 + b"\n"
    block = line * max(1, chunk // len(line))

    async def script(conn: Conn) -> None:
        conn.record = False
        await conn.head(200, SSE_HEADERS)
        while not conn.peer_closed.is_set():
            await conn.send(block)
    return script


def hang() -> Script:
    """Read the request, never answer; return once the proxy gives up and closes."""
    async def script(conn: Conn) -> None:
        await conn.until_peer_closes()
    return script


def wait_then_echo(release: asyncio.Event) -> Script:
    """Hold the connection until `release` is set, then answer: for connection-limit tests."""
    inner = echo_target()

    async def script(conn: Conn) -> None:
        await release.wait()
        await inner(conn)
    return script


def tls_garbage() -> Script:
    """Bytes that are not a TLS ServerHello, for an upstream configured as https://."""
    async def script(conn: Conn) -> None:
        conn.writer.write(b"HTTP/1.1 400 this is not TLS\r\n\r\n" + b"\x00garbage" * 64)
        await conn.writer.drain()
        await conn.until_peer_closes()
    return script


def gzipped(obj: object) -> bytes:
    return gzip.compress(orjson.dumps(obj))


def slow_runs(*, events: int = 8, gap: float = 0.25, hold: asyncio.Event | None = None) -> Script:
    """Each connection streams its own run (run_slow_<n>): `events` status events `gap` seconds apart,
    the last one `thread.run.completed`, then the end of the stream. With `hold`, the last event waits
    until it is set, so a test decides how long the streams stay open."""
    counter = iter(range(1 << 30))

    async def script(conn: Conn) -> None:
        run_id = f"run_slow_{next(counter)}"
        await conn.head(200, SSE_HEADERS)
        for i in range(events):
            last = i == events - 1
            status = "completed" if last else ("queued" if i == 0 else "in_progress")
            name = "thread.run.created" if i == 0 else f"thread.run.{status}"
            await conn.send(sse_event(name, run_object(run_id, status)))
            if not last:
                await asyncio.sleep(gap)
                if hold is not None and i == events - 2:
                    await hold.wait()
        await conn.send(b"event: done\ndata: [DONE]\n\n")
        await conn.end()
    return script
