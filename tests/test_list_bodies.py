"""A body on a list path is a page of objects whatever its `object` field says: its run or step items are
captured (an upstream that omits `object` or names the page otherwise still lists runs)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from runtap.analytics.ingest.decode import CaptureDecoder

from tests.test_capture import response, run, step

_MISSING = object()
page_tag = st.one_of(st.just(_MISSING), st.none(), st.sampled_from(["list", "page", "thread.run", ""]),
                     st.text(max_size=10), st.integers())


@settings(max_examples=150, deadline=None)
@given(tag=page_tag, n=st.integers(0, 5), steps=st.booleans(), extra=st.booleans())
def test_list_paths_take_the_items_whatever_the_page_is_called(tag: Any, n: int, steps: bool,
                                                               extra: bool) -> None:
    items = [step(sid=f"step_{i}") if steps else run(rid=f"run_{i}") for i in range(n)]
    page: dict[str, Any] = {"data": items + ([{"object": "thread"}] if extra else []), "has_more": False}
    if tag is not _MISSING:
        page["object"] = tag
    dec = CaptureDecoder()
    got = dec.decode(response("steps.list" if steps else "runs.list", page))
    assert [s.obj["id"] for s in got] == [i["id"] for i in items]
    assert dec.skipped.get("not_run_object", 0) == (1 if extra else 0)


def test_a_page_without_a_data_list_is_still_skipped_with_its_reason() -> None:
    dec = CaptureDecoder()
    assert dec.decode(response("runs.list", {"object": "page", "data": {"id": "run_1"}})) == []
    assert dec.skipped == {"not_run_object": 1}
