"""Server-sent events for a run, written as the run advances: one `resp.write` per event."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .state import STREAM_END_EVENTS, Run, Sim

DONE = b"event: done\ndata: [DONE]\n\n"


async def stream_run(request: web.Request, sim: Sim, run: Run, cursor: int) -> web.StreamResponse:
    """Relay the run's events from `cursor` until it completes, fails, ... or requires action.

    `sim.watch(run)` has been called by the operation that started this stream; this releases it.
    """
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    )
    delay = sim.config.stream_event_delay_s
    try:
        await response.prepare(request)
        ended = False
        while not ended:
            sim.advance(run)
            # Anything that wakes us from here on (a cancel, a submit) came from another request.
            run.wake.clear()
            log = run.log or []
            while cursor < len(log) and not ended:
                event, frame = log[cursor]
                cursor += 1
                await response.write(frame)
                ended = event in STREAM_END_EVENTS
                if delay and not ended:
                    await asyncio.sleep(delay)
            if ended or run.next_at is None:
                break
            try:
                async with asyncio.timeout(max(0.0, run.next_at - sim.clock())):
                    await run.wake.wait()
            except TimeoutError:
                pass
        await response.write(DONE)
        await response.write_eof()
    except ConnectionResetError:
        # The client went away; like the real service, the run itself carries on.
        pass
    finally:
        sim.unwatch(run)
    return response
