"""`runtap report --html FILE`: one self-contained page (inline CSS and SVG, no network) with the
charts finance and engineering ask for first: cost per day by model and by API, the most expensive
assistants and prompt templates, tokens by model, budget use, final status and latency percentiles,
for Assistants runs and Responses alike (a response's bars are marked "(responses)"). Built from the
same named reports as the CLI, through a `fetch` callable, so it works on a capture file, a lake or a
live sidecar's admin endpoint alike.
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
TOP_AGENTS: Final = 10

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

RESPONSES: Final = "responses"
API_LABELS: Final = {"assistants": "Assistants runs", RESPONSES: "Responses"}


def _who(name: Any, api: Any) -> str:
    """A chart category for a model or status: as is for runs, marked for responses."""
    return f"{name} (responses)" if api == RESPONSES else str(name)


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
    summary = {"runs": 0.0, "responses": 0.0, "total_usd": 0.0, "total_tokens": 0.0, "unpriced_runs": 0.0}
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
                 "Token cost at the price book's rates plus tool fees, runs and responses together. Unpriced "
                 "runs and responses are left out: see <code>runtap report unpriced</code>."
                 if summary["unpriced_runs"] else "Runs and responses together."),
        _section("Tokens by model",
                 bar_chart("chart-tokens", "tokens by model", _order(model_tokens), ["prompt", "completion"],
                           dict(tokens)),
                 _data_table(_order(model_tokens), ["prompt", "completion"], dict(tokens), fmt_number),
                 "A response's input tokens count as prompt, its output tokens as completion (cached input "
                 "and reasoning tokens are inside them, and priced as billed)."),
    ]
    return sections, summary, colors


Series = dict[tuple[str, str], float]


def _stacked(result: ReportResult, category: str, series: str, value: str,
             categories: Sequence[str] | None = None, *,
             by_api: bool = False) -> tuple[list[str], list[str], Series]:
    """Values by (category, series); by_api marks a response's category (a report with an api column)."""
    values: dict[tuple[str, str], float] = defaultdict(float)
    cat_tot: dict[str, float] = defaultdict(float)
    ser_tot: dict[str, float] = defaultdict(float)
    for r in result.records():
        c = _who(r[category], r["api"]) if by_api else str(r[category])
        s, v = str(r[series]), _num(r[value])
        values[(c, s)] += v
        cat_tot[c] += v
        ser_tot[s] += v
    cats = [c for c in categories if c in cat_tot] if categories is not None else _order(cat_tot)
    return cats, _order(ser_tot), dict(values)


def _percentiles(latency: ReportResult, prefix: str) -> tuple[list[str], dict[tuple[str, str], float]]:
    models: list[str] = []
    values: dict[tuple[str, str], float] = {}
    for r in latency.records():
        who = _who(r["model"], r["api"])
        models.append(who)
        for q in ("p50", "p95", "p99"):
            if r[f"{prefix}_{q}_s"] is not None:
                values[(who, q)] = _num(r[f"{prefix}_{q}_s"])
    return models, values


def _duration_section(latency: ReportResult) -> str:
    models, lat = _percentiles(latency, "duration")
    note = ("Runs: started_at to the final status; responses: created_at to the final status. Queue time and "
            "tool turnaround: <code>runtap report latency</code>.")
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
        f"Duration percentiles, runs and responses ({unit})",
        column_chart("chart-latency", "latency percentiles", models, qs, lat, stacked=False),
        _data_table(models, qs, lat, fmt_number, total=False), note)


def _api_section(by_api: ReportResult) -> str:
    """Cost per day split by API: the migration from Assistants runs to Responses, in dollars."""
    days, apis, vals = _stacked(by_api, "day", "api", "total_usd")
    days = sorted(days)
    apis = [a for a in API_LABELS if a in apis]
    labelled = {(d, API_LABELS[a]): v for (d, a), v in vals.items()}
    names = [API_LABELS[a] for a in apis]
    usd = usd_format(labelled.values())
    return _section("Cost per day, by API (USD)",
                    column_chart("chart-api", "cost per day stacked by API", days, names, labelled, fmt=usd,
                                 colors={API_LABELS["assistants"]: color(0), API_LABELS[RESPONSES]: color(1)}),
                    _data_table(days, names, labelled, usd))


def _agents_section(top: ReportResult) -> str:
    """The costliest assistants (runs) and prompt templates (responses); template-less responses by model."""
    values: dict[tuple[str, str], float] = {}
    order: list[str] = []
    for r in top.records():
        if r["total_usd"] is None:
            continue  # unpriced: no cost to rank (runtap report unpriced)
        name = r["assistant_id"] or f"{r['models']} (no template)"
        key = (name, API_LABELS.get(str(r["api"]), str(r["api"])))
        values[key] = values.get(key, 0.0) + _num(r["total_usd"])
        if name not in order:
            order.append(name)
    series = [a for a in API_LABELS.values() if any(k[1] == a for k in values)]
    usd = usd_format(values.values())
    return _section(f"Top {TOP_AGENTS} assistants and prompt templates by cost (USD)",
                    bar_chart("chart-agents", "most expensive assistants and prompt templates", order, series,
                              values, fmt=usd, colors={API_LABELS["assistants"]: color(0),
                                                       API_LABELS[RESPONSES]: color(1)}),
                    _data_table(order, series, values, usd),
                    "Responses have no assistant: those created from a reusable prompt template "
                    "(<code>prompt.id</code>) rank by template, the others by model, marked (no template). "
                    "<code>runtap report top-assistants</code>.")


def build_html(fetch: Fetch, params: ReportParams | None = None, *, source: str = "",
               now: datetime | None = None) -> str:
    p = dataclasses.replace(params or ReportParams(), by=None, limit=None)
    cost = fetch("cost", p)
    sections, summary, colors = _cost_sections(cost)

    sections[1:1] = [_api_section(fetch("cost", dataclasses.replace(p, by="api"))),
                     _agents_section(fetch("top-assistants", dataclasses.replace(p, limit=TOP_AGENTS)))]

    _, series, vals = _stacked(fetch("budgets", p), "budget_use", "model", "runs", BUCKETS)
    cats = list(BUCKETS) if vals else []
    sections.append(_section(
        "Budget use (usage ÷ max_*_tokens), runs and responses by model",
        column_chart("chart-budgets", "budget-use histogram", cats, series, vals, colors=colors),
        _data_table(cats, series, vals, fmt_number),
        "Runs: the larger of prompt / max_prompt_tokens and completion / max_completion_tokens; responses: "
        "output / max_output_tokens. 'hit cap': usage reached a cap or it ended incomplete because of it."))

    cats, series, vals = _stacked(fetch("status", p), "status", "model", "runs", by_api=True)
    sections.append(_section("Runs and responses by final status",
                             bar_chart("chart-status", "status breakdown", cats, series, vals, colors=colors),
                             _data_table(cats, series, vals, fmt_number)))

    sections.append(_duration_section(fetch("latency", p)))

    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    period = "all time"
    if p.since or p.until:
        period = f"{p.since.isoformat() if p.since else '…'} to {p.until.isoformat() if p.until else '…'}"
    unpriced = int(summary["unpriced_runs"])
    cards = [("runs", f"{int(summary['runs']):,}"), ("responses", f"{int(summary['responses']):,}"),
             ("cost (priced)", fmt_usd(summary["total_usd"])), ("tokens", f"{int(summary['total_tokens']):,}"),
             ("unpriced", f"{unpriced:,}")]
    card_html = "".join(
        f'<div class="card{" warn" if label == "unpriced" and unpriced else ""}">{escape(label)}'
        f'<b data-card="{escape(label)}">{escape(value)}</b></div>' for label, value in cards)
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>runtap report</title><style>{_CSS}</style></head><body>"
        "<h1>runtap: agent spend report (Assistants runs and Responses)</h1>"
        f"<p class=\"sub\">{escape(source)} · {escape(period)} · "
        f"generated {escape(stamp)}</p><div class=\"cards\">{card_html}</div>"
        + "".join(sections) + "</body></html>\n")


def write_html(path: str | Path, fetch: Fetch, params: ReportParams | None = None, *,
               source: str = "") -> None:
    Path(path).write_text(build_html(fetch, params, source=source), encoding="utf-8")
