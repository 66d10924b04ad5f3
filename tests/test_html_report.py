"""The HTML report: self-contained, and in a real headless Chromium its charts render and carry the
right numbers (bar values read back from the DOM, drawn lengths proportional to them)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import duckdb
import pytest
from runtap.analytics.html import build_html
from runtap.analytics.prices import load_price_book
from runtap.analytics.reports import open_db, run_report
from runtap.analytics.synth import RunSpec, create_db, insert_runs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
M = 1_000_000

# The test's own probe, added to a copy of the page: after layout it records each chart's rendered size
# and each bar's drawn length on the element, so the DOM dump shows whether the picture matches the numbers.
LAYOUT_PROBE = """<script>
(function(){var out={};document.querySelectorAll('svg.chart').forEach(function(s){
var r=s.getBoundingClientRect();out[s.id]=[Math.round(r.width),Math.round(r.height),
s.querySelectorAll('rect.bar').length];s.querySelectorAll('rect.bar').forEach(function(b){
var bb=b.getBBox();b.setAttribute('data-px-h',bb.height.toFixed(2));
b.setAttribute('data-px-w',bb.width.toFixed(2));
});});document.body.setAttribute('data-layout',JSON.stringify(out));})();
</script>"""


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.bars: list[dict[str, Any]] = []
        self.body: dict[str, str | None] = {}
        self.cards: dict[str, str] = {}
        self._svg: str | None = None
        self._card: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "body":
            self.body = a
        elif tag == "svg":
            self._svg = a.get("id")
        elif tag == "rect" and a.get("class") == "bar":
            self.bars.append({**a, "chart": self._svg})
        elif tag == "b" and a.get("data-card"):
            self._card = a["data-card"]

    def handle_data(self, data: str) -> None:
        if self._card is not None:
            self.cards[self._card] = data
            self._card = None


def parse(html: str) -> _Dom:
    dom = _Dom()
    dom.feed(html)
    return dom


def known_html(tmp_path: Path) -> str:
    db = str(tmp_path / "c.duckdb")
    create_db(db)
    conn = duckdb.connect(db)
    insert_runs(conn, [
        RunSpec("run_1", "gpt-4o", "2024-11-01T10:00:00Z", 1 * M, 100_000,  # $2.50 + $1.00
                started_at="2024-11-01T10:00:01Z", ended_at="2024-11-01T10:00:05Z"),
        RunSpec("run_2", "gpt-4o-mini", "2024-11-01T11:00:00Z", 2 * M, 0,  # $0.30
                started_at="2024-11-01T11:00:02Z", ended_at="2024-11-01T11:00:12Z",
                max_prompt_tokens=2 * M),
        RunSpec("run_3", "gpt-4o", "2024-11-02T10:00:00Z", 400_000, 0, status="failed",  # $1.00
                last_error_code="server_error", started_at="2024-11-02T10:00:01Z",
                ended_at="2024-11-02T10:00:03Z"),
        RunSpec("run_4", "gpt-4o-mini", "2024-11-02T12:00:00Z", 100, 700, status="incomplete",
                incomplete_reason="max_completion_tokens", max_completion_tokens=700,
                started_at="2024-11-02T12:00:01Z", ended_at="2024-11-02T12:00:09Z"),
        RunSpec("run_5", "house-model", "2024-11-02T13:00:00Z", 10, 10),  # unpriced
    ])
    conn.close()
    reader = open_db(db, load_price_book(environ={}))
    try:
        return build_html(lambda name, params: run_report(reader, name, params), source=db)
    finally:
        reader.close()


def values(dom: _Dom, chart: str) -> dict[tuple[str, str], float]:
    return {(b["data-category"], b["data-series"]): float(b["data-value"]) for b in dom.bars
            if b["chart"] == chart}


EXPECTED_COST = {("2024-11-01", "gpt-4o"): 3.5, ("2024-11-01", "gpt-4o-mini"): 0.3,
                 ("2024-11-02", "gpt-4o"): 1.0, ("2024-11-02", "gpt-4o-mini"): 0.000435}


def test_page_is_self_contained_and_carries_the_numbers(tmp_path: Path) -> None:
    html = known_html(tmp_path)
    assert "http://" not in html and "https://" not in html
    assert " src=" not in html and "<link" not in html and "@import" not in html
    assert "<script" not in html  # nothing only a test needs ships in the page
    dom = parse(html)
    cost = values(dom, "chart-cost")
    assert cost.keys() == EXPECTED_COST.keys()
    for key, usd in EXPECTED_COST.items():
        assert cost[key] == pytest.approx(usd, abs=1e-9)
    assert values(dom, "chart-tokens")[("gpt-4o", "prompt")] == 1_400_000
    assert values(dom, "chart-status") == {("completed", "gpt-4o"): 1, ("completed", "gpt-4o-mini"): 1,
                                           ("completed", "house-model"): 1, ("failed", "gpt-4o"): 1,
                                           ("incomplete", "gpt-4o-mini"): 1}
    assert values(dom, "chart-budgets") == {("no cap", "gpt-4o"): 2, ("no cap", "house-model"): 1,
                                            ("hit cap", "gpt-4o-mini"): 2}
    lat = values(dom, "chart-latency")
    assert lat[("gpt-4o", "p50")] == 3.0 and lat[("gpt-4o-mini", "p99")] == pytest.approx(9.98)
    assert dom.cards == {"runs": "5", "responses": "0", "cost (priced)": "$4.80", "tokens": "3,500,820",
                         "unpriced": "1"}
    assert values(dom, "chart-api") == {("2024-11-01", "Assistants runs"): 3.8,
                                        ("2024-11-02", "Assistants runs"): pytest.approx(1.000435)}


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_charts_render_in_headless_chromium(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(known_html(tmp_path).replace("</body>", LAYOUT_PROBE + "</body>"))
    assert CHROMIUM is not None
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,2400", "--dump-dom",
         page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = parse(proc.stdout)
    # the inline script ran after layout: every chart has a real size and all its bars
    layout = json.loads(dom.body["data-layout"] or "{}")
    expected_bars = {"chart-cost": 4, "chart-api": 2, "chart-agents": 1, "chart-tokens": 6, "chart-budgets": 3,
                     "chart-status": 5, "chart-latency": 6}
    assert {k: v[2] for k, v in layout.items()} == expected_bars
    assert all(w >= 300 and h >= 60 for w, h, _ in layout.values())
    assert values(dom, "chart-cost") == pytest.approx(EXPECTED_COST)
    # drawn length is proportional to the value: one pixels-per-unit scale per chart
    for chart, axis in (("chart-cost", "data-px-h"), ("chart-api", "data-px-h"), ("chart-status", "data-px-w"),
                        ("chart-tokens", "data-px-w"), ("chart-latency", "data-px-h")):
        bars = [(float(b["data-value"]), float(b[axis])) for b in dom.bars if b["chart"] == chart]
        top_value, top_px = max(bars)
        assert top_px > 50, chart
        for value, px in bars:
            assert px == pytest.approx(value * top_px / top_value, abs=0.05), chart


def _table_after(html: str, heading: str) -> list[list[str]]:
    section = html[html.index(heading):]
    section = section[section.index("<table>"):section.index("</table>")]
    return [re.findall(r"<t[dh]>(.*?)</t[dh]>", row) for row in section.split("<tr>")[1:]]


def test_sub_second_runs_get_a_duration_chart_in_milliseconds(tmp_path: Path) -> None:
    """The demo's runs last a fraction of a second: whole-second API timestamps give 0 s; the chart
    switches to runtap's own clock and a unit that fits."""
    db = str(tmp_path / "c.duckdb")
    create_db(db)
    conn = duckdb.connect(db)
    insert_runs(conn, [RunSpec(f"run_{i}", "gpt-4o-mini", "2024-11-01T10:00:00Z", 70, 30,
                               started_at="2024-11-01T10:00:00Z", ended_at="2024-11-01T10:00:00Z")
                       for i in range(4)])
    for i, ms in enumerate((40, 80, 120, 400)):
        conn.execute("UPDATE runs SET first_seen_at = TIMESTAMPTZ '2024-11-01 10:00:00.100+00', "
                     "status_observed_at = TIMESTAMPTZ '2024-11-01 10:00:00.100+00' + to_milliseconds(?) "
                     "WHERE id = ?", [ms, f"run_{i}"])
    conn.close()
    reader = open_db(db, load_price_book(environ={}))
    try:
        html = build_html(lambda name, params: run_report(reader, name, params), source=db)
    finally:
        reader.close()
    assert "Duration percentiles, runs and responses (milliseconds)" in html
    lat = values(parse(html), "chart-latency")
    assert lat[("gpt-4o-mini", "p50")] == pytest.approx(100.0)
    assert lat[("gpt-4o-mini", "p99")] == pytest.approx(391.6, abs=0.5)
    # tiny amounts: one precision down the money column, enough digits that none reads as zero
    cost = _table_after(html, "Cost per day")
    assert cost[1][1:] == ["$0.00011", "$0.00011"]  # 4 runs x (70 x $0.15 + 30 x $0.60) / 1M; the day total


def test_known_amounts_use_one_precision_per_money_table(tmp_path: Path) -> None:
    cost = _table_after(known_html(tmp_path), "Cost per day")
    amounts = [c for row in cost[1:] for c in row[1:] if c]
    assert amounts and all(c.startswith("$") for c in amounts)
    assert len({len(c.split(".")[1]) for c in amounts}) == 1, amounts  # $0.00044 beside $3.50000, not $3.50


def test_responses_are_in_every_chart_beside_the_runs(tmp_path: Path) -> None:
    db = str(tmp_path / "c.duckdb")
    create_db(db)
    conn = duckdb.connect(db)
    insert_runs(conn, [RunSpec("run_1", "gpt-4o", "2024-11-01T10:00:00Z", 1 * M, 100_000,  # $3.50
                               started_at="2024-11-01T10:00:01Z", ended_at="2024-11-01T10:00:05Z")])
    conn.execute("""
        INSERT INTO responses (id, model, status, created_at, ended_at, prompt_id, error_code, input_tokens,
                               cached_input_tokens, output_tokens, reasoning_tokens, total_tokens, max_output_tokens)
        VALUES ('resp_a', 'gpt-4o', 'completed', '2024-11-02 10:00:00+00', '2024-11-02 10:00:06+00',
                'pmpt_support', NULL, 1200000, 400000, 100000, 60000, 1300000, 100000),
               ('resp_b', 'gpt-4o-mini', 'failed', '2024-11-02 11:00:00+00', '2024-11-02 11:00:02+00',
                NULL, 'server_error', 1000000, 0, 0, 0, 1000000, NULL)""")
    conn.close()
    reader = open_db(db, load_price_book(environ={}))
    try:
        dom = parse(build_html(lambda name, params: run_report(reader, name, params), source=db))
    finally:
        reader.close()
    # resp_a: 800k x $2.50 + 400k cached x $1.25 + 100k x $10 (reasoning inside) per 1M = $3.50; resp_b $0.15
    assert dom.cards == {"runs": "1", "responses": "2", "cost (priced)": "$7.15", "tokens": "3,400,000",
                         "unpriced": "0"}
    assert values(dom, "chart-cost") == pytest.approx({("2024-11-01", "gpt-4o"): 3.5, ("2024-11-02", "gpt-4o"): 3.5,
                                                       ("2024-11-02", "gpt-4o-mini"): 0.15})
    assert values(dom, "chart-api") == pytest.approx({("2024-11-01", "Assistants runs"): 3.5,
                                                      ("2024-11-02", "Responses"): 3.65})
    agents = values(dom, "chart-agents")
    assert agents[("pmpt_support", "Responses")] == pytest.approx(3.5)
    assert agents[("gpt-4o-mini (no template)", "Responses")] == pytest.approx(0.15)
    assert len(agents) == 3 and sum(v for (_, api), v in agents.items() if api == "Assistants runs") == 3.5
    assert values(dom, "chart-status") == {("completed", "gpt-4o"): 1, ("completed (responses)", "gpt-4o"): 1,
                                           ("failed (responses)", "gpt-4o-mini"): 1}
    # the run set no cap; resp_a used all of max_output_tokens; resp_b set none
    assert values(dom, "chart-budgets") == {("no cap", "gpt-4o"): 1, ("hit cap", "gpt-4o"): 1,
                                            ("no cap", "gpt-4o-mini"): 1}
    latency = values(dom, "chart-latency")
    assert latency[("gpt-4o", "p50")] == 4.0 and latency[("gpt-4o (responses)", "p50")] == 6.0
