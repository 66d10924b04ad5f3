"""`python -m runtap.demo.sim --host 127.0.0.1 --port 0 --prefix /v1`: serve the simulator until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from .app import start_sim
from .config import SimConfig


def _parse(argv: list[str] | None) -> argparse.Namespace:
    defaults = SimConfig()
    parser = argparse.ArgumentParser(
        prog="python -m runtap.demo.sim", description="Simulated OpenAI Assistants and Responses APIs."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument("--prefix", default=defaults.prefix, help='path prefix, e.g. "/v1" or "/openai"')
    parser.add_argument("--queued-s", type=float, default=defaults.queued_s)
    parser.add_argument("--step-s", type=float, default=defaults.step_s)
    parser.add_argument("--poll-after-ms", type=int, default=defaults.poll_after_ms)
    parser.add_argument("--stream-event-delay-s", type=float, default=defaults.stream_event_delay_s)
    parser.add_argument("--gzip-min-bytes", type=int, default=defaults.gzip_min_bytes)
    parser.add_argument("--sse-max-chunk", type=int, default=defaults.sse_max_chunk,
                        help="Responses streams: largest write in bytes (0: one event per write)")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    config = SimConfig(
        prefix=args.prefix,
        queued_s=args.queued_s,
        step_s=args.step_s,
        poll_after_ms=args.poll_after_ms,
        stream_event_delay_s=args.stream_event_delay_s,
        gzip_min_bytes=args.gzip_min_bytes,
        sse_max_chunk=args.sse_max_chunk,
    )
    runner, base_url = await start_sim(config, host=args.host, port=args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    origin = base_url[: len(base_url) - len(config.prefix)] if config.prefix else base_url
    print(f"listening on {origin}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        asyncio.run(_serve(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
