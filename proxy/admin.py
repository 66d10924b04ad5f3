"""The admin listener: liveness, readiness and metrics, on its own port (loopback by default)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ..analytics.prices import load_price_book
from ..settings.config import ConfigError, Settings
from . import capture_admin
from .app import Runtime
from .capture_supervisor import control_path
from .exposition import RENDERER

if TYPE_CHECKING:
    from ..analytics.prices import PriceBook

ADMIN_RUNTIME = web.AppKey("admin_runtime", Runtime)
# The relay loop runs its lag probe 10 times a second; this long without one, it is stuck, not busy
# (under saturation the probe ran at most ~0.1 s late in the benchmarks).
LOOP_STALL_S = 10.0


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    # Liveness only: the relay's event loop runs. The admin listener has a loop of its own (a saturated
    # relay loop made probes queue behind proxied requests: /healthz p99 215 ms in the soak), so it asks
    # the relay loop's heartbeat instead of being answered by that loop. Capture trouble must not get a
    # healthy proxy restarted, so it shows in /readyz details and metrics instead.
    stalled = request.app[ADMIN_RUNTIME].heartbeat.stalled_for()
    if stalled > LOOP_STALL_S:
        return _json({"status": "stalled", "event_loop_stalled_s": round(stalled, 1)}, 503)
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    rt = request.app[ADMIN_RUNTIME]
    if rt.supervisor is not None:
        return await _readyz_process(rt)
    writer = rt.writer
    if writer is None and rt.channel is not None:  # a --workers worker feeding worker 0's capture process
        connected = rt.channel.connected
        return _json({"status": "ok" if connected else "degraded", "upstream": rt.settings.upstream,
                      "store": "capture process (worker 0)" if connected else "capture process unreachable",
                      "capture_queue_depth": rt.channel.depth(), "inflight": rt.forwarder.inflight},
                     200 if connected else 503)
    store_ok = writer is None or writer.healthy()
    body = {
        "status": "ok" if store_ok else "degraded",
        "upstream": rt.settings.upstream,
        "store": "disabled" if writer is None else ("open" if store_ok else "unavailable (spooling)"),
        "capture_queue_depth": 0 if writer is None else writer.depth(),
        "inflight": rt.forwarder.inflight,
    }
    return _json(body, 200 if store_ok else 503)


async def _readyz_process(rt: Runtime) -> web.Response:
    assert rt.supervisor is not None  # noqa: S101 - checked by the caller
    text = await capture_admin.fetch_text(control_path(rt.supervisor.directory), "/status")
    status = orjson.loads(text) if text is not None else {}
    store_ok = bool(status.get("store_open"))
    channel = rt.channel
    body = {
        "status": "ok" if store_ok else "degraded",
        "upstream": rt.settings.upstream,
        "store": "open" if store_ok else ("unavailable (spooling)" if status else "capture process restarting"),
        "capture_queue_depth": int(status.get("capture_queue_depth", 0)) + (channel.depth() if channel else 0),
        "capture_process": {"pid": rt.supervisor.pid, "restarts": rt.supervisor.restarts},
        "inflight": rt.forwarder.inflight,
    }
    return _json(body, 200 if store_ok else 503)


async def metrics(request: web.Request) -> web.Response:
    rt = request.app[ADMIN_RUNTIME]
    if rt.writer is not None:
        rt.metrics.capture_queue_depth.set(rt.writer.depth())
    elif rt.channel is not None:
        rt.metrics.capture_queue_depth.set(rt.channel.depth())
    if rt.supervisor is not None:
        depth = rt.channel.depth() if rt.channel is not None else 0
        body = await capture_admin.scrape(rt.metrics, depth, control_path(rt.supervisor.directory))
    else:
        body = RENDERER.render(rt.metrics.registry)  # generate_latest's bytes, series prefixes cached
    # Always the classic text format, even to a Prometheus that asks for OpenMetrics: there a counter's
    # metadata is named without `_total`, and dashboards, alerts and tests use the `_total` names.
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def configured_prices(settings: Settings) -> PriceBook:
    """The price book --prices names (the bundled one without it); a bad file is a ConfigError."""
    try:
        return load_price_book(settings.prices or None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"invalid --prices / RUNTAP_PRICES: {exc}") from None


def create_admin_app(runtime: Runtime) -> web.Application:
    app = web.Application()
    app[ADMIN_RUNTIME] = runtime
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    supervisor = runtime.supervisor
    if supervisor is not None and runtime.settings.admin_reports:
        async def reports(request: web.Request) -> web.Response:
            return await capture_admin.proxy_report(request, control_path(supervisor.directory))
        app.router.add_get("/reports", reports)
        app.router.add_get("/reports/{name}", reports)
    if runtime.writer is not None and runtime.settings.admin_reports:
        # Imported here: the reports need DuckDB, which a relay without its own writer never loads.
        from .admin_reports import add_report_routes

        prices = runtime.prices if runtime.prices is not None else configured_prices(runtime.settings)
        add_report_routes(app, runtime.writer.reader, prices=prices)
    return app
