"""Applying capture effects one by one, each guarded.

Effects arrive batched, many runs and responses per call: one that cannot be counted or traced must
not cost the next object its metrics or its span (issue 12's rule, for every consumer of effects).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def apply_each(effects: Iterable[Any], apply: Callable[[Any], None], failed: Callable[[Any], None]) -> None:
    for e in effects:
        try:
            apply(e)
        except Exception:
            failed(e)
