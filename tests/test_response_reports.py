"""Reports over both APIs: cost with cached input and reasoning, --by api / conversation, old files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
from runtap.analytics.ingest.records import Snapshot
from runtap.analytics.ingest.store import Store
from runtap.analytics.prices import load_price_book
from runtap.analytics.reports import make_params, open_db, run_report

from tests import response_factory as rf
from tests.test_merge import lifecycle as run_lifecycle

T0 = 1_760_000_000  # 2025-10-09


def response_snap(rid: str, *, model: str = "gpt-5-mini", conversation: str | None = "conv_1",
                  tools: list[dict[str, Any]] | None = None) -> Snapshot:
    obj = rf.response(rid, created_at=T0, model=model, output=tools or [rf.message()],
                      conversation={"id": conversation} if conversation else None,
                      usage=rf.usage(input_tokens=1_000_000, cached=400_000, output_tokens=100_000, reasoning=60_000))
    return Snapshot("response", obj, T0 + 5, "response", "responses.retrieve", None, "fp_abc", "r1")


def capture(tmp_path: Path, snaps: list[Snapshot]) -> str:
    path = str(tmp_path / "capture.duckdb")
    store = Store(path)
    store.apply(snaps, [])
    store.close()
    return path


def test_cost_prices_cached_input_and_bills_reasoning_as_output(tmp_path: Path) -> None:
    db = capture(tmp_path, [response_snap("resp_1"), response_snap("resp_2", model="acme-unknown"),
                            response_snap("resp_3", tools=[{"type": "web_search_call", "id": "ws_1",
                                                            "status": "completed"}]), *run_lifecycle()])
    conn = open_db(db, load_price_book(environ={}))
    rows = {(r["model"], r["assistant_id"]): r for r in run_report(conn, "cost").records()}
    mini = rows[("gpt-5-mini", None)]
    assert (mini["runs"], mini["responses"], mini["unpriced_runs"]) == (0, 2, 0)
    assert mini["prompt_tokens"] == 2_000_000 and mini["cached_prompt_tokens"] == 800_000
    assert mini["completion_tokens"] == 200_000 and mini["reasoning_tokens"] == 120_000
    # 600k uncached x 0.25 + 400k cached x 0.025 + 100k output x 2.00 (per 1M), twice; one web search call
    assert mini["token_usd"] == 2 * 0.36 and mini["tool_usd"] == 0.01 and mini["total_usd"] == 0.73
    unknown = rows[("acme-unknown", None)]
    assert unknown["unpriced_runs"] == 1 and unknown["token_usd"] is None
    run = rows[("gpt-4o", "asst_1")]
    assert (run["runs"], run["responses"]) == (1, 0)
    by_api = run_report(conn, "cost", make_params(by="api")).records()
    assert {(r["api"], r["model"]) for r in by_api} == {
        ("assistants", "gpt-4o"), ("responses", "gpt-5-mini"), ("responses", "acme-unknown")}
    by_conv = run_report(conn, "cost", make_params(by="conversation")).records()
    assert {(r["conversation"], r["model"]) for r in by_conv} == {
        ("thread_1", "gpt-4o"), ("conv_1", "gpt-5-mini"), ("conv_1", "acme-unknown")}
    status = {(r["api"], r["model"], r["status"]): r["runs"] for r in run_report(conn, "status").records()}
    assert status[("responses", "gpt-5-mini", "completed")] == 2 and status[("assistants", "gpt-4o", "completed")] == 1
    unpriced = run_report(conn, "unpriced").records()
    assert [(r["model"], r["runs"], r["responses"]) for r in unpriced] == [("acme-unknown", 0, 1)]
    timings = conn.execute("SELECT count(*), count(duration_s) FROM response_timings").fetchone()
    assert timings == (3, 3)
    conn.close()


def test_latency_covers_responses_with_their_tool_rounds(tmp_path: Path) -> None:
    asked = rf.response("resp_a", created_at=T0, output=[rf.function_call()], background=True)
    answer = rf.response("resp_b", created_at=T0 + 4, previous_response_id="resp_a")
    snaps = [
        Snapshot("response", dict(asked, status="queued", output=[], usage=None), T0 + 0.5, "response",
                 "responses.create", None, None, "c1", {"request_started_at": T0 + 0.5}),
        Snapshot("response", dict(asked, status="in_progress", output=[], usage=None), T0 + 1.5, "response",
                 "responses.retrieve", None, None, "p1"),
        Snapshot("response", asked, T0 + 3, "response", "responses.retrieve", None, None, "p2"),
        Snapshot("response", answer, T0 + 4.25, "response", "responses.create", None, None, "c2",
                 {"request_started_at": T0 + 4.25, "answers": ["resp_a"]}),
        *run_lifecycle(),
    ]
    conn = open_db(capture(tmp_path, snaps), load_price_book(environ={}))
    rows = {r["api"]: r for r in run_report(conn, "latency").records()}
    conn.close()
    assert rows["assistants"]["runs"] == 1 and rows["assistants"]["tool_turnarounds"] == 1
    resp = rows["responses"]
    assert resp["runs"] == 2 and resp["queue_p50_s"] == 1.0  # the one background response's queue
    assert resp["tool_turnarounds"] == 1 and resp["tool_turnaround_p50_s"] == 1.25


def test_budgets_cover_max_output_tokens(tmp_path: Path) -> None:
    cut = rf.response("resp_cut", "incomplete", created_at=T0, max_output_tokens=100,
                      incomplete_details={"reason": "max_output_tokens"},
                      usage=rf.usage(output_tokens=100, reasoning=80))
    half = rf.response("resp_half", created_at=T0, max_output_tokens=100, usage=rf.usage(output_tokens=25))
    snaps = [Snapshot("response", o, T0 + 1, "response", "responses.retrieve", None, None, "p") for o in (cut, half)]
    conn = open_db(capture(tmp_path, snaps), load_price_book(environ={}))
    rows = {r["budget_use"]: r for r in run_report(conn, "budgets").records() if r["api"] == "responses"}
    conn.close()
    assert rows["hit cap"]["runs"] == 1 and rows["hit cap"]["incomplete_max_output_tokens"] == 1
    assert rows["< 50%"]["runs"] == 1 and rows["< 50%"]["median_headroom_pct"] == 75.0


def test_reports_still_run_on_a_capture_file_from_before_responses(tmp_path: Path) -> None:
    db = capture(tmp_path, run_lifecycle())
    con = duckdb.connect(db)
    con.execute("DROP TABLE responses")
    con.execute("DROP TABLE response_events")
    con.close()
    conn = open_db(db, load_price_book(environ={}))
    rows = run_report(conn, "cost").records()
    assert [(r["runs"], r["responses"]) for r in rows] == [(1, 0)]
    conn.close()


def test_tools_report_has_a_responses_row_per_tool_kind_beside_the_run_steps(tmp_path: Path) -> None:
    two_calls = [rf.function_call(call_id="call_1", fid="fc_1"), rf.function_call(call_id="call_2", fid="fc_2"),
                 {"type": "web_search_call", "id": "ws_1", "status": "completed"}]
    db = capture(tmp_path, [response_snap("resp_1", tools=two_calls),
                            response_snap("resp_2", tools=[rf.function_call()]),
                            response_snap("resp_3"), *run_lifecycle()])
    conn = open_db(db, load_price_book(environ={}))
    rows = {(r["api"], r["step_kind"]): r for r in run_report(conn, "tools").records()}
    assert {k for k in rows if k[0] == "responses"} == {("responses", "function"), ("responses", "web_search")}
    function, web = rows[("responses", "function")], rows[("responses", "web_search")]
    assert (function["steps"], function["calls"], function["tool_usd"]) == (2, 3, 0)
    assert (web["steps"], web["calls"], web["tool_usd"]) == (1, 1, 0.01)
    assert {api for api, _ in rows} == {"responses"}  # run_lifecycle() records no steps


def test_top_threads_lists_conversations_beside_threads(tmp_path: Path) -> None:
    db = capture(tmp_path, [response_snap("resp_1"), response_snap("resp_2"),
                            response_snap("resp_3", conversation=None), *run_lifecycle()])
    conn = open_db(db, load_price_book(environ={}))
    rows = {(r["api"], r["thread_id"]): r for r in run_report(conn, "top-threads").records()}
    assert set(rows) == {("responses", "conv_1"), ("assistants", "thread_1")}
    conv = rows[("responses", "conv_1")]
    assert (conv["runs"], conv["total_tokens"], conv["total_usd"]) == (2, 2 * 1_100_000, 0.72)
