from __future__ import annotations

import json
import re
import tracemalloc
from collections.abc import Iterable
from dataclasses import dataclass

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtap.analytics.ingest.sse import SSEEvent, SSEParser

from tests import spec_files

SPEC = spec_files.v2_spec()
BOM = b"\xef\xbb\xbf"


def parse(chunks: Iterable[bytes], parser: SSEParser | None = None) -> list[SSEEvent]:
    parser = parser if parser is not None else SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events + parser.close()


def split_at(stream: bytes, cuts: Iterable[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def every(stream: bytes, n: int) -> list[bytes]:
    return [stream[i : i + n] for i in range(0, len(stream), n)]


# --- generated streams -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    kind: str  # "field", "comment" or "blank"
    raw: bytes  # as written on the wire, line end included ("" only for an unterminated last line)
    name: str = ""
    value: str = ""  # what the parser should see as the field's value


TEXT = st.text(
    alphabet=st.one_of(
        st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]),
        st.sampled_from("é€中😀🇫🇷𝄞 :\x00"),
    ),
    max_size=12,
)
ENDS = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def field_lines(draw: st.DrawFn) -> Line:
    name = draw(st.sampled_from(["data", "data", "data", "event", "id", "retry", "Data", "foo", "ïd"]))
    value = draw(TEXT)
    if name == "id" and draw(st.booleans()):
        value = value.replace("\x00", "")
    form = draw(st.sampled_from(["colon-space", "colon", "bare"]))
    if form == "bare" and value == "":
        text, seen = name, ""  # a field with no colon has an empty value
    elif form == "colon":
        text, seen = f"{name}:{value}", value[1:] if value.startswith(" ") else value
    else:
        text, seen = f"{name}: {value}", value
    return Line("field", (text + draw(ENDS)).encode(), name, seen)


@st.composite
def comment_lines(draw: st.DrawFn) -> Line:
    return Line("comment", (":" + draw(TEXT) + draw(ENDS)).encode())


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[Line]]:
    """A stream as bytes, and its lines (BOM excluded); the last block may lack its blank line."""
    lines: list[Line] = []
    for _ in range(draw(st.integers(0, 6))):
        lines += draw(st.lists(st.one_of(field_lines(), field_lines(), comment_lines()), max_size=6))
        lines.append(Line("blank", draw(ENDS).encode()))
    lines += draw(st.lists(st.one_of(field_lines(), comment_lines()), max_size=3))
    if lines and lines[-1].kind != "blank" and draw(st.booleans()):
        last = lines[-1]
        lines[-1] = Line(last.kind, last.raw.rstrip(b"\r\n"), last.name, last.value)
    # CR then a blank line ended by LF would be read as one CRLF: an ambiguity of the format itself.
    for i in range(1, len(lines)):
        if lines[i - 1].raw.endswith(b"\r") and lines[i].raw == b"\n":
            lines[i] = Line("blank", b"\r\n")
    bom = BOM if draw(st.booleans()) else b""
    return bom + b"".join(line.raw for line in lines), lines


@dataclass
class Expected:
    events: list[SSEEvent]
    comments: int
    oversized: int


def expected(lines: list[Line], limit: int) -> Expected:
    """What the stream means: blocks ended by a blank line, each one event if it has a data field.

    A block is oversized from the first line at which its non-comment bytes so far, plus that line,
    exceed the limit; lines before that point still take effect (comments, ids).
    """
    out = Expected([], 0, 0)
    last_id: str | None = None
    block: list[Line] = []
    for line in lines:
        block.append(line)
        if line.kind == "blank" or line is lines[-1]:
            size, data, event, overflowed = 0, list[str](), "", False
            for item in block:
                if size + len(item.raw) > limit:
                    out.oversized += 1
                    overflowed = True
                    break
                if not item.raw.endswith((b"\n", b"\r")):
                    break  # an unterminated last line is never a line (WHATWG discards it at EOF)
                if item.kind == "comment":
                    out.comments += 1
                    continue
                size += len(item.raw)
                if item.name == "data":
                    data.append(item.value)
                elif item.name == "event":
                    event = item.value
                elif item.name == "id" and "\x00" not in item.value:
                    last_id = item.value or None
            if line.kind == "blank" and data and not overflowed:
                out.events.append(SSEEvent(event or "message", "\n".join(data), last_id, size))
            block = []
    return out


def check_stream(data: st.DataObject, limit: int) -> None:
    stream, lines = data.draw(streams())
    if data.draw(st.booleans()):
        chunks = every(stream, 1)
    else:
        chunks = split_at(stream, data.draw(st.lists(st.integers(0, len(stream)), max_size=30)))
    whole, pieces = SSEParser(max_event_bytes=limit), SSEParser(max_event_bytes=limit)
    want = expected(lines, limit)

    assert parse([stream], whole) == want.events
    assert parse(chunks, pieces) == want.events
    for parser in (whole, pieces):
        assert (parser.comments, parser.oversized, parser.invalid_utf8) == (want.comments, want.oversized, 0)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_chunking_gives_the_events_written(data: st.DataObject) -> None:
    check_stream(data, 1 << 20)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.integers(8, 120))
def test_any_chunking_gives_the_same_events_under_a_small_limit(data: st.DataObject, limit: int) -> None:
    check_stream(data, limit)


# --- the OpenAI streams from the spec ------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec_streams() -> dict[str, str]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    spec = yaml.load(SPEC.read_text(), Loader=loader)  # noqa: S506 - a safe loader
    found: dict[str, str] = {}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            for i, example in enumerate(op.get("x-oaiMeta", {}).get("examples", []) or []):
                response = example.get("response") if isinstance(example, dict) else None
                if isinstance(response, str) and "event: thread.run.created" in response:
                    # A YAML literal block keeps one final newline, dropping the blank line that ends
                    # the last event on the wire.
                    found[f"{method} {path} #{i}"] = response + "\n"
    assert len(found) == 4, found.keys()
    return found


def test_openai_spec_streams(spec_streams: dict[str, str]) -> None:
    for name, text in spec_streams.items():
        events = parse([text.encode()])
        # Every `event:` line directly followed by a `data:` line, read with a regex instead of the parser.
        written = re.findall(r"^event: (.+)\ndata: (.*)$", text, flags=re.MULTILINE)
        assert [(e.event, e.data) for e in events] == written, name
        assert events[0].event in ("thread.created", "thread.run.created")
        assert events[-1] == SSEEvent("done", "[DONE]", None, len(b"event: done\ndata: [DONE]\n\n"))
        assert all(e.id is None for e in events)
        created = next(e for e in events if e.event == "thread.run.created")
        assert created.data.startswith('{"id":"run_123","object":"thread.run",')
        assert created.raw_size == len(f"event: thread.run.created\ndata: {created.data}\n\n".encode())

        crlf = text.replace("\n", "\r\n").encode()
        assert [(e.event, e.data) for e in parse(every(crlf, 1))] == written, name
        assert parse(every(text.encode(), 7)) == events, name

    # This example has `event: thread.run.completed` followed by bare JSON with no `data:`: per WHATWG
    # that line is a field with an unknown name, and an event without data is not dispatched.
    text = spec_streams["post /threads/runs #1"]
    assert "event: thread.run.completed\n{" in text
    assert "thread.run.completed" not in [e.event for e in parse([text.encode()])]


def test_done_sentinel() -> None:
    assert parse([b"event: done\ndata: [DONE]\n\n"]) == [SSEEvent("done", "[DONE]", None, 26)]
    # Chat Completions style: no event name.
    assert parse([b"data: [DONE]\n\n"]) == [SSEEvent("message", "[DONE]", None, 14)]


def test_error_event() -> None:
    body = b'event: error\ndata: {"error":{"message":"boom","type":"server_error"}}\n\n'
    (event,) = parse(every(body, 5))
    assert event.event == "error"
    assert json.loads(event.data)["error"]["message"] == "boom"
    assert event.raw_size == len(body)


# --- line ends, characters and the BOM across chunk boundaries -----------------------------------------


def test_cr_and_lf_split_across_chunks_are_one_line_end() -> None:
    # Were the CR and LF two line ends, the blank line between them would dispatch "a" and "b" apart.
    assert parse([b"data: a\r", b"\ndata: b\r\n\r\n"]) == [SSEEvent("message", "a\nb", None, 20)]


def test_event_ended_by_cr_at_chunk_end() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r\r") == []  # the last CR may still be half of a CRLF
    a, b, c = (SSEEvent("message", x, None, 9) for x in "abc")
    assert parser.feed(b"data: b\n\n") == [a, b]
    assert parser.feed(b"data: c\r\r") == []
    assert parser.close() == [c]  # at the end of the stream a CR is a complete line end


def test_utf8_character_split_across_chunks() -> None:
    body = "event: déjà\ndata: 😀 中\n\n".encode()
    for cut in range(1, len(body)):
        assert parse([body[:cut], body[cut:]]) == [SSEEvent("déjà", "😀 中", None, len(body))], cut
    assert parse(every(body, 1)) == [SSEEvent("déjà", "😀 中", None, len(body))]


def test_bom_is_skipped_once_even_when_split() -> None:
    body = BOM + b"data: x\n\n"
    for cut in range(len(body)):
        assert parse([body[:cut], body[cut:]]) == [SSEEvent("message", "x", None, 9)], cut
    # A second BOM is part of the first field name, which is then unknown.
    assert parse([BOM + BOM + b"data: x\n\n"]) == []
    # Bytes that only start like a BOM are kept.
    assert parse([b"\xef", b"\xbb"]) == []


# --- field rules -----------------------------------------------------------------------------------------


def test_field_rules() -> None:
    assert parse([b"data\n\n"]) == [SSEEvent("message", "", None, 6)]
    assert parse([b"data\ndata\n\n"]) == [SSEEvent("message", "\n", None, 11)]
    assert parse([b"data:  two spaces\n\n"])[0].data == " two spaces"
    assert parse([b"data:a:b\n\n"])[0].data == "a:b"
    assert parse([b"event: x\nevent:\ndata: d\n\n"])[0].event == "message"
    assert parse([b"event: only\nretry: 10\n\n"]) == []  # no data, nothing dispatched
    assert parse([b"DATA: x\n\n"]) == []  # field names are case sensitive


def test_ids_persist_until_changed() -> None:
    events = parse(
        [b"id: 1\ndata: a\n\ndata: b\n\nid: 2\x00\ndata: c\n\nid: 3\n\ndata: d\n\nid\ndata: e\n\n"]
    )
    assert [(e.data, e.id) for e in events] == [("a", "1"), ("b", "1"), ("c", "1"), ("d", "3"), ("e", None)]


def test_unterminated_event_is_discarded_at_close() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: x\n\ndata: y\n") == [SSEEvent("message", "x", None, 9)]
    assert parser.close() == []
    # close() ends the stream: the parser starts over, BOM included.
    assert parse([BOM + b"data: z\n\n"], parser) == [SSEEvent("message", "z", None, 9)]


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_event_bytes"):
        SSEParser(max_event_bytes=0)


# --- bounds ----------------------------------------------------------------------------------------------


def test_oversized_event_is_dropped_and_the_next_one_parsed() -> None:
    parser = SSEParser(max_event_bytes=1024)
    stream = b"data: before\n\n" + b"id: 7\ndata: " + b"y" * 5000 + b"\n\n" + b"data: after\n\n"
    events: list[SSEEvent] = []
    for chunk in every(stream, 100):
        events += parser.feed(chunk)
        assert parser.buffered_bytes <= 1024
    events += parser.close()
    assert [(e.data, e.id) for e in events] == [("before", None), ("after", "7")]
    assert parser.oversized == 1


def test_event_exactly_at_the_limit_is_kept() -> None:
    body = b"data: " + b"z" * 100 + b"\n\n"
    assert len(parse([body], SSEParser(max_event_bytes=len(body)))) == 1
    # One byte over, found only at its blank line, which also ends it: the next event is parsed.
    parser = SSEParser(max_event_bytes=len(body) - 1)
    assert parse([body + b"data: next\n\n"], parser) == [SSEEvent("message", "next", None, 12)]
    assert parser.oversized == 1


@pytest.mark.parametrize("prefix", [b"data: ", b": "], ids=["data", "comment"])
def test_endless_line_never_buffers_more_than_the_limit(prefix: bytes) -> None:
    limit = 1 << 20
    line = prefix + b"x" * (10 << 20)
    chunks = every(line, 64 << 10) + [b"\r", b"\n\r", b"\ndata: after\n", b"\n"]
    parser = SSEParser(max_event_bytes=limit)
    events: list[SSEEvent] = []
    tracemalloc.start()
    try:
        for chunk in chunks:
            events += parser.feed(chunk)
            assert parser.buffered_bytes <= limit
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * limit
    assert events == [SSEEvent("message", "after", None, 13)]
    assert parser.oversized == 1


def test_endless_comments_accumulate_nothing() -> None:
    parser = SSEParser(max_event_bytes=1024)
    stream = b"data: a\n" + b": ping\n" * 100_000 + b"data: b\n\n"
    events: list[SSEEvent] = []
    for chunk in every(stream, 4096):
        events += parser.feed(chunk)
        assert parser.buffered_bytes <= 16
    assert events == [SSEEvent("message", "a\nb", None, 17)]  # comments are not part of the event
    assert (parser.comments, parser.oversized) == (100_000, 0)


# --- invalid UTF-8 ---------------------------------------------------------------------------------------


def test_invalid_utf8_drops_only_its_event() -> None:
    parser = SSEParser()
    stream = (
        b"data: \xff\xfe\n\n"
        b"event: \xc3\n"
        b"data: fine\n\n"
        b"id: \xe2\x82\n"
        b"data: bad id\n\n"
        b": a comment may be anything \xff\n"
        b"data: ok\n\n"
    )
    assert parse(every(stream, 3), parser) == [SSEEvent("message", "ok", None, 10)]
    assert (parser.invalid_utf8, parser.comments) == (3, 1)


# --- whole events at a time (the parser's path for OpenAI-shaped chunks) ------------------------------

_OPENAI_BLOCKS = st.one_of(
    st.builds(lambda n, d: b"event: " + n + b"\ndata: " + d + b"\n\n",
              st.sampled_from([b"response.output_text.delta", b"thread.run.created", b"", b"caf\xc3\xa9", b"\xff"]),
              st.sampled_from([b'{"delta":"hi"}', b"[DONE]", b"", b"\xc3", b'{"x":"\xe2\x82\xac"}', b"x" * 40])),
    st.builds(lambda d: b"data: " + d + b"\n\n", st.sampled_from([b'{"a":1}', b"[DONE]", b"\xff"])),
    st.sampled_from([b"id: 7\n", b": keep-alive\n\n", b"\n", b"event: e\ndata: a\ndata: b\n\n", b"retry: 5\n"]),
)


@given(st.lists(_OPENAI_BLOCKS, max_size=12), st.integers(8, 80), st.data())
def test_openai_shaped_chunks_parse_as_byte_by_byte(blocks: list[bytes], limit: int,
                                                    data: st.DataObject) -> None:
    # One byte at a time never holds a whole event in a chunk, so it never takes the whole-event path:
    # it is the reference for any other chunking of the same bytes, counters included.
    stream = b"".join(blocks)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=4))
    whole, bytewise = SSEParser(max_event_bytes=limit), SSEParser(max_event_bytes=limit)
    got, want = parse(split_at(stream, cuts), whole), parse(every(stream, 1), bytewise)
    assert got == want
    assert (whole.oversized, whole.invalid_utf8, whole.comments) == \
        (bytewise.oversized, bytewise.invalid_utf8, bytewise.comments)


# --- feed_pairs: the capture decoder's entry, whole OpenAI-form events found in one pass ------------


def pairs_of(chunks: Iterable[bytes], parser: SSEParser) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for chunk in chunks:
        out += parser.feed_pairs(chunk)
    return out + [(e.event, e.data) for e in parser.close()]


def check_pairs_match_feed(stream: bytes, chunks: list[bytes], limit: int) -> None:
    fast, reference = SSEParser(max_event_bytes=limit), SSEParser(max_event_bytes=limit)
    want = [(e.event, e.data) for e in parse(every(stream, 1), reference)]
    assert pairs_of(chunks, fast) == want
    assert (fast.oversized, fast.invalid_utf8, fast.comments) == \
        (reference.oversized, reference.invalid_utf8, reference.comments)


# Mostly the form the fast path takes, so that chunkings put it between, across and inside odd blocks.
_CANONICAL_BLOCKS = st.builds(lambda n, d: (b"event: " + n + b"\n" if n is not None else b"") + b"data: " + d + b"\n\n",
                              st.sampled_from([b"thread.run.created", b"response.output_text.delta", b"", None]),
                              st.sampled_from([b'{"delta":"h\xc3\xa9"}', b"[DONE]", b"", b"x" * 40]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_CANONICAL_BLOCKS, _CANONICAL_BLOCKS, _CANONICAL_BLOCKS, _OPENAI_BLOCKS), max_size=16),
       st.sampled_from([8, 80, 1 << 20, 1 << 20]), st.data())
def test_feed_pairs_under_any_chunking_is_feed_byte_by_byte(blocks: list[bytes], limit: int,
                                                            data: st.DataObject) -> None:
    stream = (BOM if data.draw(st.booleans()) else b"") + b"".join(blocks)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=6))
    check_pairs_match_feed(stream, split_at(stream, cuts), limit)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from([16, 120, 1 << 20]))
def test_feed_pairs_on_any_stream_is_feed(data: st.DataObject, limit: int) -> None:
    stream, _ = data.draw(streams())
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    check_pairs_match_feed(stream, split_at(stream, cuts), limit)


def test_feed_pairs_takes_whole_events_and_keeps_the_unfinished_one() -> None:
    parser = SSEParser()
    first = b"event: thread.run.created\ndata: {\"id\":1}\n\ndata: [DONE]\n\nevent: thread.message.delta\nda"
    assert parser.feed_pairs(first) == [("thread.run.created", '{"id":1}'), ("message", "[DONE]")]
    assert parser.feed_pairs(b"ta: {}\n\nevent: done\ndata: x\n\nevent: e") == \
        [("thread.message.delta", "{}"), ("done", "x")]
    assert parser.feed_pairs(b"\ndata: \xc3\xa9\n\n") == [("e", "é")]
    assert parser.buffered_bytes == 0


def test_feed_pairs_sends_an_odd_chunk_down_the_general_path() -> None:
    parser = SSEParser()
    # An id line, a comment and an invalid event among whole events: each is what feed makes of it.
    chunk = b"id: 7\nevent: a\ndata: 1\n\n: keep-alive\n\nevent: \xff\ndata: 2\n\nevent: b\ndata: 3\n\n"
    assert parser.feed_pairs(chunk) == [("a", "1"), ("b", "3")]
    assert (parser.invalid_utf8, parser.comments) == (1, 1)
    assert parser.feed_pairs(b"data: \xff\n\ndata: ok\n\n") == [("message", "ok")]
    assert parser.invalid_utf8 == 2
