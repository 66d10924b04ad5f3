"""Lay out an aligned text table within a terminal width.

Three steps, each taken only when the previous one is too wide: one header line per column (the
familiar layout); long column names wrapped after `_` or `.` (`completion_` over `tokens`), so a column
is as wide as its data; then the columns split into blocks that each repeat the row's key (the leading
text columns), one under the other. Values are never cut: an id or a number is printed whole.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

GAP: Final = 2
_PIECE: Final = re.compile(r"[^_.]+[_.]?|[_.]")


def _pieces(name: str) -> list[str]:
    return _PIECE.findall(name) or [name]


def _wrap_header(name: str, width: int) -> list[str]:
    lines: list[str] = []
    for piece in _pieces(name):
        if lines and len(lines[-1]) + len(piece) <= width:
            lines[-1] += piece
        else:
            lines.append(piece)
    return lines


def _render(header: Sequence[list[str]], rows: Sequence[Sequence[str]], foot: Sequence[Sequence[str]],
            widths: Sequence[int], numeric: Sequence[bool], empty: bool) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return (" " * GAP).join(c.rjust(w) if num else c.ljust(w)
                                for c, w, num in zip(cells, widths, numeric, strict=True)).rstrip()

    depth = max(len(h) for h in header)
    padded = [[""] * (depth - len(h)) + h for h in header]  # names end on the line above the rule
    out = [line([col[k] for col in padded]) for k in range(depth)]
    out.append((" " * GAP).join("-" * w for w in widths))
    out += [line(r) for r in rows]
    if empty:
        out.append("(no rows)")
    if foot:
        out.append((" " * GAP).join("=" * w for w in widths))
        out += [line(r) for r in foot]
    return out


def _span(widths: Sequence[int]) -> int:
    return sum(widths) + GAP * (len(widths) - 1)


def _blocks(key: list[int], rest: list[int], widths: Sequence[int], width: int) -> list[list[int]]:
    blocks: list[list[int]] = []
    current: list[int] = []
    for i in rest:
        if current and _span([widths[j] for j in key + current + [i]]) > width:
            blocks.append(current)
            current = []
        current.append(i)
    if current:
        blocks.append(current)
    return blocks


def fit_table(columns: Sequence[str], rows: Sequence[Sequence[str]], foot: Sequence[Sequence[str]],
              numeric: Sequence[bool], width: int) -> str:
    """The table as text, no line wider than width unless one row's key and one value are."""
    data = [max([len(r[i]) for r in [*rows, *foot]] or [0]) for i in range(len(columns))]
    natural = [max(len(c), d) for c, d in zip(columns, data, strict=True)]
    if _span(natural) <= width:
        return "\n".join(_render([[c] for c in columns], rows, foot, natural, numeric, not rows)) + "\n"
    widths = [max(d, *(len(p) for p in _pieces(c))) for c, d in zip(columns, data, strict=True)]
    header = [_wrap_header(c, w) for c, w in zip(columns, widths, strict=True)]
    everything = list(range(len(columns)))
    if _span(widths) <= width or len(columns) == 1:
        return "\n".join(_render(header, rows, foot, widths, numeric, not rows)) + "\n"
    key = []
    for i in everything[:-1]:
        if numeric[i]:
            break
        key.append(i)
    key = key or [0]
    widest = max(widths[i] for i in everything if i not in key)
    while len(key) > 1 and _span([widths[i] for i in key] + [widest]) > width:
        widest = max(widest, widths[key.pop()])  # the dropped key column becomes a value column
    out: list[str] = []
    for block in _blocks(key, [i for i in everything if i not in key], widths, width):
        cols = key + block
        if out:
            out.append("")
        out += _render([header[i] for i in cols], [[r[i] for i in cols] for r in rows],
                       [[r[i] for i in cols] for r in foot], [widths[i] for i in cols],
                       [numeric[i] for i in cols], not rows)
    return "\n".join(out) + "\n"
