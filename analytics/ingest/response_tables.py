"""Reports on a capture file written before the Responses tables existed (opened read-only, so
schema.sql cannot run): empty TEMP stand-ins let the views, which read both APIs, still bind."""

from __future__ import annotations

import re
from importlib import resources
from typing import Final

import duckdb

TABLES: Final = ("responses", "response_events")


def ensure_response_tables(conn: duckdb.DuckDBPyConnection) -> None:
    present = {r[0] for r in conn.execute(
        "SELECT table_name FROM duckdb_tables() UNION SELECT view_name FROM duckdb_views()").fetchall()}
    missing = [t for t in TABLES if t not in present]
    if not missing:
        return
    ddl = resources.files("runtap.analytics").joinpath("schema.sql").read_text(encoding="utf-8")
    for table in missing:
        m = re.search(rf"CREATE TABLE IF NOT EXISTS {table} \((.*?)\n\);", ddl, re.S)
        if m is None:
            raise RuntimeError(f"schema.sql has no table {table}")
        body = re.sub(r"--[^\n]*", "", m.group(1)).replace("PRIMARY KEY", "")
        conn.execute(f"CREATE TEMP TABLE {table} ({body})")


# Columns schema versions 3 and 4 added to `responses`.
VERSION_COLUMNS: Final = ("api_version", "api_provider", "prompt_id", "prompt_version", "agent_name", "agent_version")
_SCOPED_FROM: Final = "FROM responses r\n"


def with_schema3_columns(conn: duckdb.DuckDBPyConnection, views_sql: str) -> str:
    """views_sql for a responses table that may predate schema version 3 or 4 (a file opened read-only before
    a newer runtap wrote to it, or a lake exported before then): its missing columns read as NULL, so
    `--by api_version` leaves those responses ungrouped and top-assistants groups them by model, instead
    of failing to bind."""
    described = conn.execute("SELECT * FROM responses LIMIT 0").description or []
    missing = [c for c in VERSION_COLUMNS if c not in {d[0] for d in described}]
    if not missing:
        return views_sql
    if _SCOPED_FROM not in views_sql:
        raise RuntimeError("views.sql no longer reads `FROM responses r`; update with_schema3_columns")
    nulls = ", ".join(f"CAST(NULL AS VARCHAR) AS {c}" for c in missing)
    return views_sql.replace(_SCOPED_FROM, f"FROM (SELECT *, {nulls} FROM responses) r\n")  # noqa: S608 - column names are this module's constants
