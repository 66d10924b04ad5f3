from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from runtap.demo.sim import SimConfig, start_sim
from runtap.proxy.app import build_runtime
from runtap.proxy.serve import Running, start
from runtap.settings.config import HostPort, Settings, settings_for

from tests import source_folders

source_folders.install()

# Fails any test whose code blocks the event loop (see tests/loopguard.py).
pytest_plugins = ["tests.conftest_loopguard"]


@dataclasses.dataclass
class Stack:
    """A simulated upstream with runtap in front of it, on real sockets."""

    sim_url: str  # e.g. http://127.0.0.1:PORT/v1
    running: Running
    settings: Settings
    registry: CollectorRegistry

    @property
    def proxy_url(self) -> str:
        return self.running.proxy_url

    @property
    def admin_url(self) -> str:
        return self.running.admin_url

    def flush(self) -> None:
        assert self.running.runtime.writer is not None
        assert self.running.runtime.writer.flush(timeout=30)


def stack_settings(tmp_path: Path, upstream: str, **overrides: Any) -> Settings:
    return settings_for(upstream=upstream, listen=HostPort("127.0.0.1", 0), admin=HostPort("127.0.0.1", 0),
                        db=str(tmp_path / "runtap.duckdb"), grace_period=5.0, **overrides)


async def start_stack(tmp_path: Path, *, upstream: str | None = None, sim_config: SimConfig | None = None,
                      **overrides: Any) -> tuple[Stack, Any]:
    sim_runner, sim_url = await start_sim(sim_config or SimConfig())
    settings = stack_settings(tmp_path, upstream or sim_url.removesuffix("/v1"), **overrides)
    registry = CollectorRegistry()
    running = await start(settings, runtime=build_runtime(settings, registry=registry))
    return Stack(sim_url, running, settings, registry), sim_runner


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    s, sim_runner = await start_stack(tmp_path)
    try:
        yield s
    finally:
        await s.running.stop()
        await sim_runner.cleanup()


@pytest.fixture
async def sim_upstream() -> AsyncIterator[str]:
    """The demo simulator on a free port; its base URL without /v1 (what --upstream takes)."""
    from tests.fault_helpers import sim  # here: fault_helpers imports this module

    async with sim() as url:
        yield url
