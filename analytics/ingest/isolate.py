"""One item the store refuses for what it holds must not cost the rest of its batch their rows.

A batch is applied in one transaction, so a single object the merge or the write cannot take (a run
whose metadata nests deeper than the JSON encoder goes, a value DuckDB refuses) fails the whole
batch. `apply_isolating` halves such a batch until the items that fail alone are found: those are set
aside (the caller writes them to the spool's rejected file), everything else is applied. Halves go in
order, left first, as the merge of one object's snapshots may depend on the earlier ones.

A failure of the store itself (locked, closed, disk full) is not the batch's fault: it stops the
bisection, and what was not applied yet is handed back as `pending` for the spool.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .merge import Effect
from .records import RequestRecord, Snapshot
from .spool import store_failed
from .store import StoreError

Item = Snapshot | RequestRecord
Apply = Callable[[list[Snapshot], list[RequestRecord]], list[Effect]]


@dataclass(slots=True)
class Isolated:
    effects: list[Effect] = field(default_factory=list)
    applied: list[Item] = field(default_factory=list)
    rejected: list[tuple[Item, Exception]] = field(default_factory=list)
    pending: list[Item] = field(default_factory=list)  # not applied: the store failed (see `error`)
    emitted: int = 0  # the first pending items whose effects are in `effects` (the store merged them)
    error: Exception | None = None


def split(items: Sequence[Item]) -> tuple[list[Snapshot], list[RequestRecord]]:
    snaps = [i for i in items if isinstance(i, Snapshot)]
    return snaps, [i for i in items if isinstance(i, RequestRecord)]


def data_fault(exc: BaseException) -> bool:
    """True when the batch's content, not the store, made the apply fail (retrying it would fail again)."""
    return isinstance(exc, Exception) and not store_failed(exc)


def apply_isolating(apply: Apply, items: list[Item]) -> Isolated:
    out = Isolated()
    stack = [items]
    while stack:
        segment = stack.pop()
        try:
            out.effects += apply(*split(segment))
        except Exception as exc:
            if not data_fault(exc):
                # The store failed while the batch was being bisected: the segment's effects were
                # computed before the write (StoreError.effects); the segments never tried are spooled,
                # and their replay emits theirs (writer.py).
                if isinstance(exc, StoreError) and exc.effects:
                    out.effects += exc.effects
                    out.emitted = len(segment)
                out.pending = segment + [item for rest in reversed(stack) for item in rest]
                out.error = exc
                return out
            if len(segment) == 1:
                out.rejected.append((segment[0], exc))
                continue
            mid = len(segment) // 2
            stack.append(segment[mid:])
            stack.append(segment[:mid])
        else:
            out.applied += segment
    return out
