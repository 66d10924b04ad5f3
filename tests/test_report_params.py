"""Report parameters are bounded before any query: any value gives a result or a 4xx in the admin API's
JSON error shape (`runtap report`: one line, exit 2), never a 5xx, an OverflowError or a DuckDB error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtap.analytics.prices import load_price_book
from runtap.analytics.reports import ReportError, make_params, open_db, report_specs, run_report
from runtap.analytics.synth import create_db
from runtap.proxy.__main__ import main

from tests.test_reports import _report_client, small_db

REPORTS = sorted(report_specs())
# The values that reached past the parser before: huge ages, dates at the edge of what datetime holds,
# integers beyond BIGINT, and the forms in between.
HOSTILE = ["999999999d", "99999999999999999999w", "9999999999999s", "36526d", "1000000000h",
           "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "10000-01-01", "0000-01-01",
           "2024-02-30", "2024-06-01T25:00:00Z", "7" * 5000 + "d", "٣d", "", " ", "\x00", "NaN"]
LIMITS = ["99999999999999999999", "-1", "0", "1e3", "1_000", "9" * 5000, "٣", " 5 ", "1000001", "NaN"]

when = st.one_of(
    st.sampled_from(HOSTILE),
    st.builds(lambda n, u: f"{n}{u}", st.integers(min_value=0, max_value=10**30), st.sampled_from("smhdw")),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.text(max_size=40),
)
limit = st.one_of(st.sampled_from(LIMITS), st.integers(min_value=-(10**30), max_value=10**30).map(str),
                  st.text(max_size=20))
by = st.one_of(st.none(), st.just("key_fingerprint"),
               st.text(alphabet="abcXYZ019_.:@/-~$ '\"", min_size=1, max_size=30).map(lambda k: "metadata." + k),
               st.text(max_size=30))


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    db = str(tmp_path_factory.mktemp("params") / "capture.duckdb")
    create_db(db)
    c = open_db(db, load_price_book(environ={}))
    yield c
    c.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(since=st.none() | when, until=st.none() | when, by=by, limit=st.none() | limit,
       name=st.sampled_from(REPORTS))
def test_any_parameter_is_a_result_or_a_report_error(conn: duckdb.DuckDBPyConnection, since: str | None,
                                                     until: str | None, by: str | None, limit: str | None,
                                                     name: str) -> None:
    try:
        params = make_params(since=since, until=until, by=by, limit=limit)
    except ReportError as exc:
        assert len(str(exc)) < 400  # one readable line, not the 5,000-digit value back
        return
    run_report(conn, name, params)  # a DuckDB error here would be a 503 on the admin API


@pytest.mark.parametrize(("key", "value"), [("since", v) for v in HOSTILE[:12]]
                         + [("until", "999999999d"), ("until", "9999-12-31T23:59:59-01:00")]
                         + [("limit", v) for v in LIMITS[:6]], ids=lambda v: repr(v)[:24])
async def test_admin_answers_hostile_parameters_with_a_400_in_its_error_shape(
        tmp_path: Path, aiohttp_client: Any, key: str, value: str) -> None:
    client, store = await _report_client(aiohttp_client, small_db(tmp_path))
    try:
        resp = await client.get("/reports/top-threads", params={key: value})
        assert resp.status == 400, await resp.text()
        body = await resp.json()
        assert body["error"]["code"] == "bad_parameter"
        assert body["error"]["type"] == "runtap_report_error"
    finally:
        store.close()


@pytest.mark.parametrize("args", [["--since", "999999999d"], ["--until", "99999999999999999999d"],
                                  ["--limit", "99999999999999999999"], ["--limit", "0"],
                                  ["--since", "9999-12-31T23:59:59-01:00"]])
def test_report_cli_refuses_hostile_flags_in_one_line_with_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    db = small_db(tmp_path)
    assert main(["report", "top-threads", "--db", db, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("runtap: error: ") and err.count("\n") == 1, err
