"""The hot path: stream a request to the upstream and relay status, headers and bytes back unchanged.

Relay first, tap second: every chunk is written to the client before a reference to it is handed to
the tap (proxy/tap.py), behind which capture, metrics and tracing live as addons. Nothing here parses
a body or knows what the addons do.
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

from ..analytics.ingest.records import Exchange
from ..settings.config import Settings
from . import api_versions, errors, fingerprint, routes
from .tap import CLIENT_DISCONNECTED, CLIENT_TIMEOUT, Flow, Tap

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


def _connection_named(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    """The field names the Connection header lists: hop-by-hop for this message (RFC 9110 §7.6.1)."""
    return frozenset(h.strip().lower() for v in headers.getall("Connection", ()) for h in v.split(","))


def _end_to_end(headers: CIMultiDictProxy[str], drop: frozenset[str]) -> CIMultiDict[str]:
    # A copy (in C) minus the few names to drop: cheaper than rebuilding the dict header by header, and
    # the remaining fields keep their order and case.
    out: CIMultiDict[str] = CIMultiDict(headers)
    if "Connection" in out:
        drop = drop | _connection_named(headers)
    for name in drop:
        if name in out:
            del out[name]
    return out


def upstream_headers(headers: CIMultiDictProxy[str]) -> tuple[CIMultiDict[str], list[str]]:
    skip = [h for h in AUTO_HEADERS if h not in headers]
    return _end_to_end(headers, HOP_BY_HOP), skip


_CLIENT_DROP: Final = HOP_BY_HOP | {"content-length"}


def client_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    return _end_to_end(headers, _CLIENT_DROP)


class Forwarder:
    def __init__(self, settings: Settings, *, tap: Tap) -> None:
        self._settings = settings
        self._base = settings.upstream
        self._tap = tap
        self._fingerprints = KeyFingerprints(settings.key_salt)
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=settings.connect_timeout, sock_read=settings.read_timeout
        )
        self._session: aiohttp.ClientSession | None = None
        self.inflight = 0
        self.started = 0  # requests ever handled: how the idle trimmer (memory_trim) sees traffic
        # Exchange ids: a random per-process prefix and a counter, as unique as uuid4 across restarts
        # and workers but without its os.urandom call per request.
        self._id_prefix = os.urandom(8).hex()
        self._ids = itertools.count()
        # How much of a request body the addons keep is theirs to say (Tap.request_body_limit). A body
        # read at once reaches the tap whole, so no more than that is read at once.
        copy_limit = tap.request_body_limit
        self._read_whole = _READ_WHOLE if copy_limit is None else min(_READ_WHOLE, copy_limit)
        self._copy_limit = copy_limit or 0

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

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        rejection = errors.check_target(request.method, request.raw_path, request.headers)
        if rejection is not None:
            return rejection
        flow = self._flow(request, started)
        tap = self._tap
        tap.request(flow, request)
        self.inflight += 1
        self.started += 1
        try:
            return await self._relay(request, flow)
        except (ConnectionResetError, aiohttp.ClientConnectionResetError, asyncio.CancelledError) as exc:
            # The client went away mid-response; the upstream response was released on the way out.
            flow.error = flow.error or CLIENT_DISCONNECTED
            tap.error(flow, CLIENT_DISCONNECTED)
            if isinstance(exc, asyncio.CancelledError):
                raise
            # A write to the gone client failed: raised, aiohttp would log the app's disconnect as a
            # handler error with a traceback; returned, it finds the transport closed and drops it.
            _drop_connection(request)
            return web.StreamResponse()
        finally:
            self.inflight -= 1
            flow.duration = time.perf_counter() - started
            tap.done(flow)

    def _flow(self, request: web.Request, started: float) -> Flow:
        method = request.method
        path = request.raw_path.partition("?")[0]
        operation = routes.classify(method, path)
        headers = request.headers
        provider, version = api_versions.requested(headers.get("OpenAI-Beta"), request.raw_path)
        exchange = Exchange(
            id=f"{self._id_prefix}{next(self._ids):016x}", method=method, path=path, operation=operation,
            api_version=version, key_fingerprint=self._fingerprints.of(headers), started_at=time.time(),
            api_provider=provider,
        )
        return Flow(exchange, operation or routes.OTHER, started)

    async def _relay(self, request: web.Request, flow: Flow) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > self._settings.max_body_bytes:
            # Refused before any upstream work, but still a request: it gets its row and metrics.
            return self._too_large(flow)
        out_headers, skip = upstream_headers(request.headers)
        self._tap.upstream_request(flow, out_headers)
        body_state = _BodyState()
        try:
            data = await self._request_data(request, flow, body_state)
            sent = await self._send(request, flow, out_headers, skip, data, body_state)
        except _BodyTimeout:
            return await self._client_timed_out(request, flow)
        if isinstance(sent, web.StreamResponse):
            return sent
        try:
            return await self._respond(request, flow, sent)
        finally:
            sent.release()

    def _too_large(self, flow: Flow) -> web.Response:
        flow.status, flow.error = 413, "request_too_large"
        return errors.too_large(self._settings.max_body_bytes)

    async def _client_timed_out(self, request: web.Request, flow: Flow) -> web.StreamResponse:
        """408, then the connection is closed at once: aiohttp would otherwise linger for seconds reading
        the rest of a body that is not coming."""
        flow.status, flow.error = 408, CLIENT_TIMEOUT
        self._tap.error(flow, CLIENT_TIMEOUT)
        resp = errors.client_timeout(self._settings.client_timeout)
        await resp.prepare(request)
        await resp.write_eof()
        _drop_connection(request)
        return resp

    def _failed(self, flow: Flow, status: int, reason: str) -> None:
        flow.status, flow.error = status, reason
        self._tap.error(flow, reason)

    async def _request_data(self, request: web.Request, flow: Flow,
                            body_state: _BodyState) -> AsyncIterator[bytes] | bytes | None:
        if not request.body_exists:
            return None
        keep = self._tap.keeps_request_body(flow)
        length = request.content_length
        if length is not None and length <= self._read_whole:
            # A small body of known length (every SDK call): read it at once rather than through an
            # async generator, which aiohttp's client drives chunk by chunk.
            if request.content.is_eof():
                # All of it arrived (usually in the headers' packet): read() cannot wait, so no timer.
                data = await request.read()
            else:
                try:
                    async with asyncio.timeout(self._settings.client_timeout):
                        data = await request.read()
                except TimeoutError:
                    raise _BodyTimeout() from None
            body_state.size = len(data)
            if keep:
                self._tap.request_body(flow, data, False)
            return data
        return self._body(request, body_state, flow if keep else None)

    async def _send(self, request: web.Request, flow: Flow, out_headers: CIMultiDict[str], skip: list[str],
                    data: AsyncIterator[bytes] | bytes | None,
                    body_state: _BodyState) -> aiohttp.ClientResponse | web.StreamResponse:
        """The upstream's response head, or the answer runtap gives in its place."""
        assert self._session is not None  # noqa: S101 - invariant for the type checker, not an input check
        url = URL(self._base + request.raw_path, encoded=True)
        settings = self._settings
        # Every other in-flight request holds or awaits one of the max_connections: this one queues.
        must_queue = self.inflight > settings.max_connections
        t_sent = time.perf_counter()
        try:
            upstream = await self._session.request(
                request.method, url, headers=out_headers, data=data, skip_auto_headers=skip,
                allow_redirects=False,
            )
        except _BodyTooLarge:
            return self._too_large(flow)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            if body_state.timed_out:
                raise _BodyTimeout() from None
            if must_queue and isinstance(exc, aiohttp.ConnectionTimeoutError):
                # aiohttp's connect timeout includes the wait for a free pool slot: the upstream was
                # never tried, runtap's own limit kept this request waiting.
                self._failed(flow, 503, "connection_limit")
                return errors.connection_limit(settings.max_connections, settings.connect_timeout)
            reason = "connect_timeout" if isinstance(exc, aiohttp.ConnectionTimeoutError) else "timeout"
            self._failed(flow, 504, reason)
            return errors.upstream_error(504, reason, self._base, exc)
        except aiohttp.ClientError as exc:
            if body_state.timed_out:
                raise _BodyTimeout() from None
            if body_state.size > settings.max_body_bytes:
                # aiohttp hands the body generator's _BodyTooLarge back wrapped in a ClientOSError.
                return self._too_large(flow)
            reason = errors.classify_client_error(exc)
            self._failed(flow, 502, reason)
            return errors.upstream_error(502, reason, self._base, exc)
        flow.bytes_in = body_state.size
        flow.ttfb = flow.upstream_wait = time.perf_counter() - t_sent
        flow.status = upstream.status
        flow.upstream_request_id = upstream.headers.get("x-request-id")
        return upstream

    async def _respond(self, request: web.Request, flow: Flow,
                       upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        resp = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                  headers=client_headers(upstream.headers))
        clen = upstream.content_length
        if clen is not None:
            # For HEAD too: it is the length a GET would have had (RFC 9110 §9.3.2), and aiohttp sends
            # no body for HEAD whatever the length says.
            resp.content_length = clen
        flow.streamed = upstream.headers.get("Content-Type", "").startswith(SSE_TYPE)
        flow.exchange.content_encoding = upstream.headers.get("Content-Encoding")
        tap = self._tap
        tap.response_headers(flow)
        await resp.prepare(request)
        chunk_hook = tap.chunk if tap.sees_chunks else None
        content = upstream.content
        while True:
            tw = time.perf_counter()
            try:
                chunk = await content.readany()
            except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                flow.upstream_wait += time.perf_counter() - tw
                reason = errors.classify_client_error(exc)
                flow.error = "upstream_" + reason
                tap.error(flow, reason)
                # Without the proxy the client would see its connection drop here: do the same rather
                # than end the body cleanly (that would invent a valid ending). Returned, not raised:
                # aiohttp would log a raised error as a handler failure with a traceback; with the
                # transport closing, its write_eof sends nothing.
                _drop_connection(request)
                return resp
            flow.upstream_wait += time.perf_counter() - tw
            if not chunk:
                break
            await resp.write(chunk)  # relay first, tap second
            flow.bytes_out += len(chunk)
            if chunk_hook is not None:
                chunk_hook(flow, chunk)
        await resp.write_eof()
        tap.end(flow)
        return resp

    async def _body(self, request: web.Request, state: _BodyState, flow: Flow | None) -> AsyncIterator[bytes]:
        limit = self._settings.max_body_bytes
        keep = self._copy_limit
        copy: list[bytes] = []
        content = request.content
        while True:
            try:
                async with asyncio.timeout(self._settings.client_timeout):
                    chunk = await content.readany()
            except TimeoutError:
                state.timed_out = True
                raise _BodyTimeout() from None
            if not chunk:
                break
            state.size += len(chunk)
            if state.size > limit:
                raise _BodyTooLarge()
            if flow is not None and state.size <= keep:
                copy.append(chunk)
            yield chunk
        if flow is not None:
            self._tap.request_body(flow, b"".join(copy), state.size > keep)


def _drop_connection(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()


class _BodyState:
    __slots__ = ("size", "timed_out")

    def __init__(self) -> None:
        self.size = 0
        self.timed_out = False


class _BodyTooLarge(Exception):
    pass


class _BodyTimeout(Exception):
    """The client stopped sending its body for --client-timeout."""
