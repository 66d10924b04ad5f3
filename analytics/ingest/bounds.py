"""Bounds on values that come from upstream data before they reach a metric.

Label values are capped in length here (LabelValues caps their number): a model name of a megabyte
would otherwise be copied into every series that carries it, and into every scrape. Numbers that
feed counters and histograms must be plausible counts: the API types token counts as plain
integers, so a spec-generated or broken upstream can send -73514450 or 10**30. DuckDB keeps every
value as received (the typed columns and `raw`); only the metrics leave such values out.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Final

# Longest label value, in characters. A longer value keeps its first MAX_LABEL_CHARS - 9 characters,
# then "~" and the first 8 hex digits of the sha256 of the whole value (UTF-8): two long values that
# share a prefix stay two series, and the cut is the same in every process.
MAX_LABEL_CHARS: Final = 128
_HASH_CHARS: Final = 8
# A run's token count above this is not a count (a trillion tokens is ~ a million full 1M-token
# context windows in one run).
MAX_TOKENS: Final = 10**12


def cap_label(text: str) -> str:
    if len(text) <= MAX_LABEL_CHARS:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    return f"{text[:MAX_LABEL_CHARS - _HASH_CHARS - 1]}~{digest}"


def token_count(value: Any) -> float | None:
    """The value as a count of tokens, or None when it is missing or not a plausible count."""
    if type(value) is int:
        return float(value) if 0 <= value <= MAX_TOKENS else None
    if type(value) is float and math.isfinite(value) and 0 <= value <= MAX_TOKENS and value.is_integer():
        return value
    return None


def positive_cap(value: Any) -> float | None:
    """A token cap (max_prompt_tokens...) usable as a divisor: a positive plausible count."""
    n = token_count(value)
    return n if n else None
