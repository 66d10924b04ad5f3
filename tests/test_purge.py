"""`runtap purge --before WHEN`: prompt content stored with --store-prompts can be removed for good."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from runtap.demo import workload as w
from runtap.proxy.__main__ import main

from tests.fault_helpers import API_KEY, locked, proxy_to, query, sim

MARKERS = (b"PROMPT-MARKER-additional-instructions", b"PROMPT-MARKER-additional-message", b"You are helpful.")


async def _runs_with_prompts(tmp_path: Path, upstream: str, n: int = 3) -> dict[str, str]:
    saw: dict[str, str] = {}
    async with proxy_to(tmp_path, upstream, store_prompts=True) as px:
        async with w.client_for(px.running.proxy_url + "/v1", API_KEY) as client:
            for _ in range(n):
                result = w.WorkloadResult()
                await w.polled_run(client, result, model="gpt-4o", scenario="complete", headers=w.V2,
                                   additional_instructions=MARKERS[0].decode(),
                                   additional_messages=[{"role": "user", "content": MARKERS[1].decode()}])
                saw.update(result.runs)
    return saw


RESPONSE_MARKERS = (b"PROMPT-MARKER-response-instructions", b"PROMPT-MARKER-response-input")


async def _responses_with_prompts(tmp_path: Path, upstream: str, n: int = 2) -> dict[str, str]:
    saw: dict[str, str] = {}
    async with proxy_to(tmp_path, upstream, store_prompts=True) as px:
        async with w.client_for(px.running.proxy_url + "/v1", API_KEY) as client:
            for _ in range(n):
                resp = await client.responses.create(model="gpt-4o", instructions=RESPONSE_MARKERS[0].decode(),
                                                     input=RESPONSE_MARKERS[1].decode())
                saw[resp.id] = resp.status or ""
                saw["text:" + resp.id] = resp.output_text
    return saw


def _stored(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("runtap.duckdb"))


def _day(offset: int) -> str:
    return (datetime.now(UTC) + timedelta(days=offset)).date().isoformat()


async def test_purge_clears_prompt_content_from_the_file_and_keeps_the_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "runtap.duckdb"
    async with sim() as upstream:
        saw = await _runs_with_prompts(tmp_path, upstream)
        assert all(m in _stored(tmp_path) for m in MARKERS)  # the opt-in worked: it is all there

        assert main(["purge", "--before", _day(-1), "--db", str(db)]) == 0  # nothing that old
        assert "cleared prompt content of 0 run(s)" in capsys.readouterr().out
        assert all(m in _stored(tmp_path) for m in MARKERS)

        assert main(["purge", "--before", _day(1), "--db", str(db)]) == 0
        assert f"cleared prompt content of {len(saw)} run(s)" in capsys.readouterr().out
        assert not any(m in _stored(tmp_path) for m in MARKERS)
        assert dict(query(db, "SELECT id, status FROM runs")) == saw
        assert query(db, "SELECT count(*) FROM runs WHERE instructions IS NOT NULL OR "
                         "additional_messages IS NOT NULL OR json_exists(raw, '$.instructions')") == [(0,)]
        # runtap serves and captures into the rewritten file as before.
        more = await _runs_with_prompts(tmp_path, upstream, n=1)
    assert dict(query(db, "SELECT id, status FROM runs")) == saw | more


async def test_purge_rows_deletes_runs_steps_events_and_requests(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "runtap.duckdb"
    async with sim() as upstream:
        saw = await _runs_with_prompts(tmp_path, upstream)
    assert main(["purge", "--before", _day(1), "--rows", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert f"{len(saw)} runs" in out
    for table in ("runs", "run_steps", "run_events", "requests"):
        assert query(db, f"SELECT count(*) FROM {table}") == [(0,)], table
    assert not any(m in _stored(tmp_path) for m in MARKERS)


async def test_purge_replays_a_pending_spool_first(tmp_path: Path) -> None:
    db = tmp_path / "runtap.duckdb"
    spool = tmp_path / "runtap.duckdb.spool.jsonl"
    async with sim() as upstream:
        with locked(db):
            saw = await _runs_with_prompts(tmp_path, upstream)
        assert MARKERS[1] in spool.read_bytes()
    assert main(["purge", "--before", _day(1), "--db", str(db)]) == 0
    assert spool.stat().st_size == 0
    assert dict(query(db, "SELECT id, status FROM runs")) == saw
    assert not any(m in _stored(tmp_path) for m in MARKERS)


def test_purge_refuses_a_database_held_by_a_running_sidecar(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "runtap.duckdb"
    with locked(db):
        assert main(["purge", "--before", "30d", "--db", str(db)]) == 1
    assert "held by a running `runtap serve`" in capsys.readouterr().err


def test_purge_rejects_a_bad_date(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["purge", "--before", "last tuesday", "--db", str(tmp_path / "x.duckdb")]) == 2
    assert "--before" in capsys.readouterr().err


async def test_purge_clears_response_prompts_and_output_text_and_keeps_the_responses(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "runtap.duckdb"
    async with sim() as upstream:
        saw = await _responses_with_prompts(tmp_path, upstream)
    ids = {k: v for k, v in saw.items() if not k.startswith("text:")}
    texts = [v.encode() for k, v in saw.items() if k.startswith("text:") and v]
    assert texts and all(m in _stored(tmp_path) for m in (*RESPONSE_MARKERS, *texts))

    assert main(["purge", "--before", _day(1), "--db", str(db)]) == 0
    assert f"and {len(ids)} response(s)" in capsys.readouterr().out
    assert not any(m in _stored(tmp_path) for m in (*RESPONSE_MARKERS, *texts))
    assert dict(query(db, "SELECT id, status FROM responses")) == ids
    assert query(db, "SELECT count(*) FROM responses WHERE instructions IS NOT NULL OR input IS NOT NULL") == [(0,)]
    # tokens and the rest of the row survive: only content goes
    assert query(db, "SELECT count(*) FROM responses WHERE total_tokens > 0") == [(len(ids),)]

    assert main(["purge", "--before", _day(1), "--rows", "--db", str(db)]) == 0
    assert f"{len(ids)} responses" in capsys.readouterr().out
    assert query(db, "SELECT count(*) FROM responses") == query(db, "SELECT count(*) FROM response_events") == [(0,)]
