"""The relay's admin listener in `--capture-mode process`: one scrape, one /readyz, one /reports.

/metrics: the relay's own registry (request metrics; for capture, only what the relay itself dropped)
merged with the capture process's (capture health, run metrics), fetched over its control socket at
scrape time. A family both expose has its samples summed by labels: each process counts only its own
events, so a sum is the total and nothing is counted twice (the relay's run metrics stay at zero).
Only the relay that owns the capture process merges; --workers' other relays expose their own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any, Final

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

log = logging.getLogger("runtap.admin")

CONTROL_TIMEOUT_S: Final = 5.0
REPORT_TIMEOUT_S: Final = 120.0


class _Families:
    """What generate_latest needs: an object whose collect() yields the merged families."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def merge(local: Iterable[Metric], remote: Iterable[Metric]) -> _Families:
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], Sample]] = {}
    for source in (local, remote):
        for fam in source:
            into = merged.get(fam.name)
            if into is None:
                into = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                values[fam.name] = {}
            samples = values[fam.name]
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                prev = samples.get(key)
                if prev is None:
                    samples[key] = s
                elif s.name.endswith("_created"):
                    samples[key] = prev._replace(value=min(prev.value, s.value))
                else:
                    samples[key] = prev._replace(value=prev.value + s.value)
    for name, fam in merged.items():
        fam.samples = list(values[name].values())
    return _Families(list(merged.values()))


def _session(directory_socket: str, timeout: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=directory_socket),
                                 timeout=aiohttp.ClientTimeout(total=timeout))


async def fetch_text(control_socket: str, path: str) -> str | None:
    """GET a control endpoint of the capture process; None when it is not there (restarting)."""
    try:
        async with _session(control_socket, CONTROL_TIMEOUT_S) as client, \
                client.get(f"http://capture{path}") as resp:
            if resp.status != 200:
                return None
            return await resp.text()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.debug("capture process %s unavailable: %s", path, exc)
        return None


async def merged_registry(registry: CollectorRegistry, control_socket: str) -> Any:
    text = await fetch_text(control_socket, "/metrics")
    if text is None:
        return registry  # the capture process is restarting: runtap_capture_process_up says so
    return merge(registry.collect(), text_string_to_metric_families(text))


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
