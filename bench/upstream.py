"""A fast fake Runs upstream for benchmarks: a raw asyncio HTTP/1.1 protocol (uvloop when present).

aiohttp's own server would cost more CPU per request than some of the proxies it is meant to feed, so
this parses only what it needs: request line, Content-Length / chunked body, Connection. Routes:

  POST /v1/threads/{t}/runs            ~1.2 KB run JSON with a NEW run id per response; with
                                       `"stream": true` an SSE stream instead (metadata.bench_events
                                       events, default 12; metadata.bench_gap_us between events)
  GET  /v1/threads/{t}/runs/{r}        the run {r}
  GET  /__bench/stats                  counters: created runs, streams, other requests, the id prefix
  anything else                        404 JSON (or 200 empty in --sink mode: an OTLP/HTTP sink)

Every SSE event's JSON ends with `"bench_sent_ns": <time.monotonic_ns() when written>` so a client on
the same machine can measure per-event relay delay (CLOCK_MONOTONIC is system-wide on Linux).

Run ids are `run_<8 hex of this process><16 hex counter>`, so the rows one upstream handed out can be
counted in a capture database with `id LIKE 'run_<prefix>%'`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from email.utils import formatdate
from typing import Any, Final, cast

import orjson

from bench import responses_events

MAX_HEAD: Final = 64 << 10
DEFAULT_EVENTS: Final = 12
MIN_EVENTS: Final = 12  # created, queued, in_progress, 2 step, 2 message, >=1 delta, 3 completed, done
RETRIEVE_RUN_ID: Final = "run_benchretrieve00000000"
_ID: Final = "__RUNID__"
_TS: Final = 1_732_500_000


def _run(run_id: str, status: str, **extra: Any) -> dict[str, Any]:
    run: dict[str, Any] = {
        "id": run_id, "object": "thread.run", "created_at": _TS, "assistant_id": "asst_bench0000000000000000",
        "thread_id": "thread_bench000000000000000", "status": status, "started_at": _TS + 1,
        "expires_at": _TS + 600, "cancelled_at": None, "failed_at": None, "completed_at": None,
        "required_action": None, "last_error": None, "model": "gpt-4o-mini",
        "instructions": "You are a helpful assistant for the benchmark. Answer briefly and cite the "
                        "documents you used. Never invent numbers; say when you do not know. Keep a "
                        "friendly tone, use the user's language, and prefer lists for steps.",
        "tools": [{"type": "file_search"}, {"type": "function", "function": {
            "name": "get_weather", "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}, "strict": False}}],
        "tool_resources": {}, "metadata": {"tenant": "bench", "feature": "chat", "user": "user_000042"},
        "incomplete_details": None, "usage": None, "temperature": 1.0, "top_p": 1.0,
        "max_prompt_tokens": None, "max_completion_tokens": None,
        "truncation_strategy": {"type": "auto", "last_messages": None},
        "response_format": "auto", "tool_choice": "auto", "parallel_tool_calls": True,
    }
    run.update(extra)
    return run


def _step(run_id: str, status: str) -> dict[str, Any]:
    return {
        # one step per run, as a real upstream: a shared id made every batch UPDATE one hot step row
        "id": f"step_{run_id}", "object": "thread.run.step", "created_at": _TS + 1,
        "run_id": run_id, "assistant_id": "asst_bench0000000000000000",
        "thread_id": "thread_bench000000000000000", "type": "message_creation", "status": status,
        "cancelled_at": None, "completed_at": _TS + 3 if status == "completed" else None,
        "expires_at": None, "failed_at": None, "last_error": None,
        "step_details": {"type": "message_creation",
                         "message_creation": {"message_id": "msg_bench000000000000000000"}},
        "usage": {"prompt_tokens": 345, "completion_tokens": 42, "total_tokens": 387}
        if status == "completed" else None,
    }


def _message(run_id: str, status: str) -> dict[str, Any]:
    return {
        "id": "msg_bench000000000000000000", "object": "thread.message", "created_at": _TS + 1,
        "assistant_id": "asst_bench0000000000000000", "thread_id": "thread_bench000000000000000",
        "run_id": run_id, "status": status, "incomplete_details": None, "incomplete_at": None,
        "completed_at": _TS + 3 if status == "completed" else None, "role": "assistant",
        "content": [], "attachments": [], "metadata": {},
    }


_DELTA: Final = {"id": "msg_bench000000000000000000", "object": "thread.message.delta",
                 "delta": {"content": [{"index": 0, "type": "text", "text": {"value": "token "}}]}}
_USAGE: Final = {"prompt_tokens": 345, "completion_tokens": 42, "total_tokens": 387}


def _split(obj: dict[str, Any]) -> tuple[bytes, ...]:
    return tuple(orjson.dumps(obj).split(_ID.encode()))


def _events(n: int) -> list[tuple[bytes, tuple[bytes, ...]]]:
    """(event name, JSON split at the run id placeholder, without its closing brace) for n events,
    the last of which is `done`."""
    steps: list[tuple[str, dict[str, Any]]] = [
        ("thread.run.created", _run(_ID, "queued")),
        ("thread.run.queued", _run(_ID, "queued")),
        ("thread.run.in_progress", _run(_ID, "in_progress")),
        ("thread.run.step.created", _step(_ID, "in_progress")),
        ("thread.run.step.in_progress", _step(_ID, "in_progress")),
        ("thread.message.created", _message(_ID, "in_progress")),
        ("thread.message.in_progress", _message(_ID, "in_progress")),
    ]
    steps += [("thread.message.delta", _DELTA)] * (n - MIN_EVENTS + 1)
    steps += [
        ("thread.message.completed", _message(_ID, "completed")),
        ("thread.run.step.completed", _step(_ID, "completed")),
        ("thread.run.completed", _run(_ID, "completed", completed_at=_TS + 3, usage=_USAGE)),
    ]
    out = []
    for name, obj in steps:
        parts = _split(obj)
        out.append((name.encode(), parts[:-1] + (parts[-1][:-1],)))
    return out


class Upstream:
    """Shared state of one fake upstream process: templates and counters."""

    def __init__(self, *, sink: bool = False) -> None:
        self.sink = sink
        self.prefix = os.urandom(4).hex()
        self.created = 0
        self.streams = 0
        self.requests = 0
        self.bytes_in = 0
        self._json = _split(_run(_ID, "queued"))
        self._retrieve = _split(_run(_ID, "in_progress"))
        self._events: dict[int, list[tuple[bytes, tuple[bytes, ...]]]] = {}
        self._response_events: dict[int, list[tuple[bytes, tuple[bytes, ...]]]] = {}
        self._date = b""
        self._date_at = 0.0

    def date(self) -> bytes:
        now = time.time()
        if now - self._date_at >= 1.0:
            self._date = formatdate(now, usegmt=True).encode()
            self._date_at = now
        return self._date

    def new_run_id(self) -> bytes:
        self.created += 1
        return f"run_{self.prefix}{self.created:016x}".encode()

    def run_json(self, run_id: bytes, *, retrieve: bool = False) -> bytes:
        return run_id.join(self._retrieve if retrieve else self._json)

    def events(self, n: int) -> list[tuple[bytes, tuple[bytes, ...]]]:
        n = max(n, MIN_EVENTS)
        ev = self._events.get(n)
        if ev is None:
            ev = self._events[n] = _events(n)
        return ev

    def response_events(self, n: int) -> list[tuple[bytes, tuple[bytes, ...]]]:
        ev = self._response_events.get(n)
        if ev is None:
            ev = self._response_events[n] = responses_events.templates(n, _ID)
        return ev

    def stats(self) -> bytes:
        return orjson.dumps({"created": self.created, "streams": self.streams, "requests": self.requests,
                             "bytes_in": self.bytes_in, "run_prefix": f"run_{self.prefix}"})


def _head(status: bytes, date: bytes, ctype: bytes, length: int | None, keep_alive: bool) -> bytes:
    framing = b"Transfer-Encoding: chunked\r\n" if length is None else b"Content-Length: %d\r\n" % length
    conn = b"" if keep_alive else b"Connection: close\r\n"
    return (b"HTTP/1.1 " + status + b"\r\nDate: " + date + b"\r\nContent-Type: " + ctype + b"\r\n" + framing
            + conn + b"openai-version: 2020-10-01\r\nopenai-processing-ms: 12\r\n"
            b"x-request-id: req_bench\r\n\r\n")


class HttpProtocol(asyncio.Protocol):
    def __init__(self, up: Upstream) -> None:
        self.up = up
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.streaming: asyncio.TimerHandle | None = None
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, though they implement it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.streaming is not None:
            self.streaming.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.process()

    def process(self) -> None:
        while not self.busy and self.transport is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self.transport.close()
                return
            lines = bytes(self.buf[:end]).split(b"\r\n")
            try:
                method, target, version = lines[0].split(b" ", 2)
            except ValueError:
                self.transport.close()
                return
            length = 0
            chunked = False
            keep_alive = version == b"HTTP/1.1"
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                low = name.strip().lower()
                if low == b"content-length":
                    length = int(value)
                elif low == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif low == b"connection":
                    v = value.strip().lower()
                    keep_alive = v != b"close" and (keep_alive or v == b"keep-alive")
            start = end + 4
            if chunked:
                parsed = _dechunk(self.buf, start)
                if parsed is None:
                    return
                body, consumed = parsed
            else:
                if len(self.buf) < start + length:
                    return
                body, consumed = bytes(self.buf[start:start + length]), start + length
            del self.buf[:consumed]
            self.handle(method, target, body, keep_alive)

    def handle(self, method: bytes, target: bytes, body: bytes, keep_alive: bool) -> None:
        up = self.up
        path = target.partition(b"?")[0]
        if path == b"/__bench/stats":
            self.reply(b"200 OK", up.stats(), keep_alive)
            return
        up.requests += 1
        up.bytes_in += len(body)
        if up.sink:
            self.reply(b"200 OK", b"", keep_alive, b"application/x-protobuf")
        elif method == b"POST" and path.endswith(b"/runs"):
            params = _params(body)
            if params.get("stream") is True:
                self.stream(params, keep_alive)
            else:
                self.reply(b"200 OK", up.run_json(up.new_run_id()), keep_alive)
        elif method == b"POST" and path.endswith(b"/responses"):
            self.stream(_params(body), keep_alive, responses=True)
        elif method == b"GET" and b"/runs/" in path:
            self.reply(b"200 OK", up.run_json(path.rpartition(b"/")[2], retrieve=True), keep_alive)
        else:
            self.reply(b"404 Not Found", b'{"error":{"message":"not found","type":"invalid_request_error"}}',
                       keep_alive)

    def reply(self, status: bytes, body: bytes, keep_alive: bool,
              ctype: bytes = b"application/json") -> None:
        assert self.transport is not None
        self.transport.write(_head(status, self.up.date(), ctype, len(body), keep_alive) + body)
        if not keep_alive:
            self.transport.close()

    def stream(self, params: dict[str, Any], keep_alive: bool, *, responses: bool = False) -> None:
        assert self.transport is not None
        up = self.up
        up.streams += 1
        meta = params.get("metadata") or {}
        n = int(meta.get("bench_events", DEFAULT_EVENTS))
        events = up.response_events(n) if responses else up.events(n)
        gap = int(meta.get("bench_gap_us", 0)) / 1e6
        run_id = up.new_run_id()
        if responses:  # a Responses stream: resp_ ids, no `done` sentinel after the last event
            run_id = b"resp_" + run_id[4:]
        self.transport.write(_head(b"200 OK", up.date(), b"text/event-stream; charset=utf-8", None,
                                   keep_alive))
        self.busy = True
        i = 0

        def send() -> None:
            nonlocal i
            self.streaming = None
            transport = self.transport
            if transport is None:
                return
            while i < len(events):
                name, parts = events[i]
                i += 1
                data = b"event: " + name + b"\ndata: " + run_id.join(parts) + \
                    b',"bench_sent_ns":%d}\n\n' % time.monotonic_ns()
                transport.write(b"%x\r\n%s\r\n" % (len(data), data))
                if gap:
                    self.streaming = asyncio.get_running_loop().call_later(gap, send)
                    return
            if responses:
                transport.write(b"0\r\n\r\n")
            else:
                done = b"event: done\ndata: [DONE]\n\n"
                transport.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
            self.busy = False
            if not keep_alive:
                transport.close()
            elif self.buf:
                self.process()

        send()


def _params(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _dechunk(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    out = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            end = buf.find(b"\r\n\r\n", pos - 2)  # trailers (none expected) end with an empty line
            return (bytes(out), end + 4) if end >= 0 else None
        if len(buf) < pos + size + 2:
            return None
        out += buf[pos:pos + size]
        pos += size + 2


async def serve(host: str, port: int, *, sink: bool = False) -> None:
    loop = asyncio.get_running_loop()
    up = Upstream(sink=sink)
    server = await loop.create_server(lambda: HttpProtocol(up), host, port, backlog=2048, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--sink", action="store_true", help="answer every request 200 (an OTLP/HTTP sink)")
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    coro = serve(args.host, args.port, sink=args.sink)
    try:
        import uvloop
    except ImportError:
        uvloop = None  # type: ignore[assignment]
    if uvloop is not None and not args.no_uvloop:
        uvloop.run(coro)
    else:
        asyncio.run(coro)


if __name__ == "__main__":
    main()
