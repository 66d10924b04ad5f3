"""Settings of the simulated Assistants upstream."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SimConfig:
    # "/v1" like api.openai.com, or "/openai" for Azure-style base URLs (their ?api-version= is ignored).
    prefix: str = "/v1"
    queued_s: float = 0.02
    step_s: float = 0.03
    # Sent as `openai-poll-after-ms`; the SDK's *_and_poll helpers sleep this long between polls.
    poll_after_ms: int = 10
    stream_event_delay_s: float = 0.0
    # api.openai.com gzips JSON bodies for clients that accept it; a proxy must relay them untouched.
    gzip_min_bytes: int = 256
    # Responses streams are written in random slices of up to this many bytes (events split anywhere,
    # as networks deliver them); 0 writes one event per write, as the Runs streams do (benchmarks).
    sse_max_chunk: int = 97

    def __post_init__(self) -> None:
        if self.prefix and (not self.prefix.startswith("/") or self.prefix.endswith("/")):
            raise ValueError(
                f"SimConfig.prefix must start with '/' and not end with one, got {self.prefix!r}"
            )
        for name in ("queued_s", "step_s", "stream_event_delay_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"SimConfig.{name} must be >= 0")
        if self.poll_after_ms < 0 or self.gzip_min_bytes < 0 or self.sse_max_chunk < 0:
            raise ValueError("SimConfig.poll_after_ms, gzip_min_bytes and sse_max_chunk must be >= 0")
