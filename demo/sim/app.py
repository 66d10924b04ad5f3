"""The simulated upstream as an aiohttp application."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from . import responses_api, routes_azure, routes_objects, routes_runs
from .config import SimConfig
from .responses import SIM, add_openai_headers, sim_middleware
from .state import Sim


def create_sim_app(
    config: SimConfig | None = None, *, clock: Callable[[], float] = time.time
) -> web.Application:
    """`clock` gives the upstream's time (its timestamps); tests shift it against the observer's."""
    config = config or SimConfig()
    app = web.Application(middlewares=[sim_middleware, routes_azure.azure_middleware])
    app[SIM] = Sim(config, clock=clock)
    app.on_response_prepare.append(add_openai_headers)
    routes_runs.add_routes(app.router, config.prefix)
    routes_objects.add_routes(app.router, config.prefix)
    responses_api.add_routes(app, config, clock)
    # Azure AI Foundry project paths, whatever the prefix: an Azure SDK's endpoint is BASE/api/projects/P.
    routes_azure.add_routes(app.router)
    return app


async def start_sim(
    config: SimConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: Callable[[], float] = time.time,
) -> tuple[web.AppRunner, str]:
    """Serve the simulator on a real socket; returns the runner (call `cleanup()`) and the base URL."""
    config = config or SimConfig()
    # Short shutdown: the only long-lived requests are SSE streams, which end on their own within ~1 s.
    runner = web.AppRunner(create_sim_app(config, clock=clock), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    shown_host = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown_host}:{bound_port}{config.prefix}"
