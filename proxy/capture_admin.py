"""The relay's admin listener in `--capture-mode process`: one scrape, one /readyz, one /reports.

/metrics: the relay's own families (request metrics, its loop's lag, the supervisor's restarts and up)
followed by the capture process's exposition (capture health, run metrics), fetched over its control
socket at scrape time and appended as bytes: each family is exported by one process only
(scrape_split.py), so the relay neither parses nor re-renders the capture process's text. The relay's
part of the capture-health families (its channel's drops and depth, its skips) travels with the
request and is added in by the capture process. Only the relay that owns the capture process does
this; --workers' other relays expose their own registry.

A capture process that does not answer within SCRAPE_TIMEOUT_S (frozen, swapped out, restarting)
costs a scrape that long, well inside Prometheus' default 10 s scrape timeout: the relay then answers
with its own registry and `runtap_capture_metrics_up 0` (a Metrics gauge, 1 otherwise, exported by the
relay only), so the scrape is never lost to it.
"""

from __future__ import annotations

import logging
from typing import Final

import aiohttp
from aiohttp import web

from .addons.metrics import Metrics
from .exposition import RENDERER
from .scrape_split import RELAY_FAMILIES, Families, encode_share

log = logging.getLogger("runtap.admin")

CONTROL_TIMEOUT_S: Final = 5.0
SCRAPE_TIMEOUT_S: Final = 2.0
REPORT_TIMEOUT_S: Final = 120.0


def _session(directory_socket: str, timeout: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=directory_socket),
                                 timeout=aiohttp.ClientTimeout(total=timeout))


async def _call(control_socket: str, path: str, *, data: bytes | None = None,
                timeout: float = CONTROL_TIMEOUT_S) -> bytes | None:
    """A control endpoint of the capture process (POST with `data`, else GET): its body, or None when
    it did not answer 200 within `timeout` (restarting, frozen, overloaded)."""
    try:
        async with _session(control_socket, timeout) as client, \
                client.request("GET" if data is None else "POST", f"http://capture{path}", data=data) as resp:
            return await resp.read() if resp.status == 200 else None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.debug("capture process %s unavailable: %s", path, exc)
        return None


async def fetch_text(control_socket: str, path: str) -> str | None:
    """GET a control endpoint of the capture process; None when it is not there (restarting)."""
    body = await _call(control_socket, path)
    return None if body is None else body.decode()


async def scrape(metrics: Metrics, queue_depth: int, control_socket: str,
                 timeout: float = SCRAPE_TIMEOUT_S) -> bytes:
    """One /metrics body: this relay's families, then the capture process's (which adds this relay's
    capture-health counts, sent along); this relay's whole registry while the capture process does
    not answer (restarting: runtap_capture_process_up says so; frozen or slow: only
    runtap_capture_metrics_up 0 does)."""
    share = encode_share(metrics.capture_health, queue_depth)
    remote = await _call(control_socket, "/metrics", data=share, timeout=timeout)
    # Set and rendered with no await between, so each of two concurrent scrapes shows its own answer.
    metrics.capture_metrics_up.set(0 if remote is None else 1)
    if remote is None:
        return RENDERER.render(metrics.registry)
    return RENDERER.render(Families(metrics.registry, RELAY_FAMILIES, keep=True)) + remote


async def proxy_report(request: web.Request, control_socket: str) -> web.Response:
    """/reports and /reports/NAME, answered by the capture process (it holds the DuckDB file)."""
    try:
        async with _session(control_socket, REPORT_TIMEOUT_S) as client, \
                client.get(f"http://capture{request.rel_url}") as resp:
            body = await resp.read()
            headers = {k: v for k, v in resp.headers.items()
                       if k.lower() in ("content-type", "x-runtap-columns", "x-runtap-totals")}
            return web.Response(body=body, status=resp.status, headers=headers)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return web.json_response({"error": {"message": f"capture process unavailable: {exc}",
                                            "type": "runtap_report_error", "code": "store_unavailable"}},
                                 status=503)
