"""`--workers N`: N proxy processes on one port.

The kernel spreads new connections over the processes bound with SO_REUSEPORT. The parent is worker
0; it starts the others with the same settings (as RUNTAP_* variables) plus WORKER_ENV, and passes
SIGTERM/SIGINT on to them. Each worker has an admin listener (admin port + i).

With --capture-mode inprocess each worker also owns a DuckDB file (one writer per file is DuckDB's
rule), a spool and an export instance id; the Parquet lake is partitioned by instance, so it holds
every worker's rows side by side. With --capture-mode process worker 0 owns one capture process
(capture_supervisor.py) that every worker feeds (CAPTURE_DIR_ENV): one database, one spool, one lake
instance, /reports and run metrics on worker 0's admin listener.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from typing import Final

from ..settings.config import PROCESS, SETTINGS, ConfigError, HostPort, Settings
from .capture_supervisor import CAPTURE_DIR_ENV, CaptureSupervisor

log = logging.getLogger("runtap.workers")

# Set by the parent for the processes it starts; not a user setting.
WORKER_ENV: Final = "RUNTAP_WORKER_INDEX"


def suffixed(path: str, index: int) -> str:
    """runtap.duckdb -> runtap-1.duckdb; worker 0 keeps the configured name."""
    if index == 0 or not path:
        return path
    root, ext = os.path.splitext(path)
    return f"{root}-{index}{ext}"


def worker_index(environ: Mapping[str, str] | None = None) -> int:
    raw = (os.environ if environ is None else environ).get(WORKER_ENV, "0")
    if not raw.isdigit():
        raise ConfigError(f"invalid {WORKER_ENV}={raw!r}: set by runtap for its worker processes")
    return int(raw)


def for_worker(settings: Settings, index: int) -> Settings:
    if settings.workers > 1 and settings.listen.port == 0:
        raise ConfigError("--workers > 1 needs a fixed --listen port (the workers share it)")
    if index == 0:
        return settings
    admin = settings.admin
    if settings.capture_mode == PROCESS:  # one capture process, one database, for every worker
        return dataclasses.replace(settings, admin=HostPort(admin.host, admin.port + index if admin.port else 0),
                                   instance=f"{settings.instance_id}-{index}")
    return dataclasses.replace(
        settings, db=suffixed(settings.db, index), spool=suffixed(settings.spool, index),
        admin=HostPort(admin.host, admin.port + index if admin.port else 0),
        instance=f"{settings.instance_id}-{index}")


def capture_dir(index: int, environ: Mapping[str, str] | None = None) -> str | None:
    """The capture process a worker > 0 feeds (--capture-mode process); None for worker 0, its owner."""
    return (os.environ if environ is None else environ).get(CAPTURE_DIR_ENV) if index > 0 else None


def start_workers(settings: Settings, raw: Mapping[str, str | None],
                  supervisor: CaptureSupervisor | None = None) -> list[subprocess.Popen[bytes]]:
    """Workers 1..N-1, configured like this process: flags passed on as their RUNTAP_* variables."""
    env = dict(os.environ)
    if supervisor is not None:
        env[CAPTURE_DIR_ENV] = supervisor.directory
    for s in SETTINGS:
        value = raw.get(s.name)
        if value is not None:
            env[s.env] = value
    procs = []
    for index in range(1, settings.workers):
        procs.append(subprocess.Popen([sys.executable, "-m", "runtap.proxy", "serve"],
                                      env={**env, WORKER_ENV: str(index)}))
    return procs


def signal_workers(procs: list[subprocess.Popen[bytes]], signalled: set[int]) -> None:
    """SIGTERM each worker once: a second one could land after its loop removed the handler, and
    kill it in the middle of its final flush."""
    for proc in procs:
        if proc.pid not in signalled and proc.poll() is None:
            signalled.add(proc.pid)
            proc.send_signal(signal.SIGTERM)


def wait_workers(procs: list[subprocess.Popen[bytes]], timeout: float) -> int:
    """Wait for the workers to drain and exit; the first non-zero exit code, else 0."""
    rc = 0
    for proc in procs:
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("worker pid %d still running after %.0fs; killing it", proc.pid, timeout)
            proc.kill()
            code = proc.wait()
        rc = rc or code
    return rc
