"""Render a Grafana dashboard's panel grid to SVG (and optionally PNG) for the docs.

No Grafana runs where the docs are built, so this draws what the JSON says: every row and panel at its
gridPos, with its title, visualisation type, unit and the metrics it reads, over placeholder graphics
of the right kind. The output depends only on the JSON, so a test can tell when the picture is stale.

    python dashboards/render_layout.py dashboards/runs-overview.json -o docs/dashboard-runs-overview.svg
    python dashboards/render_layout.py dashboards/cost.json -o /tmp/cost.svg --png /tmp/cost.png
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

COL = 52  # px per grid column; Grafana's grid is 24 columns wide
ROW = 30  # px per grid row, Grafana's own row height
GAP = 6
HEADER = 64
WIDTH = 24 * COL + GAP
BG, PANEL, BORDER, TEXT, DIM = "#111217", "#181b1f", "#2c3235", "#ccccdc", "#8e8e9e"
SERIES = ("#73bf69", "#f2cc0c", "#8ab8ff", "#ff9830", "#f2495c", "#b877d9")
HEAT = ("#2a1a0c", "#5b3412", "#8f4f16", "#c8691a", "#f2891f", "#ffb357")
# Grafana unit ids as Grafana displays them.
UNITS = {"percentunit": "%", "reqps": "req/s", "currencyUSD": "$", "cps": "/s", "cpm": "/min",
         "wps": "rows/s", "short": "", "s": "s"}
FONT = "Inter, Helvetica, Arial, sans-serif"
MONO = "DejaVu Sans Mono, Menlo, monospace"


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


def box(panel: dict[str, Any]) -> tuple[float, float, float, float]:
    g = panel["gridPos"]
    return (GAP + g["x"] * COL, HEADER + g["y"] * ROW, g["w"] * COL - GAP, g["h"] * ROW - GAP)


def clip(text: str, width_px: float, px_per_char: float = 6.6) -> str:
    n = max(int(width_px / px_per_char), 4)
    return text if len(text) <= n else text[: n - 1] + "…"


def metrics_of(panel: dict[str, Any]) -> list[str]:
    seen: list[str] = []
    for t in panel.get("targets", []):
        for name in re.findall(r"\bruntap[_:][a-zA-Z0-9_:]*", t.get("expr", "")):
            name = re.sub(r"_(bucket|sum|count)$", "", name)
            if name not in seen:
                seen.append(name)
    return seen


def unit_of(panel: dict[str, Any]) -> str:
    if panel["type"] == "heatmap":
        return str(panel["options"]["yAxis"].get("unit", ""))
    return str(panel.get("fieldConfig", {}).get("defaults", {}).get("unit", ""))


def text(x: float, y: float, content: str, *, size: float = 12, fill: str = TEXT, bold: bool = False,
         anchor: str = "start", family: str = FONT) -> str:
    weight = ' font-weight="600"' if bold else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-family="{family}" font-size="{size}"{weight} fill="{fill}" '
            f'text-anchor="{anchor}">{escape(content)}</text>')


def _timeseries(rng: random.Random, x: float, y: float, w: float, h: float, n: int) -> list[str]:
    out = []
    for i in range(max(1, min(n, 4))):
        level = rng.uniform(0.3, 0.8)
        pts = []
        steps = 24
        for k in range(steps + 1):
            level = min(0.95, max(0.05, level + rng.uniform(-0.12, 0.12)))
            pts.append(f"{x + w * k / steps:.1f},{y + h * (1 - level):.1f}")
        out.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{SERIES[i % len(SERIES)]}" '
                   f'stroke-width="1.5" opacity="0.9"/>')
    return out


def _bars(rng: random.Random, x: float, y: float, w: float, h: float) -> list[str]:
    out = []
    n = 4
    bh = h / n
    for i in range(n):
        frac = rng.uniform(0.2, 1.0)
        out.append(f'<rect x="{x:.1f}" y="{y + i * bh + 2:.1f}" width="{w * frac:.1f}" height="{bh - 4:.1f}" '
                   f'rx="2" fill="{SERIES[i % len(SERIES)]}" opacity="0.8"/>')
    return out


def _heatmap(rng: random.Random, x: float, y: float, w: float, h: float) -> list[str]:
    out = []
    cols, rows = 24, 8
    cw, ch = w / cols, h / rows
    for c in range(cols):
        for r in range(rows):
            # Most runs use a middling share of their budget; a few reach the top rows (the cap).
            weight = max(0.0, 1 - abs(r - 3.5) / 3.5) + rng.uniform(0, 0.35)
            shade = HEAT[min(len(HEAT) - 1, int(weight * (len(HEAT) - 1)))]
            out.append(f'<rect x="{x + c * cw:.1f}" y="{y + (rows - 1 - r) * ch:.1f}" width="{cw - 1:.1f}" '
                       f'height="{ch - 1:.1f}" fill="{shade}"/>')
    return out


def _lines(x: float, y: float, w: float, h: float, n: int) -> list[str]:
    return [f'<rect x="{x:.1f}" y="{y + i * h / n:.1f}" width="{w * (0.9 - 0.15 * (i % 3)):.1f}" height="4" '
            f'rx="2" fill="{BORDER}"/>' for i in range(n)]


def draw_panel(panel: dict[str, Any]) -> list[str]:
    x, y, w, h = box(panel)
    if panel["type"] == "row":
        return [text(x + 2, y + 20, "▾ " + clip(panel["title"], w - 16), size=15, bold=True),
                f'<line x1="{x:.1f}" y1="{y + ROW - 3:.1f}" x2="{x + w:.1f}" y2="{y + ROW - 3:.1f}" '
                f'stroke="{BORDER}"/>']
    out = [f'<g><title>{escape(panel["title"])}: {escape(panel.get("description", ""))}</title>',
           f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="3" fill="{PANEL}" '
           f'stroke="{BORDER}"/>']
    unit = unit_of(panel)
    shown = UNITS.get(unit, unit.removeprefix("suffix:").strip())
    tag = panel["type"] + (f" · {shown}" if shown else "")
    out.append(text(x + 8, y + 18, clip(panel["title"], w - 24 - len(tag) * 5.2), bold=True))
    out.append(text(x + w - 8, y + 18, tag, size=10, fill=DIM, anchor="end"))
    rng = random.Random(panel["id"])  # fixed seed: the picture changes only when the JSON does
    metrics = metrics_of(panel)
    foot = 16 if metrics else 4
    bx, by, bw, bh = x + 10, y + 28, w - 20, h - 28 - foot - 6
    kind = panel["type"]
    if kind == "timeseries":
        out += _timeseries(rng, bx, by, bw, bh, len(panel.get("targets", [])) + 1)
    elif kind == "stat":
        out.append(text(x + w / 2, by + bh / 2 + 12, _sample(unit), size=28, fill=SERIES[0], bold=True,
                        anchor="middle"))
    elif kind == "bargauge":
        out += _bars(rng, bx, by, bw, bh)
    elif kind == "heatmap":
        out += _heatmap(rng, bx, by, bw, bh)
    else:
        out += _lines(bx, by, bw, bh, max(2, int(bh // 14)))
    if metrics:
        out.append(text(x + 8, y + h - 7, clip(", ".join(metrics), w - 16, 5.8), size=9.5, fill=DIM,
                        family=MONO))
    out.append("</g>")
    return out


def _sample(unit: str) -> str:
    return {"reqps": "42 req/s", "percentunit": "0.4%", "s": "3.1 ms", "short": "128",
            "currencyUSD": "$12.30"}.get(unit, "—")


def render(dashboard: dict[str, Any]) -> str:
    items = list(panels(dashboard["panels"]))
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in items)
    height = HEADER + bottom * ROW + GAP
    variables = "   ".join(f"{v.get('label', v['name'])} ▾" for v in dashboard["templating"]["list"])
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}">',
           f'<rect width="{WIDTH}" height="{height}" fill="{BG}"/>',
           text(GAP + 2, 26, dashboard["title"], size=18, bold=True),
           text(WIDTH - GAP - 2, 26, f"uid {dashboard['uid']} · layout rendered from the dashboard JSON",
                size=11, fill=DIM, anchor="end"),
           text(GAP + 2, 50, variables)]
    for panel in items:
        out += draw_panel(panel)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def to_png(svg_path: Path, png_path: Path, width: int, height: int) -> None:
    """Screenshot the SVG with headless Chromium (Debian's `chromium` package)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("render_layout: --png needs chromium on PATH (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={png_path.resolve()}", svg_path.resolve().as_uri()],
                       check=True, capture_output=True, timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dashboard", type=Path, help="Grafana dashboard JSON")
    parser.add_argument("-o", "--output", type=Path, required=True, help="SVG file to write")
    parser.add_argument("--png", type=Path, help="also write a PNG screenshot (needs chromium)")
    args = parser.parse_args(argv)
    dashboard = json.loads(args.dashboard.read_text())
    svg = render(dashboard)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(svg)
    if args.png:
        m = re.search(r'width="(\d+)" height="(\d+)"', svg)
        assert m is not None
        to_png(args.output, args.png, int(m.group(1)), int(m.group(2)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
