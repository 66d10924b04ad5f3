"""SQL literals for the values the capture path sends to DuckDB, instead of bound parameters.

duckdb's Python client imports pandas (and with it numpy and pyarrow) the first time it converts a
bound Python value, whenever pandas is installed in the environment: ~120 MB of RSS in a sidecar
that never uses them (bench: python -X importtime, /proc/PID/status of `runtap serve`). The values
here are runtap's own (ids encoded by orjson, integers), so a quoted literal is exact.
"""

from __future__ import annotations


def sql_string(value: str) -> str:
    """A DuckDB string literal: standard SQL strings have no backslash escapes, only '' for '.

    NUL cannot travel in SQL text; JSON from orjson escapes every control character, so it has none.
    """
    if "\x00" in value:
        raise ValueError("a SQL string literal cannot hold NUL")
    return "'" + value.replace("'", "''") + "'"
