"""Application factories: the proxy app and the admin app, sharing one Runtime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from prometheus_client import CollectorRegistry

from ..analytics.ingest.health import Kind
from ..settings.config import PROCESS, Settings
from . import looplag, memory_trim
from .addons.capture import Capture, Submitter
from .addons.metrics import Metrics
from .capture_channel import CaptureChannel
from .capture_supervisor import CaptureSupervisor, ingest_path
from .forward import Forwarder
from .tap import Tap
from .workers import worker_index

if TYPE_CHECKING:
    # The OTel SDK, the writer (DuckDB, the store, the merge) and the lake are imported where they are
    # built: in --capture-mode process the relay never loads them, only the capture process does.
    from ..analytics.ingest.merge import Effect
    from ..analytics.ingest.writer import CaptureWriter
    from ..analytics.prices import PriceBook
    from .addons.relay_tracing import RelayTracing
    from .addons.tracing import Tracing

log = logging.getLogger("runtap")


@dataclass
class Runtime:
    """Long-lived parts of one runtap process; opened and closed by the proxy app's cleanup_ctx."""

    settings: Settings
    metrics: Metrics
    tracing: Tracing | RelayTracing
    writer: CaptureWriter | None
    forwarder: Forwarder
    extras: dict[str, Any] = field(default_factory=dict)
    channel: CaptureChannel | None = None  # --capture-mode process: the relay's end of the channel
    supervisor: CaptureSupervisor | None = None  # ... and the capture process, when this relay owns it
    heartbeat: looplag.Heartbeat = field(default_factory=looplag.Heartbeat)  # the relay loop's, for /healthz
    prices: PriceBook | None = None  # read once at start-up (serve.check_prices); None: the admin app reads it


RUNTIME = web.AppKey("runtime", Runtime)
CleanupCtx = Callable[[web.Application], AsyncIterator[None]]
# How long the capture writer gathers items into one DuckDB transaction. Each batch has a fixed cost
# (staging files, read_json, commit): bench.ingest_store --shape distinct measured 71 us/snapshot at
# 400 per batch (0.2 s of a 2k req/s load) vs 54 us at 1,000. 0.5 s keeps capture lag well under 1 s.
CAPTURE_FLUSH_INTERVAL_S = 0.5


def build_writer(settings: Settings, metrics: Metrics, tracing: Tracing) -> CaptureWriter:
    """The capture writer and the effects that follow its commits (run metrics, run and step spans);
    in the relay process (`--capture-mode inprocess`) or in the capture process (`process`)."""
    from ..analytics.ingest.writer import CaptureWriter, WriterConfig, WriterHooks

    def on_effects(effects: list[Effect]) -> None:
        try:
            metrics.on_effects(effects)
        finally:  # one failing consumer must not starve the other
            tracing.on_effects(effects)

    config = WriterConfig(
        db_path=settings.db, spool_path=settings.spool_path, spool_max_bytes=settings.spool_max_bytes,
        spool_memory_bytes=settings.spool_memory_bytes, queue_size=settings.queue_size,
        queue_max_bytes=settings.queue_max_bytes,
        store_prompts=settings.store_prompts, db_memory_limit=settings.db_memory_limit,
        flush_interval_s=CAPTURE_FLUSH_INTERVAL_S)
    hooks = WriterHooks(on_effects=on_effects, on_sse_events=metrics.on_sse_events,
                        on_capture_lag=metrics.on_capture_lag)
    return CaptureWriter(config, hooks=hooks, health=metrics.capture_health)


def build_runtime(settings: Settings, *, registry: CollectorRegistry | None = None,
                  tracer_provider: Any | None = None, capture: bool = True,
                  capture_dir: str | None = None) -> Runtime:
    """`capture_dir`: with --capture-mode process, the directory of a capture process this relay feeds
    and does not own (a --workers worker); None: this relay starts and supervises its own."""
    metrics = Metrics(registry, label_assistant=settings.metrics_label_assistant)
    process = capture and settings.capture_mode == PROCESS
    tracing = build_tracing(settings, tracer_provider, relay_only=process)
    writer = None
    channel = None
    supervisor = None
    if process:
        if capture_dir is None:
            supervisor = CaptureSupervisor(settings)
            metrics.registry.register(supervisor.collector())
            capture_dir = supervisor.directory
        channel = CaptureChannel(ingest_path(capture_dir), max_items=settings.queue_size,
                                 max_bytes=settings.queue_max_bytes,
                                 on_dropped=lambda reason, n: metrics.capture_health.add(Kind.DROPPED, reason, n))
    elif capture:
        writer = build_writer(settings, metrics, cast("Tracing", tracing))  # a RelayTracing only with process
    sink = writer if channel is None else channel
    forwarder = Forwarder(settings, tap=build_tap(settings, metrics, tracing, sink))
    return Runtime(settings, metrics, tracing, writer, forwarder, channel=channel, supervisor=supervisor)


def build_tracing(settings: Settings, tracer_provider: Any | None, *, relay_only: bool) -> Tracing | RelayTracing:
    """The request tracing addon. `relay_only` (--capture-mode process): unless a provider is injected,
    the relay only decides and times spans and the capture process builds and exports them, so the
    relay imports no OTel SDK (relay_tracing.py)."""
    if relay_only and tracer_provider is None:
        from .addons import otel_check, otel_env
        from .addons.relay_tracing import RelayTracing
        otel_check.check_env()  # what the capture process's SDK will read: refused here, before it starts
        return RelayTracing(otel_env.sampler_from_env() if otel_env.exporter_names() else None)
    from .addons.tracing import Tracing, provider_from_env
    owned = tracer_provider is None
    if owned:
        tracer_provider = provider_from_env(worker=worker_index())
    return Tracing(tracer_provider, upstream=settings.upstream, owned=owned)


def build_tap(settings: Settings, metrics: Metrics, tracing: Tracing | RelayTracing, writer: Submitter | None) -> Tap:
    """The addons behind the relay, in the order their hooks run: metrics, tracing, capture."""
    addons: list[object] = [metrics]
    if tracing.enabled:
        addons.append(tracing)
    if writer is not None:
        addons.append(Capture(writer, store_prompts=settings.store_prompts,
                              capture_max_body=settings.capture_max_body, on_skipped=metrics.capture_skipped))
    return Tap(addons)


def _log_export(result: object) -> None:
    if isinstance(result, BaseException):
        log.warning("periodic export failed (rows stay in the DB for the next one): %s", result)
    else:
        log.info("periodic export: %s", result)


# One cleanup context per long-lived resource (aiohttp enters them in order and exits them in reverse,
# and only those that started): a failed start leaves nothing running.

def _tracing_ctx(runtime: Runtime) -> CleanupCtx:
    async def tracer_provider(_: web.Application) -> AsyncIterator[None]:
        try:
            yield
        finally:
            runtime.tracing.shutdown()
    return tracer_provider


def _writer_ctx(writer: CaptureWriter) -> CleanupCtx:
    async def writer_thread(_: web.Application) -> AsyncIterator[None]:
        writer.start()
        try:
            yield
        finally:
            # Blocking on purpose: by now the server has drained its streams (the forwarder's context
            # exits first), and the queue must reach the DB (or the spool) before the process exits.
            writer.stop()
    return writer_thread


def _forwarder_ctx(runtime: Runtime) -> CleanupCtx:
    async def forwarder_session(_: web.Application) -> AsyncIterator[None]:
        await runtime.forwarder.open()
        try:
            yield
        finally:
            await runtime.forwarder.close()
    return forwarder_session


def _exporter_ctx(runtime: Runtime, writer: CaptureWriter) -> CleanupCtx:
    async def periodic_export(_: web.Application) -> AsyncIterator[None]:
        from ..analytics.lake import export_periodically

        settings = runtime.settings
        exporter = asyncio.get_running_loop().create_task(export_periodically(
            writer.reader, settings.export_dir, instance=settings.instance_id,
            interval_s=settings.export_interval, on_result=_log_export))
        try:
            yield
        finally:
            exporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await exporter
    return periodic_export


def _loop_lag_ctx(runtime: Runtime) -> CleanupCtx:
    async def loop_lag_probe(_: web.Application) -> AsyncIterator[None]:
        observe, beat = runtime.metrics.loop_lag.observe, runtime.heartbeat.beat

        def probed(lag: float) -> None:
            beat()
            observe(lag)

        beat()  # armed from here: a loop blocked before the probe's first period is stalled too
        async with looplag.probing(probed):
            yield
    return loop_lag_probe


def _trim_ctx(runtime: Runtime) -> CleanupCtx:
    async def idle_trim(_: web.Application) -> AsyncIterator[None]:
        fw, writer = runtime.forwarder, runtime.writer

        # Quiet means the relay and, in process, the capture writer: the batches written after the
        # last request free the most, so the trim waits one period after the writer's last commit.
        def activity() -> int:
            return fw.started + (sum(writer.stats.values()) if writer is not None else 0)

        def busy() -> bool:
            return fw.inflight > 0 or (writer is not None and writer.depth() > 0)

        trimmer = memory_trim.idle_trimmer(runtime.settings.idle_trim, activity, busy)
        if trimmer is not None:
            runtime.extras["trimmer"] = trimmer
        async with memory_trim.trimming(trimmer, runtime.settings.idle_trim):
            yield
    return idle_trim


def _capture_process_ctx(supervisor: CaptureSupervisor, channel: CaptureChannel | None) -> CleanupCtx:
    async def capture_process(_: web.Application) -> AsyncIterator[None]:
        await asyncio.to_thread(supervisor.start)
        try:
            yield
        finally:
            # Last to close: every relay (this one's channel, and --workers' processes) has finished
            # handing items over, then the capture process drains its queue into DuckDB and exits.
            rc = await asyncio.to_thread(supervisor.stop)
            if rc != 0:
                # Its last batches died with it; the relay's channel had closed, so nothing counted
                # them: say so here (and `runtap serve` exits non-zero).
                log.error("the capture process exited with %s while draining into the database: up to %d "
                          "item(s) this relay handed it were never confirmed written and may be lost", rc,
                          channel.unconfirmed_at_close if channel is not None else 0)
    return capture_process


def _channel_ctx(channel: CaptureChannel) -> CleanupCtx:
    async def capture_channel(_: web.Application) -> AsyncIterator[None]:
        await channel.start()
        try:
            yield
        finally:
            await channel.close()
    return capture_channel


def cleanup_contexts(runtime: Runtime) -> list[CleanupCtx]:
    """The runtime's resources in start order; they close in reverse."""
    contexts = [_tracing_ctx(runtime)]
    if runtime.supervisor is not None:
        contexts.append(_capture_process_ctx(runtime.supervisor, runtime.channel))
    if runtime.channel is not None:
        contexts.append(_channel_ctx(runtime.channel))
    writer = runtime.writer
    if writer is not None:
        contexts.append(_writer_ctx(writer))
    contexts.append(_forwarder_ctx(runtime))
    if runtime.settings.export_dir and writer is not None:
        contexts.append(_exporter_ctx(runtime, writer))
    contexts.append(_loop_lag_ctx(runtime))
    contexts.append(_trim_ctx(runtime))
    return contexts


def close_unstarted(runtime: Runtime) -> None:
    """For a start that fails before any cleanup context ran: stop what building the runtime started,
    the tracer provider's export thread (the SDK starts it with the provider), and the capture
    supervisor's directory (no process started yet; `runtap serve` stops it after its workers)."""
    runtime.tracing.shutdown()
    if runtime.supervisor is not None:
        runtime.supervisor.discard()


def create_app(settings: Settings, *, registry: CollectorRegistry | None = None,
               tracer_provider: Any | None = None, runtime: Runtime | None = None) -> web.Application:
    rt = runtime or build_runtime(settings, registry=registry, tracer_provider=tracer_provider)
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[RUNTIME] = rt

    app.cleanup_ctx.extend(cleanup_contexts(rt))
    app.router.add_route("*", "/{tail:.*}", rt.forwarder.handle)
    return app
