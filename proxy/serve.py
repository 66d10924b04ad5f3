"""Run the proxy and admin listeners until SIGTERM/SIGINT, then drain and flush."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from ..settings.config import Settings
from . import client_timeouts, errors
from .admin import create_admin_app
from .admin_thread import AdminThread, runner_url
from .app import Runtime, build_runtime, close_unstarted, create_app
from .owner import SpoolClaim, claim_spool

log = logging.getLogger("runtap")


@dataclass
class Running:
    runtime: Runtime
    proxy_url: str
    admin_url: str
    _proxy: web.AppRunner
    _admin: AdminThread
    _claim: SpoolClaim | None = None

    async def stop(self) -> None:
        # Stop the proxy first: it stops accepting, waits up to the grace period for in-flight requests
        # and streams, then its cleanup flushes the capture queue and closes DuckDB.
        try:
            await _cleanup(self._proxy, self._admin)
        finally:
            if self._claim is not None:
                self._claim.release()


async def _cleanup(proxy: web.AppRunner, admin: AdminThread) -> None:
    """Both listeners, in that order; the admin listener closes even when a proxy resource failed to."""
    try:
        await proxy.cleanup()
    finally:
        await admin.stop()


async def start(settings: Settings, *, runtime: Runtime | None = None) -> Running:
    # aiohttp logs the start of an oversized header value when it rejects a request: for
    # Authorization that is the API key. Filter it out before any listener starts.
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, errors.RedactParserErrors) for f in server_log.filters):
        server_log.addFilter(errors.RedactParserErrors())
    # Before anything opens the spool or the database: a second runtap on the same files stops here.
    spool = runtime.writer.spool_path if runtime is not None and runtime.writer is not None else settings.spool_path
    # In --capture-mode process the relay that owns the capture process claims for it.
    owns = runtime is None or runtime.writer is not None or runtime.supervisor is not None
    claim = claim_spool(spool, db_path=settings.db) if owns else None
    try:
        return await _start(settings, runtime, claim)
    except BaseException:
        if claim is not None:
            claim.release()
        raise


async def _start(settings: Settings, runtime: Runtime | None, claim: SpoolClaim | None) -> Running:
    rt = runtime or build_runtime(settings)
    try:
        proxy_runner, admin = _runners(settings, rt)
    except BaseException:
        close_unstarted(rt)  # e.g. a bad --prices: no cleanup context has run to close the runtime
        raise
    try:
        # A resource that fails to start: the ones already started are closed, in reverse.
        await proxy_runner.setup()
        await web.TCPSite(proxy_runner, settings.listen.host, settings.listen.port,
                          reuse_port=settings.workers > 1, backlog=1024).start()
        await admin.start()
    except BaseException:
        await _cleanup(proxy_runner, admin)
        raise
    return Running(rt, runner_url(proxy_runner), admin.url, proxy_runner, admin, claim)


def _runners(settings: Settings, rt: Runtime) -> tuple[web.AppRunner, AdminThread]:
    proxy_app = create_app(settings, runtime=rt)
    # auto_decompress=False: a gzip request body must reach the upstream as the app compressed it
    # (aiohttp's server would inflate it and leave Content-Encoding/Content-Length claiming otherwise).
    # handler_cancellation: a client that disconnects cancels its handler, which closes the upstream
    # request at once instead of at the next chunk (a stream can be idle for minutes).
    proxy_runner = client_timeouts.AppRunner(proxy_app, access_log=None, handler_cancellation=True,
                                             auto_decompress=False, on_timeout=rt.metrics.client_timeout,
                                             keepalive_timeout=settings.client_timeout,
                                             shutdown_timeout=settings.grace_period,
                                 max_line_size=settings.max_header_bytes,
                                 max_field_size=settings.max_header_bytes)
    # The admin listener has its own thread and loop: /healthz and /metrics answer while the relay's
    # loop is saturated (a kubelet's probe must not queue behind proxied requests).
    return proxy_runner, AdminThread(create_admin_app(rt), settings.admin.host, settings.admin.port)


async def serve_forever(settings: Settings,
                        on_ready: Callable[[Running], Awaitable[None] | None] | None = None,
                        on_stop: Callable[[], None] | None = None, *, runtime: Runtime | None = None) -> None:
    """`on_stop` runs when SIGTERM/SIGINT arrives, before draining (to pass it on to workers)."""
    running = await start(settings, runtime=runtime)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    rt = running.runtime
    where = settings.db if rt.channel is None else (
        f"{settings.db} (capture process pid {rt.supervisor.pid})" if rt.supervisor else "the capture process")
    log.info("runtap proxying %s -> %s; admin on %s (healthz, readyz, metrics); capturing into %s",
             running.proxy_url, settings.upstream, running.admin_url, where)
    if on_ready is not None:
        res = on_ready(running)
        if res is not None:
            await res
    await stop.wait()
    if on_stop is not None:
        on_stop()
    log.info("shutting down: draining %d in-flight request(s), grace period %.0fs",
             running.runtime.forwarder.inflight, settings.grace_period)
    await running.stop()
    if running.runtime.writer is not None:
        stats = running.runtime.writer.stats
        log.info("capture flushed: %s", ", ".join(f"{k}={v}" for k, v in sorted(stats.items())))
