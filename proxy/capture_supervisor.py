"""Starts the capture process (capture_process.py), restarts it when it dies, stops it last.

Lives in the relay process that owns capture (worker 0 with --workers). The capture process gets the
resolved settings as RUNTAP_* variables and a private directory (mode 0700) for its two Unix sockets:
`ingest.sock` (relays send frames, capture_channel.py) and `control.sock` (HTTP: /metrics, /status,
/reports). A crash is logged, counted (runtap_capture_restarts_total) and followed by a new process;
meanwhile the relays keep their items in their channel buffers, bounded, and drop and count beyond.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..settings.config import SETTINGS, Settings

log = logging.getLogger("runtap.capture")

# Set for --workers' processes: the directory of the capture process they feed (not a user setting).
CAPTURE_DIR_ENV: Final = "RUNTAP_CAPTURE_DIR"
READY_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 60.0
_BACKOFF_S: Final = (0.0, 0.5, 1.0, 2.0, 5.0)


def ingest_path(directory: str) -> str:
    return os.path.join(directory, "ingest.sock")


def control_path(directory: str) -> str:
    return os.path.join(directory, "control.sock")


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting as its RUNTAP_* variable, so the capture process resolves exactly these."""
    env = {}
    for s in SETTINGS:
        value = getattr(settings, s.name)
        env[s.env] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return env


class _Collector:
    def __init__(self, supervisor: CaptureSupervisor) -> None:
        self._sup = supervisor

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("runtap_capture_restarts", "Capture process exits that were not asked for "
                                  "(each followed by a restart).", value=self._sup.restarts)
        yield GaugeMetricFamily("runtap_capture_process_up", "1 while the capture process is running.",
                                value=1 if self._sup.alive() else 0)


class CaptureSupervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.directory = tempfile.mkdtemp(prefix="runtap-capture-")  # 0700: only this user connects
        self.restarts = 0
        # Called (blocking) before the capture process is told to stop: waits for --workers' relays.
        self.wait_before_stop: Callable[[], object] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def collector(self) -> _Collector:
        return _Collector(self)

    def alive(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return None if proc is None else proc.pid

    def start(self) -> None:
        """Start the capture process and wait until it listens; raises if it cannot start (and then
        removes its directory: a cleanup context whose start raised is never exited)."""
        try:
            proc, ready = self._spawn()
            try:
                if not _wait_ready(ready, READY_TIMEOUT_S):
                    proc.kill()
                    proc.wait()
                    raise RuntimeError(f"capture process exited with {proc.returncode} before it was ready "
                                       "(its log is above)")
            finally:
                os.close(ready)
        except BaseException:
            self.discard()
            raise
        self._watcher = threading.Thread(target=self._watch, name="runtap-capture-supervisor", daemon=True)
        self._watcher.start()

    def stop(self) -> int:
        """After the relays are done: SIGTERM the capture process, which drains into DuckDB, and wait."""
        if self.wait_before_stop is not None:
            self.wait_before_stop()
        with self._lock:
            self._stopping.set()
            proc = self._proc
        rc = 0
        if proc is not None:
            if proc.poll() is None:
                log.info("stopping the capture process pid %d", proc.pid)
                proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.error("capture process pid %d still running after %.0fs; killing it", proc.pid,
                          STOP_TIMEOUT_S)
                proc.kill()
                rc = proc.wait()
        if self._watcher is not None:
            self._watcher.join(5.0)
        shutil.rmtree(self.directory, ignore_errors=True)
        return rc

    def discard(self) -> None:
        """Remove the directory of a supervisor whose process never ran (a start that failed)."""
        if self._proc is None or self._proc.poll() is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _spawn(self) -> tuple[subprocess.Popen[bytes], int]:
        # A session of its own: a terminal's Ctrl-C reaches the relays, which drain, and then stop() stops
        # this process; were it to get the SIGINT too it would exit first and look like a crash.
        ready_r, ready_w = os.pipe()
        env = {**os.environ, **settings_env(self.settings)}
        env.pop(CAPTURE_DIR_ENV, None)
        try:
            proc = subprocess.Popen(  # noqa: S603 - this interpreter, a fixed module, our own arguments
                [sys.executable, "-m", "runtap.proxy.capture_process", self.directory, str(ready_w)],
                env=env, pass_fds=(ready_w,), start_new_session=True)
        except BaseException:
            os.close(ready_r)
            raise
        finally:
            os.close(ready_w)
        with self._lock:
            self._proc = proc
            if self._stopping.is_set():  # stop() ran while this one started: it gets the same treatment
                proc.send_signal(signal.SIGTERM)
        return proc, ready_r

    def _watch(self) -> None:
        attempt = 0
        while True:
            proc = self._proc
            if proc is None:
                return
            started = time.monotonic()
            rc = proc.wait()
            if self._stopping.is_set():
                return
            self.restarts += 1
            if time.monotonic() - started > 30.0:
                attempt = 0  # it ran for a while: a new crash, not a crash loop
            delay = _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]
            attempt += 1
            log.error("capture process pid %d exited with %s; restarting it%s", proc.pid, rc,
                      f" in {delay:.1f}s" if delay else "")
            if self._stopping.wait(delay):
                return
            try:
                _proc, ready = self._spawn()
            except OSError as exc:
                log.error("cannot restart the capture process: %s", exc)
                continue
            os.close(ready)  # the relays reconnect by themselves once it listens


def _wait_ready(fd: int, timeout: float) -> bool:
    """The capture process writes one byte to the pipe once both sockets listen; EOF means it died."""
    readable, _, _ = select.select([fd], [], [], timeout)
    return bool(readable) and os.read(fd, 1) == b"1"
