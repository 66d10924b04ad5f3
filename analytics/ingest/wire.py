"""The capture channel's framing: what a relay process hands the capture process, as bytes.

A frame is a 4-byte little-endian length and a `marshal` payload: a list of flat tuples, one per
capture item (records.py), so one `marshal.dumps` call (C, no per-object Python code) encodes a whole
batch. marshal and not pickle: decoding builds only plain values and never runs code, so a bad frame
can at worst be refused. Both ends are the same runtap installation, so the marshal version matches.
"""

from __future__ import annotations

import marshal
import struct
from collections.abc import Iterable
from typing import Any, Final

from .records import CaptureItem, Exchange, RequestBody, RequestRecord, ResponseBody, StreamChunk, StreamEnd

HEADER: Final = struct.Struct("<I")
# The other direction: the capture process confirms how many of this connection's items it has written,
# spooled or counted (a running total), so a relay can count what a crashed capture process lost.
ACK: Final = struct.Struct("<Q")
# A frame holds a batch; a body is bounded by capture_max_body (8 MB by default). Anything beyond this
# is not a frame runtap wrote: the reader closes the connection instead of allocating it.
MAX_FRAME: Final = 256 << 20
_MARSHAL_VERSION: Final = 4

_RECORD, _RESPONSE, _REQUEST_BODY, _CHUNK, _END, _CHUNKS = range(6)


class FrameError(ValueError):
    pass


class ChunkRun:
    """Consecutive chunks of one stream, gathered for one frame: one entry instead of one per chunk (a
    Responses stream is hundreds of chunks). Decoded back into one StreamChunk per chunk, each with
    its own arrival time."""

    __slots__ = ("exchange", "parts", "times", "size")

    def __init__(self, exchange: Exchange, data: bytes, at: float) -> None:
        self.exchange = exchange
        self.parts = [data]
        self.times = [at]
        self.size = len(data)

    def add(self, data: bytes, at: float) -> None:
        self.parts.append(data)
        self.times.append(at)
        self.size += len(data)


Entry = CaptureItem | ChunkRun


def _ex(ex: Exchange) -> tuple[Any, ...]:
    return (ex.id, ex.method, ex.path, ex.operation, ex.api_version, ex.key_fingerprint, ex.started_at,
            ex.content_encoding, ex.api_provider, ex.span_context)


def entry_items(entry: Entry) -> int:
    """How many capture items an entry decodes to (what the capture process counts and confirms)."""
    return len(entry.parts) if type(entry) is ChunkRun else 1


def to_tuple(item: Entry, exs: dict[int, tuple[Any, ...]] | None = None) -> tuple[Any, ...]:
    """`exs` shares one tuple per exchange across a frame: marshal then writes it once and refers back."""
    if isinstance(item, RequestRecord):
        return (_RECORD, item.id, item.started_at, item.method, item.path, item.operation, item.status_code,
                item.streamed, item.duration_ms, item.upstream_ttfb_ms, item.bytes_in, item.bytes_out,
                item.upstream_request_id, item.key_fingerprint, item.error, item.api_version, item.api_provider,
                item.span)
    ex = item.exchange
    t = exs.get(id(ex)) if exs is not None else None
    if t is None:
        t = _ex(ex)
        if exs is not None:
            exs[id(ex)] = t
    if type(item) is ChunkRun:
        return (_CHUNKS, t, item.parts, item.times)
    if type(item) is StreamChunk:
        return (_CHUNK, t, item.data, item.received_at)
    if type(item) is ResponseBody:
        return (_RESPONSE, t, item.status, item.body, item.truncated)
    if type(item) is StreamEnd:
        return (_END, t, item.complete)
    if type(item) is RequestBody:
        return (_REQUEST_BODY, t, item.body, item.truncated)
    raise TypeError(f"not a capture item: {type(item).__name__}")


def from_tuple(t: tuple[Any, ...], exs: dict[int, Exchange] | None = None) -> CaptureItem:
    tag = t[0]
    if tag == _RECORD:
        return RequestRecord(*t[1:])
    ex = _exchange(t[1], exs)
    if tag == _CHUNK:
        return StreamChunk(ex, t[2], t[3])
    if tag == _RESPONSE:
        return ResponseBody(ex, t[2], t[3], t[4])
    if tag == _END:
        return StreamEnd(ex, t[2])
    if tag == _REQUEST_BODY:
        return RequestBody(ex, t[2], t[3])
    raise FrameError(f"unknown item tag {tag!r}")


def _exchange(t: tuple[Any, ...], exs: dict[int, Exchange] | None) -> Exchange:
    """One Exchange per exchange tuple of a frame (marshal's back-references make them one object)."""
    if exs is None:
        return Exchange(*t)
    ex = exs.get(id(t))
    if ex is None:
        ex = exs[id(t)] = Exchange(*t)
    return ex


def encode(items: Iterable[Entry]) -> bytes:
    exs: dict[int, tuple[Any, ...]] = {}
    payload = marshal.dumps([to_tuple(i, exs) for i in items], _MARSHAL_VERSION)
    return HEADER.pack(len(payload)) + payload


def decode_payload(payload: bytes) -> list[CaptureItem]:
    try:
        rows = marshal.loads(payload)  # noqa: S302 - from our own relays over a 0700 socket; builds values only
        if type(rows) is not list:
            raise FrameError("a frame holds a list of items")
        exs: dict[int, Exchange] = {}  # ids of tuples that `rows` keeps alive for the whole loop
        out: list[CaptureItem] = []
        for t in rows:
            if t[0] == _CHUNKS:
                ex = _exchange(t[1], exs)
                parts, times = t[2], t[3]
                if type(parts) is not list or type(times) is not list or len(parts) != len(times):
                    raise FrameError("a chunk run needs as many arrival times as chunks")
                out.extend(StreamChunk(ex, d, at) for d, at in zip(parts, times, strict=True))
            else:
                out.append(from_tuple(t, exs))
        return out
    except FrameError:
        raise
    except (ValueError, EOFError, TypeError, IndexError) as exc:
        raise FrameError(f"undecodable frame: {exc}") from None


class FrameReader:
    """Incremental: feed bytes as they arrive, get the complete frames' items."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[list[CaptureItem]]:
        buf = self._buf
        buf += data
        out = []
        pos = 0
        size = HEADER.size
        while len(buf) - pos >= size:
            (n,) = HEADER.unpack_from(buf, pos)
            if n > MAX_FRAME:
                raise FrameError(f"frame of {n} bytes exceeds {MAX_FRAME}")
            if len(buf) - pos - size < n:
                break
            out.append(decode_payload(bytes(buf[pos + size:pos + size + n])))
            pos += size + n
        if pos:
            del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)

    def partial(self) -> bytes:
        """What was fed of an incomplete frame (its header and the payload so far)."""
        return bytes(self._buf)


def frame_entries(partial: bytes) -> int:
    """How many entries the frame that ``partial`` begins holds, from its list header; 0 if unknown.
    A marshal list is its type byte (with or without the ref flag) and a 4-byte little-endian count."""
    size = HEADER.size
    if len(partial) < size + 5 or partial[size] & 0x7F != ord("["):
        return 0
    return int.from_bytes(partial[size + 1:size + 5], "little")
