"""Hostile upstream data, one class per test, through one real runtap on 127.0.0.1: nesting depth, number
ranges, string lengths, unicode, duplicate keys (as a JSON body and as an SSE event).

After each generated case: `/healthz` answers, the process's RSS stays under a bound, `/metrics` stays
under a size bound, and a well-formed run sent right after the hostile one is in DuckDB with its exact
status and tokens and is counted in the metrics (runs finished, tokens). The hostile body itself is
relayed unchanged (checked byte for byte)."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fault_helpers import Proxy, parse_response, proxy_to, raw_exchange, request_bytes
from tests.faulty_upstream import SSE_HEADERS, Conn, FaultyUpstream, run_object, sse_event

GOOD_MODEL = "gpt-good"
RSS_GROWTH_BOUND = 768 << 20  # DuckDB's buffer pool, 1 MB bodies in flight, the row cache: not 100s of MB per case
METRICS_BOUND = 8 << 20  # 200 models x 128 characters x every series that carries a model, with margin

_ids = itertools.count()


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@dataclass
class Stack:
    loop: asyncio.AbstractEventLoop
    proxy: Proxy | None = None
    responses: list[tuple[bool, bytes]] = field(default_factory=list)  # (sse, body) per next request
    stopped: asyncio.Event | None = None
    server: Any = None
    rss0: int = 0
    finished: float = 0.0
    prompt: float = 0.0
    completion: float = 0.0

    def call(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def value(self, name: str, **labels: str) -> float:
        assert self.proxy is not None
        return self.proxy.running.runtime.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="hostile-loop", daemon=True)
    thread.start()
    st_ = Stack(loop)
    ready = threading.Event()

    async def script(conn: Conn) -> None:
        sse, body = st_.responses.pop(0)
        if sse:
            await conn.head(200, SSE_HEADERS)
            await conn.send(body)
            await conn.end()
        else:
            await conn.head(200, (("Content-Type", "application/json"),), length=len(body))
            await conn.send(body)

    async def serve() -> None:
        st_.stopped = asyncio.Event()
        async with FaultyUpstream(script) as up, proxy_to(tmp_path_factory.mktemp("hostile"), up.url,
                                                          db_memory_limit="256MB") as px:
            st_.proxy = px
            ready.set()
            await st_.stopped.wait()

    st_.server = asyncio.run_coroutine_threadsafe(serve(), loop)
    assert ready.wait(30), "runtap did not start"
    st_.rss0 = _rss()
    try:
        yield st_
    finally:
        if st_.stopped is not None:
            loop.call_soon_threadsafe(st_.stopped.set)
            st_.server.result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def _get(port: int, target: str) -> bytes:
    return await raw_exchange(port, request_bytes("GET", target))


def check_case(stack: Stack, hostile: bytes, *, sse: bool) -> None:
    """Send the hostile body, then a well-formed run; check everything the issue names."""
    px = stack.proxy
    assert px is not None
    good_id = f"run_good_{next(_ids)}"
    prompt, completion = 100 + next(_ids) % 50, 7
    good = run_object(good_id, "completed", model=GOOD_MODEL, completed_at=1_700_000_050,
                      usage={"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion})
    good_body = sse_event("thread.run.completed", good) if sse else orjson.dumps(good)
    stack.responses += [(sse, hostile), (sse, good_body)]
    if sse:
        create = request_bytes("POST", "/v1/threads/thread_f/runs", body=b'{"stream": true}',
                               headers={"Content-Type": "application/json"})
        hostile_wire = stack.call(raw_exchange(px.port, create))
        good_wire = stack.call(raw_exchange(px.port, create))
    else:
        hostile_wire = stack.call(_get(px.port, "/v1/threads/thread_f/runs/run_hostile"))
        good_wire = stack.call(_get(px.port, f"/v1/threads/thread_f/runs/{good_id}"))
    assert parse_response(hostile_wire).body == hostile  # relayed unchanged
    assert parse_response(good_wire).status == 200
    assert px.writer.flush(timeout=60)
    admin = px.running.admin_url.rsplit(":", 1)[1]
    assert parse_response(stack.call(_get(int(admin), "/healthz"))).status == 200
    metrics = parse_response(stack.call(_get(int(admin), "/metrics")))
    assert metrics.status == 200 and len(metrics.body) < METRICS_BOUND, len(metrics.body)
    assert _rss() - stack.rss0 < RSS_GROWTH_BOUND, (_rss() - stack.rss0) >> 20
    cur = px.writer.reader()
    try:
        row = cur.execute("SELECT status, prompt_tokens, completion_tokens, total_tokens FROM runs WHERE id = ?",
                          [good_id]).fetchall()
    finally:
        cur.close()
    assert row == [("completed", prompt, completion, prompt + completion)]
    finished = stack.value("runtap_runs_finished_total", status="completed", model=GOOD_MODEL)
    tokens_p = stack.value("runtap_tokens_total", model=GOOD_MODEL, type="prompt")
    tokens_c = stack.value("runtap_tokens_total", model=GOOD_MODEL, type="completion")
    assert (finished - stack.finished, tokens_p - stack.prompt, tokens_c - stack.completion) == (1, prompt, completion)
    stack.finished, stack.prompt, stack.completion = finished, tokens_p, tokens_c


# --- bodies ------------------------------------------------------------------------------------------

def _obj(pairs: list[tuple[str, bytes]]) -> bytes:
    """A JSON object from (key, raw JSON value) pairs: keys may repeat, values may be any JSON text."""
    return b"{" + b",".join(json.dumps(k).encode() + b":" + v for k, v in pairs) + b"}"


def _base(run_id: str, **override: bytes) -> list[tuple[str, bytes]]:
    fields = {k: orjson.dumps(v) for k, v in run_object(run_id, "completed", completed_at=1_700_000_050).items()}
    fields.update(override)
    return list(fields.items())


def _deep(depth: int, as_list: bool) -> bytes:
    return (b"[" * depth + b"1" + b"]" * depth) if as_list else (b'{"k":' * depth + b"1" + b"}" * depth)


def _event(body: bytes) -> bytes:
    return b"event: thread.run.completed\ndata: " + body + b"\n\n"


Build = Callable[[bytes], bytes]
wrap = st.sampled_from([(False, lambda b: b), (True, _event)])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(depth=st.integers(0, 1100), as_list=st.booleans(), where=st.sampled_from(["metadata", "tools", "usage",
                                                                                 "response_format"]), how=wrap)
def test_nesting_depth(stack: Stack, depth: int, as_list: bool, where: str, how: tuple[bool, Build]) -> None:
    sse, build = how
    check_case(stack, build(_obj(_base(f"run_deep_{next(_ids)}", **{where: _deep(depth, as_list)}))), sse=sse)


_number = st.one_of(st.integers(), st.integers(min_value=2**63 - 2, max_value=2**64 + 2).map(lambda n: n * -1 ** n),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.sampled_from(["-73514450", "1e400", "-0", "1E-400", "0.0", "18446744073709551616", "-1"]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(prompt=_number, completion=_number, cap=_number, created=_number, how=wrap)
def test_number_ranges(stack: Stack, prompt: Any, completion: Any, cap: Any, created: Any,
                       how: tuple[bool, Build]) -> None:
    sse, build = how

    def num(v: Any) -> bytes:
        return v.encode() if isinstance(v, str) else json.dumps(v).encode()

    usage = b'{"prompt_tokens":' + num(prompt) + b',"completion_tokens":' + num(completion) + b',"total_tokens":1}'
    body = _obj(_base(f"run_num_{next(_ids)}", usage=usage, max_prompt_tokens=num(cap),
                      max_completion_tokens=num(cap), created_at=num(created), completed_at=num(created)))
    check_case(stack, build(body), sse=sse)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(length=st.one_of(st.integers(0, 300), st.integers(300, 1 << 20)), char=st.sampled_from("aé€😀\\"),
       where=st.sampled_from(["model", "assistant_id", "last_error", "incomplete_details", "id"]), how=wrap)
def test_string_lengths(stack: Stack, length: int, char: str, where: str, how: tuple[bool, Build]) -> None:
    sse, build = how
    text = char * length
    value = json.dumps({"code": text, "message": text} if where == "last_error" else
                       {"reason": text} if where == "incomplete_details" else text).encode()
    status = {"last_error": b'"failed"', "incomplete_details": b'"incomplete"'}.get(where, b'"completed"')
    check_case(stack, build(_obj(_base(f"run_len_{next(_ids)}", **{where: value, "status": status}))), sse=sse)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(text=st.text(alphabet=st.characters(), max_size=40),
       where=st.sampled_from(["model", "status", "assistant_id", "thread_id", "metadata", "id"]),
       ascii_escapes=st.booleans(), how=wrap)
def test_unicode(stack: Stack, text: str, where: str, ascii_escapes: bool, how: tuple[bool, Build]) -> None:
    sse, build = how
    # ensure_ascii writes lone surrogates and NULs as \\u escapes; otherwise raw UTF-8 (surrogates replaced)
    value: Any = {text: text} if where == "metadata" else text
    raw = json.dumps(value, ensure_ascii=ascii_escapes)
    check_case(stack, build(_obj(_base(f"run_uni_{next(_ids)}", **{where: raw.encode("utf-8", "replace")}))), sse=sse)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(keys=st.lists(st.sampled_from(["id", "status", "usage", "model", "object", "metadata", "created_at"]),
                     min_size=1, max_size=6),
       values=st.lists(st.sampled_from([b'"run_dup"', b'"completed"', b'"queued"', b"null", b"-5", b"{}", b"[]",
                                        b'"thread.run"', b'{"prompt_tokens": -1, "total_tokens": 3}', b'"x"']),
                       min_size=6, max_size=6), how=wrap)
def test_duplicate_keys(stack: Stack, keys: list[str], values: list[bytes], how: tuple[bool, Build]) -> None:
    sse, build = how
    pairs = _base(f"run_dup_{next(_ids)}") + [(k, values[i]) for i, k in enumerate(keys)]
    check_case(stack, build(_obj(pairs)), sse=sse)


def test_a_list_body_of_hostile_items(stack: Stack) -> None:
    items = [_obj(_base(f"run_li_{i}", metadata=_deep(600, False))) for i in range(3)]
    items.append(_obj(_base("run_li_ok")))
    check_case(stack, b'{"object":"list","data":[' + b",".join(items) + b'],"has_more":false}', sse=False)
