"""`runtap serve`: the sidecar."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
from collections.abc import Callable
from typing import Any

from proxy.config import ConfigError, add_arguments, resolve
from proxy.serve import serve_forever

HELP = "run the proxy (and its admin listener) in front of an upstream"

DESCRIPTION = """\
Forward every request to --upstream unchanged and capture Runs API traffic.

  app --HTTP--> runtap :8080 (--listen) --> upstream (--upstream)
                runtap :9464 (--admin): /healthz /readyz /metrics /reports/NAME

SIGTERM/SIGINT stop accepting, let in-flight requests and streams finish (--grace-period), flush the
capture queue and close the DuckDB file.
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


def run(args: argparse.Namespace) -> int:
    settings = resolve(vars(args))
    logging.getLogger().setLevel(settings.log_level)
    factory = loop_factory(settings.event_loop)
    logging.getLogger("runtap").debug("event loop: %s", "uvloop" if factory else "asyncio")
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve_forever(settings))
    except OSError as exc:
        logging.getLogger("runtap").error("cannot listen: %s", exc)
        return 1
    return 0
