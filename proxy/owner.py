"""One runtap per spool: a second process on the same capture files stops at start-up.

Two writers appending to (and truncating) one spool file can lose lines, and the second one could
never open the database anyway. `claim_spool` takes an exclusive `flock` on `<spool>.lock` for the
life of the process; the kernel drops it when the process ends (even by SIGKILL), so a stale file
never blocks a restart. The lock file holds the owner's pid, for the error line only.

A database locked by something that is not a runtap (a DuckDB shell, a read-only report) holds no
spool lock: that keeps the documented behaviour, capture goes to the spool until the file is free.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from ..settings.config import ConfigError


class SpoolInUse(ConfigError):
    """Another live runtap owns this spool (and so, by default, this database)."""


class SpoolClaim:
    def __init__(self, fd: int, path: str) -> None:
        self._fd: int | None = fd
        self.path = path

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def lock_path(spool_path: str) -> str:
    return spool_path + ".lock"


def claim_spool(spool_path: str, *, db_path: str) -> SpoolClaim:
    path = lock_path(spool_path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise SpoolInUse(
            f"another runtap (pid {owner}) is capturing into {db_path} with the spool {spool_path}; two "
            "processes on one spool can lose data. Stop that one, or give this one its own --db and --spool"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return SpoolClaim(fd, path)
