"""The one tap the relay calls: a flow's request, response headers, each chunk, end, error and done.

Addons (capture, metrics, tracing) implement any of the hooks; the relay knows none of them. Like
mitmproxy's addons, each addon keeps its per-flow state on the flow. A hook runs on the event loop
after the relay has done its own work for that step (relay first, tap second), and must not block.

Hooks, all optional, in the order the relay calls them:
  request(flow, request)                     the request arrived (before any check of its size)
  upstream_request(flow, headers)            it is about to go upstream with these headers (may add)
  keeps_request_body(flow) -> bool           whether any addon wants a copy of the request body
  request_body(flow, body, truncated)        the request body (or its first request_body_limit bytes)
An addon with keeps_request_body may declare `request_body_limit` (bytes, its own option): the tap
gives the relay the largest one, and the relay copies no more than that.
  response_headers(flow)                     status and headers are known (flow.status, flow.streamed)
  chunk(flow, chunk)                         a response chunk, after it was written to the client
  end(flow)                                  the response ended cleanly
  error(flow, reason)                        the exchange failed (upstream error or client gone)
  done(flow)                                 always last, with the flow's timings and sizes final
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final

from aiohttp import web
from multidict import CIMultiDict

from ..analytics.ingest.records import Exchange

log = logging.getLogger("runtap.tap")

HOOKS: Final = ("request", "upstream_request", "request_body", "response_headers", "chunk", "end", "error", "done")
# error(flow, reason) for a client that went away; every reason but these two names an upstream failure.
CLIENT_DISCONNECTED: Final = "client_disconnected"
# error(flow, reason) for a client that stopped sending its request body (--client-timeout).
CLIENT_TIMEOUT: Final = "client_timeout"
# The request_body_limit of an addon that keeps request bodies and declares none: all of it.
WHOLE_BODY: Final = sys.maxsize


class Flow:
    """One proxied exchange as the relay sees it, plus a slot per addon for its own state."""

    __slots__ = ("exchange", "op_label", "started", "status", "streamed", "ttfb", "upstream_wait", "duration",
                 "bytes_in", "bytes_out", "upstream_request_id", "error", "span", "capture")

    def __init__(self, exchange: Exchange, op_label: str, started: float) -> None:
        self.exchange = exchange
        self.op_label = op_label  # the operation, or routes.OTHER: a bounded metric label
        self.started = started  # time.perf_counter() at arrival
        self.status: int | None = None  # the answer's status (None: no answer was sent)
        self.streamed = False  # the upstream answered with text/event-stream
        self.ttfb: float | None = None  # seconds from sending upstream to its response head
        self.upstream_wait = 0.0  # seconds spent waiting on the upstream
        self.duration = 0.0  # seconds from arrival to done
        self.bytes_in = 0
        self.bytes_out = 0
        self.upstream_request_id: str | None = None
        self.error: str | None = None  # why the exchange failed, as stored in requests.error
        self.span: Any = None  # tracing's state
        self.capture: Any = None  # capture's state


class _Failures:
    """Per hook, how often an addon failed in it. The traceback is logged only the 1st, 2nd, 4th,
    8th... time: a bug in a per-chunk hook must not write a traceback per chunk."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, name: str) -> None:
        n = self.counts[name] = self.counts.get(name, 0) + 1
        if n & (n - 1) == 0:
            log.exception("addon hook %s failed (%d times so far)", name, n)


def _fan_out(name: str, hooks: Sequence[Callable[..., None]], _failed: _Failures) -> Callable[..., None]:
    if not hooks:
        return _noop
    if len(hooks) == 1:
        # Guarded even alone: an addon's bug must never reach the relay (a 500 or a cut stream). The
        # try costs nothing when nothing raises; the extra call is the price of that promise.
        only = hooks[0]

        def call_one(*args: Any) -> None:
            try:
                only(*args)
            except Exception:
                _failed(name)

        return call_one

    def call_all(*args: Any) -> None:
        for hook in hooks:
            try:
                hook(*args)
            except Exception:  # one addon's bug must not cost another its hook, or the client its answer
                _failed(name)

    return call_all


def _wants_body(wanted: Sequence[Callable[[Flow], bool]], _failed: _Failures) -> Callable[[Flow], bool]:
    def keeps(flow: Flow) -> bool:
        for wants in wanted:
            try:
                if wants(flow):
                    return True
            except Exception:  # an addon that cannot decide gets no copy; the relay goes on
                _failed("keeps_request_body")
        return False

    return keeps


def _noop(*_args: Any) -> None:
    return None


class Tap:
    """The addons behind the relay, composed once: each hook calls only the addons that define it."""

    request: Callable[[Flow, web.Request], None]
    upstream_request: Callable[[Flow, CIMultiDict[str]], None]
    request_body: Callable[[Flow, bytes, bool], None]
    response_headers: Callable[[Flow], None]
    chunk: Callable[[Flow, bytes], None]
    end: Callable[[Flow], None]
    error: Callable[[Flow, str], None]
    done: Callable[[Flow], None]

    def __init__(self, addons: Sequence[object]) -> None:
        self.addons = tuple(addons)
        self.failures = _Failures()
        for name in HOOKS:
            setattr(self, name, _fan_out(name, [getattr(a, name) for a in self.addons if hasattr(a, name)],
                                         self.failures))
        keepers = [a for a in self.addons if hasattr(a, "keeps_request_body")]
        self.keeps_request_body: Callable[[Flow], bool] = _wants_body([a.keeps_request_body for a in keepers],
                                                                         self.failures)
        # The most of a request body any addon keeps; None when none keeps any.
        self.request_body_limit: int | None = max(
            (int(getattr(a, "request_body_limit", WHOLE_BODY)) for a in keepers), default=None)
        self.sees_chunks = any(hasattr(a, "chunk") for a in self.addons)
