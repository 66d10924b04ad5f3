"""Report tables fit the terminal: long names wrap, wide tables split into blocks that repeat the row
key, and no value is ever cut."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st
from runtap.analytics.formats import render, usd_decimals
from runtap.analytics.prices import load_price_book
from runtap.analytics.reports import make_params, open_db, run_report
from runtap.analytics.synth import RunSpec, create_db, insert_runs
from runtap.analytics.table_fit import fit_table

ROOT = Path(__file__).resolve().parents[1]

names = st.from_regex(r"[a-z]{1,8}(_[a-z]{1,9}){0,3}", fullmatch=True)
cells = st.from_regex(r"[A-Za-z0-9.,:-]{0,24}", fullmatch=True)


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[list[str]], list[bool], int]:
    n = draw(st.integers(1, 12))
    columns = draw(st.lists(names, min_size=n, max_size=n))
    rows = draw(st.lists(st.lists(cells, min_size=n, max_size=n), max_size=6))
    numeric = [False] + draw(st.lists(st.booleans(), min_size=n - 1, max_size=n - 1))
    return columns, rows, numeric, draw(st.integers(40, 160))


@settings(max_examples=200, deadline=None)
@given(tables())
def test_every_value_is_printed_whole_and_lines_fit_when_they_can(
        table: tuple[list[str], list[list[str]], list[bool], int]) -> None:
    columns, rows, numeric, width = table
    out = fit_table(columns, rows, [], numeric, width)
    lines = out.splitlines()
    for row in rows:
        for cell in row:
            assert any(cell in line for line in lines), cell
    # the row key plus the widest single column is the narrowest a block can be
    key_w = max([len(r[0]) for r in rows] + [max(len(p) for p in re.findall(r"[^_.]+[_.]?", columns[0]))])
    widest = max([len(c) for r in rows for c in r[1:]] + [9] if len(columns) > 1 else [0])
    if key_w + 2 + widest <= width:
        assert max(len(line) for line in lines) <= width, out
    # each column name can be read back from its header lines (wrapped after '_')
    joined = "".join(line.replace(" ", "") for line in lines)
    assert all(part in joined for c in columns for part in re.findall(r"[^_.]+[_.]?", c))


def test_a_narrow_table_keeps_the_one_line_header() -> None:
    out = fit_table(["model", "runs"], [["gpt-4o", "3"]], [["TOTAL", "3"]], [False, True], 100)
    assert out.splitlines() == ["model   runs", "------  ----", "gpt-4o     3", "======  ====", "TOTAL      3"]


def test_money_columns_use_one_precision_each() -> None:
    assert usd_decimals([0.5, 0.0012, 0]) == 4
    assert usd_decimals([0.5, 0.00004, None]) == 6


def _demo_like_db(tmp_path: Path) -> str:
    db = str(tmp_path / "c.duckdb")
    create_db(db)
    conn = duckdb.connect(db)
    insert_runs(conn, [RunSpec(f"run_{i}", model, "2024-11-01T10:00:00Z", 70 + i, 30 + i,
                               assistant_id=f"asst_{i:024x}")
                       for i, model in enumerate(["gpt-4o", "gpt-4o-mini", "gpt-4-turbo", "gpt-4.1-mini"] * 3)])
    conn.close()
    return db


def test_the_cost_report_fits_100_columns_and_keeps_every_assistant_id(tmp_path: Path) -> None:
    db = _demo_like_db(tmp_path)
    reader = open_db(db, load_price_book(environ={}))
    try:
        result = run_report(reader, "cost", make_params())
    finally:
        reader.close()
    wide = render(result, "table", width=250)
    assert max(len(line) for line in wide.splitlines()) > 100  # the data really is wider than 100
    out = render(result, "table", width=100)
    assert max(len(line) for line in out.splitlines()) <= 100
    for row in result.records():
        assert row["assistant_id"] in out
    usd = [line.split()[-1] for line in out.splitlines() if line.startswith("2024-11-01")][-12:]
    assert len({len(v.split(".")[1]) for v in usd}) == 1  # total_usd: one precision down the column


def test_runtap_report_fits_a_100_column_pipe(tmp_path: Path) -> None:
    db = _demo_like_db(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    for report in ("cost", "latency", "top-assistants", "tools"):
        proc = subprocess.run([sys.executable, "-m", "runtap.proxy", "report", report, "--db", db], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60, check=True)
        assert max(len(line) for line in proc.stdout.splitlines()) <= 100, (report, proc.stdout)
