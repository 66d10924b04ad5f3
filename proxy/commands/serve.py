"""`runtap serve`: the sidecar."""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import importlib
import logging
import sys
from collections.abc import Callable
from typing import Any

from ...analytics.prices import PriceBook
from ...settings.config import PROCESS, ConfigError, Settings, add_arguments, resolve
from .. import sched_hint, workers
from ..admin import configured_prices
from ..app import build_runtime
from ..serve import Running, serve_forever
from .serve_paths import check_paths

HELP = "run the proxy (and its admin listener) in front of an upstream"

DESCRIPTION = """\
Forward every request to --upstream unchanged and capture every run, run step and response
(Assistants Runs and the Responses API) into DuckDB, with metrics, traces and reports.

  app --HTTP--> runtap :8080 (--listen) --> upstream (--upstream)
                runtap :9464 (--admin): /healthz /readyz /metrics /reports/NAME

SIGTERM/SIGINT stop accepting, let in-flight requests and streams finish (--grace-period), flush the
capture queue and close the DuckDB file.

Traces (OpenTelemetry) are configured by the standard OTEL_* variables, not by flags: on with
OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), OTLP over HTTP/protobuf;
off without an endpoint, with OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true. Also read:
OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_EXPORTER_OTLP_HEADERS,
OTEL_BSP_* (see docs/traces.md). A value tracing would misread stops start-up naming the variable.
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(run=run)


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop for `uvloop`, and for `auto` when the `fast` extra is installed; None: asyncio's."""
    if choice == "asyncio":
        return None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("--event-loop uvloop / RUNTAP_EVENT_LOOP=uvloop: uvloop is not installed "
                              "(pip install 'runtap[fast]')") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


# Allocations between young collections. CPython's 700 means a collection every request or two on
# the proxy path; each one also walks what survived, and full collections ran ~1/s under load.
GC_GEN0_THRESHOLD = 20_000
SWITCH_INTERVAL_S = 0.001


def tune_runtime(_: Running | None = None, *, short_slice: bool = False) -> None:
    """Measured under `bench.soak`-like load: the cyclic GC took ~16% of wall time and paused the
    event loop up to ~150 ms. Objects alive once serving (modules, the app, DuckDB and OTel setup)
    live for the whole process: freezing them keeps full collections off them."""
    gc.collect()
    gc.freeze()
    _gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)
    # The capture writer and the span exporter are Python threads: a loop thread waiting for the GIL
    # gets it after the switch interval. 5 ms (CPython's default) let c=1 event-loop lag reach
    # 25-50 ms under bench load; 1 ms kept it at 5-10 ms with no measurable CPU cost (bench --quick,
    # create and sse12, runs interleaved).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    if short_slice:
        # Process mode only: the loop thread relays an event as soon as it wakes instead of waiting out
        # the capture process's slice on a shared core (c=1 p99 4.6 -> 4.2 ms, bench, 2 pairs). In
        # process the writer is a thread of this interpreter: preempting it while it holds the GIL only
        # makes the loop wait for the GIL later (sse12 c=1 p99 8-13 -> 23-24 ms, 2 pairs).
        sched_hint.request_slice(sched_hint.SLICE_NS)


def check_prices(settings: Settings) -> PriceBook | None:
    """A bad --prices is a one-line start-up error in every capture mode: read it here, before a
    capture process (which also reads it) is started and could only exit. The book, for the in-process
    admin app's reports (read once); None when nothing here serves reports."""
    if not settings.admin_reports or (settings.capture_mode == PROCESS and not settings.prices):
        return None
    return configured_prices(settings)


def run(args: argparse.Namespace) -> int:
    raw = vars(args)
    index = workers.worker_index()
    settings = workers.for_worker(resolve(raw), index)
    prices = check_prices(settings)
    check_paths(settings)
    logging.getLogger().setLevel(settings.log_level)
    factory = loop_factory(settings.event_loop)
    logging.getLogger("runtap").debug("event loop: %s", "uvloop" if factory else "asyncio")
    runtime = build_runtime(settings, capture_dir=workers.capture_dir(index))
    runtime.prices = prices
    supervisor = runtime.supervisor
    children = workers.start_workers(settings, raw, supervisor) if index == 0 and settings.workers > 1 else []
    if supervisor is not None and children:
        # The capture process stops last: after every worker has handed over what it relayed.
        supervisor.wait_before_stop = lambda: workers.wait_workers(children, settings.grace_period + 30.0)
    signalled: set[int] = set()
    rc = 0
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            tune = functools.partial(tune_runtime, short_slice=settings.capture_mode == PROCESS)
            runner.run(serve_forever(settings, on_ready=tune, runtime=runtime,
                                     on_stop=lambda: workers.signal_workers(children, signalled)))
    except OSError as exc:
        logging.getLogger("runtap").error("cannot listen on --listen %s / --admin %s: %s", settings.listen,
                                          settings.admin, exc)
        rc = 1
    except RuntimeError as exc:  # the capture process could not start
        logging.getLogger("runtap").error("%s", exc)
        rc = 1
    finally:
        if children:
            workers.signal_workers(children, signalled)
            rc = workers.wait_workers(children, settings.grace_period + 30.0) or rc
        # After a clean shutdown this only reads the exit status again; after a failed start, cleans up.
        if supervisor is not None and supervisor.stop() != 0:
            rc = rc or 1  # the capture process did not drain cleanly: capture may be incomplete
    return rc
