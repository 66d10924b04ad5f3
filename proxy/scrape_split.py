"""`--capture-mode process`: which process exports which metric family, so that one /metrics scrape is
the relay's exposition followed by the capture process's, joined as bytes, never parsed by the relay.

Each family is exported by exactly one process. The relay: what it measures itself (requests, latency,
upstream errors, client timeouts, its event loop's lag), what its supervisor knows (restarts, up) and
whether the capture process answered this scrape (runtap_capture_metrics_up).
The capture process: everything else (capture health, capture lag, run, response and SSE-event
metrics). Both build the same Metrics, so the union is the same set of families as in-process mode.

The capture-health families count events in both processes: the relay drops items its channel cannot
take (`channel_full`, `capture_unconfirmed`), skips bodies before they reach the channel
(`body_too_large`...), and holds items in its channel (`runtap_capture_queue_depth`). The relay sends
those counts with the scrape request (a few numbers, JSON) and the capture process adds them to its own
before it renders, so each of those families stays one family with the total, and the summing happens
off the relay's GIL.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from ..analytics.ingest.health import CaptureHealth, Event, Kind

# Family names as prometheus-client reports them (a counter's without `_total`).
RELAY_FAMILIES: Final = frozenset({
    "runtap_requests", "runtap_request_duration_seconds", "runtap_upstream_ttfb_seconds",
    "runtap_proxy_overhead_seconds", "runtap_upstream_errors", "runtap_client_timeouts",
    "runtap_event_loop_lag_seconds", "runtap_capture_restarts", "runtap_capture_process_up",
    "runtap_capture_metrics_up",
})


class Families:
    """A registry's families whose name is in `names` (keep=True) or is not (keep=False): what
    generate_latest needs, an object with collect()."""

    def __init__(self, registry: CollectorRegistry, names: frozenset[str], *, keep: bool) -> None:
        self._registry, self._names, self._keep = registry, names, keep

    def collect(self) -> Iterator[Metric]:
        names, keep = self._names, self._keep
        return (fam for fam in self._registry.collect() if (fam.name in names) is keep)


@dataclass(frozen=True, slots=True)
class RelayShare:
    """The relay's part of the capture-health families at the moment of a scrape."""

    queue_depth: int = 0
    health: Mapping[Event, int] = field(default_factory=dict)


def encode_share(health: CaptureHealth, queue_depth: int) -> bytes:
    events = [[ev.kind.value, ev.label, ev.detail, n] for ev, n in health.events().items()]
    return orjson.dumps({"queue_depth": queue_depth, "health": events})


def decode_share(body: bytes) -> RelayShare:
    """The body encode_share made; ValueError for anything else."""
    try:
        data = orjson.loads(body)
        depth = data["queue_depth"]
        health: dict[Event, int] = {}
        for kind, label, detail, n in data["health"]:
            if not (isinstance(label, str) and (detail is None or isinstance(detail, str))
                    and type(n) is int and n >= 0):
                raise ValueError(f"bad health entry {[kind, label, detail, n]!r}")
            ev = Event(Kind(kind), label, detail)
            health[ev] = health.get(ev, 0) + n
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a relay share: {exc}") from None
    if type(depth) is not int or depth < 0:
        raise ValueError(f"not a relay share: queue_depth {depth!r}")
    return RelayShare(depth, health)
