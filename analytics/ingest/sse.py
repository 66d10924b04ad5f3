"""Incremental parser for `text/event-stream` bodies, as relayed by the proxy.

Follows the WHATWG HTML "Server-sent events" interpretation rules (section 9.2.6), with two deliberate
differences that suit a capture tap rather than a browser: an event with a field that is not valid UTF-8
is dropped and counted instead of decoded with U+FFFD, and an event larger than `max_event_bytes` is
dropped and counted so that a hostile or broken upstream cannot make the tap buffer without bound.

Pure: bytes in, events out, no I/O. Chunks may split anything (a CRLF, a UTF-8 character, the BOM);
the result never depends on where they split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from operator import itemgetter

_BOM = b"\xef\xbb\xbf"
_CR = 0x0D
_LF = 0x0A
_COLON = 0x3A
# While an oversized event is being skipped only "is the current line blank?" matters, so the bytes
# of its unfinished line are replaced by this one-byte stand-in.
_NONBLANK = b"x"
# Whole events of the one form OpenAI streams use (`event: NAME` and `data: JSON`, or `data:` alone), in
# one C pass over a decoded chunk; any other line is taken by the last alternative, whose non-empty
# group sends the chunk down the general path instead.
_WHOLE_EVENTS = re.compile(r"(?:event: ([^\n]*)\n)?data: ([^\n]*)\n\n|([^\n]*\n)")
_ODD_LINE = itemgetter(2)


# Not frozen: a frozen dataclass's __init__ goes through object.__setattr__ per field, and one of these
# is built for every event of every captured stream.
@dataclass(slots=True)
class SSEEvent:
    event: str  # "message" when the event had no (or an empty) `event:` field, as in WHATWG
    data: str  # the event's `data:` lines joined with "\n"
    id: str | None  # the last event ID at dispatch (it persists across events); None while it is empty
    raw_size: int  # bytes of the event's lines on the wire, blank line included, comment lines excluded


class SSEParser:
    """Feed it chunks of one stream with `feed`, then call `close` once the stream ends.

    Size limit: an event is dropped (and `oversized` counted) as soon as its non-comment lines plus the
    line being read would exceed `max_event_bytes`; the rest of it is skipped without buffering, up to
    the blank line that ends it. Comment lines do not count towards an event's size, but each line is
    checked against the limit before it is classified, so one comment line longer than what the event
    has left still overflows it: that keeps the outcome the same however the line was chunked.
    """

    __slots__ = (
        "max_event_bytes",
        "oversized",
        "invalid_utf8",
        "comments",
        "_head",
        "_started",
        "_pending",
        "_discarding",
        "_size",
        "_data",
        "_event",
        "_bad",
        "_last_id",
    )

    def __init__(self, *, max_event_bytes: int = 1 << 20) -> None:
        if max_event_bytes < 1:
            raise ValueError(f"max_event_bytes must be at least 1, got {max_event_bytes}")
        self.max_event_bytes = max_event_bytes
        self.oversized = 0
        self.invalid_utf8 = 0
        self.comments = 0
        self._reset()

    def _reset(self) -> None:
        self._head = b""  # the stream's first bytes, while they may still be a split BOM
        self._started = False
        # The line not yet known to be complete: no line end seen yet, or a CR that may still be the
        # first half of a CRLF split across chunks.
        self._pending = bytearray()
        self._discarding = False
        self._size = 0  # bytes of the current event's complete non-comment lines
        self._data: list[bytes] = []
        self._event = b""
        self._bad = False  # the current event had an id that is not valid UTF-8
        self._last_id: str | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for the unfinished event; never more than `max_event_bytes`."""
        return len(self._pending) + len(self._event) + sum(map(len, self._data)) + len(self._head)

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if not self._started:
            chunk = self._skip_bom(chunk)
        return self._feed(chunk)

    def feed_pairs(self, chunk: bytes) -> list[tuple[str, str]]:
        """`(event, data)` of each event `feed` would return, with the same counters and state after it;
        for what a capture decoder needs, without building an SSEEvent per event. A chunk's whole
        events of the OpenAI form are found by one regular expression over the decoded chunk instead
        of a Python step per event; everything else takes `feed`'s path."""
        if not self._started:
            chunk = self._skip_bom(chunk)
        end = chunk.rfind(b"\n\n") + 2  # just after the chunk's last blank line
        pending = self._pending
        if end < 2 or b"\r" in chunk or (pending and pending[-1] == _CR):
            return self._feed_pairs(chunk)
        start = 0
        pairs: list[tuple[str, str]] = []
        # not between events (_clean, inline: this runs for every chunk of every captured stream)
        if pending or self._data or self._event or self._size or self._discarding or self._bad:
            start = chunk.find(b"\n\n") + 2  # the unfinished event ends here, whatever it holds
            pairs = self._feed_pairs(chunk[:start])
            if not self._clean():  # a blank line ends any event, even one being skipped: defensive only
                return pairs + self._feed_pairs(chunk[start:])
        if start < end:
            found = self._whole_events(chunk, start, end)
            if found is None:
                return pairs + self._feed_pairs(chunk[start:])
            pairs += found
        if end < len(chunk):
            pairs += self._feed_pairs(chunk[end:])
        return pairs

    def _feed_pairs(self, chunk: bytes) -> list[tuple[str, str]]:
        return [(e.event, e.data) for e in self._feed(chunk)]

    def _whole_events(self, chunk: bytes, start: int, end: int) -> list[tuple[str, str]] | None:
        """The events of chunk[start:end], which starts between events and ends with a blank line, if
        every line of it is of the OpenAI form; None (nothing consumed) otherwise. Such a run holds no
        comment, id or CR, and when it decodes as a whole each of its events does: its events are
        exactly what the line parser would dispatch, each no larger than the run."""
        if end - start > self.max_event_bytes:
            return None
        try:
            text = (chunk if start == 0 and end == len(chunk) else chunk[start:end]).decode()
        except UnicodeDecodeError:
            return None
        found = _WHOLE_EVENTS.findall(text)
        if any(map(_ODD_LINE, found)):
            return None
        return [(name or "message", data) for name, data, _ in found]

    def _feed(self, chunk: bytes) -> list[SSEEvent]:
        if not chunk:
            return []
        pending = self._pending
        if b"\n" not in chunk and b"\r" not in chunk and not (pending and pending[-1] == _CR):
            self._extend(chunk)
            return []
        return self._lines(chunk)

    def _lines(self, chunk: bytes) -> list[SSEEvent]:
        pending = self._pending
        if pending:
            data = b"".join((pending, chunk))
            self._pending = bytearray()
        else:
            # Fast path: a chunk that starts on a line boundary is split in place, without a copy.
            data = chunk
        lines = data.splitlines(keepends=True)  # bytes.splitlines breaks at CRLF, LF and CR only
        tail = lines[-1]
        if tail[-1] == _LF:
            tail = b""
        else:
            lines.pop()
        events = self._parse(lines)
        if tail:
            self._extend(tail)
        return events

    def _clean(self) -> bool:
        """Between two events: nothing of an unfinished one is held."""
        return not self._data and not self._event and not self._size and not self._discarding and not self._bad

    def close(self) -> list[SSEEvent]:
        """End of stream: an unterminated event is discarded (WHATWG); the parser is ready for a new one."""
        pending = self._pending
        # A final CR is a complete line end; it was only held back in case an LF followed.
        events = self._parse([bytes(pending)]) if pending and pending[-1] == _CR else []
        self._reset()
        return events

    def _skip_bom(self, chunk: bytes) -> bytes:
        head = self._head + chunk
        if len(head) < len(_BOM) and _BOM.startswith(head):
            self._head = head
            return b""
        self._head = b""
        self._started = True
        return head[len(_BOM) :] if head.startswith(_BOM) else head

    def _extend(self, part: bytes) -> None:
        """Add to the unfinished line `part`, which holds no line end except perhaps a final CR."""
        if not self._discarding:
            if self._size + len(self._pending) + len(part) <= self.max_event_bytes:
                self._pending += part
                return
            self._overflow()
        # `part` can only start with CR if it is exactly b"\r" (a line end).
        nonblank = bool(self._pending) or part[0] != _CR
        self._pending = bytearray(_NONBLANK if nonblank else b"")
        if part[-1] == _CR:
            self._pending.append(_CR)

    def _overflow(self) -> None:
        self.oversized += 1
        self._discarding = True
        self._size = 0
        self._data = []
        self._event = b""
        self._bad = False

    def _parse(self, lines: list[bytes]) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        limit = self.max_event_bytes
        size = self._size
        data = self._data
        discarding = self._discarding
        for line in lines:
            n = len(line)
            blank = line[0] in b"\r\n"  # a line with content never starts with a line end
            if discarding:
                if blank:
                    discarding = False
                continue
            # Checked for comment and blank lines too: whether a line overflows must not depend on
            # whether it arrived whole or was held in pieces by `_extend`.
            if size + n > limit:
                self._overflow()
                size, data = 0, self._data
                discarding = not blank
                continue
            if blank:
                if data:
                    event = self._dispatch(data, size + n)
                    if event is not None:
                        events.append(event)
                    data = []
                self._event = b""
                self._bad = False
                size = 0
                continue
            if line[0] == _COLON:
                self.comments += 1
                continue
            size += n
            # The forms every OpenAI event uses, with a single copy of the value.
            if line.startswith(b"data: "):
                data.append(line[6:].rstrip(b"\r\n"))
                continue
            if line.startswith(b"event: "):
                self._event = line[7:].rstrip(b"\r\n")
                continue
            name, _, value = line.rstrip(b"\r\n").partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                data.append(value)
            elif name == b"event":
                self._event = value
            elif name == b"id":
                if b"\0" not in value:  # WHATWG: an id with NUL is ignored
                    try:
                        self._last_id = value.decode() or None
                    except UnicodeDecodeError:
                        self._bad = True
            # `retry` and unknown fields are ignored (WHATWG); they still count towards the size.
        self._size = size
        self._data = data
        self._discarding = discarding
        return events

    def _dispatch(self, data: list[bytes], raw_size: int) -> SSEEvent | None:
        if not self._bad:
            try:
                text = b"\n".join(data).decode()
                name = self._event.decode() or "message"
            except UnicodeDecodeError:
                pass
            else:
                return SSEEvent(name, text, self._last_id, raw_size)
        self.invalid_utf8 += 1
        return None
