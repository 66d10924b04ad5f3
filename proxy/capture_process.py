"""The capture process of `--capture-mode process`: one DuckDB file, one spool, the run metrics and spans.

    python -m runtap.proxy.capture_process DIR READY_FD     (started by capture_supervisor.py)

Settings come from RUNTAP_* variables. It listens on DIR/ingest.sock for relay processes' frames
(wire.py) and hands each item to the CaptureWriter, exactly as the in-process mode's submit does; and
on DIR/control.sock (HTTP) for /metrics (its families: capture health, run metrics), GET /status
and the /reports routes, which the relay's admin listener serves on. SIGTERM: stop accepting, read every
connected relay to its end (the relays have closed by then), then drain the writer and exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections import deque
from collections.abc import Callable
from typing import Final, cast

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ..analytics.ingest import wire
from ..analytics.ingest.health import Kind
from ..analytics.ingest.records import Exchange, RequestRecord
from ..analytics.ingest.writer import CaptureWriter
from ..analytics.lake import export_periodically
from ..analytics.prices import load_price_book
from ..settings.config import ConfigError, Settings, resolve
from . import sched_hint
from .addons.metrics import Metrics
from .addons.tracing import Tracing, provider_from_env
from .admin_reports import add_report_routes
from .app import CAPTURE_FLUSH_INTERVAL_S, build_writer
from .capture_supervisor import control_path, ingest_path
from .commands.serve import loop_factory
from .exposition import RENDERER
from .memory_trim import IdleTrimmer, trimming
from .memory_trim import idle_trimmer as make_trimmer
from .scrape_split import RELAY_FAMILIES, Families, decode_share

log = logging.getLogger("runtap.capture")

# Bound on reading the relays to their end at shutdown; they have closed their sockets by then.
DRAIN_TIMEOUT_S: Final = 30.0
ORPHAN_CHECK_S: Final = 1.0
CONFIRM_TIMEOUT_S: Final = 30.0
TORN_FRAME: Final = "channel_torn_frame"  # runtap_capture_dropped_total: a relay ended mid-frame


class _Conn(asyncio.Protocol):
    def __init__(self, ingest: Ingest) -> None:
        self._ingest = ingest
        self._reader = wire.FrameReader()
        self.transport: asyncio.WriteTransport | None = None
        self.received = 0  # items this relay sent, all frames so far
        # (writer submissions after a frame, self.received after it): confirmed once the writer is past it
        self.frames: deque[tuple[int, int]] = deque()
        self.acked = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.WriteTransport, transport)  # a stream socket's (uvloop's is no subclass)
        self._ingest.open.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._reader.feed(data)
        except wire.FrameError as exc:
            self._ingest.bad_frame(exc)
            if self.transport is not None:
                self.transport.close()
            return
        writer = self._ingest.writer
        submit, remember = writer.submit, self._ingest.remember_request
        last = None
        for items in frames:
            for item in items:
                ex = getattr(item, "exchange", None)  # a RequestRecord has none
                if ex is not last and ex is not None and ex.span_context is not None:
                    remember(ex)
                    last = ex
                elif type(item) is RequestRecord and item.span is not None:
                    self._ingest.request_span(item)
                submit(item)
            self.received += len(items)
            self._ingest.received += len(items)
            self.frames.append((writer.submitted, self.received))

    def confirm(self, processed: int) -> None:
        """Tell the relay how many of its items are now written, spooled or counted (wire.ACK)."""
        acked = self.acked
        frames = self.frames
        while frames and frames[0][0] <= processed:
            acked = frames.popleft()[1]
        if acked != self.acked and self.transport is not None and not self.transport.is_closing():
            self.acked = acked
            self.transport.write(wire.ACK.pack(acked))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._reader.pending:
            # The relay ended mid-frame (it crashed: a closing relay sends whole frames). Its own count
            # of what it sent died with it: count the items of the torn frame here.
            self._ingest.torn_frame(wire.frame_entries(self._reader.partial()))
        self._ingest.open.discard(self)
        if not self._ingest.open:
            self._ingest.idle.set()


class Ingest:
    def __init__(self, writer: CaptureWriter, remember_request: Callable[[Exchange], None],
                 finish_relayed: Callable[[RequestRecord], None] | None = None) -> None:
        self.writer = writer
        self.remember_request = remember_request  # the request span behind an exchange, for run span links
        self._finish_relayed = finish_relayed  # a relay's request span: built and exported here
        self.open: set[_Conn] = set()
        self.flushed = 0  # writer.submitted as of the last flush that returned: all of it is written or spooled
        self.received = 0  # items read from every relay, for the shutdown log (the relays log what they sent)
        self.idle = asyncio.Event()
        self.idle.set()

    def protocol(self) -> _Conn:
        self.idle.clear()
        return _Conn(self)

    async def confirm_forever(self) -> None:
        """Every interval: a flush marker behind what was submitted so far; once the writer has written
        the batch it falls in, every connection's items up to there are confirmed. The marker does not
        close that batch early: out of step with the writer's own interval, it made every other batch a
        small one, each a DuckDB transaction of fixed cost."""
        while True:
            await asyncio.sleep(CAPTURE_FLUSH_INTERVAL_S)
            await self.confirm_once()

    async def confirm_once(self) -> None:
        writer = self.writer
        submitted = writer.submitted
        if not await asyncio.to_thread(writer.flush, CONFIRM_TIMEOUT_S, close_batch=False):
            return
        self.flushed = submitted
        if writer.held():
            # Items held in memory (the spool file cannot be written) die with this process: until they
            # are written or spooled, confirm nothing, so a crash now counts them in the relays.
            return
        for conn in list(self.open):
            conn.confirm(submitted)

    def request_span(self, record: RequestRecord) -> None:
        """Export the request span a relay recorded (relay_tracing.py); the record itself is stored
        without it. A span that cannot be built costs its request nothing else."""
        try:
            if self._finish_relayed is not None:
                self._finish_relayed(record)
        except Exception as exc:
            self.writer.health.error("tracing", type(exc).__name__)  # the span is lost, not the record
        record.span = None

    def torn_frame(self, entries: int) -> None:
        # at least one item: a relay sends no empty frame; a chunk run is one entry of several chunks
        self.writer.health.add(Kind.DROPPED, TORN_FRAME, max(entries, 1))

    def bad_frame(self, exc: Exception) -> None:
        log.error("capture channel: %s; closing that relay's connection", exc)
        self.writer.health.failed("channel", "FrameError")


_WRITER = web.AppKey("writer", CaptureWriter)
_METRICS = web.AppKey("metrics", Metrics)
_INGEST = web.AppKey("ingest", Ingest)
_TRIMMER = web.AppKey("trimmer", IdleTrimmer)


def idle_trimmer(settings: Settings, ingest: Ingest) -> IdleTrimmer | None:
    """The capture process's own idle trim (the relays trim theirs): once the writer has taken items,
    written all of them (a confirm flush returned) and then counted nothing for a whole --idle-trim
    period. It frees the most of the tree: decoded snapshots, batches and staging buffers live here."""
    writer = ingest.writer

    def busy() -> bool:
        return writer.depth() > 0 or ingest.flushed < writer.submitted

    return make_trimmer(settings.idle_trim, lambda: sum(writer.stats.values()), busy)


async def _metrics(request: web.Request) -> web.Response:
    """The capture process's families only (scrape_split.py); a POST carries the relay's share of the
    capture-health families, which is added in (a GET shows the share last reported)."""
    writer, metrics = request.app[_WRITER], request.app[_METRICS]
    relay_depth = 0
    if request.can_read_body:
        try:
            share = decode_share(await request.read())
        except ValueError as exc:
            return web.Response(status=400, text=str(exc))
        metrics.capture_health_collector.relayed = share.health
        relay_depth = share.queue_depth
    metrics.capture_queue_depth.set(writer.depth() + relay_depth)
    body = RENDERER.render(Families(metrics.registry, RELAY_FAMILIES, keep=False))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _status(request: web.Request) -> web.Response:
    writer = request.app[_WRITER]
    trimmer = request.app.get(_TRIMMER)
    return web.json_response({"store_open": writer.healthy(), "capture_queue_depth": writer.depth(),
                              "relays": len(request.app[_INGEST].open), "pid": os.getpid(),
                              "idle_trims": trimmer.trims if trimmer is not None else None})


def control_app(settings: Settings, writer: CaptureWriter, metrics: Metrics, ingest: Ingest) -> web.Application:
    app = web.Application()
    app[_WRITER], app[_METRICS], app[_INGEST] = writer, metrics, ingest
    app.router.add_get("/metrics", _metrics)
    app.router.add_post("/metrics", _metrics)
    app.router.add_get("/status", _status)
    if settings.admin_reports:
        add_report_routes(app, writer.reader, prices=load_price_book(settings.prices or None))
    return app


async def _orphaned(stop: asyncio.Event) -> None:
    """Stop when the relay that started this process is gone (killed without a chance to stop us)."""
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(ORPHAN_CHECK_S)
    log.error("the runtap process that started this capture process is gone; flushing and exiting")
    stop.set()


async def serve(settings: Settings, directory: str, ready_fd: int) -> None:
    metrics = Metrics(label_assistant=settings.metrics_label_assistant)
    tracing = Tracing(provider_from_env(), upstream=settings.upstream, owned=True)
    writer = build_writer(settings, metrics, tracing)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    writer.start()
    ingest = Ingest(writer, tracing.remember_request, tracing.finish_relayed)
    for path in (ingest_path(directory), control_path(directory)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by a capture process that crashed
    server = await loop.create_unix_server(ingest.protocol, ingest_path(directory), backlog=256)
    control = control_app(settings, writer, metrics, ingest)
    trimmer = idle_trimmer(settings, ingest)
    background = contextlib.AsyncExitStack()
    if trimmer is not None:
        control[_TRIMMER] = trimmer
    await background.enter_async_context(trimming(trimmer, settings.idle_trim))
    runner = web.AppRunner(control, access_log=None)
    await runner.setup()
    await web.UnixSite(runner, control_path(directory)).start()
    exporter = None
    if settings.export_dir:
        exporter = loop.create_task(export_periodically(
            writer.reader, settings.export_dir, instance=settings.instance_id,
            interval_s=settings.export_interval, on_result=lambda r: log.info("periodic export: %s", r)))
    watchdog = loop.create_task(_orphaned(stop))
    confirmer = loop.create_task(ingest.confirm_forever())
    with contextlib.suppress(OSError):  # after a restart nobody waits on the pipe: the relays reconnect
        os.write(ready_fd, b"1")
    os.close(ready_fd)
    try:
        await stop.wait()
        server.close()
        try:
            await asyncio.wait_for(ingest.idle.wait(), DRAIN_TIMEOUT_S)
        except TimeoutError:
            log.error("%d relay connection(s) still open after %.0fs; flushing without them", len(ingest.open),
                      DRAIN_TIMEOUT_S)
    finally:
        watchdog.cancel()
        confirmer.cancel()
        await background.aclose()
        if exporter is not None:
            exporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await exporter
        await runner.cleanup()
        await asyncio.to_thread(writer.stop)
        tracing.shutdown()
    log.info("capture flushed: %s", ", ".join(f"{k}={v}" for k, v in sorted(
        {**writer.stats, "relayed": ingest.received}.items())))


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    directory, ready_fd = argv[0], int(argv[1])
    try:
        settings = resolve({})
    except ConfigError as exc:
        print(f"runtap capture: error: {exc}", file=sys.stderr)
        return 2
    logging.getLogger().setLevel(settings.log_level)
    sched_hint.request_slice(0)  # the default slice, not the one of the relay that may have started it
    with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
        try:
            runner.run(serve(settings, directory, ready_fd))
        except ConfigError as exc:  # e.g. OTEL_* values the SDK refuses: before anything started
            print(f"runtap capture: error: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
