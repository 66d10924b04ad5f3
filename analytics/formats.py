"""Render a ReportResult as table (people: aligned, totals at the bottom), csv, json or markdown.

json is one object per row (column name -> value) and no totals row, so machines get exactly the
query's rows; csv likewise. table and markdown add a TOTAL row over the columns the report's header
lists under `totals:`.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

import orjson

from .reports import ReportResult
from .table_fit import fit_table

FORMATS: Final = ("table", "csv", "json", "markdown")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int) and not -(1 << 63) <= value < (1 << 63):
        return str(value)
    return value


def to_json(result: ReportResult) -> str:
    def default(obj: Any) -> Any:
        if isinstance(obj, Decimal):
            return float(obj)
        raise TypeError(type(obj).__name__)

    rows = [{c: _jsonable(v) for c, v in zip(result.columns, row, strict=True)} for row in result.rows]
    return orjson.dumps(rows, default=default, option=orjson.OPT_INDENT_2).decode() + "\n"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):  # exact money from ad-hoc SQL: no trailing zeros, no exponent
        return format(value.normalize(), "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def to_csv(result: ReportResult) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(result.columns)
    for row in result.rows:
        w.writerow([_text(v) for v in row])
    return buf.getvalue()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def usd_decimals(values: Iterable[Any]) -> int:
    """One precision for a money column: hundredths of a cent, or micro-dollars when a non-zero value
    would otherwise print as 0.0000 (tiny demo runs), so the decimal points line up."""
    tiny = any(_is_number(v) and 0 < abs(float(v)) < 0.0001 for v in values)
    return 6 if tiny else 4


def _human(column: str, value: Any, decimals: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if _is_number(value):
        if column.endswith("_usd"):
            return f"{float(value):,.{decimals}f}"
        if isinstance(value, int):
            return f"{value:,}"
        return f"{float(value):,.3f}".rstrip("0").rstrip(".")
    return _text(value)


def _totals(result: ReportResult) -> list[Any] | None:
    if not result.totals or not result.rows:
        return None
    row: list[Any] = []
    for i, col in enumerate(result.columns):
        if col in result.totals:
            vals = [r[i] for r in result.rows if _is_number(r[i])]
            total: Any = sum(vals) if vals else None
            if isinstance(total, float):
                total = round(total, 6)
            row.append(total)
        else:
            row.append(None)
    row[0] = "TOTAL" if row[0] is None else row[0]
    return row


def _cells(result: ReportResult, rows: Iterable[Iterable[Any]]) -> list[list[str]]:
    total = _totals(result) or []
    decimals = [usd_decimals([r[i] for r in result.rows] + total[i:i + 1]) for i in range(len(result.columns))]
    return [[_human(c, v, d) for c, v, d in zip(result.columns, row, decimals, strict=True)] for row in rows]


def terminal_width() -> int:
    """Columns of the terminal (or $COLUMNS); 100 when the output is not a terminal."""
    return shutil.get_terminal_size((100, 24)).columns


def to_table(result: ReportResult, width: int | None = None) -> str:
    if not result.columns:
        return "(no result)\n"
    body = _cells(result, result.rows)
    total = _totals(result)
    foot = _cells(result, [total]) if total else []
    numeric = [any(_is_number(r[i]) for r in result.rows) for i in range(len(result.columns))]
    return fit_table(result.columns, body, foot, numeric, width or terminal_width())


def to_markdown(result: ReportResult) -> str:
    if not result.columns:
        return "(no result)\n"

    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    numeric = [any(_is_number(r[i]) for r in result.rows) for i in range(len(result.columns))]
    out = ["| " + " | ".join(esc(c) for c in result.columns) + " |",
           "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in _cells(result, result.rows)]
    total = _totals(result)
    if total:
        out += ["| " + " | ".join(f"**{esc(c)}**" if c else "" for c in _cells(result, [total])[0]) + " |"]
    return "\n".join(out) + "\n"


def render(result: ReportResult, fmt: str, *, width: int | None = None) -> str:
    if fmt == "table":
        return to_table(result, width)
    if fmt == "csv":
        return to_csv(result)
    if fmt == "json":
        return to_json(result)
    if fmt == "markdown":
        return to_markdown(result)
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
