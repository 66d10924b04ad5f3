"""Parquet export and the fleet lake: idempotent exports, updates winning, three sidecars adding up,
the layout other engines read, and s3:// against a local S3 server (moto) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import chdb  # type: ignore[import-untyped, unused-ignore]
import duckdb
import pytest
from runtap.analytics.ingest.records import Snapshot
from runtap.analytics.ingest.store import Store
from runtap.analytics.lake import (
    TABLES,
    ExportResult,
    LakeError,
    export,
    export_connection,
    export_periodically,
    httpfs_extension_path,
    open_lake,
)
from runtap.analytics.prices import load_price_book
from runtap.analytics.reports import ReportResult, open_db, run_report
from runtap.analytics.synth import RunSpec, StepSpec, create_db, generate, insert_events, insert_runs, insert_steps
from runtap.proxy.__main__ import main

from tests import response_factory as rf

PRICES = load_price_book(environ={})


def sidecar_db(path: Path, runs: int, offset: int = 0, days: int = 5) -> str:
    db = str(path)
    create_db(db)
    conn = duckdb.connect(db)
    generate(conn, runs, days=days)
    # ids must differ between sidecars, as real run ids do
    for table, col in (("runs", "id"), ("runs", "thread_id"), ("run_steps", "run_id"),
                       ("run_steps", "thread_id"), ("run_events", "run_id")):
        conn.execute(f"UPDATE {table} SET {col} = {col} || '_{offset}'")
    conn.execute("UPDATE run_steps SET id = id || '_' || ?", [str(offset)])
    conn.close()
    return db


def lake_report(pattern: str, name: str = "cost") -> ReportResult:
    conn = open_lake(pattern, PRICES)
    try:
        return run_report(conn, name)
    finally:
        conn.close()


def db_report(db: str, name: str = "cost") -> ReportResult:
    conn = open_db(db, PRICES)
    try:
        return run_report(conn, name)
    finally:
        conn.close()


def totals(result: ReportResult) -> tuple[int, int, float]:
    recs = result.records()
    return (sum(r["runs"] for r in recs), sum(r["total_tokens"] for r in recs),
            round(sum(r["total_usd"] or 0 for r in recs), 6))


def test_export_twice_writes_nothing_twice_and_lake_equals_db(tmp_path: Path) -> None:
    db = sidecar_db(tmp_path / "a.duckdb", 2_000)
    lake = tmp_path / "lake"
    first = export(db, str(lake), instance="sidecar-a")
    assert first.rows == {"runs": 2_000, "run_steps": 2_000, "run_events": 8_000, "requests": 0,
                          "responses": 0, "response_events": 0}
    second = export(db, str(lake), instance="sidecar-a")
    assert second.total == 0
    files = sorted(p.relative_to(lake).as_posix() for p in lake.rglob("*.parquet"))
    assert files
    for f in files:
        table, day, instance, _ = f.split("/")
        assert table in ("table=runs", "table=run_steps", "table=run_events")
        assert day.startswith("date=2025-0") and instance == "instance=sidecar-a"
    pattern = f"{lake}/**/*.parquet"
    assert lake_report(pattern).rows == db_report(db).rows
    for name in ("tools", "latency", "budgets", "status"):
        assert lake_report(pattern, name).rows == db_report(db, name).rows, name


def test_a_run_updated_after_export_is_exported_again_and_the_lake_shows_it(tmp_path: Path) -> None:
    db = str(tmp_path / "a.duckdb")
    create_db(db)
    conn = duckdb.connect(db)
    insert_runs(conn, [RunSpec("run_1", "gpt-4o", "2024-11-01T10:00:00Z", status="in_progress"),
                       RunSpec("run_2", "gpt-4o", "2024-11-01T11:00:00Z", 1_000_000, 0)])
    insert_events(conn, [("run_1", "2024-11-01T10:00:01Z", None, "in_progress")])
    conn.close()
    lake = str(tmp_path / "lake")
    assert export(db, lake, instance="a").rows["runs"] == 2
    conn = duckdb.connect(db)
    conn.execute("""UPDATE runs SET status = 'completed', prompt_tokens = 2000000, completion_tokens = 0,
                    total_tokens = 2000000, last_seen_at = TIMESTAMPTZ '2024-11-01 10:05:00+00'
                    WHERE id = 'run_1'""")
    insert_events(conn, [("run_1", "2024-11-01T10:05:00Z", "in_progress", "completed")])
    conn.close()
    again = export(db, lake, instance="a")
    assert again.rows == {"runs": 1, "run_steps": 0, "run_events": 1, "requests": 0,
                          "responses": 0, "response_events": 0}
    status = {r["status"]: r["runs"] for r in lake_report(f"{lake}/**/*.parquet", "status").records()}
    assert status == {"completed": 2}  # one version per run: the latest
    assert totals(lake_report(f"{lake}/**/*.parquet")) == (2, 3_000_000, 7.5)


def test_three_sidecars_one_lake_totals_are_the_sum(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    dbs = [sidecar_db(tmp_path / f"s{i}.duckdb", n, i) for i, n in enumerate((1_000, 2_000, 3_000))]
    for i, db in enumerate(dbs):
        assert main(["export", "--db", db, "--out", str(lake), "--instance", f"sidecar-{i}"]) == 0
    parts = [totals(db_report(db)) for db in dbs]
    runs, tokens, usd = totals(lake_report(f"{lake}/**/*.parquet"))
    assert (runs, tokens) == (sum(p[0] for p in parts), sum(p[1] for p in parts))
    # each report row is rounded to the micro-dollar; thousands of rows leave well under a cent
    assert usd == pytest.approx(sum(p[2] for p in parts), abs=1e-3)
    # docs/lake.md's plain-DuckDB query, as printed there: no runtap, one version of each run
    assert duckdb.sql(f"SELECT sum(runs), sum(tokens) FROM ({readme_lake_query(lake)})").fetchone() == (runs, tokens)
    instances = duckdb.sql(f"SELECT DISTINCT instance FROM read_parquet('{lake}/**/*.parquet', "
                           "hive_partitioning=true) ORDER BY 1").fetchall()
    assert instances == [("sidecar-0",), ("sidecar-1",), ("sidecar-2",)]


def test_export_from_a_live_store_cursor(tmp_path: Path) -> None:
    """What a periodic in-process export does: a cursor of the writer's connection, file kept open."""
    store = Store(str(tmp_path / "live.duckdb"))
    try:
        insert_runs(store.connection, [RunSpec("run_1", "gpt-4o-mini", "2024-11-01T10:00:00Z", 1_000_000, 0)])
        insert_steps(store.connection, [StepSpec("step_1", "run_1", "2024-11-01T10:00:01Z", ["file_search"])])
        cursor = store.connection.cursor()
        try:
            result = export_connection(cursor, str(tmp_path / "lake"), instance="live")
            assert export_connection(cursor, str(tmp_path / "lake"), instance="live").total == 0
        finally:
            cursor.close()
    finally:
        store.close()
    assert result.rows == {"runs": 1, "run_steps": 1, "run_events": 0, "requests": 0,
                           "responses": 0, "response_events": 0}
    assert totals(lake_report(f"{tmp_path}/lake/**/*.parquet")) == (1, 1_000_000, 0.1525)


async def test_periodic_export_picks_up_new_rows_while_the_store_stays_open(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "live.duckdb"))
    lake = str(tmp_path / "lake")
    results: asyncio.Queue[ExportResult | BaseException] = asyncio.Queue()
    task = asyncio.create_task(export_periodically(lambda: store.connection.cursor(), lake, instance="live",
                                                   interval_s=0.05, on_result=results.put_nowait))
    try:
        insert_runs(store.connection, [RunSpec("run_1", "gpt-4o", "2024-11-01T10:00:00Z", 1_000_000, 0)])

        async def next_with_runs() -> ExportResult:
            while True:
                r = await asyncio.wait_for(results.get(), 30)
                assert isinstance(r, ExportResult), r
                if r.rows["runs"]:
                    return r

        assert (await next_with_runs()).rows["runs"] == 1
        insert_runs(store.connection, [RunSpec("run_2", "gpt-4o", "2024-11-01T11:00:00Z", 1_000_000, 0)])
        assert (await next_with_runs()).rows["runs"] == 1  # only the new run
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        store.close()
    assert totals(lake_report(f"{lake}/**/*.parquet")) == (2, 2_000_000, 5.0)


def test_empty_and_unmatched_lakes_give_empty_reports(tmp_path: Path) -> None:
    assert lake_report(f"{tmp_path}/nothing/**/*.parquet").rows == []
    db = str(tmp_path / "e.duckdb")
    create_db(db)
    assert export(db, str(tmp_path / "lake"), instance="e").total == 0
    with pytest.raises(LakeError, match="instance id"):
        export(db, str(tmp_path / "lake"), instance="../etc")


# --- s3:// against moto's server on 127.0.0.1 -------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def s3_endpoint(tmp_path: Path) -> Iterator[str]:
    pytest.importorskip("moto.server", reason="moto[server] not installed (test extra)")
    if httpfs_extension_path() is None:
        pytest.skip("duckdb-extension-httpfs for this duckdb version is not installed (runtap[s3] extra)")
    port = _free_port()
    log = open(tmp_path / "moto.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:  # wait until it answers
            try:
                urllib.request.urlopen(urllib.request.Request(f"{url}/runtap-lake", method="PUT"), timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp_path / "moto.log").read_text()) from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_s3_export_and_lake(tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(k, v)
    # two days: moto answers each object PUT/GET slowly, and every date is a file per table
    dbs = [sidecar_db(tmp_path / f"s{i}.duckdb", 500, i, days=2) for i in range(2)]
    for i, db in enumerate(dbs):
        first = export(db, "s3://runtap-lake/fleet", instance=f"s{i}")
        assert first.rows["runs"] == 500
        assert export(db, "s3://runtap-lake/fleet", instance=f"s{i}").total == 0
    remote = lake_report("s3://runtap-lake/fleet/**/*.parquet")
    assert totals(remote)[:2] == (1_000, sum(totals(db_report(db))[1] for db in dbs))
    assert main(["report", "cost", "--lake", "s3://runtap-lake/fleet/**/*.parquet", "--format", "csv"]) == 0
    assert os.environ["AWS_ENDPOINT_URL"] == s3_endpoint


def readme_lake_query(lake: Path) -> str:
    page = (Path(__file__).resolve().parents[1] / "docs" / "lake.md").read_text(encoding="utf-8")
    block = re.search(r"The same query without runtap, in DuckDB.*?```sql\n(.*?)```", page, re.S)
    assert block is not None, "docs/lake.md lost its plain-DuckDB lake query"
    return block[1].strip().rstrip(";").replace("/mnt/lake", str(lake))


def test_the_readme_lake_query_takes_the_finished_version_like_runtap(tmp_path: Path) -> None:
    """A run exported completed, then seen again by a late poll as in_progress (a later last_seen_at):
    runtap's reader and the docs' query both keep the finished version."""
    lake = tmp_path / "lake"
    db = str(tmp_path / "s.duckdb")
    create_db(db)
    conn = duckdb.connect(db)
    insert_runs(conn, [RunSpec("run_1", "gpt-4o", "2024-11-01T10:00:00Z", 1_000, 500)])
    conn.close()
    export(db, str(lake), instance="a")
    conn = duckdb.connect(db)
    conn.execute("""UPDATE runs SET status = 'in_progress', total_tokens = NULL,
                    last_seen_at = TIMESTAMPTZ '2024-11-02 10:00:00+00' WHERE id = 'run_1'""")
    conn.close()
    export(db, str(lake), instance="b")
    status = {r["status"]: r["runs"] for r in lake_report(f"{lake}/**/*.parquet", "status").records()}
    assert status == {"completed": 1}
    assert duckdb.sql(readme_lake_query(lake)).fetchall() == [("gpt-4o", 1, 1_500)]


def readme_clickhouse_query(lake: Path) -> str:
    page = (Path(__file__).resolve().parents[1] / "docs" / "lake.md").read_text(encoding="utf-8")
    block = re.search(r"and in ClickHouse .*?```sql\n(.*?)```", page, re.S)
    assert block is not None, "docs/lake.md lost its ClickHouse lake query"
    return block[1].strip().rstrip(";").replace("/mnt/lake", str(lake))


def _clickhouse(sql: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(str(chdb.query(sql, "CSV")))))


_SAMPLE = {"VARCHAR": "'{name}_{n}'", "TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ '2025-05-01 10:00:0{n}+00'",
           "BIGINT": "{n}", "INTEGER": "{n}", "DOUBLE": "{n}.5", "BOOLEAN": "false", "JSON": "'[]'"}


def _fill_if_empty(conn: duckdb.DuckDBPyConnection, table: str, rows: int = 4) -> None:
    """Rows of every column type for a table the synthetic generator leaves empty (requests, ...)."""
    if conn.execute(f"SELECT count(*) FROM {table}").fetchone() != (0,):  # noqa: S608
        return
    columns = conn.execute(f"SELECT column_name, column_type FROM (DESCRIBE {table})").fetchall()
    for n in range(rows):
        values = ", ".join(_SAMPLE[kind].format(name=name, n=n) for name, kind in columns)
        conn.execute(f"INSERT INTO {table} VALUES ({values})")  # noqa: S608


def test_clickhouse_reads_every_lake_table_and_the_readme_query_gives_duckdbs_totals(tmp_path: Path) -> None:
    """A second engine, ClickHouse in process (chdb), over an exported lake: `SELECT *` of every table
    with the JSON shapes the API sends (`[]`, `"auto"`, objects) in every JSON column, and the README's
    ClickHouse query giving the README's DuckDB totals."""
    db = sidecar_db(tmp_path / "a.duckdb", 300)
    conn = duckdb.connect(db)
    for table in TABLES:
        _fill_if_empty(conn, table)
    shapes = ["[]", '"auto"', '{"type": "auto", "last_messages": null}', '["function", "file_search"]']
    json_columns = [(t, c) for t, c in conn.execute(
        "SELECT table_name, column_name FROM duckdb_columns() WHERE data_type = 'JSON' ORDER BY ALL").fetchall()
        if t in TABLES]
    assert json_columns  # the property below is about them
    for table, column in json_columns:
        for i, shape in enumerate(shapes):
            conn.execute(f"UPDATE {table} SET {column} = ? WHERE rowid % 4 = {i}", [shape])  # noqa: S608
    conn.close()
    lake = tmp_path / "lake"
    export(db, str(lake), instance="a")
    for table in TABLES:
        source = f"file('{lake}/table={table}/*/*/*.parquet', Parquet)"
        (count,) = _clickhouse(f"SELECT count() FROM {source}")  # noqa: S608
        rows = _clickhouse(f"SELECT * FROM {source}")  # noqa: S608
        assert len(rows) == int(count[0]) > 0, table
    for table, column in json_columns:
        values = {r[0] for r in _clickhouse(
            f"SELECT DISTINCT {column} FROM file('{lake}/table={table}/*/*/*.parquet', Parquet)")}  # noqa: S608
        assert values <= {*shapes, ""} and "[]" in values, (table, column, values)

    in_duckdb = sorted(duckdb.sql(readme_lake_query(lake)).fetchall())
    in_clickhouse = sorted((m, int(n), int(t)) for m, n, t in _clickhouse(readme_clickhouse_query(lake)))
    assert in_clickhouse == in_duckdb and sum(n for _, n, _ in in_duckdb) == 300
    # runtap's own reader still sees JSON columns as JSON.
    two_tools = "SELECT count(*) FROM run_steps WHERE json_array_length(tool_types) = 2"
    with duckdb.connect(db, read_only=True) as source_conn:
        expected = source_conn.execute(two_tools).fetchone()
    lake_conn = open_lake(f"{lake}/**/*.parquet", PRICES)
    try:
        types = dict(lake_conn.execute("SELECT column_name, column_type FROM (DESCRIBE runs)").fetchall())
        assert types["tools"] == "JSON"
        assert lake_conn.execute(two_tools).fetchone() == expected and expected is not None and expected[0] > 0
    finally:
        lake_conn.close()


def _response(rid: str, status: str, at: float, tokens: int = 1_000_000) -> Snapshot:
    obj = rf.response(rid, status, created_at=1_760_000_000, model="gpt-5-mini",
                      usage=rf.usage(input_tokens=tokens, cached=tokens // 4, output_tokens=tokens // 10,
                                     reasoning=tokens // 20) if status == "completed" else None)
    return Snapshot("response", obj, at, "response", "responses.retrieve", None, "fp_abc", f"req_{rid}_{at}")


def test_responses_are_exported_like_runs_updated_once_and_counted_once_across_sidecars(tmp_path: Path) -> None:
    """A response polled in progress, exported, then completed: the lake takes the finished version;
    two sidecars exporting the same capture count it once; --lake reports equal the file's reports."""
    db = str(tmp_path / "capture.duckdb")
    store = Store(db)
    store.apply([_response("resp_a", "in_progress", 1_760_000_001),
                 _response("resp_b", "completed", 1_760_000_002)], [])
    store.close()
    lake = tmp_path / "lake"
    first = export(db, str(lake), instance="a")
    assert (first.rows["responses"], first.rows["response_events"]) == (2, 2)
    assert export(db, str(lake), instance="a").total == 0
    assert (lake / "table=responses" / "date=2025-10-09" / "instance=a").is_dir()
    store = Store(db)
    store.apply([_response("resp_a", "completed", 1_760_000_005, tokens=2_000_000)], [])
    store.close()
    again = export(db, str(lake), instance="a")
    assert (again.rows["responses"], again.rows["response_events"]) == (1, 1)
    export(db, str(lake), instance="b")  # the same capture from a second sidecar (a copied file)
    pattern = f"{lake}/**/*.parquet"
    conn = open_lake(pattern, PRICES)
    try:
        rows = conn.execute("SELECT id, status, input_tokens, cached_input_tokens FROM responses "
                            "ORDER BY id").fetchall()
        assert rows == [("resp_a", "completed", 2_000_000, 500_000), ("resp_b", "completed", 1_000_000, 250_000)]
        assert conn.execute("SELECT count(*) FROM response_events").fetchone() == (3,)
        types = dict(conn.execute("SELECT column_name, column_type FROM (DESCRIBE responses)").fetchall())
        assert types["raw"] == "JSON" and types["metadata"] == "JSON"
    finally:
        conn.close()
    for name in ("cost", "status", "budgets", "latency", "tools"):
        assert lake_report(pattern, name).rows == db_report(db, name).rows, name
    cost = lake_report(pattern).records()
    assert sum(r["responses"] for r in cost) == 2 and sum(r["cached_prompt_tokens"] for r in cost) == 750_000
