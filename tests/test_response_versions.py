"""The Responses API version a request called, as runs have theirs: `responses.api_provider` and
`responses.api_version` from the path or the api-version query (never from an Assistants OpenAI-Beta
header), `--by api_version` over both APIs, and capture files and lakes written before the columns."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import duckdb
import httpx2 as httpx
import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from runtap.analytics.ingest.response_versions import response_api_version
from runtap.analytics.ingest.store import SCHEMA_VERSION, Store
from runtap.analytics.lake import export, open_lake
from runtap.analytics.prices import load_price_book
from runtap.analytics.reports import make_params, open_db, run_report
from runtap.analytics.synth import RunSpec, insert_runs
from runtap.demo.sim import SimConfig, start_sim
from runtap.proxy.api_versions import requested
from runtap.proxy.app import build_runtime
from runtap.proxy.serve import start

from tests.conftest import stack_settings


@pytest.mark.parametrize(("beta", "raw_path", "expected"), [
    (None, "/v1/responses", ("openai", "v1")),
    (None, "/v1/responses/resp_1?stream=true&starting_after=3", ("openai", "v1")),
    # OpenAI-Beta versions the Assistants API: an app sending it on every call says nothing of responses
    ("assistants=v2", "/v1/responses/resp_1/cancel", ("openai", "v1")),
    (None, "/openai/v1/responses", ("azure", "v1")),
    (None, "/openai/responses?api-version=2025-04-01-preview", ("azure", "2025-04-01-preview")),
    ("assistants=v2", "/openai/responses/resp_1?api-version=preview", ("azure", "preview")),
    (None, "/api/projects/p/openai/responses?api-version=2025-05-15-preview", ("azure", "2025-05-15-preview")),
    (None, "/openai/v1/responses?api-version=preview", ("azure", "preview")),
    (None, "/responses", (None, None)),
    (None, "/api/responses", (None, None)),
    (None, "/v1/conversations", (None, None)),
])
def test_provider_and_version_of_a_responses_call(beta: str | None, raw_path: str,
                                                  expected: tuple[str | None, str | None]) -> None:
    provider, version = requested(beta, raw_path)  # what the relay records on the exchange
    assert response_api_version(raw_path.partition("?")[0], provider, version) == expected


@given(st.lists(st.text(alphabet="abv01/9.-_%", max_size=12), max_size=6), st.sampled_from([None, "openai", "azure"]),
       st.one_of(st.none(), st.text(max_size=70)))
def test_any_path_gives_a_known_provider_and_a_short_version(parts: list[str], provider: str | None,
                                                            version: str | None) -> None:
    got_provider, got_version = response_api_version("/" + "/".join([*parts, "responses"]), provider, version)
    assert got_provider in ("openai", "azure", None)
    if got_provider == "openai":
        assert got_version is not None and re.fullmatch(r"v[0-9]{1,3}", got_version)
    if got_provider is None:
        assert got_version is None


async def test_azure_clients_responses_are_grouped_by_their_version_beside_runs(tmp_path: Path) -> None:
    """The real SDK's two Azure forms through runtap: AzureOpenAI (/openai/responses?api-version=) and
    OpenAI on the GA v1 path (/openai/v1/responses); each response's span names its provider and
    version; then `cost --by api_version` over both APIs."""
    sim_runner, sim_url = await start_sim(SimConfig(prefix="/openai"))
    settings = stack_settings(tmp_path, sim_url.removesuffix("/openai"))
    spans = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    running = await start(settings, runtime=build_runtime(settings, registry=CollectorRegistry(),
                                                          tracer_provider=provider))
    preview = openai.AsyncAzureOpenAI(azure_endpoint=running.proxy_url, api_version="2025-04-01-preview",
                                      api_key="sk-test-azure", http_client=httpx.AsyncClient())
    ga = openai.AsyncOpenAI(base_url=running.proxy_url + "/openai/v1/", api_key="sk-test-azure",
                            http_client=httpx.AsyncClient())
    try:
        a = await preview.responses.create(model="gpt-4o-mini", input="Say hello.")
        b = await ga.responses.create(model="gpt-4o-mini", input="Say hello.")
        c = await ga.responses.create(model="gpt-4o-mini", input="Say it again.", stream=True)
        streamed = [e.response.id async for e in c if e.type == "response.completed"]
        assert await preview.responses.retrieve(a.id)  # a poll under the same version changes nothing
    finally:
        await preview.close()
        await ga.close()
        await running.stop()
        await sim_runner.cleanup()
    con = duckdb.connect(settings.db)
    rows = dict((r[0], (r[1], r[2])) for r in con.execute(
        "SELECT id, api_provider, api_version FROM responses").fetchall())
    assert rows == {a.id: ("azure", "2025-04-01-preview"), b.id: ("azure", "v1"),
                    streamed[0]: ("azure", "v1")}
    response_spans = [sp.attributes or {} for sp in spans.get_finished_spans()
                      if (sp.attributes or {}).get("gen_ai.operation.name") == "chat"]
    traced = {a.get("gen_ai.response.id"): (a.get("openai.response.api_provider"),
                                            a.get("openai.response.api_version")) for a in response_spans}
    assert traced == rows
    insert_runs(con, [RunSpec("run_1", "gpt-4o-mini", "2026-01-01T10:00:00Z", 1_000, 10)])
    con.execute("UPDATE runs SET api_provider = 'openai', api_version = 'v2'")
    con.close()
    conn = open_db(settings.db, load_price_book(environ={}))
    got = {r["api_version"]: (r["runs"], r["responses"])
           for r in run_report(conn, "cost", make_params(by="api_version")).records()}
    status = {(r["api_version"], r["api"], r["runs"])
              for r in run_report(conn, "status", make_params(by="api_version")).records()}
    conn.close()
    assert got == {"azure:2025-04-01-preview": (0, 1), "azure:v1": (0, 2), "openai:v2": (1, 0)}
    assert status == {("azure:2025-04-01-preview", "responses", 1), ("azure:v1", "responses", 2),
                      ("openai:v2", "assistants", 1)}


def _schema_v2() -> str:
    """schema.sql as schema version 2 had it: responses without api_version, api_provider, prompt_id
    and prompt_version."""
    ddl = resources.files("runtap.analytics").joinpath("schema.sql").read_text(encoding="utf-8")
    ddl = ddl[:ddl.index("-- Schema version 3")]
    return re.sub(r"\n\s*(api_version|api_provider|prompt_id|prompt_version)\s+VARCHAR,\s+"
                  r"-- (the Responses API|'azure' \(api-version query or|prompt\.)[^\n]*", "", ddl)


def _v2_database(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute(_schema_v2())
    con.execute("INSERT INTO schema_version (version) VALUES (2)")
    new_columns = {"api_version", "api_provider", "prompt_id", "prompt_version"}
    assert not new_columns & {r[0] for r in con.execute("DESCRIBE responses").fetchall()}
    con.execute("INSERT INTO responses (id, model, status, created_at, input_tokens, output_tokens, total_tokens) "
                "VALUES ('resp_old', 'gpt-4o', 'completed', TIMESTAMPTZ '2026-01-01 10:00:00+00', 100, 10, 110)")
    con.close()


def test_a_version_2_file_reports_by_api_version_then_upgrades_in_place(tmp_path: Path) -> None:
    db = tmp_path / "v2.duckdb"
    _v2_database(db)
    conn = open_db(db, load_price_book(environ={}))  # read-only, before a newer runtap wrote to it
    rows = run_report(conn, "cost", make_params(by="api_version")).records()
    conn.close()
    assert [(r["api_version"], r["responses"], r["total_tokens"]) for r in rows] == [(None, 1, 110)]
    Store(str(db)).close()
    con = duckdb.connect(str(db))
    assert con.execute("SELECT version FROM schema_version ORDER BY version").fetchall() == [(2,), (SCHEMA_VERSION,)]
    assert con.execute("SELECT id, api_provider, api_version FROM responses").fetchall() == [("resp_old", None, None)]
    con.close()


def test_a_lake_exported_before_version_3_mixes_with_newer_exports(tmp_path: Path) -> None:
    old, new, lake = tmp_path / "old.duckdb", tmp_path / "new.duckdb", tmp_path / "lake"
    _v2_database(old)
    export(str(old), str(lake), instance="old-sidecar")
    conn = open_lake(f"{lake}/**/*.parquet", load_price_book(environ={}))
    rows = run_report(conn, "cost", make_params(by="api_version")).records()
    conn.close()
    assert [(r["api_version"], r["responses"]) for r in rows] == [(None, 1)]
    Store(str(new)).close()
    con = duckdb.connect(str(new))
    con.execute("INSERT INTO responses (id, model, status, created_at, api_provider, api_version) VALUES "
                "('resp_new', 'gpt-4o', 'completed', TIMESTAMPTZ '2026-01-01 11:00:00+00', 'openai', 'v1')")
    con.close()
    export(str(new), str(lake), instance="new-sidecar")
    conn = open_lake(f"{lake}/**/*.parquet", load_price_book(environ={}))
    rows = run_report(conn, "cost", make_params(by="api_version")).records()
    conn.close()
    assert {r["api_version"]: r["responses"] for r in rows} == {None: 1, "openai:v1": 1}
