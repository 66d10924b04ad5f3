"""check_target's dot-segment rule for any path: refused exactly when a decoded segment is "." or ".."
(it skips the segment walk when no "/." occurs; this pins that shortcut to the full rule)."""

from __future__ import annotations

from urllib.parse import unquote

from hypothesis import given
from hypothesis import strategies as st
from runtap.proxy.errors import check_target

segments = st.lists(st.sampled_from(["", ".", "..", "...", ".a", "a.", "v1", "%2e", "%2E%2e", "%252e", "x%2f.",
                                     "runs", "a..b"]), min_size=1, max_size=6)


@given(segments, st.sampled_from(["", "?after=../x", "?a=/./"]))
def test_dot_segments_are_refused_exactly(parts: list[str], query: str) -> None:
    path = "/" + "/".join(parts)
    decoded = unquote(unquote(path))
    dotted = any(seg in (".", "..") for seg in decoded.split("/")) or path.startswith("//")  # scheme-relative
    answer = check_target("GET", path + query, None)  # type: ignore[arg-type]  # headers are not read
    assert (answer is not None) == dotted
    if answer is not None:
        assert answer.status == 400
