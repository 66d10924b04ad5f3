"""Byte-level witnesses for transparency tests.

`UpstreamRecorder` is a TCP relay placed between runtap and the upstream: it records the body bytes of
every HTTP response the upstream put on the wire (de-chunked, still compressed), keyed by x-request-id.
`HashingTransport` records the raw body bytes the client received from runtap (before httpx decodes
gzip), keyed the same way. Equal digests on both sides = runtap relayed the body unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import Any

import httpx2 as httpx


class _ResponseParser:
    """Minimal HTTP/1.1 response-stream parser: Content-Length and chunked bodies, keep-alive."""

    def __init__(self, sink: dict[str, str], encodings: dict[str, str]) -> None:
        self.buf = bytearray()
        self.sink = sink
        self.encodings = encodings

    def feed(self, data: bytes) -> None:
        self.buf += data
        while self._one():
            pass

    def _one(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        headers = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        pos = end + 4
        if "content-length" in headers:
            n = int(headers["content-length"])
            if len(self.buf) < pos + n:
                return False
            body = bytes(self.buf[pos:pos + n])
            pos += n
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                eol = self.buf.find(b"\r\n", pos)
                if eol < 0:
                    return False
                size = int(bytes(self.buf[pos:eol]).split(b";")[0], 16)
                if len(self.buf) < eol + 2 + size + 2:
                    return False
                parts.append(bytes(self.buf[eol + 2:eol + 2 + size]))
                pos = eol + 2 + size + 2
                if size == 0:
                    break
            body = b"".join(parts)
        else:
            return False  # read-until-close bodies: not used by the simulator
        rid = headers.get("x-request-id")
        if rid:
            self.sink[rid] = hashlib.sha256(body).hexdigest()
            self.encodings[rid] = headers.get("content-encoding", "identity")
        del self.buf[:pos]
        return True


class UpstreamRecorder:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.digests: dict[str, str] = {}
        self.encodings: dict[str, str] = {}  # x-request-id -> Content-Encoding the upstream sent
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{self.port}"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    parser: _ResponseParser | None) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if parser is not None:
                    parser.feed(data)
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    async def _conn(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        ureader, uwriter = await asyncio.open_connection(*self.target)
        up = asyncio.create_task(self._pipe(creader, uwriter, None))
        down = asyncio.create_task(self._pipe(ureader, cwriter, _ResponseParser(self.digests, self.encodings)))
        self._tasks |= {up, down}
        await asyncio.gather(up, down)
        self._tasks -= {up, down}

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class _HashingStream(httpx.AsyncByteStream):
    def __init__(self, inner: Any, rid: str | None, sink: dict[str, str]) -> None:
        self.inner = inner
        self.rid = rid
        self.sink = sink
        self.h = hashlib.sha256()

    async def __aiter__(self) -> Any:
        async for chunk in self.inner:
            self.h.update(chunk)
            yield chunk
        if self.rid:
            self.sink[self.rid] = self.h.hexdigest()

    async def aclose(self) -> None:
        await self.inner.aclose()


class HashingTransport(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.digests: dict[str, str] = {}
        self.statuses: dict[str, int] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        resp = await super().handle_async_request(request)
        rid = resp.headers.get("x-request-id")
        if rid:
            self.statuses[rid] = resp.status_code
        resp.stream = _HashingStream(resp.stream, rid, self.digests)
        return resp
