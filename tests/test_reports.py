"""Named reports: every report on an empty and a 100k-run database, --by/--since/--until, the output
formats, the header docs, the DuckDB-CLI path, `runtap report` / `runtap sql` and the admin endpoint."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry
from runtap.analytics.formats import FORMATS, render
from runtap.analytics.ingest.store import Store
from runtap.analytics.prices import load_price_book
from runtap.analytics.reports import (
    ReportError,
    ReportParams,
    make_params,
    open_db,
    parse_when,
    report_specs,
    run_report,
    setup_script,
)
from runtap.analytics.synth import GENERATED_MODELS, TERMINAL, RunSpec, create_db, generate, insert_runs
from runtap.demo.sim import SimConfig, start_sim
from runtap.demo.workload import run_workload
from runtap.proxy.__main__ import main
from runtap.proxy.admin import create_admin_app
from runtap.proxy.admin_reports import add_report_routes
from runtap.proxy.app import build_runtime
from runtap.settings.config import settings_for

REPORTS = sorted(report_specs())
N = 100_000


@pytest.fixture(scope="module")
def big_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = str(tmp_path_factory.mktemp("big") / "capture.duckdb")
    create_db(db)
    conn = duckdb.connect(db)
    generate(conn, N)
    conn.close()
    yield db


@pytest.fixture(scope="module")
def big(big_db: str) -> Iterator[duckdb.DuckDBPyConnection]:
    conn = open_db(big_db, load_price_book(environ={}))
    yield conn
    conn.close()


@pytest.fixture
def empty_db(tmp_path: Path) -> str:
    db = str(tmp_path / "empty.duckdb")
    create_db(db)
    return db


def small_db(tmp_path: Path) -> str:
    db = str(tmp_path / "small.duckdb")
    create_db(db)
    conn = duckdb.connect(db)
    insert_runs(conn, [
        RunSpec("run_1", "gpt-4o", "2024-11-01T10:00:00Z", 1_000_000, 0, metadata={"tenant": "acme"},
                key_fingerprint="k1"),
        RunSpec("run_2", "gpt-4o", "2024-11-02T10:00:00Z", 2_000_000, 0, metadata={"tenant": "beta"},
                key_fingerprint="k2"),
        RunSpec("run_3", "gpt-4o", "2024-11-03T10:00:00Z", 4_000_000, 0, metadata={"tenant": "acme"},
                key_fingerprint="k1"),
    ])
    conn.close()
    return db


@pytest.mark.parametrize("name", REPORTS)
def test_every_report_runs_on_an_empty_database(empty_db: str, name: str) -> None:
    conn = open_db(empty_db, load_price_book(environ={}))
    result = run_report(conn, name, make_params(by="metadata.tenant"))
    conn.close()
    if name == "prices":
        assert result.rows  # the price book itself
        return
    assert result.rows == []
    assert render(result, "json") == "[]\n"
    assert render(result, "csv").splitlines() == [",".join(result.columns)]
    assert "(no rows)" in render(result, "table")


@pytest.mark.parametrize("name", REPORTS)
def test_report_header_documents_exactly_its_columns(empty_db: str, name: str) -> None:
    spec = report_specs()[name]
    assert spec.question.endswith("?") and spec.description
    conn = open_db(empty_db, load_price_book(environ={}))
    result = run_report(conn, name, make_params(by="key_fingerprint"))
    conn.close()
    documented = [c for c, _ in spec.columns]
    # by_value is renamed after the --by key (and dropped without --by)
    assert result.columns == [("key_fingerprint" if c == "by_value" else c) for c in documented]
    assert spec.totals <= set(documented)


def test_every_view_is_documented_with_its_columns() -> None:
    text = (Path(__file__).parents[1] / "analytics" / "views.sql").read_text()
    views = [line.split()[5] for line in text.splitlines() if line.startswith("CREATE OR REPLACE TEMP VIEW")]
    assert {"run_costs", "step_costs", "priced_models", "run_prices", "scoped_runs"} <= set(views)
    for view in views:
        assert f"-- {view}: " in text, f"view {view} has no header comment"


@pytest.mark.parametrize("name", REPORTS)
def test_every_report_runs_on_100k_runs(big: duckdb.DuckDBPyConnection, name: str) -> None:
    result = run_report(big, name)
    assert result.rows
    records = result.records()
    if name in ("cost", "status", "latency"):
        assert sum(r["runs"] for r in records) == N
    if name == "unpriced":
        assert [(r["model"], r["runs"]) for r in records] == [("acme-ft-model", N // len(GENERATED_MODELS))]
    if name.startswith("top-"):
        assert len(records) == 20
        usd = [r["total_usd"] for r in records]
        assert usd == sorted(usd, reverse=True)


def test_cost_totals_match_the_raw_tables(big: duckdb.DuckDBPyConnection) -> None:
    records = run_report(big, "cost").records()
    raw = big.execute("SELECT sum(prompt_tokens), sum(completion_tokens), count(*) FROM runs").fetchone()
    assert raw is not None
    assert sum(r["prompt_tokens"] for r in records) == raw[0]
    assert sum(r["completion_tokens"] for r in records) == raw[1]
    assert len({r["day"] for r in records}) == 30
    # tool fees: code_interpreter on every 5th run's step, each its own thread-hour except when a thread
    # (3 runs) hits it twice in one hour; file_search 2 calls on every 5th
    steps = big.execute("SELECT sum(code_interpreter_usd)::DOUBLE, sum(file_search_usd)::DOUBLE "
                        "FROM step_costs").fetchone()
    assert steps is not None
    assert sum(r["tool_usd"] for r in records) == pytest.approx(steps[0] + steps[1])
    assert steps[1] == pytest.approx(N // 5 * 2 * 0.0025)


def test_by_metadata_key_splits_cost_onto_tenants(tmp_path: Path) -> None:
    conn = open_db(small_db(tmp_path), load_price_book(environ={}))
    by_tenant = run_report(conn, "top-assistants", make_params(by="metadata.tenant"))
    assert by_tenant.columns[:2] == ["assistant_id", "metadata.tenant"]
    assert {r["metadata.tenant"]: r["total_usd"] for r in by_tenant.records()} == {"acme": 12.5, "beta": 5.0}
    by_key = run_report(conn, "cost", make_params(by="key_fingerprint")).records()
    assert {(r["day"].isoformat(), r["key_fingerprint"]) for r in by_key} == {
        ("2024-11-01", "k1"), ("2024-11-02", "k2"), ("2024-11-03", "k1")}
    assert "by_value" not in run_report(conn, "cost").columns
    with pytest.raises(ReportError, match="metadata.KEY, key_fingerprint, api_version, conversation or api"):
        make_params(by="thread_id; DROP TABLE runs")
    conn.close()


def test_since_until_select_runs_by_creation_time(tmp_path: Path) -> None:
    conn = open_db(small_db(tmp_path), load_price_book(environ={}))
    rows = run_report(conn, "cost", make_params(since="2024-11-02", until="2024-11-03")).records()
    assert [(r["day"].isoformat(), r["total_usd"]) for r in rows] == [("2024-11-02", 5.0)]
    rows = run_report(conn, "cost", make_params(since="2024-11-02T10:00:01Z")).records()
    assert [r["day"].isoformat() for r in rows] == ["2024-11-03"]
    conn.close()
    now = parse_when("2024-11-10T00:00:00Z")
    assert parse_when("7d", now=now).isoformat() == "2024-11-03T00:00:00+00:00"
    with pytest.raises(ReportError):
        make_params(since="yesterday")
    with pytest.raises(ReportError, match="before"):
        make_params(since="2024-11-03", until="2024-11-02")


def test_formats(tmp_path: Path) -> None:
    conn = open_db(small_db(tmp_path), load_price_book(environ={}))
    result = run_report(conn, "cost")
    conn.close()
    data = json.loads(render(result, "json"))
    assert [r["total_usd"] for r in data] == [2.5, 5.0, 10.0]  # one object per row, no totals row
    assert data[0]["day"] == "2024-11-01" and list(data[0])[:3] == ["day", "model", "assistant_id"]
    assert render(result, "csv").splitlines()[1].startswith("2024-11-01,gpt-4o,asst_1,1,0,0,1000000,0,")
    table = render(result, "table", width=200).splitlines()
    assert table[0].split()[:3] == ["day", "model", "assistant_id"]
    assert table[-1].split()[0] == "TOTAL" and table[-1].split()[-1] == "17.5000"
    assert "7,000,000" in table[-1]
    md = render(result, "markdown").splitlines()
    assert md[0].startswith("| day | model |") and md[-1].startswith("| **TOTAL** |")
    assert set(FORMATS) == {"table", "csv", "json", "markdown"}


def test_reports_run_from_a_plain_duckdb_session(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/reports.md's DuckDB-CLI path: `runtap sql --setup`, then `runtap report cost --sql` (what the
    installed package prints, no clone needed), on a read-only session."""
    db = small_db(tmp_path)
    prices = load_price_book(environ={})
    conn = duckdb.connect(db, read_only=True)
    conn.execute(setup_script(prices))
    assert main(["report", "cost", "--sql"]) == 0
    sql = capsys.readouterr().out
    assert sql == (Path(__file__).parents[1] / "analytics" / "reports" / "cost.sql").read_text()
    got = conn.execute("SELECT day::VARCHAR, total_usd FROM (" + sql + ")").fetchall()
    conn.close()
    assert got == [("2024-11-01", 2.5), ("2024-11-02", 5.0), ("2024-11-03", 10.0)]


def test_a_pip_user_gets_the_duckdb_cli_recipe_from_the_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No repo checkout: `runtap sql --setup` and `runtap report cost --sql` print what the session runs."""
    db = small_db(tmp_path)
    assert main(["sql", "--setup"]) == 0
    setup = capsys.readouterr().out
    assert main(["report", "cost", "--sql"]) == 0
    sql = capsys.readouterr().out
    assert "-- cost: " in sql
    conn = duckdb.connect(db, read_only=True)
    conn.execute(setup)
    got = conn.execute("SELECT day::VARCHAR, total_usd FROM (" + sql.strip().rstrip(";") + ")").fetchall()
    conn.close()
    assert got == [("2024-11-01", 2.5), ("2024-11-02", 5.0), ("2024-11-03", 10.0)]


def test_report_cli_formats_and_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = small_db(tmp_path)
    assert main(["report", "cost", "--db", db, "--format", "json"]) == 0
    assert [r["total_usd"] for r in json.loads(capsys.readouterr().out)] == [2.5, 5.0, 10.0]
    assert main(["report", "top-assistants", "--db", db, "--by", "metadata.tenant"]) == 0
    printed = capsys.readouterr().out
    assert "metadata." in printed and "tenant" in printed  # the long column name wraps after its dot
    assert max(len(line) for line in printed.splitlines()) <= 100
    assert main(["report", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in REPORTS)
    assert main(["report", "nope", "--db", db]) == 2
    assert "unknown report 'nope'" in capsys.readouterr().err
    assert main(["report", "cost", "--db", str(tmp_path / "missing.duckdb")]) == 1
    assert "no capture database" in capsys.readouterr().err
    out = tmp_path / "r.html"
    assert main(["report", "--html", str(out), "--db", db]) == 0
    assert "chart-cost" in out.read_text()


def test_sql_cli_runs_ad_hoc_queries_read_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = small_db(tmp_path)
    assert main(["sql", "--db", db, "--format", "csv",
                 "SELECT model, sum(total_usd) AS usd FROM run_costs GROUP BY model"]) == 0
    assert capsys.readouterr().out == "model,usd\ngpt-4o,17.5\n"
    assert main(["sql", "--db", db, "DELETE FROM runs"]) == 1
    assert "read-only" in capsys.readouterr().err
    assert main(["sql", "--setup"]) == 0
    assert "CREATE OR REPLACE TEMP VIEW run_costs" in capsys.readouterr().out


Client = TestClient[web.Request, web.Application]


async def _report_client(aiohttp_client: Any, db: str) -> tuple[Client, Store]:
    store = Store(db)
    app = web.Application()
    add_report_routes(app, lambda: store.connection.cursor(), prices=load_price_book(environ={}))
    return await aiohttp_client(app), store


async def test_admin_serves_named_reports_not_sql(tmp_path: Path, aiohttp_client: Any) -> None:
    db = small_db(tmp_path)
    client, store = await _report_client(aiohttp_client, db)
    try:
        resp = await client.get("/reports/cost", params={"since": "2024-11-02", "by": "metadata.tenant"})
        assert resp.status == 200
        assert resp.headers["X-Runtap-Columns"].split(",")[:2] == ["day", "metadata.tenant"]
        rows = [(r["metadata.tenant"], r["total_usd"]) for r in await resp.json()]
        assert rows == [("beta", 5.0), ("acme", 10.0)]
        resp = await client.get("/reports/cost", params={"format": "csv"})
        assert (await resp.text()).startswith("day,model,assistant_id,runs")
        resp = await client.get("/reports")
        assert {r["name"] for r in await resp.json()} == set(REPORTS)
        assert (await client.get("/reports/nope")).status == 404
        assert (await client.get("/reports/cost", params={"by": "1; SELECT 1"})).status == 400
        assert (await client.get("/reports/cost", params={"since": "soon"})).status == 400
        assert (await client.get("/sql", params={"q": "SELECT 1"})).status == 404
        # the connection's TEMP views stay per request: nothing leaks into the capture file
        views = store.connection.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
        assert views == []
    finally:
        store.close()


@pytest.mark.parametrize("enabled", [True, False])
async def test_admin_reports_can_be_turned_off(tmp_path: Path, aiohttp_client: Any, enabled: bool) -> None:
    runtime = build_runtime(settings_for(db=str(tmp_path / "r.duckdb"), admin_reports=enabled),
                            registry=CollectorRegistry())
    client = await aiohttp_client(create_admin_app(runtime))
    assert (await client.get("/reports")).status == (200 if enabled else 404)
    assert (await client.get("/reports/cost")).status in ((200, 503) if enabled else (404,))
    assert (await client.get("/metrics")).status == 200


def test_params_round_trip_as_query() -> None:
    p = make_params(since="2024-11-02", by="metadata.tenant", limit=5)
    assert p.query() == {"since": "2024-11-02T00:00:00+00:00", "by": "metadata.tenant", "limit": "5"}
    assert ReportParams().query() == {}


# --- next to a live `runtap serve` ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(str(RUNTAP), *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _wait_until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)  # polling a subprocess until it answers; nothing to await on instead


RUNTAP = Path(sys.executable).parent / "runtap"


@pytest.mark.slow
async def test_report_next_to_a_live_serve_reads_from_its_admin_listener(tmp_path: Path) -> None:
    sim_runner, sim_url = await start_sim(SimConfig())
    listen, admin = _free_port(), _free_port()
    db = str(tmp_path / "live.duckdb")
    env = {**os.environ, "RUNTAP_ADMIN": f"127.0.0.1:{admin}"}
    env.pop("RUNTAP_PRICES", None)
    serve = await asyncio.create_subprocess_exec(
        str(RUNTAP), "serve", "--upstream", sim_url.removesuffix("/v1"), "--listen", f"127.0.0.1:{listen}",
        "--db", db, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    admin_url = f"http://127.0.0.1:{admin}"
    try:
        async with aiohttp.ClientSession() as http:
            async def ready() -> bool:
                assert serve.returncode is None, "runtap serve exited"
                try:
                    async with http.get(admin_url + "/readyz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await _wait_until(ready, "runtap serve to answer /readyz")
            work = await run_workload(f"http://127.0.0.1:{listen}/v1")
            final = {rid: s for rid, s in work.runs.items() if s in TERMINAL}

            async def captured() -> bool:
                async with http.get(admin_url + "/reports/status") as r:
                    return r.status == 200 and sum(x["runs"] for x in await r.json()) >= len(work.runs)

            await _wait_until(captured, "the sidecar to capture every run")

        code, out, err = await _cli("report", "cost", "--db", db, "--format", "json", env=env)
        assert code == 0, err
        assert "held by a running `runtap serve`" in err and admin_url in err
        live = json.loads(out)
        assert sum(r["runs"] for r in live) == len(work.runs) and len(final) > 0
        assert sum(r["prompt_tokens"] for r in live) == sum(p for p, _ in work.usage.values())

        page = tmp_path / "live.html"
        code, _, err = await _cli("report", "--html", str(page), "--db", db, env=env)
        assert code == 0 and "held by" in err and 'id="chart-cost"' in page.read_text(), err
        code, out, err = await _cli("report", "status", "--url", admin_url, "--format", "table", env=env)
        assert code == 0 and out.splitlines()[-1].startswith("TOTAL"), err
        code, _, err = await _cli("sql", "--db", db, "SELECT 1", env=env)
        assert code == 1 and "not served over HTTP" in err
        code, _, err = await _cli("report", "cost", "--db", db, "--url", "http://127.0.0.1:9", env=env)
        assert code == 2  # --db and --url are exclusive

        serve.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(serve.wait(), 60) == 0
        # the file is free again: the same report straight from it is identical
        code, out, err = await _cli("report", "cost", "--db", db, "--format", "json", env=env)
        assert code == 0 and "held by" not in err
        assert json.loads(out) == live
        # a stopped sidecar and no admin listener: a clear error, not a traceback
        holder = duckdb.connect(db)
        try:
            code, _, err = await _cli("report", "cost", "--db", db, env=env)
        finally:
            holder.close()
        assert code == 1 and "cannot reach the admin listener" in err and "--url" in err
    finally:
        if serve.returncode is None:
            serve.kill()
            await serve.wait()
        await sim_runner.cleanup()
