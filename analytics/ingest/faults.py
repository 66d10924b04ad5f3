"""Capture failures and drops: counted in CaptureHealth, logged without flooding the log.

A failure is logged once per where, exception type and message (types only once many distinct messages
were seen); drops at the first one and then at most every DROP_LOG_S with the count since, so an
overload shows in the log without a line per request.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from .health import CaptureHealth, Kind

MAX_LOGGED: Final = 256
DROP_LOG_S: Final = 10.0


def cause(exc: BaseException) -> BaseException:
    # StoreError wraps the DuckDB or OS error that says what actually went wrong.
    return exc.__cause__ or exc


class Faults:
    def __init__(self, health: CaptureHealth, log: logging.Logger) -> None:
        self.health = health
        self._log = log
        self._logged: set[str] = set()
        # Written by the submitting thread for queue refusals, by the writer thread for the rest:
        # keyed by reason, so two threads never update one entry.
        self._drops_unlogged: dict[str, int] = {}
        self._drop_logged_at: dict[str, float] = {}

    def failed(self, where: str, exc: BaseException, *, stack: bool = False) -> None:
        self.health.failed(where, type(cause(exc)).__name__)
        self.log_once(where, exc, stack=stack)

    def rejected(self, where: str, n: int, exc: BaseException | None = None) -> None:
        """`n` items refused for what they hold, set aside in the spool's rejected file: not lost."""
        self.health.failed(where, "rejected", n)
        if exc is not None:
            self.log_once(where, exc)

    def dropped(self, reason: str, n: int = 1, *, log: bool = True) -> None:
        self.health.add(Kind.DROPPED, reason, n)
        if not log:
            return
        pending = self._drops_unlogged[reason] = self._drops_unlogged.get(reason, 0) + n
        now = time.monotonic()
        if now >= self._drop_logged_at.get(reason, 0.0) + DROP_LOG_S:
            self._drop_logged_at[reason] = now
            self._drops_unlogged[reason] = 0
            self._log.warning("capture dropped %d snapshot item(s): %s (runtap_capture_dropped_total counts them "
                              "all)", pending, reason)

    def log_once(self, where: str, exc: BaseException, *, stack: bool = False) -> None:
        key = f"{where}:{type(exc).__name__}"
        if len(self._logged) < MAX_LOGGED:
            key += f":{str(exc)[:200]}"  # distinct messages while there are few; types only after
        if key in self._logged:
            return
        self._logged.add(key)
        self._log.error("capture %s failed: %s: %s (logged once)", where, type(exc).__name__, exc, exc_info=stack)
