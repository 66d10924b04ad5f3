"""The price book: known usage -> exact USD per day/model/assistant, the snapshot rule, unknown models,
user overrides and tool fees, all through the real views on a real capture file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pytest
from runtap.analytics.prices import PriceError, builtin_prices, load_price_book, parse_prices
from runtap.analytics.reports import ReportResult, open_db, run_report
from runtap.analytics.synth import RunSpec, StepSpec, create_db, insert_runs, insert_steps

M = 1_000_000


def build(tmp_path: Path, runs: Sequence[RunSpec], steps: Sequence[StepSpec] = ()) -> str:
    db = str(tmp_path / "capture.duckdb")
    create_db(db)
    conn = duckdb.connect(db)
    insert_runs(conn, runs)
    insert_steps(conn, steps)
    conn.close()
    return db


def report(db: str, name: str, prices_path: str | None = None, environ: dict[str, str] | None = None
           ) -> ReportResult:
    conn = open_db(db, load_price_book(prices_path, environ=environ or {}))
    try:
        return run_report(conn, name)
    finally:
        conn.close()


def cost_by_key(result: ReportResult) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["day"].isoformat(), r["model"], r["assistant_id"]): r for r in result.records()}


def test_builtin_book_covers_the_assistants_models_and_cites_its_source() -> None:
    names = {p.name for p in builtin_prices()}
    for model in ("gpt-4-turbo", "gpt-4-turbo-2024-04-09", "gpt-4", "gpt-4o", "gpt-4o-2024-05-13",
                  "gpt-4o-2024-08-06", "gpt-4o-2024-11-20", "gpt-4o-mini", "gpt-4o-mini-2024-07-18",
                  "gpt-3.5-turbo-1106", "gpt-3.5-turbo-0125", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano",
                  "o1", "o3-mini", "code_interpreter", "file_search", "retrieval"):
        assert model in names
    text = (Path(__file__).parents[1] / "analytics" / "prices.csv").read_text()
    assert "Source:" in text and "https://openai.com/api/pricing" in text and "Compiled 2026-" in text


def test_known_usage_costs_exact_usd_per_day_model_and_assistant(tmp_path: Path) -> None:
    db = build(tmp_path, [
        # gpt-4o before its 2024-10-02 price cut: $5 / $15 per 1M
        RunSpec("run_a", "gpt-4o", "2024-06-01T09:00:00Z", 1 * M, 100_000, assistant_id="asst_A"),
        RunSpec("run_b", "gpt-4o", "2024-06-01T23:59:59Z", 2 * M, 0, assistant_id="asst_A"),
        # ... and after it: $2.50 / $10
        RunSpec("run_c", "gpt-4o", "2024-11-01T00:00:00Z", 1 * M, 200_000, assistant_id="asst_A"),
        RunSpec("run_d", "gpt-4o-mini", "2024-11-01T12:00:00Z", 2 * M, 1 * M, assistant_id="asst_B"),
        RunSpec("run_e", "gpt-4o-mini", "2024-11-01T13:00:00Z", 333_333, 77_777, assistant_id="asst_B"),
    ])
    rows = cost_by_key(report(db, "cost"))
    assert set(rows) == {("2024-06-01", "gpt-4o", "asst_A"), ("2024-11-01", "gpt-4o", "asst_A"),
                         ("2024-11-01", "gpt-4o-mini", "asst_B")}
    june = rows[("2024-06-01", "gpt-4o", "asst_A")]
    assert (june["runs"], june["prompt_tokens"], june["completion_tokens"]) == (2, 3 * M, 100_000)
    assert round(june["total_usd"], 2) == 16.50  # 3M x $5 + 0.1M x $15
    assert round(rows[("2024-11-01", "gpt-4o", "asst_A")]["total_usd"], 2) == 4.50  # $2.50 + $2.00
    mini = rows[("2024-11-01", "gpt-4o-mini", "asst_B")]
    # (2M + 333,333) x $0.15 + (1M + 77,777) x $0.60 = 0.35 + 0.646666... = 0.9966...
    assert mini["total_usd"] == pytest.approx(2_333_333 * 0.15 / M + 1_077_777 * 0.60 / M, abs=1e-6)
    assert round(mini["total_usd"], 2) == 1.00
    assert all(r["unpriced_runs"] == 0 and r["tool_usd"] == 0 for r in rows.values())


def test_dated_snapshot_takes_its_base_price_as_of_the_snapshot_date(tmp_path: Path) -> None:
    db = build(tmp_path, [
        # not in the book: gpt-4o as of 2024-09-15 ($5/$15, the alias had not been cut yet) even though
        # the run happens after the cut
        RunSpec("run_1", "gpt-4o-2024-09-15", "2025-01-10T00:00:00Z", 1 * M, 0),
        # not in the book, dated after the cut: $2.50
        RunSpec("run_2", "gpt-4o-2025-03-01", "2025-03-05T00:00:00Z", 1 * M, 0),
        # listed exactly: the exact row wins, the snapshot keeps its launch price
        RunSpec("run_3", "gpt-4o-2024-05-13", "2025-01-10T00:00:00Z", 1 * M, 0),
        RunSpec("run_4", "gpt-4o-mini-2099-01-01", "2025-01-10T00:00:00Z", 1 * M, 0),
    ])
    conn = open_db(db, load_price_book(environ={}))
    got = {m: (rule, name, p) for m, rule, name, p in conn.execute(
        "SELECT model, price_rule, price_name, prompt_usd_per_1m::DOUBLE FROM run_prices").fetchall()}
    conn.close()
    assert got["gpt-4o-2024-09-15"] == ("snapshot", "gpt-4o", 5.0)
    assert got["gpt-4o-2025-03-01"] == ("snapshot", "gpt-4o", 2.5)
    assert got["gpt-4o-2024-05-13"] == ("exact", "gpt-4o-2024-05-13", 5.0)
    assert got["gpt-4o-mini-2099-01-01"] == ("snapshot", "gpt-4o-mini", 0.15)
    costs = {r["model"]: r["total_usd"] for r in report(db, "cost").records()}
    assert costs == {"gpt-4o-2024-09-15": 5.0, "gpt-4o-2025-03-01": 2.5, "gpt-4o-2024-05-13": 5.0,
                     "gpt-4o-mini-2099-01-01": 0.15}


def test_unknown_model_is_reported_not_priced_at_zero(tmp_path: Path) -> None:
    db = build(tmp_path, [
        RunSpec("run_1", "gpt-4o", "2024-11-01T00:00:00Z", 1 * M, 0),
        RunSpec("run_2", "my-azure-deployment", "2024-11-01T01:00:00Z", 500, 50),
        RunSpec("run_3", "ft:gpt-4o-mini-2024-07-18:acme::abc123", "2024-11-01T02:00:00Z", 10, 5),
        RunSpec("run_4", "gpt-4o-20240806", "2024-11-01T02:00:00Z", 10, 5),  # not the YYYY-MM-DD form
    ])
    cost = report(db, "cost").records()
    unknown = [r for r in cost if r["model"] != "gpt-4o"]
    assert len(unknown) == 3
    for r in unknown:
        assert r["unpriced_runs"] == r["runs"] == 1
        assert r["token_usd"] is None and r["total_usd"] is None  # NULL, never a silent 0
    unpriced = report(db, "unpriced").records()
    assert {r["model"]: (r["runs"], r["total_tokens"]) for r in unpriced} == {
        "my-azure-deployment": (1, 550), "ft:gpt-4o-mini-2024-07-18:acme::abc123": (1, 15),
        "gpt-4o-20240806": (1, 15)}


def test_user_prices_override_and_extend_the_book(tmp_path: Path) -> None:
    db = build(tmp_path, [
        RunSpec("run_1", "gpt-4o", "2024-06-01T00:00:00Z", 1 * M, 1 * M),
        RunSpec("run_2", "gpt-4o", "2024-11-01T00:00:00Z", 1 * M, 1 * M),
        RunSpec("run_3", "my-azure-deployment", "2024-11-01T00:00:00Z", 2 * M, 0),
    ])
    prices = tmp_path / "prices.csv"
    prices.write_text("# our negotiated rates, 2024-05\n"
                      "name,effective_from,prompt_usd_per_1m,completion_usd_per_1m\n"
                      "gpt-4o,2024-01-01,1.00,2.00\n"
                      "my-azure-deployment,,0.25,1.00\n")
    expected = {"gpt-4o": 6.0, "my-azure-deployment": 0.5}  # 2 x (1M x $1 + 1M x $2), on both dates
    for via_flag in (True, False):
        result = report(db, "cost", str(prices) if via_flag else None,
                        environ=None if via_flag else {"RUNTAP_PRICES": str(prices)})
        got: dict[str, float] = {}
        for r in result.records():
            got[r["model"]] = got.get(r["model"], 0.0) + r["total_usd"]
        assert got == expected
    assert report(db, "unpriced", str(prices)).rows == []
    assert [r["model"] for r in report(db, "unpriced").records()] == ["my-azure-deployment"]
    book = report(db, "prices", str(prices)).records()
    assert [(r["name"], r["source"]) for r in book if r["name"] == "gpt-4o"] == [("gpt-4o", str(prices))]


def test_tool_fees_are_separate_cost_lines(tmp_path: Path) -> None:
    day = "2024-11-01T"
    db = build(tmp_path, [
        RunSpec("run_1", "gpt-4o", day + "10:00:00Z", 0, 0, thread_id="thread_1"),
        RunSpec("run_2", "gpt-4o", day + "10:30:00Z", 0, 0, thread_id="thread_1"),
        RunSpec("run_3", "gpt-4o", day + "10:05:00Z", 0, 0, thread_id="thread_2", assistant_id="asst_2"),
        RunSpec("run_4", "unknown-model", day + "10:06:00Z", 0, 0, thread_id="thread_3",
                assistant_id="asst_3"),
    ], [
        # thread_1: code_interpreter at 10:00 and 10:40 share one session; 11:10 opens a second
        StepSpec("step_1", "run_1", day + "10:00:01Z", ["code_interpreter"], thread_id="thread_1"),
        StepSpec("step_2", "run_2", day + "10:40:00Z", ["code_interpreter", "function"]),
        StepSpec("step_3", "run_2", day + "11:10:00Z", ["code_interpreter"], thread_id="thread_1"),
        StepSpec("step_4", "run_2", day + "11:11:00Z", [], thread_id="thread_1"),
        # thread_2: three file_search calls; a v1 retrieval call on thread_3
        StepSpec("step_5", "run_3", day + "10:05:01Z", ["file_search", "file_search"], thread_id="thread_2"),
        StepSpec("step_6", "run_3", day + "10:05:02Z", ["file_search"], thread_id="thread_2"),
        StepSpec("step_7", "run_4", day + "10:06:01Z", ["retrieval"], thread_id="thread_3"),
    ])
    cost = {r["assistant_id"]: r for r in report(db, "cost").records()}
    assert cost["asst_1"]["tool_usd"] == pytest.approx(0.06)  # 2 sessions x $0.03
    assert cost["asst_1"]["token_usd"] == 0 and cost["asst_1"]["total_usd"] == pytest.approx(0.06)
    assert cost["asst_2"]["tool_usd"] == pytest.approx(0.0075)  # 3 calls x $2.50/1k
    # an unpriced model still shows its tool fee line, but no total
    assert cost["asst_3"]["tool_usd"] == pytest.approx(0.0025) and cost["asst_3"]["total_usd"] is None
    tools = {r["step_kind"]: r for r in report(db, "tools").records()}
    assert (tools["code_interpreter"]["steps"], tools["code_interpreter"]["sessions"]) == (3, 2)
    assert tools["code_interpreter"]["tool_usd"] == pytest.approx(0.06)
    assert (tools["file_search"]["calls"], tools["file_search"]["tool_usd"]) == (3, pytest.approx(0.0075))
    assert (tools["function"]["calls"], tools["function"]["tool_usd"]) == (1, 0)
    assert tools["message_creation"]["steps"] == 1


def test_run_before_first_effective_date_takes_the_first_row(tmp_path: Path) -> None:
    db = build(tmp_path, [RunSpec("run_1", "gpt-4o-mini", "2024-01-01T00:00:00Z", 1 * M, 0)])
    assert report(db, "cost").records()[0]["total_usd"] == pytest.approx(0.15)


@pytest.mark.parametrize(("text", "message"), [
    ("name,prompt_usd_per_1m,completion_usd_per_1m\ngpt-x,abc,1\n",
     "mine.csv:2: prompt_usd_per_1m is not a number"),
    ("name,prompt_usd_per_1m\ngpt-x,1\n", "needs prompt_usd_per_1m and completion_usd_per_1m"),
    ("model,price\ngpt-x,1\n", "header must be a subset"),
    ("name,kind,unit_usd\ncode_interpreter,tool,\n", "needs unit_usd"),
    ("name,effective_from,prompt_usd_per_1m,completion_usd_per_1m\nm,2024-13-01,1,1\n", "YYYY-MM-DD"),
    ("name,effective_from,prompt_usd_per_1m,completion_usd_per_1m\nm,,1,1\nm,,2,2\n", "two rows"),
    ("name,prompt_usd_per_1m,completion_usd_per_1m\nm,-1,1\n", "non-negative"),
])
def test_bad_price_files_fail_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(PriceError, match=message):
        parse_prices(text, source="mine.csv")


def test_missing_price_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PriceError, match="cannot read price file"):
        load_price_book(str(tmp_path / "nope.csv"))
