"""Inline SVG bar charts for the HTML report: no script, no fonts, no network.

Every bar is a <rect class="bar"> carrying data-series, data-category and data-value (the exact
number it draws), plus a <title> tooltip, so a browser test can read the numbers back from the DOM.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from html import escape
from typing import Final

PALETTE: Final = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
                  "#9c755f", "#bab0ac")
_W: Final = 760
_PAD_L: Final = 90
_PAD_R: Final = 20
_PAD_T: Final = 16
_BAR_AREA_H: Final = 220

Fmt = Callable[[float], str]


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def nice_max(value: float) -> float:
    """A round axis maximum at or above value (1, 2, 2.5, 5 x 10^n)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exp = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        top = step * 10.0 ** exp
        if top >= value * (1 - 1e-12):
            return top
    return 10.0 ** (exp + 1)


def fmt_number(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:,.2f}".rstrip("0").rstrip(".")
    return f"{v:.4g}"


def fmt_usd(v: float) -> str:
    return "$" + (f"{v:,.2f}" if abs(v) >= 1 else f"{v:.4g}" if v else "0")


def usd_format(values: Iterable[float]) -> Fmt:
    """One precision for a whole table of dollars: cents, or as many decimals as give the smallest
    non-zero amount two significant digits (at most micro-dollars), so the decimal points line up."""
    smallest = min((abs(v) for v in values if v), default=1.0)
    decimals = 2 if smallest >= 0.1 else min(6, max(2, math.ceil(-math.log10(smallest)) + 1))
    return lambda v: f"${v:,.{decimals}f}"


def duration_unit(peak_s: float) -> tuple[str, float]:
    """A unit that fits durations peaking at peak_s seconds, and the factor from seconds to it."""
    if peak_s < 1:
        return "milliseconds", 1000.0
    if peak_s < 120:
        return "seconds", 1.0
    return "minutes", 1 / 60


def _attr(s: object) -> str:
    return escape(str(s), quote=True)


def _pick(colors: Mapping[str, str] | None, i: int, name: str) -> str:
    return colors[name] if colors and name in colors else color(i)


def _legend(series: Sequence[str], y: float, colors: Mapping[str, str] | None) -> list[str]:
    out, x = [], float(_PAD_L)
    for i, name in enumerate(series):
        out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="10" height="10" fill="{_pick(colors, i, name)}"/>'
                   f'<text x="{x + 14:.1f}" y="{y + 9:.1f}" class="legend">{escape(name)}</text>')
        x += 24 + 7 * len(name)
        if x > _W - 120:
            x, y = float(_PAD_L), y + 16
    return out


def _wrap(chart_id: str, height: float, parts: list[str], label: str) -> str:
    return (f'<svg class="chart" id="{_attr(chart_id)}" role="img" aria-label="{_attr(label)}" '
            f'viewBox="0 0 {_W} {height:.0f}" width="{_W}" '
            f'height="{height:.0f}">' + "".join(parts) + "</svg>")


def _y_axis(top: float, fmt: Fmt, x0: float, x1: float) -> list[str]:
    out = []
    for k in range(5):
        v = top * k / 4
        y = _PAD_T + _BAR_AREA_H * (1 - k / 4)
        out.append(f'<line x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{x0 - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">'
                   f'{escape(fmt(v))}</text>')
    return out


def column_chart(chart_id: str, label: str, categories: Sequence[str], series: Sequence[str],
                 values: dict[tuple[str, str], float], *, fmt: Fmt = fmt_number, stacked: bool = True,
                 colors: Mapping[str, str] | None = None) -> str:
    """Vertical bars per category: stacked by series, or grouped side by side (stacked=False)."""
    if not categories:
        return _wrap(chart_id, 60, ['<text x="20" y="35" class="empty">no data</text>'], label)
    if stacked:
        peak = max(sum(values.get((c, s), 0.0) for s in series) for c in categories)
    else:
        peak = max([values.get((c, s), 0.0) for c in categories for s in series] or [0.0])
    top = nice_max(peak)
    x0, x1 = _PAD_L, _W - _PAD_R
    slot = (x1 - x0) / len(categories)
    bar_w = min(48.0, slot * 0.7)
    parts = _y_axis(top, fmt, x0, x1)
    base_y = _PAD_T + _BAR_AREA_H
    for ci, cat in enumerate(categories):
        cx = x0 + slot * ci + (slot - bar_w) / 2
        acc = 0.0
        for si, ser in enumerate(series):
            v = values.get((cat, ser))
            if v is None:
                continue
            h = _BAR_AREA_H * v / top
            if stacked:
                x, w, y = cx, bar_w, base_y - _BAR_AREA_H * (acc + v) / top
                acc += v
            else:
                w = bar_w / len(series)
                x, y = cx + w * si, base_y - h
            parts.append(f'<rect class="bar" x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" height="{h:.2f}" '
                         f'fill="{_pick(colors, si, ser)}" data-series="{_attr(ser)}" '
                         f'data-category="{_attr(cat)}" '
                         f'data-value="{v!r}"><title>{escape(f"{cat} · {ser}: {fmt(v)}")}</title></rect>')
        if len(categories) <= 40 or ci % math.ceil(len(categories) / 40) == 0:
            parts.append(f'<text x="{cx + bar_w / 2:.1f}" y="{base_y + 14}" class="tick" '
                         f'text-anchor="middle">{escape(cat[-5:] if len(cat) == 10 else cat[:14])}</text>')
    parts.append(f'<line x1="{x0}" x2="{x1}" y1="{base_y}" y2="{base_y}" class="axis"/>')
    parts += _legend(series, base_y + 28, colors)
    height = base_y + 36 + 16 * (1 + sum(len(s) * 7 + 24 for s in series) // (_W - 200))
    return _wrap(chart_id, height, parts, label)


def bar_chart(chart_id: str, label: str, categories: Sequence[str], series: Sequence[str],
              values: dict[tuple[str, str], float], *, fmt: Fmt = fmt_number,
              colors: Mapping[str, str] | None = None) -> str:
    """Horizontal bars, one row per category, stacked by series."""
    if not categories:
        return _wrap(chart_id, 60, ['<text x="20" y="35" class="empty">no data</text>'], label)
    row_h, gap, left = 22.0, 8.0, 170.0
    top = nice_max(max(sum(values.get((c, s), 0.0) for s in series) for c in categories))
    span = _W - left - _PAD_R - 70
    parts: list[str] = []
    for ci, cat in enumerate(categories):
        y = _PAD_T + ci * (row_h + gap)
        parts.append(f'<text x="{left - 8}" y="{y + row_h * 0.7:.1f}" class="tick" text-anchor="end">'
                     f'{escape(cat[:26])}</text>')
        acc = 0.0
        for si, ser in enumerate(series):
            v = values.get((cat, ser))
            if v is None:
                continue
            w = span * v / top
            parts.append(f'<rect class="bar" x="{left + span * acc / top:.2f}" y="{y:.2f}" width="{w:.2f}" '
                         f'height="{row_h}" fill="{_pick(colors, si, ser)}" data-series="{_attr(ser)}" '
                         f'data-category="{_attr(cat)}" data-value="{v!r}">'
                         f'<title>{escape(f"{cat} · {ser}: {fmt(v)}")}</title></rect>')
            acc += v
        parts.append(f'<text x="{left + span * acc / top + 6:.1f}" y="{y + row_h * 0.7:.1f}" class="value">'
                     f'{escape(fmt(acc))}</text>')
    base_y = _PAD_T + len(categories) * (row_h + gap)
    parts += _legend(series, base_y + 6, colors) if len(series) > 1 else []
    # at least the height of an empty chart: a one-row chart is still a chart
    return _wrap(chart_id, max(60.0, base_y + (28 if len(series) > 1 else 8)), parts, label)
