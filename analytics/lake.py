"""Parquet lake: export each sidecar's capture tables, and read many sidecars' exports as one.

Layout (hive-partitioned, readable by DuckDB, ClickHouse, Trino, Spark, BigQuery as is):
    OUT/table=<runs|run_steps|run_events|requests|responses|response_events>/date=YYYY-MM-DD/instance=<id>/
        part-<export>-<uuid>.parquet

Each exported row carries `_row_hash` (128 bits: two DuckDB hashes of the whole row), `_exported_at` and
`_export_id`.
An export writes only row versions whose hash is not yet in that instance's part of the lake: re-running
it writes nothing, and a run that changed since (new status, usage) is written again as a new version.
The reader keeps, per run, step and response, the most advanced version (final status first, then latest
last_seen_at, then latest export), so a lake of several sidecars counts each run and response once.

`date` is the UTC day of created_at (runs, steps, responses), observed_at (events) or started_at (requests).
s3:// paths need DuckDB's httpfs extension, loaded offline from the duckdb-extension-httpfs package.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import duckdb

from .prices import PriceBook
from .reports import DatabaseLocked, open_db, prepare

TABLES: Final = ("runs", "run_steps", "run_events", "requests", "responses", "response_events")
_DAY_OF: Final = {"runs": "coalesce(created_at, first_seen_at)",
                  "run_steps": "coalesce(created_at, first_seen_at)",
                  "run_events": "observed_at", "requests": "started_at",
                  "responses": "coalesce(created_at, first_seen_at)", "response_events": "observed_at"}
_EXPORT_COLUMNS: Final = ("_row_hash", "_exported_at", "_export_id")
# Two seeds of DuckDB's row hash: 128 bits, so a new row version never collides with an exported one;
# hashing the row's binary values is ~3x faster than md5 of its text and needs no fixed TimeZone.
# A DuckDB upgrade that changes hash() exports everything once more; readers de-duplicate by key.
_ROW_HASH: Final = "printf('%016x%016x', hash(t), hash(t, 'runtap'))"
_PARTITION_COLUMNS: Final = ("table", "date")
_INSTANCE_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TABLE_RE: Final = re.compile(r"(?:^|/)table=([A-Za-z_]+)/")
_REMOTE: Final = ("s3://", "s3a://", "s3n://", "gs://", "gcs://", "r2://", "http://", "https://")
_TERMINAL: Final = "('completed', 'failed', 'cancelled', 'expired', 'incomplete')"


class LakeError(RuntimeError):
    """Export or lake read failed for a reason the user can fix; the message says how."""


@dataclass(slots=True)
class ExportResult:
    out: str
    instance: str
    export_id: str
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def is_remote(path: str) -> bool:
    return path.lower().startswith(_REMOTE)


def httpfs_extension_path() -> Path | None:
    """The httpfs binary shipped by the duckdb-extension-httpfs wheel for this duckdb version, if any."""
    try:
        import duckdb_extension_httpfs  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        return None
    base = Path(duckdb_extension_httpfs.__file__).parent / "extensions"
    path = base / f"v{duckdb.__version__}" / "httpfs.duckdb_extension"
    return path if path.is_file() else None


def load_httpfs(conn: duckdb.DuckDBPyConnection) -> None:
    """Load httpfs without network: from the PyPI package, else from DuckDB's own extension directory."""
    path = httpfs_extension_path()
    try:
        if path is not None:
            conn.execute(f"LOAD '{path.as_posix()}'")
        else:
            conn.execute("LOAD httpfs")
    except duckdb.Error as exc:
        raise LakeError(
            f"s3:// and http(s):// paths need DuckDB's httpfs extension, which could not be loaded ({exc}). "
            f"Install the offline build for duckdb {duckdb.__version__}: pip install 'runtap[s3]' "
            f"(duckdb-extension-httpfs=={duckdb.__version__})") from None


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def configure_s3(conn: duckdb.DuckDBPyConnection, environ: Mapping[str, str] | None = None) -> None:
    """An S3 secret from the usual AWS_* variables (AWS_ENDPOINT_URL for MinIO, moto, R2 ...).

    DuckDB's credential_chain provider needs the aws extension, which has no offline build; the
    variables below cover keys, session tokens, region and custom endpoints."""
    env = os.environ if environ is None else environ
    opts: dict[str, str] = {"TYPE": "s3"}
    if env.get("AWS_ACCESS_KEY_ID"):
        opts["KEY_ID"] = env["AWS_ACCESS_KEY_ID"]
        opts["SECRET"] = env.get("AWS_SECRET_ACCESS_KEY", "")
    if env.get("AWS_SESSION_TOKEN"):
        opts["SESSION_TOKEN"] = env["AWS_SESSION_TOKEN"]
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        opts["REGION"] = region
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
        opts["ENDPOINT"] = parts.netloc
        opts["USE_SSL"] = "true" if parts.scheme == "https" else "false"
        opts["URL_STYLE"] = env.get("RUNTAP_S3_URL_STYLE", "path")
    elif env.get("RUNTAP_S3_URL_STYLE"):
        opts["URL_STYLE"] = env["RUNTAP_S3_URL_STYLE"]
    body = ", ".join(f"{k} {v if k in ('TYPE', 'USE_SSL') else _quote(v)}" for k, v in opts.items())
    conn.execute(f"CREATE OR REPLACE TEMPORARY SECRET runtap_s3 ({body})")


def prepare_remote(conn: duckdb.DuckDBPyConnection, path: str,
                   environ: Mapping[str, str] | None = None) -> None:
    if not is_remote(path):
        return
    load_httpfs(conn)
    if path.lower().startswith(("s3://", "s3a://", "s3n://")):
        configure_s3(conn, environ)


def _files(conn: duckdb.DuckDBPyConnection, pattern: str) -> list[str]:
    try:
        rows = conn.execute("SELECT file FROM glob(?) ORDER BY file", [pattern]).fetchall()
    except duckdb.IOException as exc:
        if "No files found" in str(exc):
            return []
        raise
    return [str(r[0]) for r in rows]


def check_instance(instance: str) -> str:
    if not _INSTANCE_RE.match(instance):
        raise LakeError(f"instance id must be 1-128 characters of A-Z a-z 0-9 . _ - (it names a lake "
                        f"partition), got {instance!r}; set --instance / RUNTAP_INSTANCE")
    return instance


def export_connection(conn: duckdb.DuckDBPyConnection, out: str, *, instance: str,
                      now: datetime | None = None, environ: Mapping[str, str] | None = None) -> ExportResult:
    """Export new and changed rows of the capture tables visible on `conn` (a read-only connection to
    a capture file, or a cursor of the live store) into the lake at `out`."""
    check_instance(instance)
    out = out.rstrip("/")
    stamp = (now or datetime.now(UTC)).astimezone(UTC)
    result = ExportResult(out, instance, f"{stamp:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}")
    conn.execute("SET TimeZone = 'UTC'")  # date partitions must not depend on the host
    prepare_remote(conn, out, environ)
    present = {name for (name,) in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()").fetchall()}
    # A capture file written before the Responses tables existed (opened read-only) has none to export.
    for table in (t for t in TABLES if t in present):
        target = f"{out}/table={table}"
        previous = _files(conn, f"{target}/date=*/instance={instance}/*.parquet")
        seen = (f"SELECT _row_hash FROM read_parquet({_quote_list(previous)}, hive_partitioning=false)"  # noqa: S608 - table names are constants, paths go through _quote; values are bound
                if previous else "SELECT NULL::VARCHAR AS _row_hash WHERE false")
        conn.execute(f"""
            CREATE OR REPLACE TEMP TABLE runtap_export_pending AS
            SELECT * FROM (SELECT t.*, {_ROW_HASH} AS _row_hash FROM {table} t)
            WHERE _row_hash NOT IN ({seen})""")  # noqa: S608 - table names are constants, paths go through _quote; values are bound
        n = conn.execute("SELECT count(*) FROM runtap_export_pending").fetchone()
        result.rows[table] = int(n[0]) if n else 0
        if result.rows[table]:
            if not is_remote(out):
                Path(target).mkdir(parents=True, exist_ok=True)
            conn.execute(f"""
                COPY (SELECT *{_as_text(_json_columns(conn, "runtap_export_pending"))},
                             CAST(? AS TIMESTAMPTZ) AS _exported_at, CAST(? AS VARCHAR) AS _export_id,
                             strftime({_DAY_OF[table]}, '%Y-%m-%d') AS date, CAST(? AS VARCHAR) AS instance
                      FROM runtap_export_pending)
                TO {_quote(target)} (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date, instance), APPEND,
                                     FILENAME_PATTERN {_quote('part-' + result.export_id + '-{uuid}')})
            """, [stamp.isoformat(), result.export_id, instance])  # noqa: S608 - table names are constants, paths go through _quote; values are bound
        conn.execute("DROP TABLE runtap_export_pending")
    return result


def _json_columns(conn: duckdb.DuckDBPyConnection, relation: str) -> list[str]:
    return [str(r[0]) for r in conn.execute(f"DESCRIBE {relation}").fetchall() if r[1] == "JSON"]


def _as_text(columns: list[str]) -> str:
    """JSON columns leave as plain Parquet strings: with the JSON logical type, ClickHouse (26.x) reads
    them as its object-only JSON type and fails on `[]` or `"auto"` (Code 117); a string every engine
    reads. open_lake casts them back to JSON."""
    casts = [f'CAST("{c}" AS VARCHAR) AS "{c}"' for c in columns]
    return f" REPLACE ({', '.join(casts)})" if casts else ""


def _quote_list(items: list[str]) -> str:
    return "[" + ", ".join(_quote(i) for i in items) + "]"


def export(db_path: str, out: str, *, instance: str, now: datetime | None = None,
           environ: Mapping[str, str] | None = None) -> ExportResult:
    """`runtap export`: open the capture file read-only and export it. Raises DatabaseLocked next to a
    live `runtap serve` (DuckDB admits no reader from another process while one writes)."""
    conn = open_db(db_path, PriceBook(()), install_views=False)
    try:
        return export_connection(conn, out, instance=instance, now=now, environ=environ)
    finally:
        conn.close()


OnExport = Callable[[ExportResult | BaseException], None]


async def export_periodically(get_connection: Callable[[], duckdb.DuckDBPyConnection], out: str, *,
                              instance: str, interval_s: float, on_result: OnExport | None = None) -> None:
    """For `runtap serve --export-dir`: export every `interval_s` until cancelled, each time on a worker
    thread with a fresh cursor from `get_connection` (a cursor of the live store). A failed export is
    reported through `on_result` and retried at the next interval; the rows wait in the DB meanwhile."""
    check_instance(instance)
    if interval_s <= 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}")

    def once() -> ExportResult:
        cursor = get_connection()
        try:
            return export_connection(cursor, out, instance=instance)
        finally:
            cursor.close()

    while True:
        await asyncio.sleep(interval_s)
        try:
            result: ExportResult | BaseException = await asyncio.to_thread(once)
        except Exception as exc:
            result = exc
        if on_result is not None:
            on_result(result)


def _schema_sql() -> str:
    return resources.files("runtap.analytics").joinpath("schema.sql").read_text(encoding="utf-8")


def _dedup_sql(table: str, files: list[str], json_columns: list[str]) -> str:
    src = (f"read_parquet({_quote_list(files)}, hive_partitioning=true, union_by_name=true)")
    drop = ", ".join(f'"{c}"' for c in (*_EXPORT_COLUMNS, *_PARTITION_COLUMNS))
    if json_columns:  # exported as strings (see _as_text): the lake's views have the capture's types
        casts = ", ".join(f"CAST({c} AS JSON) AS {c}" for c in json_columns)
        src = f"(SELECT * REPLACE ({casts}) FROM {src})"  # noqa: S608 - column names come from the schema
    if table in ("runs", "run_steps", "responses"):
        order = (f"CASE WHEN status IN {_TERMINAL} THEN 0 ELSE 1 END, last_seen_at DESC NULLS LAST, "
                 "_exported_at DESC")
        key = "id"
    elif table == "requests":
        order, key = "_exported_at DESC", "id"
    else:  # *_events: distinct observations; the same one exported twice (a copied DB) counts once
        owner = "response_id" if table == "response_events" else "run_id"
        order, key = "_exported_at DESC", f"{owner}, observed_at, from_status, to_status"
    return (f"SELECT * EXCLUDE ({drop}) FROM {src} "  # noqa: S608 - table names are constants, paths go through _quote; values are bound
            f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {order}) = 1")


def _lake_json_columns(conn: duckdb.DuckDBPyConnection, table: str, files: list[str]) -> list[str]:
    """The capture schema's JSON columns of `table` that its files hold (older exports may lack some)."""
    wanted = set(_json_columns(conn, f"main.{table}"))
    present = conn.execute(f"DESCRIBE SELECT * FROM read_parquet({_quote_list(files)}, union_by_name=true)"  # noqa: S608 - paths go through _quote
                           ).fetchall()
    return [f'"{r[0]}"' for r in present if r[0] in wanted]


def open_lake(pattern: str, prices: PriceBook, *, environ: Mapping[str, str] | None = None,
              install_views: bool = True) -> duckdb.DuckDBPyConnection:
    """An in-memory connection whose capture tables (TABLES) are the de-duplicated union of
    every Parquet file matching `pattern` (e.g. 'lake/**/*.parquet' or 's3://bucket/lake/**/*.parquet').
    Files outside a table=NAME/ directory are ignored. A table with no files is empty."""
    conn = duckdb.connect(":memory:")
    try:
        conn.execute("SET TimeZone = 'UTC'")
        prepare_remote(conn, pattern, environ)
        # Empty tables with the capture schema; the views below shadow them (temp comes first).
        conn.execute(_schema_sql())
        by_table: dict[str, list[str]] = {}
        for f in _files(conn, pattern):
            m = _TABLE_RE.search(f.replace("\\", "/"))
            if m and m.group(1) in TABLES:
                by_table.setdefault(m.group(1), []).append(f)
        for table, files in by_table.items():
            conn.execute(f"CREATE OR REPLACE TEMP VIEW {table} AS "
                         f"{_dedup_sql(table, files, _lake_json_columns(conn, table, files))}")
        if install_views:
            prepare(conn, prices)
    except Exception:
        conn.close()
        raise
    return conn


__all__ = ["DatabaseLocked", "ExportResult", "LakeError", "export", "export_connection",
           "export_periodically", "open_lake"]
