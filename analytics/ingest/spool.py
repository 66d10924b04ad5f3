"""Append-only JSON-lines spool for batches the store could not take (disk full, file locked...).

One line per item, ``{"s": <Snapshot>}`` or ``{"r": <RequestRecord>}``: the merge does not care
how items were batched, and a line is the unit a crash can tear. ``"e": 1`` on a line: the item's
effects were never emitted (the store failed before its merge ran), so its replay emits them; the
merge's stored "already emitted" state keeps that once per object across repeated replays.
The file is bounded; what does not fit is dropped and counted, never blocks capture. Replay is
idempotent (merges ignore what they already hold, requests are inserted OR IGNORE), so a crash
between replay and truncation only replays again.

A line the store refuses while the store itself is healthy (the merge raised on odd data) would
fail every replay and hold back everything spooled after it, so replay moves it to
``<spool>.rejected.jsonl`` (same format: append it back to the spool to retry) and goes on.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import Any

import duckdb
import orjson

from .merge import Effect
from .records import RequestRecord, Snapshot
from .store import Store, StoreError

REPLAY_BATCH = 5_000
_SNAPSHOT_FIELDS = frozenset(f.name for f in fields(Snapshot))
_REQUEST_FIELDS = frozenset(f.name for f in fields(RequestRecord))
_EMIT = b',"e":1}'  # replaces a line's closing brace: see the module docstring
OnEffects = Callable[[list[Effect]], None]

log = logging.getLogger(__name__)


def _decode(line: bytes) -> Snapshot | RequestRecord:
    item = orjson.loads(line)
    if "s" in item:
        return Snapshot(**{k: v for k, v in item["s"].items() if k in _SNAPSHOT_FIELDS})
    return RequestRecord(**{k: v for k, v in item["r"].items() if k in _REQUEST_FIELDS})


def _store_failed(exc: Exception) -> bool:
    """True when the store, not the batch, is at fault: retrying the same lines later may work.

    StoreError wraps what went wrong; one without a cause is the store's own refusal (closed,
    read-only). DuckDB's DataError/IntegrityError are about the values written, any other DuckDB or
    OS error about the database (locked, invalidated, disk full). Anything else came out of the
    merge (a bug or data it cannot handle) and will fail the same way on every retry.
    """
    cause = exc.__cause__ if isinstance(exc, StoreError) else exc
    if cause is None:
        return True
    if isinstance(cause, duckdb.DataError | duckdb.IntegrityError):
        return False
    return isinstance(cause, duckdb.Error | OSError | MemoryError)


store_failed = _store_failed  # public name for the capture writer's own isolation (analytics/ingest/isolate.py)


def _plain(item: Snapshot | RequestRecord) -> dict[str, Any]:
    return {f.name: getattr(item, f.name) for f in fields(item)}


def rejected_line(item: Snapshot | RequestRecord, error: BaseException | str) -> bytes:
    """A line for the rejected file, in the spool's format (so it can be appended back to retry).

    The item may be what orjson cannot encode (nesting deeper than its 254 levels, which its parser
    accepts up to 1,024): the standard library's encoder goes deeper; past that, the line keeps what
    identifies the item and why it was refused."""
    tag = "s" if isinstance(item, Snapshot) else "r"
    try:
        return orjson.dumps({tag: item}) + b"\n"
    except TypeError:
        pass
    try:
        return json.dumps({tag: _plain(item)}, ensure_ascii=False, default=str).encode("utf-8", "replace") + b"\n"
    except (RecursionError, ValueError, TypeError):
        pass
    who = {"tag": tag, "id": item.obj.get("id") if isinstance(item, Snapshot) else item.id,
           "request_id": item.request_id if isinstance(item, Snapshot) else item.id, "error": str(error)[:500]}
    return orjson.dumps({"unencodable": who}, default=str) + b"\n"


class Spool:
    def __init__(self, path: str, *, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        self._path = path
        self._max_bytes = max_bytes
        self.skipped_lines = 0  # unreadable lines met by replay (a torn last line after a crash)
        self.rejected_lines = 0  # lines replay moved to rejected_path
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        self._size = 0
        self._torn_tail = False
        try:
            with open(path, "rb") as f:
                self._size = f.seek(0, os.SEEK_END)
                if self._size:
                    f.seek(-1, os.SEEK_END)
                    self._torn_tail = f.read(1) != b"\n"
        except FileNotFoundError:
            pass

    @property
    def path(self) -> str:
        return self._path

    @property
    def rejected_path(self) -> str:
        return self._path.removesuffix(".jsonl") + ".rejected.jsonl"

    @property
    def size(self) -> int:
        return self._size

    def pending(self) -> bool:
        return self._size > 0

    def append(self, snapshots: list[Snapshot], requests: list[RequestRecord], *, emit: bool = False) -> int:
        """Write the items and fsync once; return how many were dropped to respect max_bytes.

        Items are kept in order until the first that does not fit; it and the rest are dropped.
        ``emit``: their effects were never emitted; the replay emits them.
        """
        # a crash mid-line left a fragment: end it, so it stays one unreadable line of its own
        lines: list[bytes] = [b"\n"] if self._torn_tail else []
        budget = self._max_bytes - self._size - len(lines)
        total = len(snapshots) + len(requests)
        kept = 0
        refused: list[bytes] = []
        items: list[tuple[str, Snapshot | RequestRecord]] = [("s", s) for s in snapshots]
        items += [("r", r) for r in requests]
        for tag, item in items:
            try:
                line = orjson.dumps({tag: item})
                line = (line[:-1] + _EMIT if emit else line) + b"\n"
            except TypeError as exc:
                # One item orjson cannot encode must not cost the others their lines: it goes to the
                # rejected file (counted in rejected_lines), the rest are kept.
                refused.append(rejected_line(item, exc))
                continue
            if len(line) > budget:
                break
            lines.append(line)
            budget -= len(line)
            kept += 1
        if kept:
            data = b"".join(lines)
            created = self._size == 0 and not os.path.exists(self._path)
            self._write(data)
            if created:
                self._fsync_dir()
            self._size += len(data)
            self._torn_tail = False
        if refused:
            try:
                self._append_rejected(b"".join(refused))
            except OSError as exc:
                log.warning("spool %s: %d item(s) that cannot be encoded are lost: %s", self._path, len(refused), exc)
                return total - kept
            self.rejected_lines += len(refused)
            log.warning("spool %s: moved %d item(s) that cannot be encoded to %s", self._path, len(refused),
                        self.rejected_path)
        return total - kept - len(refused)

    def reject(self, items: list[tuple[Snapshot | RequestRecord, Exception]]) -> int:
        """Set aside items the store refused for what they hold (see analytics/ingest/isolate.py): appended
        to the rejected file, counted in rejected_lines. Raises OSError when the file cannot take them."""
        if not items:
            return 0
        self._append_rejected(b"".join(rejected_line(item, exc) for item, exc in items))
        self.rejected_lines += len(items)
        return len(items)

    def _write(self, data: bytes) -> None:
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            _write_all(fd, data)
        except OSError:
            # Disk full (ENOSPC, EFBIG) mid-batch: take the partial batch back out, so the file holds
            # whole lines only and the caller's count of dropped items is exact. A fragment left behind
            # would also swallow the next batch's first line.
            try:
                os.ftruncate(fd, self._size)
            except OSError:
                self._size = os.fstat(fd).st_size
                self._torn_tail = True
            raise
        finally:
            os.close(fd)

    def _read(self) -> Iterator[tuple[bytes, Snapshot | RequestRecord, bool]]:
        with open(self._path, "rb") as f:
            for line in f:
                if line.strip():
                    try:
                        yield line, _decode(line), line.rstrip().endswith(_EMIT)
                    except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError) as exc:
                        self.skipped_lines += 1
                        log.warning("spool %s: skipping an unreadable line (%s)", self._path, exc)

    def replay(self, store: Store, on_effects: OnEffects | None = None) -> int:
        """Apply every spooled item (``replay=True``, in batches), then empty the file.

        Lines marked ``"e"`` are applied in batches of their own that emit their effects: each
        committed batch's go to ``on_effects`` at once (a later failure keeps the file, and the
        next replay finds those changes stored and emits nothing for them again).

        Returns the number of items applied. If the store fails, its StoreError propagates and
        the file is kept whole for the next attempt. Items the store refuses for what they hold
        go to ``rejected_path`` (counted in ``rejected_lines``) once the rest is applied.
        """
        if not self.pending():
            return 0
        applied = 0
        rejected: list[bytes] = []
        errors: list[Exception] = []
        lines: list[bytes] = []
        items: list[Snapshot | RequestRecord] = []
        emitting = False
        for line, item, emit in self._read():
            if items and (len(items) >= REPLAY_BATCH or emit is not emitting):
                applied += self._apply(store, lines, items, rejected, errors, on_effects if emitting else None)
                lines, items = [], []
            emitting = emit
            lines.append(line)
            items.append(item)
        if items:
            applied += self._apply(store, lines, items, rejected, errors, on_effects if emitting else None)
        if rejected:
            # Before the truncation: a crash in between only rejects the same lines again.
            self._append_rejected(b"".join(rejected))
            self.rejected_lines += len(rejected)
            log.warning("spool %s: moved %d item(s) the store refused to %s; first error: %s",
                        self._path, len(rejected), self.rejected_path, errors[0])
        with open(self._path, "r+b") as f:
            f.truncate(0)
            os.fsync(f.fileno())
        self._size = 0
        self._torn_tail = False
        return applied

    def _apply(self, store: Store, lines: list[bytes], items: list[Snapshot | RequestRecord],
               rejected: list[bytes], errors: list[Exception], on_effects: OnEffects | None) -> int:
        """Apply ``items``; when the batch is refused for its data, halve it until the items that
        fail alone are found and rejected, so the good ones batched with them are kept. Halves go
        in order, left first, as the merge of one object's snapshots may depend on the earlier ones."""
        snaps = [i for i in items if isinstance(i, Snapshot)]
        reqs = [i for i in items if isinstance(i, RequestRecord)]
        try:
            effects = store.apply(snaps, reqs, replay=True, emit=on_effects is not None)
        except Exception as exc:
            if _store_failed(exc):
                raise
            if len(items) == 1:
                rejected.append(lines[0] if lines[0].endswith(b"\n") else lines[0] + b"\n")
                errors.append(exc)
                return 0
            mid = len(items) // 2
            return (self._apply(store, lines[:mid], items[:mid], rejected, errors, on_effects)
                    + self._apply(store, lines[mid:], items[mid:], rejected, errors, on_effects))
        if effects and on_effects is not None:
            on_effects(effects)
        return len(items)

    def _append_rejected(self, data: bytes) -> None:
        path = self.rejected_path
        created = not os.path.exists(path)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            start = os.fstat(fd).st_size
            try:
                _write_all(fd, data)
            except OSError:
                # whole lines only: the spool is kept and the next replay appends them again
                os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)
        if created:
            self._fsync_dir()

    def _fsync_dir(self) -> None:
        # the new file's directory entry must be durable too, or a crash can lose the whole file
        fd = os.open(os.path.dirname(os.path.abspath(self._path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (a signal, a nearly full disk): loop, then make it durable."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)
