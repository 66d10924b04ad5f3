"""The capture path keeps DuckDB from loading pandas, numpy and pyarrow (~120 MB of a sidecar's RSS),
and the literals it sends instead of bound parameters carry any id exactly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtap.analytics.ingest.sql_literal import sql_string
from runtap.analytics.ingest.store import Store

from tests.test_merge import T0, run_obj, snap

ROOT = Path(__file__).resolve().parents[1]

# Opens a store, merges a batch twice (the second read goes to DuckDB: cache off), reopens it.
_CAPTURE = """
import sys
from runtap.analytics.ingest.store import Store
from tests.test_merge import T0, lifecycle
path = sys.argv[1]
for _ in range(2):
    store = Store(path, cache_rows=0)
    store.apply(lifecycle(), [])
    store.close()
print(sorted(m for m in ("pandas", "numpy", "pyarrow") if m in sys.modules))
"""


def test_capture_never_loads_pandas_numpy_or_pyarrow(tmp_path: Path) -> None:
    pytest.importorskip("pandas")  # installed with the test tools: the case this guards against
    proc = subprocess.run([sys.executable, "-c", _CAPTURE, str(tmp_path / "c.duckdb")], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# No lone surrogates (category Cs): they cannot be encoded as UTF-8 SQL text, and the ids that reach
# sql_string come from orjson, which refuses them in JSON it decodes.
@settings(deadline=None)  # a DuckDB connection per example: seconds on a loaded shared machine, not a defect
@given(st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40))
def test_a_string_literal_round_trips_through_duckdb(value: str) -> None:
    con = duckdb.connect()
    try:
        got = con.execute(f"SELECT {sql_string(value)}").fetchone()
    finally:
        con.close()
    assert got == (value,)


def test_a_nul_is_refused_not_truncated() -> None:
    with pytest.raises(ValueError, match="NUL"):
        sql_string("a\x00b")


def test_ids_with_quotes_and_backslashes_are_found_again(tmp_path: Path) -> None:
    ids = ["run_'; DROP TABLE runs; --", "run_\\'", "run_\"x\"", "run_é\u2028", "run_\\u0000"]
    store = Store(str(tmp_path / "c.duckdb"), cache_rows=0)
    try:
        for k in range(2):  # the second batch reads every row back from DuckDB
            store.apply([snap(run_obj("in_progress" if k else "queued", id=i), T0 + k) for i in ids], [])
        got = store.connection.execute("SELECT id, status FROM runs ORDER BY id").fetchall()
    finally:
        store.close()
    assert got == sorted((i, "in_progress") for i in ids)


_IDS = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=300)
_SAFE_IDS = st.from_regex(r"[A-Za-z0-9_\-.:]{1,200}", fullmatch=True)


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(st.one_of(_IDS, _SAFE_IDS), min_size=1, max_size=8, unique=True))
def test_any_id_is_found_again_by_both_lookups(tmp_path_factory: pytest.TempPathFactory, ids: list[str]) -> None:
    """Both ways _fetch reads rows back: spliced '...' literals for plain ids once the table is large (index
    lookups), else one JSON literal. A row not found would be inserted again: a duplicate key, the batch
    refused. NUL, quotes, backslashes, any plane of unicode, 300 characters."""
    path = str(tmp_path_factory.mktemp("ids") / "c.duckdb")
    store = Store(path)
    store.connection.execute(  # enough rows that a few ids are looked up through the index
        "INSERT INTO runs (id, status, finished_counted, usage_counted) "
        "SELECT 'filler_' || i, 'queued', false, false FROM range(3000) t(i)")
    store.close()
    store = Store(path, cache_rows=0)  # counts the rows as it opens
    try:
        for k in range(2):  # the second batch reads every row back from DuckDB
            store.apply([snap(run_obj("in_progress" if k else "queued", id=i), T0 + k) for i in ids], [])
        got = store.connection.execute("SELECT id, status FROM runs WHERE NOT starts_with(id, 'filler_') "
                                       "OR id IN (SELECT unnest(from_json(" + sql_string(orjson.dumps(ids).decode())
                                       + ", '[\"VARCHAR\"]')))").fetchall()
    finally:
        store.close()
    assert sorted(got) == sorted((i, "in_progress") for i in ids)
