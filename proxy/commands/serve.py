"""`runtap serve`: the sidecar."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from proxy.config import add_arguments, resolve
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


def run(args: argparse.Namespace) -> int:
    settings = resolve(vars(args))
    logging.getLogger().setLevel(settings.log_level)
    try:
        asyncio.run(serve_forever(settings))
    except OSError as exc:
        logging.getLogger("runtap").error("cannot listen: %s", exc)
        return 1
    return 0
