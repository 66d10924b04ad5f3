"""The files and directories `runtap serve` writes, checked before anything starts.

The capture writer survives a database or spool it cannot open (it holds, spools and retries, for a
disk that fills or a volume that comes back); at start-up the same failure is a mistyped flag, and a
sidecar that serves on it captures nothing while it looks healthy. So: one line, exit 2.
"""

from __future__ import annotations

import os
import tempfile

from ...settings.config import ConfigError, Settings


def check_paths(settings: Settings) -> None:
    _check_file("--db / RUNTAP_DB", settings.db)
    _check_file("--spool / RUNTAP_SPOOL" if settings.spool else "--spool / RUNTAP_SPOOL (default: beside --db)",
                settings.spool_path)
    if settings.export_dir and "://" not in settings.export_dir:
        _check_dir("--export-dir / RUNTAP_EXPORT_DIR", settings.export_dir)
    if settings.export_dir:
        from ...analytics.lake import LakeError, check_instance
        try:
            check_instance(settings.instance_id)
        except LakeError as exc:
            raise ConfigError(f"invalid --instance / RUNTAP_INSTANCE: {exc}") from None


def _check_file(name: str, path: str) -> None:
    """A file runtap creates or appends to: not a directory, in a directory it may write."""
    if os.path.isdir(path):
        raise ConfigError(f"invalid {name}: {path!r} is a directory, not a file")
    if os.path.exists(path):
        try:
            with open(path, "r+b"):  # a real open: os.access answers yes to root on a read-only mount
                pass
        except OSError as exc:
            raise ConfigError(f"invalid {name}: cannot open {path!r} for writing: {exc.strerror}") from None
        return
    _check_dir(name, os.path.dirname(os.path.abspath(path)))


def _check_dir(name: str, path: str) -> None:
    """A directory runtap writes files in, or creates (owner.py, lake.py): its first existing
    ancestor is a directory this user may write in."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        what = "does not exist" if not os.path.exists(probe) else "is not a directory"
        raise ConfigError(f"invalid {name}: {probe!r} {what}")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise ConfigError(f"invalid {name}: cannot write in {probe!r}: {exc.strerror}") from None
