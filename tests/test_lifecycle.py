"""Each long-lived resource is its own cleanup context: started in order, closed in reverse, and a
failed start leaves nothing running."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from runtap.proxy.app import build_runtime
from runtap.proxy.serve import start
from runtap.settings.config import ConfigError, HostPort, settings_for


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "runtap-capture-writer"]


async def test_a_resource_that_fails_to_start_leaves_the_ones_before_it_closed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(upstream="http://127.0.0.1:9", db=str(tmp_path / "c.duckdb"),
                            listen=HostPort("127.0.0.1", 0), admin=HostPort("127.0.0.1", 0))
    runtime = build_runtime(settings, registry=CollectorRegistry())
    before = writer_threads()

    async def broken_open() -> None:
        raise RuntimeError("no session for you")

    monkeypatch.setattr(runtime.forwarder, "open", broken_open)
    with pytest.raises(RuntimeError, match="no session for you"):
        await start(settings, runtime=runtime)
    assert runtime.writer is not None
    # the writer thread started before the forwarder; it was stopped (and flushed) on the way out
    assert writer_threads() == before
    assert not runtime.writer.healthy()


async def test_resources_close_in_reverse_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(upstream="http://127.0.0.1:9", db=str(tmp_path / "c.duckdb"),
                            listen=HostPort("127.0.0.1", 0), admin=HostPort("127.0.0.1", 0))
    runtime = build_runtime(settings, registry=CollectorRegistry())
    assert runtime.writer is not None
    order: list[str] = []
    close, stop = runtime.forwarder.close, runtime.writer.stop

    async def closing() -> None:
        order.append("forwarder")
        await close()

    def stopping(timeout: float = 30.0) -> None:
        order.append("writer")
        stop(timeout)

    monkeypatch.setattr(runtime.forwarder, "close", closing)
    monkeypatch.setattr(runtime.writer, "stop", stopping)
    running = await start(settings, runtime=runtime)
    await running.stop()
    # the forwarder (streams drained) closes before the writer flushes what they captured
    assert order == ["forwarder", "writer"]


async def test_a_start_that_fails_before_any_context_leaves_nothing_built_running(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a tracer provider starts its export thread when built, before its cleanup context; a bad
    # --prices fails while the admin app is built, before any context has started
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    settings = settings_for(upstream="http://127.0.0.1:9", db=str(tmp_path / "c.duckdb"),
                            listen=HostPort("127.0.0.1", 0), admin=HostPort("127.0.0.1", 0),
                            prices=str(tmp_path / "missing.csv"))
    before = set(threading.enumerate())
    with pytest.raises(ConfigError, match="--prices"):
        await start(settings)
    assert [t.name for t in threading.enumerate() if t not in before] == []


async def test_a_resource_that_fails_to_close_leaves_no_listener_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(upstream="http://127.0.0.1:9", db=str(tmp_path / "c.duckdb"),
                            listen=HostPort("127.0.0.1", 0), admin=HostPort("127.0.0.1", 0))
    runtime = build_runtime(settings, registry=CollectorRegistry())
    assert runtime.writer is not None
    stop = runtime.writer.stop

    def failing_stop(timeout: float = 30.0) -> None:
        stop(timeout)
        raise RuntimeError("flush failed")

    monkeypatch.setattr(runtime.writer, "stop", failing_stop)
    running = await start(settings, runtime=runtime)
    with pytest.raises(RuntimeError):
        await running.stop()
    # the proxy's cleanup raised; the admin listener was still closed
    host, port = running.admin_url.removeprefix("http://").rsplit(":", 1)
    try:
        _, conn = await asyncio.open_connection(host, int(port))
    except ConnectionRefusedError:
        return
    conn.close()
    await conn.wait_closed()
    pytest.fail(f"the admin listener {running.admin_url} is still open")
