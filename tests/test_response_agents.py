"""Who spent it, across both APIs: a response's prompt template (`prompt.id`, the Responses API's
successor of an assistant) is captured without its variables, and top-assistants ranks assistants,
templates and template-less responses (per model) in one list."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from runtap.analytics.ingest.decode import CaptureDecoder
from runtap.analytics.ingest.records import Exchange, ResponseBody, Snapshot
from runtap.analytics.prices import load_price_book
from runtap.analytics.reports import make_params, open_db, run_report

from tests import response_factory as rf
from tests.test_merge import lifecycle as run_lifecycle
from tests.test_response_reports import T0, capture

TEMPLATE = {"id": "pmpt_support", "version": "3", "variables": {"customer": "Ada Lovelace, card 4111"}}


def _snap(rid: str, model: str, *, prompt: dict[str, object] | None = None, conversation: str | None = None,
          input_tokens: int = 1_000_000) -> Snapshot:
    obj = rf.response(rid, created_at=T0, model=model, prompt=prompt,
                      conversation={"id": conversation} if conversation else None,
                      usage=rf.usage(input_tokens=input_tokens, cached=0, output_tokens=0, reasoning=0))
    return Snapshot("response", obj, T0 + 5, "response", "responses.retrieve", None, "fp_abc", "r1")


def test_prompt_template_is_captured_and_its_variables_are_not(tmp_path: Path) -> None:
    ex = Exchange(id="ex1", method="POST", path="/v1/responses", operation="responses.create", api_version=None,
                  key_fingerprint=None, started_at=T0)
    body = orjson.dumps(rf.response("resp_t", prompt=TEMPLATE))
    (snap,) = CaptureDecoder(store_prompts=False).decode(ResponseBody(ex, 200, body, truncated=False))
    assert snap.obj["prompt"] == {"id": "pmpt_support", "version": "3"}
    (kept,) = CaptureDecoder(store_prompts=True).decode(ResponseBody(ex, 200, body, truncated=False))
    assert kept.obj["prompt"] == TEMPLATE
    conn = open_db(capture(tmp_path, [snap]), load_price_book(environ={}))
    row = conn.execute("SELECT prompt_id, prompt_version, CAST(raw AS VARCHAR) FROM responses").fetchone()
    conn.close()
    assert row is not None and row[:2] == ("pmpt_support", "3")
    assert "Ada" not in row[2] and "4111" not in row[2]


def test_top_assistants_ranks_assistants_templates_and_template_less_responses(tmp_path: Path) -> None:
    snaps = [
        # gpt-4o: $2.50 per 1M input
        _snap("resp_1", "gpt-4o", prompt=TEMPLATE, conversation="conv_1"),
        _snap("resp_2", "gpt-4o", prompt=TEMPLATE, conversation="conv_2"),
        _snap("resp_3", "gpt-4o", conversation="conv_1"),
        # gpt-4o-mini: $0.15 per 1M input; no template, one row of its own
        _snap("resp_4", "gpt-4o-mini"),
        _snap("resp_5", "house-model", input_tokens=10),
        # asst_1 on gpt-4o in 2023-11 (gpt-4o's first price, $5 / $15 per 1M): 812 prompt + 97 completion
        *run_lifecycle(),
    ]
    conn = open_db(capture(tmp_path, snaps), load_price_book(environ={}))
    rows = run_report(conn, "top-assistants").records()
    assert [(r["assistant_id"], r["api"], r["models"], r["runs"], r["threads"], r["total_usd"])
            for r in rows] == [
        ("pmpt_support", "responses", "gpt-4o", 2, 2, 5.0),
        (None, "responses", "gpt-4o", 1, 1, 2.5),
        (None, "responses", "gpt-4o-mini", 1, 0, 0.15),
        ("asst_1", "assistants", "gpt-4o", 1, 1, 0.005515),
        (None, "responses", "house-model", 1, 0, None),
    ]
    assert rows[-1]["unpriced_runs"] == 1
    assert sum(r["cost_share_pct"] or 0 for r in rows) == pytest.approx(100.0, abs=0.02)
    assert rows[0]["cost_share_pct"] == round(100 * 5.0 / 7.655515, 2)
    by_api = run_report(conn, "top-assistants", make_params(by="api", limit=2)).records()
    conn.close()
    assert [(r["assistant_id"], r["api"]) for r in by_api] == [("pmpt_support", "responses"), (None, "responses")]
