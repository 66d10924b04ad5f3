"""A batch never fails for one item: an object the store or the spool cannot take is set aside (the spool's
rejected file) and counted, and every other item of its batch lands, whether the store is open or the
batch goes to the spool."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtap.analytics.ingest.health import CaptureHealth
from runtap.analytics.ingest.records import CaptureItem, ResponseBody, Snapshot
from runtap.analytics.ingest.spool import Spool
from runtap.analytics.ingest.store import Store, StoreError
from runtap.analytics.ingest.writer import CaptureWriter, WriterConfig

from tests.test_writer import exchange, record, run

_ids = itertools.count()


def nested(depth: int, leaf: Any = 1, *, as_list: bool = False) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if as_list else {"k": value}
    return value


# Values orjson parses (up to 1,024 levels) but may not write back (254), and other odd content.
hostile_value = st.one_of(
    st.integers(min_value=255, max_value=1000).map(nested),
    st.integers(min_value=255, max_value=1000).map(lambda d: nested(d, as_list=True)),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=50),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
hostile_field = st.sampled_from(["metadata", "tools", "tool_choice", "response_format", "usage", "model",
                                 "truncation_strategy", "last_error"])


def body(obj: dict[str, Any]) -> bytes:
    # orjson cannot write what is too deep: build the text around a too-deep value by hand.
    text = b"{" + b",".join(orjson.dumps(k) + b":" + _dumps(v) for k, v in obj.items()) + b"}"
    assert orjson.loads(text) is not None  # what the upstream sends parses
    return text


def _dumps(v: Any) -> bytes:
    try:
        return orjson.dumps(v)
    except TypeError:
        inner, depth = v, 0
        while isinstance(inner, dict | list) and inner:
            inner = inner["k"] if isinstance(inner, dict) else inner[0]
            depth += 1
        opener, closer = (b"[", b"]") if isinstance(v, list) else (b'{"k":', b"}")
        return opener * depth + orjson.dumps(inner) + closer * depth


class Capture:
    def __init__(self, tmp: Path, *, store_ok: bool = True) -> None:
        self.health = CaptureHealth()
        self.db = str(tmp / "capture.duckdb")
        self.store_ok = store_ok

        def factory() -> Store:
            if not self.store_ok:
                raise StoreError("cannot open: locked by another process (test)")
            return Store(self.db)

        # A long interval: everything submitted before a flush is one batch.
        self.writer = CaptureWriter(WriterConfig(db_path=self.db, flush_interval_s=60), health=self.health,
                                    store_factory=factory)
        self.writer.start()

    def exchange_items(self, obj: dict[str, Any], raw: bytes | None = None) -> list[CaptureItem]:
        xid = f"x{next(_ids)}"
        ex = exchange(xid)
        return [ResponseBody(ex, 200, raw if raw is not None else orjson.dumps(obj), truncated=False), record(xid)]

    def rows(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        cur = self.writer.reader()
        try:
            return cur.execute(sql, params).fetchall()
        finally:
            cur.close()


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Capture]:
    c = Capture(tmp_path_factory.mktemp("isolation"))
    yield c
    c.writer.stop()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(field=hostile_field, value=hostile_value, before=st.integers(0, 3), after=st.integers(1, 3))
def test_one_object_the_store_cannot_take_costs_no_other_item_its_row(
        capture: Capture, field: str, value: Any, before: int, after: int) -> None:
    good = [run(f"run_good_{next(_ids)}", "completed") for _ in range(before + after)]
    bad = run(f"run_bad_{next(_ids)}", "completed") | {field: value}
    items: list[CaptureItem] = []
    for obj in good[:before]:
        items += capture.exchange_items(obj)
    bad_items = capture.exchange_items(bad, body(bad))
    items += bad_items
    for obj in good[before:]:
        items += capture.exchange_items(obj)
    rejected_before = capture.writer.stats["rejected"]
    for item in items:
        assert capture.writer.submit(item)
    assert capture.writer.flush(timeout=60)
    ids = [g["id"] for g in good]
    got = capture.rows("SELECT id, status FROM runs WHERE id IN (SELECT unnest(?))", [ids])
    assert sorted(got) == sorted((i, "completed") for i in ids)
    request_ids = [i.id for i in items if hasattr(i, "status_code")]
    n = capture.rows("SELECT count(*) FROM requests WHERE id IN (SELECT unnest(?))", [request_ids])[0][0]
    assert n == len(request_ids)
    # the bad run is either stored (the store could take it) or set aside and counted, never silently lost
    stored = capture.rows("SELECT count(*) FROM runs WHERE id = ?", [bad["id"]])[0][0]
    assert stored == 1 or capture.writer.stats["rejected"] > rejected_before
    assert capture.writer.stats["spool_dropped"] == 0


def test_a_run_nested_600_deep_is_set_aside_and_its_neighbours_land(tmp_path: Path) -> None:
    c = Capture(tmp_path)
    try:
        bad = run("run_deep", "completed") | {"metadata": nested(600)}
        items = c.exchange_items(bad, body(bad)) + c.exchange_items(run("run_next", "completed"))
        for item in items:
            c.writer.submit(item)
        assert c.writer.flush(timeout=60)
        assert c.rows("SELECT id FROM runs", []) == [("run_next",)]
        assert c.rows("SELECT count(*) FROM requests", [])[0][0] == 2
        assert c.health.total("errors", "store:rejected") == 1
        assert c.health.total("dropped") == 0
        rejected = Path(c.db + ".spool.rejected.jsonl").read_bytes().splitlines()
        assert len(rejected) == 1 and b"run_deep" in rejected[0]
    finally:
        c.writer.stop()


def test_with_the_store_unavailable_the_spool_keeps_the_neighbours_of_an_unencodable_item(tmp_path: Path) -> None:
    c = Capture(tmp_path, store_ok=False)
    try:
        bad = run("run_deep", "completed") | {"metadata": nested(600)}
        items = c.exchange_items(bad, body(bad)) + c.exchange_items(run("run_next", "completed"))
        for item in items:
            c.writer.submit(item)
        assert c.writer.flush(timeout=60)
        assert c.health.total("dropped") == 0
        assert c.health.total("spooled") == 3  # run_next, both requests rows
        assert c.health.total("errors", "spool:rejected") == 1
    finally:
        c.writer.stop()
    # the next start replays the spool: the neighbour and both requests rows land
    c2 = Capture(tmp_path)
    try:
        assert c2.writer.flush(timeout=60)
        assert c2.rows("SELECT id, status FROM runs", []) == [("run_next", "completed")]
        assert c2.rows("SELECT count(*) FROM requests", [])[0][0] == 2
    finally:
        c2.writer.stop()


def test_spool_append_sets_aside_only_what_it_cannot_encode(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "s.spool.jsonl"), max_bytes=1 << 20)
    ex = exchange("x1")
    deep = Snapshot("run", run("run_deep") | {"metadata": nested(600)}, 1.0, "response", ex.operation, "v2", None)
    fine = Snapshot("run", run("run_ok"), 1.0, "response", ex.operation, "v2", None)
    assert spool.append([deep, fine], [record("x1")]) == 0
    assert spool.rejected_lines == 1
    assert len(Path(spool.path).read_bytes().splitlines()) == 2
    assert b"run_deep" in Path(spool.rejected_path).read_bytes()
