"""Embedded use (`runtap.proxy.serve.start`) with --capture-mode process: a start that fails leaves no
capture directory behind. The supervisor makes it (mkdtemp) when the runtime is built; `runtap serve`
removes it in its own `finally`, an embedding program has no such step."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from runtap.proxy.app import build_runtime, close_unstarted
from runtap.proxy.serve import start
from runtap.settings.config import PROCESS, HostPort, Settings, settings_for


def settings(tmp_path: Path, **overrides: object) -> Settings:
    return settings_for(upstream="http://127.0.0.1:9", db=str(tmp_path / "c.duckdb"), capture_mode=PROCESS,
                        listen=HostPort("127.0.0.1", 0), admin=HostPort("127.0.0.1", 0), **overrides)


def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> Path:
    root = tmp_path / name
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_a_start_that_fails_before_any_context_removes_the_capture_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What serve.start does when building the apps fails (a bad setting) before any context started.
    root = temp_root(tmp_path, monkeypatch, "tmp")
    runtime = build_runtime(settings(tmp_path), registry=CollectorRegistry())
    assert runtime.supervisor is not None and Path(runtime.supervisor.directory).parent == root
    close_unstarted(runtime)
    assert list(root.iterdir()) == []


async def test_a_capture_process_that_cannot_start_leaves_no_capture_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A long TMPDIR: the capture process cannot bind its socket (AF_UNIX paths end at 107 bytes) and
    # exits before it is ready, so the supervisor's start fails inside its cleanup context.
    root = temp_root(tmp_path, monkeypatch, "t" * 100)
    with pytest.raises(RuntimeError, match="before it was ready"):
        await start(settings(tmp_path))
    assert list(root.iterdir()) == []
