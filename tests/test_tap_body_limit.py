"""How much of a request body the relay copies is the addons' to say (Tap.request_body_limit), not the
relay's: a real Forwarder on 127.0.0.1, an addon that keeps request bodies up to its own limit, and an
upstream that must still get every byte."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

from aiohttp import web
from runtap.analytics.ingest.records import Exchange, RequestBody
from runtap.analytics.ingest.writer import CaptureWriter
from runtap.proxy.addons.capture import Capture
from runtap.proxy.forward import Forwarder
from runtap.proxy.tap import WHOLE_BODY, Flow, Tap

from tests.conftest import stack_settings
from tests.fault_helpers import parse_response, raw_exchange, request_bytes
from tests.faulty_upstream import FaultyUpstream, respond


class Keeper:
    def __init__(self, limit: int | None) -> None:
        if limit is not None:
            self.request_body_limit = limit
        self.bodies: list[tuple[bytes, bool]] = []

    def keeps_request_body(self, flow: Flow) -> bool:
        return True

    def request_body(self, flow: Flow, body: bytes, truncated: bool) -> None:
        self.bodies.append((body, truncated))


class Items:
    def __init__(self) -> None:
        self.items: list[object] = []

    def submit(self, item: object) -> bool:
        self.items.append(item)
        return True


def test_the_tap_gives_the_largest_limit_of_the_addons_that_keep_bodies() -> None:
    assert Tap([object()]).request_body_limit is None
    assert Tap([Keeper(10), Keeper(300), object()]).request_body_limit == 300
    assert Tap([Keeper(10), Keeper(None)]).request_body_limit == WHOLE_BODY
    capture = Capture(cast(CaptureWriter, Items()), store_prompts=True, capture_max_body=1234, on_skipped=print)
    assert Tap([capture]).request_body_limit == 1234


def test_capture_keeps_no_more_than_its_own_limit_when_another_addon_keeps_more() -> None:
    items = Items()
    capture = Capture(cast(CaptureWriter, items), store_prompts=True, capture_max_body=4, on_skipped=print)
    exchange = Exchange(id="x1", method="POST", path="/v1/threads/t/runs", operation="runs.create",
                        api_version="v2", key_fingerprint="fp", started_at=1.0)
    flow = Flow(exchange, "runs.create", 0.0)
    capture.request_body(flow, b"0123456789", False)
    capture.request_body(flow, b"0123", False)
    assert [(i.body, i.truncated) for i in items.items if isinstance(i, RequestBody)] == [
        (b"0123", True), (b"0123", False)]


@asynccontextmanager
async def relay(tmp_path: Path, upstream: str, tap: Tap) -> AsyncIterator[int]:
    forwarder = Forwarder(stack_settings(tmp_path, upstream), tap=tap)
    await forwarder.open()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forwarder.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()
        await forwarder.close()


async def test_the_relay_copies_up_to_the_tap_limit_and_forwards_every_byte(tmp_path: Path) -> None:
    keeper = Keeper(10)
    small, large = b'{"a": 1}', b'{"pad": "' + b"x" * 200_000 + b'"}'
    async with FaultyUpstream(respond(b"{}")) as up, relay(tmp_path, up.url, Tap([keeper])) as port:
        for body in (small, large):
            wire = await raw_exchange(port, request_bytes("POST", "/v1/threads/t/runs", body=body, headers={
                "Content-Type": "application/json"}))
            assert parse_response(wire).status == 200
    assert [r.body for r in up.requests] == [small, large]
    # Read at once (no longer than the limit): whole. Streamed: the whole chunks that fit, marked cut.
    (kept_small, cut_small), (kept_large, cut_large) = keeper.bodies
    assert (kept_small, cut_small) == (small, False)
    assert cut_large and len(kept_large) <= 10 and large.startswith(kept_large)
