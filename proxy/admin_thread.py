"""The admin listener on a thread and event loop of its own.

On the relay's loop, a probe or scrape waits behind every proxied request that is ready: under
saturation the soak measured /healthz p99 215 ms (worst 318 ms) with nothing in /healthz itself to
speed up. Its own loop still shares the GIL, but CPython hands the GIL over every switch interval
(1 ms under `runtap serve`), so an admin request waits for milliseconds, not for the relay's queue.
Everything the admin handlers read of the relay is thread-safe: plain attribute reads, prometheus
registries (locked), DuckDB read connections (each report in a thread), the capture process's
control socket (opened per request).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

from aiohttp import web


def runner_url(runner: web.AppRunner) -> str:
    """The URL a started runner listens on (its first address: the port the OS chose for port 0)."""
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}"


class AdminThread:
    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._app, self._host, self._port = app, host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    async def start(self) -> str:
        """Start listening; returns the URL, or raises what the listener's start-up raised."""
        ready: concurrent.futures.Future[str] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="runtap-admin", daemon=True)
        self._thread.start()
        try:
            self.url = await asyncio.wrap_future(ready)
        except BaseException:
            await asyncio.to_thread(self._thread.join)
            raise
        return self.url

    def _run(self, ready: concurrent.futures.Future[str]) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            try:
                url = loop.run_until_complete(self._setup())
            except BaseException as exc:
                ready.set_exception(exc)
                return
            ready.set_result(url)
            loop.run_forever()
            loop.run_until_complete(self._cleanup())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _setup(self) -> str:
        runner = self._runner = web.AppRunner(self._app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        return runner_url(runner)

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def stop(self) -> None:
        """Close the listener (answering what is in flight) and end the thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None or not thread.is_alive():
            return
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join)
