"""Provider and API version as the client asked for them, and databases made before they were recorded.

OpenAI's `assistants=v1` and Azure's `api-version=v1` are different APIs (Azure's v1 serves v2 shapes):
rows carry the provider beside the verbatim version, a report can group by both, and a capture file
written by schema version 1 keeps working, read-only and read-write.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import duckdb
import httpx2 as httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from runtap.analytics.ingest.store import SCHEMA_VERSION, Store
from runtap.analytics.lake import export, open_lake
from runtap.analytics.prices import load_price_book
from runtap.analytics.reports import make_params, open_db, run_report
from runtap.analytics.synth import RunSpec, insert_runs
from runtap.demo.sim import SimConfig, start_sim
from runtap.proxy.api_versions import requested

from tests.test_merge import lifecycle
from tests.test_store import request


@pytest.mark.parametrize(("beta", "path", "expected"), [
    ("assistants=v2", "/v1/threads/t/runs", ("openai", "v2")),
    ("assistants=v1, other=x", "/v1/threads/t/runs?limit=2", ("openai", "v1")),
    (None, "/api/projects/p/threads/t/runs?api-version=v1", ("azure", "v1")),
    (None, "/openai/threads/t/runs?api-version=2024-05-01-preview&x=1", ("azure", "2024-05-01-preview")),
    (None, "/openai/threads?after=a&api-version=2025%2D05%2D15-preview", ("azure", "2025-05-15-preview")),
    # the query names the version the request was served under, whatever a stray header says
    ("assistants=v2", "/api/projects/p/threads?api-version=v1", ("azure", "v1")),
    (None, "/api/projects/p/threads?api-version=", ("azure", None)),
    (None, "/api/projects/p/threads?api-version=" + "x" * 65, ("azure", None)),
    (None, "/api/projects/p/threads?api-version=v1%0d%0aX:%20y", ("azure", None)),
    (None, "/v1/threads?my-api-version=v9", (None, None)),
    (None, "/v1/threads/t/runs", (None, None)),
    ("tools=v1", "/v1/threads/t/runs", (None, None)),
])
def test_provider_and_version_from_header_or_query(beta: str | None, path: str,
                                                    expected: tuple[str | None, str | None]) -> None:
    assert requested(beta, path) == expected


@given(st.text(max_size=200), st.text(max_size=200))
def test_any_query_gives_a_short_plain_version_or_none(beta: str, query: str) -> None:
    provider, version = requested(beta, "/x?" + query)
    assert provider in ("openai", "azure", None)
    if provider == "azure" and version is not None:
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", version)


def _schema_v1() -> str:
    """schema.sql as schema version 1 had it: no api_provider column, no ALTERs."""
    ddl = resources.files("runtap.analytics").joinpath("schema.sql").read_text(encoding="utf-8")
    ddl = ddl[:ddl.index("-- Schema version 2")]
    ddl = re.sub(r",\n\s*api_provider\s+VARCHAR[^\n]*\n\);", "\n);", ddl)
    return re.sub(r"\n\s*api_provider\s+VARCHAR,[^\n]*", "", ddl)


def _v1_database(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute(_schema_v1())
    con.execute("INSERT INTO schema_version (version) VALUES (1)")
    assert "api_provider" not in {r[0] for r in con.execute("DESCRIBE runs").fetchall()}
    insert_runs(con, [RunSpec("run_old", "gpt-4o", "2024-11-01T10:00:00Z", 1_000, 10)])
    con.close()


def test_a_version_1_file_reads_in_reports_then_upgrades_in_place(tmp_path: Path) -> None:
    db = tmp_path / "old.duckdb"
    _v1_database(db)
    # Read-only first (runtap report before the new runtap serve ever wrote to it): a run captured
    # before providers were recorded has its version from OpenAI-Beta, so it groups as OpenAI's.
    conn = open_db(db, load_price_book(environ={}))
    rows = run_report(conn, "cost", make_params(by="api_version")).records()
    conn.close()
    assert [(r["api_version"], r["runs"]) for r in rows] == [("openai:v2", 1)]

    store = Store(str(db))
    try:
        store.apply(lifecycle(), [request("req_new", api_provider="azure", api_version="v1")])
        con = store.connection
        assert con.execute("SELECT max(version) FROM schema_version").fetchone() == (SCHEMA_VERSION,)
        assert con.execute("SELECT id, api_provider, api_version FROM runs ORDER BY id").fetchall() == [
            ("run_1", None, "v2"), ("run_old", None, "v2")]
        assert con.execute("SELECT api_provider, api_version FROM requests").fetchall() == [("azure", "v1")]
    finally:
        store.close()
    store = Store(str(db))  # opening again changes nothing
    store.close()
    con = duckdb.connect(str(db))
    assert con.execute("SELECT version FROM schema_version ORDER BY version").fetchall() == [(1,), (SCHEMA_VERSION,)]
    con.close()


def test_a_lake_exported_before_version_2_still_reports_and_mixes_with_newer_exports(tmp_path: Path) -> None:
    old, new, lake = tmp_path / "old.duckdb", tmp_path / "new.duckdb", tmp_path / "lake"
    _v1_database(old)
    export(str(old), str(lake), instance="old-sidecar")
    conn = open_lake(f"{lake}/**/*.parquet", load_price_book(environ={}))
    rows = run_report(conn, "cost", make_params(by="api_version")).records()
    conn.close()
    assert [(r["api_version"], r["runs"]) for r in rows] == [("openai:v2", 1)]
    Store(str(new)).close()
    con = duckdb.connect(str(new))
    insert_runs(con, [RunSpec("run_new", "gpt-4o", "2024-11-01T11:00:00Z", 1_000, 10)])
    con.execute("UPDATE runs SET api_provider = 'azure', api_version = 'v1'")
    con.close()
    export(str(new), str(lake), instance="new-sidecar")
    conn = open_lake(f"{lake}/**/*.parquet", load_price_book(environ={}))
    rows = run_report(conn, "cost", make_params(by="api_version")).records()
    conn.close()
    assert {r["api_version"]: r["runs"] for r in rows} == {"openai:v2": 1, "azure:v1": 1}


def test_reports_group_by_provider_and_version(tmp_path: Path) -> None:
    db = tmp_path / "mixed.duckdb"
    Store(str(db)).close()
    con = duckdb.connect(str(db))
    insert_runs(con, [RunSpec(f"run_{i}", "gpt-4o", "2024-11-01T10:00:00Z", 1_000, 10) for i in range(4)])
    con.execute("UPDATE runs SET api_provider = 'azure', api_version = 'v1' WHERE id IN ('run_0', 'run_1')")
    con.execute("UPDATE runs SET api_provider = 'openai', api_version = 'v1' WHERE id = 'run_2'")
    con.execute("UPDATE runs SET api_provider = NULL, api_version = NULL WHERE id = 'run_3'")
    con.close()
    conn = open_db(db, load_price_book(environ={}))
    rows = run_report(conn, "cost", make_params(by="api_version")).records()
    conn.close()
    assert {r["api_version"]: r["runs"] for r in rows} == {"azure:v1": 2, "openai:v1": 1, None: 1}


async def test_simulator_azure_paths_require_a_supported_api_version() -> None:
    runner, url = await start_sim(SimConfig())
    origin = url.removesuffix("/v1")
    auth = {"Authorization": "Bearer t"}
    try:
        async with httpx.AsyncClient(base_url=origin, headers=auth) as client:
            made = await client.post("/api/projects/p/threads?api-version=v1", json={})
            assert made.status_code == 200 and made.json()["object"] == "thread"
            tid = made.json()["id"]
            missing = await client.get(f"/api/projects/p/threads/{tid}/runs")
            assert missing.status_code == 400 and missing.json()["error"]["param"] == "api-version"
            wrong = await client.get(f"/api/projects/p/threads/{tid}/runs?api-version=v9")
            assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "invalid_value"
            listed = await client.get(f"/api/projects/p/threads/{tid}/runs?api-version=v1")
            assert listed.json() == {"object": "list", "data": [], "first_id": None, "last_id": None,
                                     "has_more": False}
            # The OpenAI-style prefix is unchanged and needs no api-version.
            assert (await client.get(f"/v1/threads/{tid}")).status_code == 200
    finally:
        await runner.cleanup()
