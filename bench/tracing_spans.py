"""Tracing's cost per proxied request, in isolation: µs on the event loop (request span start,
traceparent injection, end) and µs in the export thread (OTLP encoding), medians of interleaved reps.

    .venv/bin/python -m bench.tracing_spans [--requests 4000] [--reps 5]

The provider is the one `runtap serve` builds (BatchSpanProcessor, batches of 2,048, runtap's OTLP
encoder); the exporter encodes and discards, so nothing is sent and the export thread's share is
measured by encoding what the loop produced.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import HttpVersion11
from multidict import CIMultiDict, CIMultiDictProxy
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from runtap.analytics.ingest.records import Exchange
from runtap.proxy.addons.otlp_encode import encode_request
from runtap.proxy.addons.tracing import Tracing


class _Request:
    """What tracing reads of an aiohttp request (a mocked request's Mock attributes would dominate)."""

    def __init__(self, method: str, path: str) -> None:
        self.method = method
        self.path = path
        self.headers = CIMultiDictProxy(CIMultiDict({"Host": "127.0.0.1:8080", "User-Agent": "OpenAI/Python 1.99"}))
        self.scheme = "http"
        self.version = HttpVersion11
        self.host = "127.0.0.1:8080"
        self.remote = "127.0.0.1"


class _Encode(SpanExporter):
    """Encodes each batch as runtap's OTLP exporter does, and discards it; times the encoding."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        t0 = time.perf_counter()
        encode_request(spans)
        self.seconds += time.perf_counter() - t0
        return SpanExportResult.SUCCESS


def _loop_side(tracing: Tracing, n: int) -> float:
    """µs per request of what the event loop pays: start, inject, end (runs.create, a new path each)."""
    requests = []
    for i in range(n):
        path = f"/v1/threads/thread_{i}/runs"
        req: Any = _Request("POST", path)
        ex = Exchange(id=f"{i:032x}", method="POST", path=path, operation="runs.create", api_version="v2",
                      key_fingerprint=None, started_at=0.0, api_provider="openai")
        requests.append((req, ex))
    t0 = time.perf_counter()
    for req, ex in requests:
        span = tracing.start_request(req, "runs.create", ex)
        tracing.inject(span, CIMultiDict())
        tracing.end_request(span, 200, None)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    try:  # the processor `runtap serve` uses; a tree before request_span.py used the SDK's
        from runtap.proxy.addons.request_span import DeferredBatchSpanProcessor as Processor
    except ImportError:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor as Processor
    loop_us, enc_us = [], []
    for _ in range(args.reps):
        exporter = _Encode()
        provider = TracerProvider(resource=Resource.create({"service.name": "runtap"}), shutdown_on_exit=False)
        # A queue that holds the whole rep: the export thread stays idle while the loop side is timed.
        provider.add_span_processor(Processor(exporter, max_queue_size=4 * args.requests,
                                              max_export_batch_size=2048, schedule_delay_millis=60_000))
        tracing = Tracing(provider, upstream="http://127.0.0.1:9", owned=True)
        loop_us.append(_loop_side(tracing, args.requests))
        provider.force_flush()
        enc_us.append(exporter.seconds / args.requests * 1e6)
        provider.shutdown()
    total = [a + b for a, b in zip(loop_us, enc_us, strict=True)]
    for label, values in (("loop side", loop_us), ("export thread", enc_us), ("total", total)):
        print(f"{label:13} µs/request: median {statistics.median(values):6.2f}  "
              f"({', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
