"""Slow clients: a connection that does not complete a request within --client-timeout is closed.

aiohttp's server arms its keep-alive timer when a connection opens and again after each response,
and closes the connection when it fires while the handler is still waiting for a request: a client
that sends nothing, or trickles a request's headers a byte at a time (slowloris), or leaves a
keep-alive connection idle. runtap sets that timer to --client-timeout and counts the connections it
closes (`runtap_client_timeouts_total{phase="headers"}`). The body is the forwarder's job: each read
of it waits at most --client-timeout (phase="body", answered 408).

aiohttp has no public hook for "the timer closed this connection", so the handler class is swapped
for a subclass that wraps that one method (aiohttp is pinned exactly in pyproject.toml; a test
drives a real trickling client, so an aiohttp upgrade that changes it fails there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

OnTimeout = Callable[[str], None]


class _Handler(RequestHandler):
    _runtap_on_timeout: OnTimeout | None = None

    def _process_keepalive(self) -> None:
        was_open = not self._force_close
        super()._process_keepalive()
        if was_open and self._force_close and self._runtap_on_timeout is not None:
            self._runtap_on_timeout("headers")


class _Server(Server):
    _runtap_on_timeout: OnTimeout | None = None

    def __call__(self) -> RequestHandler:
        handler = _Handler(self, loop=self._loop, **self._kwargs)
        handler._runtap_on_timeout = self._runtap_on_timeout
        return handler


class AppRunner(web.AppRunner):
    """web.AppRunner whose connections count the closes of the request-wait timer (keepalive_timeout)."""

    def __init__(self, app: web.Application, *, on_timeout: OnTimeout, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._on_timeout = on_timeout

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _Server
        assert isinstance(server, _Server)  # noqa: S101 - narrows the type; the line above made it so
        server._runtap_on_timeout = self._on_timeout
        return server
