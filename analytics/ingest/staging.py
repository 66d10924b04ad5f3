"""Staging files: where a batch's rows wait, as JSON, for DuckDB's ``read_json`` to load them.

One file per table, rewritten for every batch. Rewriting by ``open(path, "wb")`` truncates the file
to zero first, which on ext4 frees its blocks only to allocate them again: 70-300 us of CPU and up to
1 ms of wall time a file (10 KB-1 MB, measured on the capture host), several files a batch.
Overwriting in place from offset 0 and then cutting the file to the new length reuses the blocks:
3-70 us. DuckDB opens the file by its path for each statement, so it reads the new content and length.
"""

from __future__ import annotations

import os
import shutil
import tempfile


def stage_dir(db_path: str) -> str:
    """Where batches are staged: beside the database file, so a crash leaves no orphan elsewhere
    (the next start reuses it) and the batch (prompts with --store-prompts) stays where the data
    goes anyway. Only one process can hold the database, so only one uses the directory."""
    if db_path in ("", ":memory:") or db_path.startswith(":memory:"):
        return tempfile.mkdtemp(prefix="runtap-stage-")
    stage = db_path + ".stage"
    os.makedirs(stage, mode=0o700, exist_ok=True)
    return stage


class StagingFile:
    """One table's staging file, kept open for the store's life."""

    __slots__ = ("path", "_fd", "_size")

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._size = 0

    def write(self, data: bytes) -> None:
        """Make ``data`` the file's whole content."""
        fd = self._fd
        if fd is None:
            # O_TRUNC once: a file a crashed run left behind may be longer than the first batch
            fd = self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            self._size = 0
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done:], done)
        if len(view) < self._size:
            os.ftruncate(fd, len(view))
        self._size = len(view)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class Staging:
    """The staging directory of one store and its files, by table name."""

    def __init__(self, db_path: str) -> None:
        self.directory: str | None = stage_dir(db_path)
        self._files: dict[str, StagingFile] = {}

    def path(self, table: str) -> str:
        if self.directory is None:
            raise ValueError("staging is closed")
        return os.path.join(self.directory, f"{table}.json")

    def write(self, table: str, data: bytes) -> None:
        staged = self._files.get(table)
        if staged is None:
            staged = self._files[table] = StagingFile(self.path(table))
        staged.write(data)

    def close(self) -> None:
        """Close the files and remove the directory. Idempotent."""
        for staged in self._files.values():
            staged.close()
        self._files.clear()
        directory, self.directory = self.directory, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
