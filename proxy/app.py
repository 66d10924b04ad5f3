"""Application factories: the proxy app and the admin app, sharing one Runtime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from analytics.lake import export_periodically
from proxy import looplag
from proxy.config import Settings
from proxy.forward import Forwarder
from proxy.metrics import Metrics
from proxy.tracing import Tracing, provider_from_env
from proxy.writer import CaptureWriter

log = logging.getLogger("runtap")


@dataclass
class Runtime:
    """Long-lived parts of one runtap process; opened and closed by the proxy app's cleanup_ctx."""

    settings: Settings
    metrics: Metrics
    tracing: Tracing
    writer: CaptureWriter | None
    forwarder: Forwarder
    extras: dict[str, Any] = field(default_factory=dict)


RUNTIME = web.AppKey("runtime", Runtime)
# How long the capture writer gathers items into one DuckDB transaction. Each batch has a fixed cost
# (staging files, read_json, commit): bench.ingest_store --shape distinct measured 71 us/snapshot at
# 400 per batch (0.2 s of a 2k req/s load) vs 54 us at 1,000. 0.5 s keeps capture lag well under 1 s.
CAPTURE_FLUSH_INTERVAL_S = 0.5


def build_runtime(settings: Settings, *, registry: CollectorRegistry | None = None,
                  tracer_provider: Any | None = None, capture: bool = True) -> Runtime:
    metrics = Metrics(registry, label_assistant=settings.metrics_label_assistant)
    owned = tracer_provider is None
    if owned:
        tracer_provider = provider_from_env()
    tracing = Tracing(tracer_provider, upstream=settings.upstream, owned=owned)

    def on_effects(effects: list[Any]) -> None:
        try:
            metrics.on_effects(effects)
        finally:  # one failing consumer must not starve the other
            tracing.on_effects(effects)

    writer = CaptureWriter(
        db_path=settings.db, spool_path=settings.spool_path, spool_max_bytes=settings.spool_max_bytes,
        spool_memory_bytes=settings.spool_memory_bytes,
        queue_size=settings.queue_size, store_prompts=settings.store_prompts,
        db_memory_limit=settings.db_memory_limit,
        flush_interval_s=CAPTURE_FLUSH_INTERVAL_S, on_effects=on_effects, on_health=metrics.on_health,
        on_sse_events=metrics.on_sse_events, on_capture_lag=metrics.on_capture_lag,
    ) if capture else None
    forwarder = Forwarder(settings, metrics=metrics, writer=writer, tracing=tracing)
    return Runtime(settings, metrics, tracing, writer, forwarder)


def _log_export(result: object) -> None:
    if isinstance(result, BaseException):
        log.warning("periodic export failed (rows stay in the DB for the next one): %s", result)
    else:
        log.info("periodic export: %s", result)


async def _lifecycle(runtime: Runtime) -> AsyncIterator[None]:
    if runtime.writer is not None:
        runtime.writer.start()
    await runtime.forwarder.open()
    exporter: asyncio.Task[None] | None = None
    settings = runtime.settings
    if settings.export_dir and runtime.writer is not None:
        exporter = asyncio.get_running_loop().create_task(export_periodically(
            runtime.writer.cursor, settings.export_dir, instance=settings.instance_id,
            interval_s=settings.export_interval, on_result=_log_export))
    try:
        async with looplag.probing(runtime.metrics.loop_lag.observe):
            yield
    finally:
        if exporter is not None:
            exporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await exporter
        await runtime.forwarder.close()
        if runtime.writer is not None:
            # Blocking on purpose: by now the server has drained its streams, and the queue must reach
            # the DB (or the spool) before the process exits.
            runtime.writer.stop()
        runtime.tracing.shutdown()


def create_app(settings: Settings, *, registry: CollectorRegistry | None = None,
               tracer_provider: Any | None = None, runtime: Runtime | None = None) -> web.Application:
    rt = runtime or build_runtime(settings, registry=registry, tracer_provider=tracer_provider)
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[RUNTIME] = rt

    async def ctx(_: web.Application) -> AsyncIterator[None]:
        async for _x in _lifecycle(rt):
            yield

    app.cleanup_ctx.append(ctx)
    app.router.add_route("*", "/{tail:.*}", rt.forwarder.handle)
    return app
