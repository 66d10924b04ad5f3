"""Synthetic capture data for tests and benchmarks: known runs with known usage, or a million of them.

Files are created by the real analytics.store.Store (so the schema is the one `runtap serve` writes);
rows go in with plain SQL, as the capture writer would have left them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import orjson

from .ingest.store import Store

TERMINAL = ("completed", "failed", "cancelled", "expired", "incomplete")


def create_db(path: str) -> None:
    """An empty capture database with runtap's schema."""
    Store(path).close()


@dataclass(frozen=True, slots=True)
class RunSpec:
    id: str
    model: str
    created_at: str  # ISO-8601 with offset, e.g. "2024-11-01T10:00:00Z"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    assistant_id: str = "asst_1"
    thread_id: str = "thread_1"
    status: str = "completed"
    metadata: dict[str, str] | None = None
    key_fingerprint: str | None = None
    max_prompt_tokens: int | None = None
    max_completion_tokens: int | None = None
    incomplete_reason: str | None = None
    last_error_code: str | None = None
    started_at: str | None = None
    ended_at: str | None = None


@dataclass(frozen=True, slots=True)
class StepSpec:
    id: str
    run_id: str
    created_at: str
    tool_calls: Sequence[str] = ()  # tool call types; empty = a message_creation step
    thread_id: str = "thread_1"
    status: str = "completed"
    completed_at: str | None = None
    last_error_code: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_RUN_COLUMNS = ("id, thread_id, assistant_id, model, status, created_at, started_at, ended_at, "
                "completed_at, failed_at, incomplete_reason, last_error_code, prompt_tokens, "
                "completion_tokens, total_tokens, max_prompt_tokens, max_completion_tokens, metadata, "
                "key_fingerprint, api_version, first_seen_at, last_seen_at")
_TS = "CAST(? AS TIMESTAMPTZ)"


def insert_runs(conn: duckdb.DuckDBPyConnection, runs: Iterable[RunSpec]) -> None:
    values = ", ".join(["?"] * 5 + [_TS] * 5 + ["?"] * 7 + ["CAST(? AS JSON)", "?", "'v2'", _TS,
                                                              "CAST(coalesce(?, ?) AS TIMESTAMPTZ)"])
    for r in runs:
        total = None if r.prompt_tokens is None else r.prompt_tokens + (r.completion_tokens or 0)
        conn.execute(
            f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES ({values})",  # noqa: S608 - synthetic data: constants and integers only
            [r.id, r.thread_id, r.assistant_id, r.model, r.status, r.created_at, r.started_at, r.ended_at,
             r.ended_at if r.status == "completed" else None, r.ended_at if r.status == "failed" else None,
             r.incomplete_reason, r.last_error_code, r.prompt_tokens, r.completion_tokens, total,
             r.max_prompt_tokens, r.max_completion_tokens,
             None if r.metadata is None else orjson.dumps(r.metadata).decode(), r.key_fingerprint,
             r.created_at, r.ended_at, r.created_at])


def insert_steps(conn: duckdb.DuckDBPyConnection, steps: Iterable[StepSpec]) -> None:
    for s in steps:
        if s.tool_calls:
            details: dict[str, Any] = {"type": "tool_calls", "tool_calls": [
                {"id": f"call_{i}", "type": t, t: {}} for i, t in enumerate(s.tool_calls)]}
        else:
            details = {"type": "message_creation", "message_creation": {"message_id": "msg_1"}}
        conn.execute(
            """INSERT INTO run_steps (id, run_id, thread_id, type, status, created_at, completed_at,
                   last_error_code, step_details, first_seen_at, last_seen_at)
               VALUES (?, ?, ?, ?, ?, CAST(? AS TIMESTAMPTZ), CAST(? AS TIMESTAMPTZ), ?, CAST(? AS JSON),
                   CAST(? AS TIMESTAMPTZ), CAST(? AS TIMESTAMPTZ))""",
            [s.id, s.run_id, s.thread_id, details["type"], s.status, s.created_at, s.completed_at,
             s.last_error_code, orjson.dumps(details).decode(), s.created_at, s.completed_at or s.created_at])


def insert_events(conn: duckdb.DuckDBPyConnection,
                  events: Iterable[tuple[str, str, str | None, str]]) -> None:
    """(run_id, observed_at, from_status, to_status) rows."""
    for run_id, at, before, after in events:
        conn.execute("INSERT INTO run_events (run_id, observed_at, from_status, to_status, source, "
                     "operation) VALUES (?, CAST(? AS TIMESTAMPTZ), ?, ?, 'response', 'runs.retrieve')",
                     [run_id, at, before, after])


GENERATED_MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4o-2024-08-06", "o3-mini", "acme-ft-model")
# step i gets kind i % 5
_STEP_DETAILS = (
    {"type": "message_creation"},
    {"type": "tool_calls", "tool_calls": [{"type": "function"}]},
    {"type": "tool_calls", "tool_calls": [{"type": "code_interpreter"}]},
    {"type": "tool_calls", "tool_calls": [{"type": "file_search"}, {"type": "file_search"}]},
    {"type": "tool_calls", "tool_calls": [{"type": "function"}, {"type": "function"}]},
)


def generate(conn: duckdb.DuckDBPyConnection, runs: int, *, days: int = 30, start: str = "2025-05-01",
             steps: bool = True, events: bool = True) -> None:
    """`runs` deterministic runs over `days` days, each with one step and four status events, written
    with one INSERT ... SELECT per table (1M runs take seconds, not hours). One model in six
    (acme-ft-model) has no price, so every report has something to say about unpriced runs."""
    models = "[" + ", ".join(f"'{m}'" for m in GENERATED_MODELS) + "]"
    details = "[" + ", ".join(f"'{orjson.dumps(d).decode()}'" for d in _STEP_DETAILS) + "]"
    # run i is created at an even spread over the period
    spread = f"TIMESTAMPTZ '{start} 00:00:00+00' + to_seconds((i * 86400 * {days}) // {max(runs, 1)})"
    conn.execute(f"""
        INSERT INTO runs ({_RUN_COLUMNS})
        SELECT id, thread_id, assistant_id, model, status, created_at, started_at, ended_at,
               CASE WHEN status = 'completed' THEN ended_at END,
               CASE WHEN status = 'failed' THEN ended_at END, incomplete_reason,
               CASE WHEN status = 'failed' THEN 'server_error' END, p, c, p + c, max_p, max_c,
               CAST('{{"tenant": "t' || (i % 7) || '", "feature": "f' || (i % 3) || '"}}' AS JSON),
               'key' || (i % 4), 'v2', created_at, ended_at
        FROM (
            SELECT i, 'run_' || i AS id, 'thread_' || (i // 3) AS thread_id,
                   'asst_' || (i % 50) AS assistant_id, {models}[1 + i % {len(GENERATED_MODELS)}] AS model,
                   CASE WHEN i % 20 = 0 THEN 'failed' WHEN i % 25 = 0 THEN 'incomplete'
                        WHEN i % 50 = 1 THEN 'cancelled' ELSE 'completed' END AS status,
                   CASE WHEN i % 25 = 0 AND i % 20 <> 0 THEN 'max_completion_tokens' END AS incomplete_reason,
                   {spread} AS created_at,
                   created_at + to_milliseconds(200 + i % 1800) AS started_at,
                   started_at + to_milliseconds(1000 + (i * 37) % 20000) AS ended_at,
                   -- usage differs by model and grows over the period, so charts have a shape
                   CAST((100 + (i * 7919) % 4000) * [1.0, 3.0, 0.5, 1.5, 0.8, 1.0][1 + i % 6]
                        * (0.5 + i / {max(runs, 1)}) AS BIGINT) AS p,
                   CAST((10 + (i * 104729) % 900) * (0.5 + i / {max(runs, 1)}) AS BIGINT) AS c,
                   CASE WHEN i % 3 = 0 THEN 4000 END AS max_p, CASE WHEN i % 4 = 0 THEN 1000 END AS max_c
            FROM range({runs}) t(i)
        )""")  # noqa: S608 - synthetic data: constants and integers only
    if steps:
        conn.execute(f"""
            INSERT INTO run_steps (id, run_id, thread_id, assistant_id, type, status, created_at,
                completed_at, step_details, first_seen_at, last_seen_at)
            SELECT 'step_' || i, 'run_' || i, 'thread_' || (i // 3), 'asst_' || (i % 50),
                   CASE WHEN i % 5 = 0 THEN 'message_creation' ELSE 'tool_calls' END,
                   CASE WHEN i % 40 = 0 THEN 'failed' ELSE 'completed' END,
                   t0, t0 + to_milliseconds(300 + i % 5000), CAST({details}[1 + i % 5] AS JSON), t0, t0
            FROM (SELECT i, {spread} + INTERVAL 1 SECOND AS t0 FROM range({runs}) t(i))""")  # noqa: S608 - synthetic data: constants and integers only
    if events:
        conn.execute(f"""
            INSERT INTO run_events (run_id, observed_at, from_status, to_status, source, operation)
            SELECT 'run_' || i, t0 + to_milliseconds(k * (500 + i % 3000)),
                   [NULL, 'queued', 'requires_action', 'in_progress'][k + 1],
                   ['queued', 'requires_action', 'in_progress', 'completed'][k + 1], 'stream', 'runs.create'
            FROM (SELECT i, {spread} AS t0 FROM range({runs}) t(i)) CROSS JOIN range(4) k(k)""")  # noqa: S608 - synthetic data: constants and integers only
