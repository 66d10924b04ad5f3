"""The hot path: stream a request to the upstream and relay status, headers and bytes back unchanged.

Relay first, tap second: every chunk is written to the client before a reference to it is handed to
capture, and capture only ever enqueues (CaptureWriter.submit is O(1) and never raises). Nothing here
parses a body.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Final

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from proxy import api_versions, errors, fingerprint, routes
from proxy.config import Settings
from proxy.metrics import Metrics
from proxy.records import Exchange, RequestBody, RequestRecord, ResponseBody, StreamChunk, StreamEnd
from proxy.response_routes import RESPONSES_CREATE
from proxy.tracing import Tracing
from proxy.writer import CaptureWriter

log = logging.getLogger("runtap.forward")

# RFC 9110 §7.6.1: connection-specific fields are not forwarded, plus any the Connection header names.
# Proxy-Authorization is meant for this hop (RFC 9110 §11.7.2). Host is set by the client library
# from the upstream URL. Content-Length is re-derived by the HTTP layer from the relayed body.
HOP_BY_HOP: Final = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
    "proxy-authorization", "proxy-authenticate", "host",
})
# Headers aiohttp's client would invent if absent; skipping them keeps the request as the app sent it
# (an invented Accept-Encoding would make the upstream compress for a client that did not ask).
AUTO_HEADERS: Final = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
SSE_TYPE: Final = "text/event-stream"
_READ_WHOLE: Final = 64 << 10


def api_version(beta: str | None) -> str | None:
    return api_versions.beta_version(beta)


class KeyFingerprints:
    """sha256(salt + key), 12 hex chars: enough to group spend per key, useless to recover it. A JWT
    bearer token is fingerprinted by the principal it names instead (proxy/fingerprint.py), so one
    Entra ID caller keeps one fingerprint across token rotations."""

    def __init__(self, salt: str, *, max_entries: int = 4096) -> None:
        self._salt = salt.encode()
        self._cache: dict[str, str] = {}
        self._max = max_entries

    def of(self, headers: CIMultiDictProxy[str]) -> str | None:
        auth = headers.get("Authorization")
        key = auth[7:].strip() if auth and auth[:7].lower() == "bearer " else headers.get("api-key")
        if not key:
            return None
        fp = self._cache.get(key)
        if fp is None:
            who = fingerprint.principal(key) if key[:3] == "eyJ" else None
            fp = hashlib.sha256(self._salt + (key.encode() if who is None else who)).hexdigest()[:12]
            if len(self._cache) >= self._max:
                self._cache.clear()
            self._cache[key] = fp
        return fp


def upstream_headers(headers: CIMultiDictProxy[str]) -> tuple[CIMultiDict[str], list[str]]:
    named = {h.strip().lower() for v in headers.getall("Connection", ()) for h in v.split(",")}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        low = name.lower()
        if low in HOP_BY_HOP or low in named:
            continue
        out.add(name, value)
    skip = [h for h in AUTO_HEADERS if h not in headers]
    return out, skip


def client_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    named = {h.strip().lower() for v in headers.getall("Connection", ()) for h in v.split(",")}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        low = name.lower()
        if low in HOP_BY_HOP or low in named or low == "content-length":
            continue
        out.add(name, value)
    return out


class Forwarder:
    def __init__(self, settings: Settings, *, metrics: Metrics, writer: CaptureWriter | None,
                 tracing: Tracing) -> None:
        self._settings = settings
        self._base = settings.upstream
        self._metrics = metrics
        self._writer = writer
        self._tracing = tracing
        self._fingerprints = KeyFingerprints(settings.key_salt)
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=settings.connect_timeout, sock_read=settings.read_timeout
        )
        self._session: aiohttp.ClientSession | None = None
        self.inflight = 0
        # Exchange ids: a random per-process prefix and a counter, as unique as uuid4 across restarts
        # and workers but without its os.urandom call per request.
        self._id_prefix = os.urandom(8).hex()
        self._ids = itertools.count()
        self._read_whole = min(_READ_WHOLE, settings.capture_max_body)

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._settings.max_connections, limit_per_host=0,
                                         enable_cleanup_closed=False)
        # auto_decompress=False: the client must get the upstream's bytes, gzip and all.
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                              cookie_jar=aiohttp.DummyCookieJar(), timeout=self._timeout,
                                              max_line_size=self._settings.max_header_bytes,
                                              max_field_size=self._settings.max_header_bytes)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _submit(self, item: RequestBody | ResponseBody | StreamChunk | StreamEnd | RequestRecord) -> None:
        if self._writer is not None:
            self._writer.submit(item)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        t0 = time.perf_counter()
        wall0 = time.time()
        method = request.method
        raw_path = request.raw_path
        rejection = errors.check_target(method, raw_path, request.headers)
        if rejection is not None:
            return rejection
        path = raw_path.partition("?")[0]
        operation = routes.classify(method, path)
        op_label = operation or routes.OTHER
        headers = request.headers
        provider, version = api_versions.requested(headers.get("OpenAI-Beta"), raw_path)
        exchange = Exchange(
            id=f"{self._id_prefix}{next(self._ids):016x}", method=method, path=path, operation=operation,
            api_version=version, key_fingerprint=self._fingerprints.of(headers), started_at=wall0,
            api_provider=provider,
        )
        length = request.content_length
        span = self._tracing.start_request(request, op_label, exchange)
        status: int | None = None
        streamed = False
        ttfb: float | None = None
        upstream_wait = 0.0
        bytes_in = 0
        bytes_out = 0
        upstream_request_id: str | None = None
        error: str | None = None
        self.inflight += 1
        try:
            if length is not None and length > self._settings.max_body_bytes:
                # Refused before any upstream work, but still a request: it gets its row and metrics.
                status, error = 413, "request_too_large"
                return errors.too_large(self._settings.max_body_bytes)
            out_headers, skip = upstream_headers(headers)
            self._tracing.inject(span, out_headers)
            body_state = _BodyState()
            data: AsyncIterator[bytes] | bytes | None = None
            if request.body_exists:
                # A Responses create's body is read for the call ids it answers (tool turnaround),
                # not only for prompts.
                capture_body = operation is not None and (self._settings.store_prompts
                                                          or operation == RESPONSES_CREATE)
                if length is not None and length <= self._read_whole:
                    # A small body of known length (every SDK call): read it at once rather than
                    # through an async generator, which aiohttp's client drives chunk by chunk.
                    try:
                        async with asyncio.timeout(self._settings.client_timeout):
                            data = await request.read()
                    except TimeoutError:
                        status, error = 408, "client_timeout"
                        self._metrics.client_timeout("body")
                        return await self._client_timed_out(request)
                    body_state.size = len(data)
                    if capture_body:
                        self._submit(RequestBody(exchange, data, False))
                else:
                    data = self._body(request, body_state, exchange if capture_body else None)
            assert self._session is not None  # noqa: S101 - invariant for the type checker, not an input check
            url = URL(self._base + raw_path, encoded=True)
            # Every other in-flight request holds or awaits one of the max_connections: this one queues.
            must_queue = self.inflight > self._settings.max_connections
            t_sent = time.perf_counter()
            try:
                upstream = await self._session.request(
                    method, url, headers=out_headers, data=data, skip_auto_headers=skip,
                    allow_redirects=False,
                )
            except _BodyTimeout:
                status, error = 408, "client_timeout"
                return await self._client_timed_out(request)
            except _BodyTooLarge:
                status = 413
                error = "request_too_large"
                return errors.too_large(self._settings.max_body_bytes)
            except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                if body_state.timed_out:
                    status, error = 408, "client_timeout"
                    return await self._client_timed_out(request)
                if must_queue and isinstance(exc, aiohttp.ConnectionTimeoutError):
                    # aiohttp's connect timeout includes the wait for a free pool slot: the upstream
                    # was never tried, runtap's own limit kept this request waiting.
                    self._metrics.upstream_error("connection_limit")
                    status, error = 503, "connection_limit"
                    return errors.connection_limit(self._settings.max_connections,
                                                   self._settings.connect_timeout)
                reason = "connect_timeout" if isinstance(exc, aiohttp.ConnectionTimeoutError) else "timeout"
                self._metrics.upstream_error(reason)
                status, error = 504, reason
                return errors.upstream_error(504, reason, self._base, exc)
            except aiohttp.ClientError as exc:
                if body_state.timed_out:
                    status, error = 408, "client_timeout"
                    return await self._client_timed_out(request)
                if body_state.size > self._settings.max_body_bytes:
                    # aiohttp hands the body generator's _BodyTooLarge back wrapped in a ClientOSError.
                    status, error = 413, "request_too_large"
                    return errors.too_large(self._settings.max_body_bytes)
                reason = errors.classify_client_error(exc)
                self._metrics.upstream_error(reason)
                status, error = 502, reason
                return errors.upstream_error(502, reason, self._base, exc)
            bytes_in = body_state.size
            now = time.perf_counter()
            ttfb = now - t_sent
            upstream_wait = ttfb
            status = upstream.status
            upstream_request_id = upstream.headers.get("x-request-id")
            try:
                resp = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                          headers=client_headers(upstream.headers))
                clen = upstream.content_length
                if clen is not None:
                    # For HEAD too: it is the length a GET would have had (RFC 9110 §9.3.2), and
                    # aiohttp sends no body for HEAD whatever the length says.
                    resp.content_length = clen
                ctype = upstream.headers.get("Content-Type", "")
                streamed = ctype.startswith(SSE_TYPE)
                exchange.content_encoding = upstream.headers.get("Content-Encoding")
                await resp.prepare(request)
                tap = self._writer is not None and operation is not None
                captured: list[bytes] | None = [] if tap and not streamed and 200 <= status < 300 else None
                captured_size = 0
                truncated = False
                content = upstream.content
                while True:
                    tw = time.perf_counter()
                    try:
                        chunk = await content.readany()
                    except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                        upstream_wait += time.perf_counter() - tw
                        error = "upstream_" + errors.classify_client_error(exc)
                        self._metrics.upstream_error(errors.classify_client_error(exc))
                        # Without the proxy the client would see its connection drop here: do the
                        # same rather than end the body cleanly (that would invent a valid ending).
                        if streamed and tap:
                            self._submit(StreamEnd(exchange, complete=False))
                        if request.transport is not None:
                            request.transport.close()
                        # Returned, not raised: aiohttp would log a raised error as a handler failure
                        # with a traceback. With the transport closing, its write_eof sends nothing.
                        return resp
                    upstream_wait += time.perf_counter() - tw
                    if not chunk:
                        break
                    await resp.write(chunk)
                    bytes_out += len(chunk)
                    if tap:
                        if streamed:
                            self._submit(StreamChunk(exchange, chunk, time.time()))
                        elif captured is not None:
                            captured_size += len(chunk)
                            if captured_size <= self._settings.capture_max_body:
                                captured.append(chunk)
                            else:
                                truncated = True
                                captured = None
                await resp.write_eof()
                if tap:
                    if streamed:
                        self._submit(StreamEnd(exchange, complete=True))
                    elif status >= 300 or truncated:
                        self._metrics.capture_skipped("upstream_error_status" if status >= 300
                                                      else "body_too_large")
                    elif captured is not None:
                        self._submit(ResponseBody(exchange, status, b"".join(captured), truncated))
                return resp
            finally:
                upstream.release()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError, asyncio.CancelledError) as exc:
            # The client went away mid-response; closing the upstream response (finally above) releases
            # the upstream request at once. What was relayed has been captured.
            error = error or "client_disconnected"
            if streamed and operation is not None:
                self._submit(StreamEnd(exchange, complete=False))
            if isinstance(exc, asyncio.CancelledError):
                raise
            # A write to the gone client failed: raised, aiohttp would log the app's disconnect as a
            # handler error with a traceback; returned, it finds the transport closed and drops it.
            if request.transport is not None:
                request.transport.close()
            return web.StreamResponse()
        finally:
            self.inflight -= 1
            duration = time.perf_counter() - t0
            code = str(status) if status is not None else "000"
            self._metrics.observe_request(op_label, code, streamed, duration, ttfb,
                                          max(duration - upstream_wait, 0.0))
            self._tracing.end_request(span, status, error)
            self._submit(RequestRecord(
                id=exchange.id, started_at=wall0, method=method, path=path, operation=operation,
                status_code=status, streamed=streamed, duration_ms=duration * 1000.0,
                upstream_ttfb_ms=None if ttfb is None else ttfb * 1000.0, bytes_in=bytes_in,
                bytes_out=bytes_out, upstream_request_id=upstream_request_id,
                key_fingerprint=exchange.key_fingerprint, error=error, api_version=exchange.api_version,
                api_provider=exchange.api_provider,
            ))

    async def _client_timed_out(self, request: web.Request) -> web.StreamResponse:
        """408, then the connection is closed at once: aiohttp would otherwise linger for seconds reading
        the rest of a body that is not coming."""
        resp = errors.client_timeout(self._settings.client_timeout)
        await resp.prepare(request)
        await resp.write_eof()
        if request.transport is not None:
            request.transport.close()
        return resp

    async def _body(self, request: web.Request, state: _BodyState,
                    exchange: Exchange | None) -> AsyncIterator[bytes]:
        limit = self._settings.max_body_bytes
        copy: list[bytes] = []
        content = request.content
        while True:
            try:
                async with asyncio.timeout(self._settings.client_timeout):
                    chunk = await content.readany()
            except TimeoutError:
                state.timed_out = True
                self._metrics.client_timeout("body")
                raise _BodyTimeout() from None
            if not chunk:
                break
            state.size += len(chunk)
            if state.size > limit:
                raise _BodyTooLarge()
            if exchange is not None and state.size <= self._settings.capture_max_body:
                copy.append(chunk)
            yield chunk
        if exchange is not None:
            self._submit(RequestBody(exchange, b"".join(copy), state.size > self._settings.capture_max_body))


class _BodyState:
    __slots__ = ("size", "timed_out")

    def __init__(self) -> None:
        self.size = 0
        self.timed_out = False


class _BodyTooLarge(Exception):
    pass


class _BodyTimeout(Exception):
    """The client stopped sending its body for --client-timeout."""
