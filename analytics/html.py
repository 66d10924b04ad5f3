"""`runtap report --html FILE`: one self-contained page (inline CSS and SVG, no network) with the
charts finance and engineering ask for first: cost per day by model, tokens by model, budget use,
run status and latency percentiles. Built from the same named reports as the CLI, through a `fetch`
callable, so it works on a capture file, a lake or a live sidecar's admin endpoint alike.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any, Final

from .charts import bar_chart, color, column_chart, duration_unit, fmt_number, fmt_usd, usd_format
from .reports import ReportParams, ReportResult

Fetch = Callable[[str, ReportParams], ReportResult]

BUCKETS: Final = ("no cap", "< 50%", "50-80%", "80-95%", "95-100%", "hit cap")

_CSS: Final = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:860px;
color:#1d232a;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 6px}
.sub{color:#5b6570;margin:0 0 16px}.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #dde2e7;border-radius:6px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:20px}.warn{color:#a4262c}
svg.chart{display:block;max-width:100%;height:auto}
svg .tick,svg .legend,svg .value{font-size:11px;fill:#3b444d}svg .grid{stroke:#eceff2}
svg .axis{stroke:#8a949e}svg .empty{font-size:13px;fill:#8a949e}
table{border-collapse:collapse;margin:6px 0 0;font-size:12px}
th,td{padding:2px 10px;border-bottom:1px solid #eceff2;text-align:right}
th:first-child,td:first-child{text-align:left}details{margin-top:4px}
"""

def _num(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0


def _order(totals: dict[str, float]) -> list[str]:
    return [k for k, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))]


def _data_table(categories: Sequence[str], series: Sequence[str], values: dict[tuple[str, str], float],
                fmt: Callable[[float], str], *, total: bool = True) -> str:
    head = "".join(f"<th>{escape(s)}</th>" for s in series) + ("<th>total</th>" if total else "")
    rows = []
    for c in categories:
        vals = [values.get((c, s)) for s in series]
        cells = "".join(f"<td>{'' if v is None else escape(fmt(v))}</td>" for v in vals)
        if total:
            cells += f"<td>{escape(fmt(sum(v for v in vals if v is not None)))}</td>"
        rows.append(f"<tr><td>{escape(c)}</td>{cells}</tr>")
    return (f"<details><summary>numbers</summary><table><tr><th></th>{head}</tr>{''.join(rows)}</table>"
            "</details>")


def _section(title: str, svg: str, table: str, note: str = "") -> str:
    note_html = f'<p class="sub">{note}</p>' if note else ""
    return f"<section><h2>{escape(title)}</h2>{note_html}{svg}{table}</section>"


def _cost_sections(cost: ReportResult) -> tuple[list[str], dict[str, float], dict[str, str]]:
    per_day: dict[tuple[str, str], float] = defaultdict(float)
    tokens: dict[tuple[str, str], float] = defaultdict(float)
    model_cost: dict[str, float] = defaultdict(float)
    model_tokens: dict[str, float] = defaultdict(float)
    days: set[str] = set()
    summary = {"runs": 0.0, "total_usd": 0.0, "total_tokens": 0.0, "unpriced_runs": 0.0}
    for r in cost.records():
        day, model = str(r["day"]), str(r["model"])
        days.add(day)
        if r["total_usd"] is not None:
            per_day[(day, model)] += _num(r["total_usd"])
            model_cost[model] += _num(r["total_usd"])
        tokens[(model, "prompt")] += _num(r["prompt_tokens"])
        tokens[(model, "completion")] += _num(r["completion_tokens"])
        model_tokens[model] += _num(r["total_tokens"])
        for k in summary:
            summary[k] += _num(r[k])
    day_list = sorted(days)
    models = _order(model_cost)
    # One colour per model across every chart, the most expensive first.
    everyone = models + [m for m in _order(model_tokens) if m not in model_cost]
    colors = {m: color(i) for i, m in enumerate(everyone)}
    day_totals = [sum(v for (d, _), v in per_day.items() if d == day) for day in day_list]
    usd = usd_format([*per_day.values(), *day_totals])
    sections = [
        _section("Cost per day, by model (USD)",
                 column_chart("chart-cost", "cost per day stacked by model", day_list, models, dict(per_day),
                              fmt=usd, colors=colors),
                 _data_table(day_list, models, dict(per_day), usd),
                 "Token cost at the price book's rates plus tool fees. Unpriced runs are left out: see "
                 "<code>runtap report unpriced</code>." if summary["unpriced_runs"] else ""),
        _section("Tokens by model",
                 bar_chart("chart-tokens", "tokens by model", _order(model_tokens), ["prompt", "completion"],
                           dict(tokens)),
                 _data_table(_order(model_tokens), ["prompt", "completion"], dict(tokens), fmt_number)),
    ]
    return sections, summary, colors


Series = dict[tuple[str, str], float]


def _stacked(result: ReportResult, category: str, series: str, value: str,
             categories: Sequence[str] | None = None) -> tuple[list[str], list[str], Series]:
    values: dict[tuple[str, str], float] = defaultdict(float)
    cat_tot: dict[str, float] = defaultdict(float)
    ser_tot: dict[str, float] = defaultdict(float)
    for r in result.records():
        c, s, v = str(r[category]), str(r[series]), _num(r[value])
        values[(c, s)] += v
        cat_tot[c] += v
        ser_tot[s] += v
    cats = [c for c in categories if c in cat_tot] if categories is not None else _order(cat_tot)
    return cats, _order(ser_tot), dict(values)


def _percentiles(latency: ReportResult, prefix: str) -> tuple[list[str], dict[tuple[str, str], float]]:
    models: list[str] = []
    values: dict[tuple[str, str], float] = {}
    for r in latency.records():
        models.append(str(r["model"]))
        for q in ("p50", "p95", "p99"):
            if r[f"{prefix}_{q}_s"] is not None:
                values[(str(r["model"]), q)] = _num(r[f"{prefix}_{q}_s"])
    return models, values


def _duration_section(latency: ReportResult) -> str:
    models, lat = _percentiles(latency, "duration")
    note = "started_at to the final status; queue time and tool turnaround: <code>runtap report latency</code>."
    observed = _percentiles(latency, "observed")[1]
    # The API's timestamps are whole seconds: runs of a second or two read 0 or 1 there. runtap's own
    # observation times are microseconds, so such runs get a duration that means something.
    if observed and max(lat.values(), default=0.0) < 2:
        lat = observed
        note = ("The API's timestamps are whole seconds, too coarse for runs this short: these are "
                "runtap's own observations, from the run first seen to its final status seen (queue "
                "time included; as fine as the app's polling). <code>runtap report latency</code>.")
    unit, factor = duration_unit(max(lat.values(), default=0.0))
    lat = {k: v * factor for k, v in lat.items()}
    qs = ["p50", "p95", "p99"]
    return _section(
        f"Run duration percentiles ({unit})",
        column_chart("chart-latency", "latency percentiles", models, qs, lat, stacked=False),
        _data_table(models, qs, lat, fmt_number, total=False), note)


def build_html(fetch: Fetch, params: ReportParams | None = None, *, source: str = "",
               now: datetime | None = None) -> str:
    p = dataclasses.replace(params or ReportParams(), by=None, limit=None)
    cost = fetch("cost", p)
    sections, summary, colors = _cost_sections(cost)

    _, series, vals = _stacked(fetch("budgets", p), "budget_use", "model", "runs", BUCKETS)
    cats = list(BUCKETS) if vals else []
    sections.append(_section(
        "Budget use (usage ÷ max_*_tokens), runs by model",
        column_chart("chart-budgets", "budget-use histogram", cats, series, vals, colors=colors),
        _data_table(cats, series, vals, fmt_number),
        "'hit cap': usage reached a cap or the run ended incomplete because of it."))

    cats, series, vals = _stacked(fetch("status", p), "status", "model", "runs")
    sections.append(_section("Runs by final status", bar_chart("chart-status", "status breakdown", cats,
                                                               series, vals, colors=colors),
                             _data_table(cats, series, vals, fmt_number)))

    sections.append(_duration_section(fetch("latency", p)))

    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    period = "all time"
    if p.since or p.until:
        period = f"{p.since.isoformat() if p.since else '…'} to {p.until.isoformat() if p.until else '…'}"
    unpriced = int(summary["unpriced_runs"])
    cards = [("runs", f"{int(summary['runs']):,}"), ("cost (priced runs)", fmt_usd(summary["total_usd"])),
             ("tokens", f"{int(summary['total_tokens']):,}"), ("unpriced runs", f"{unpriced:,}")]
    card_html = "".join(
        f'<div class="card{" warn" if label == "unpriced runs" and unpriced else ""}">{escape(label)}'
        f'<b data-card="{escape(label)}">{escape(value)}</b></div>' for label, value in cards)
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>runtap report</title><style>{_CSS}</style></head><body>"
        f"<h1>runtap: Assistants runs report</h1><p class=\"sub\">{escape(source)} · {escape(period)} · "
        f"generated {escape(stamp)}</p><div class=\"cards\">{card_html}</div>"
        + "".join(sections) + "</body></html>\n")


def write_html(path: str | Path, fetch: Fetch, params: ReportParams | None = None, *,
               source: str = "") -> None:
    Path(path).write_text(build_html(fetch, params, source=source), encoding="utf-8")
