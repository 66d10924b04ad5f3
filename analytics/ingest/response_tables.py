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
