"""A response's events as server-sent events, written as they fall due, in uneven chunks.

The real service's bytes reach a client in whatever pieces TCP and its proxies make: an event, a line,
even a UTF-8 character can straddle two reads. Each write here is a random-length slice of the
pending bytes (seeded by the response id, so a run is reproducible), so every client and tap in front
of the simulator meets split events as a matter of course.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from aiohttp import web

from .responses_model import SimResponse, sse_frame


def _slices(data: bytes, rng: random.Random, max_chunk: int) -> list[bytes]:
    out: list[bytes] = []
    i = 0
    while i < len(data):
        n = rng.randint(1, max_chunk)
        out.append(data[i : i + n])
        i += n
    return out


def _writes(resp: SimResponse, start: int, stop: int, rng: random.Random, max_chunk: int) -> list[bytes]:
    frames = [sse_frame(resp.timeline[i]) for i in range(start, stop)]
    return _slices(b"".join(frames), rng, max_chunk) if max_chunk else frames


async def stream_response(
    request: web.Request,
    resp: SimResponse,
    clock: Callable[[], float],
    starting_after: int = -1,
    *,
    max_chunk: int = 97,
) -> web.StreamResponse:
    """Write events with sequence_number > `starting_after` until the response ends or is cancelled."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    )
    rng = random.Random(f"{resp.obj['id']}:{starting_after}")  # noqa: S311 - chunk sizes, not secrets
    cursor = max(0, starting_after + 1)
    resp.readers += 1
    try:
        await response.prepare(request)
        while True:
            resp.wake.clear()
            due = resp.due(clock())
            if cursor < due:
                pieces = _writes(resp, cursor, due, rng, max_chunk)
                cursor = due
                for piece in pieces:
                    await response.write(piece)
            if cursor >= len(resp.timeline):
                break
            # A cancel (another request) wakes this stream; otherwise sleep until the next event.
            try:
                async with asyncio.timeout(max(0.0, resp.times[cursor] - clock())):
                    await resp.wake.wait()
            except TimeoutError:
                pass
        await response.write_eof()
    except ConnectionResetError:
        # The client went away; the response carries on (and a background one can be resumed).
        pass
    finally:
        resp.readers -= 1
        resp.compact(resp.due(clock()))
    return response
