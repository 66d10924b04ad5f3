"""`runtap purge` for responses: the prompt and output content --store-prompts kept, cleared after the fact
by the same rule capture applies without the option (`strip_prompts`), so a purged row looks as if it had
been captured without --store-prompts."""

from __future__ import annotations

import json
from typing import Any, Final

import duckdb

from ..ingest.response_capture import strip_prompts

_OLD: Final = "coalesce(created_at, first_seen_at) < to_timestamp(?)"
_BATCH: Final = 1000


def _strip_calls(calls: list[Any]) -> list[Any]:
    # tool_calls keeps arguments only with --store-prompts (response_merge): the rest is who and what
    return [{k: v for k, v in c.items() if k != "arguments"} if type(c) is dict else c for c in calls]


def _cleared(raw: str | None, calls: str | None) -> tuple[str | None, str | None] | None:
    """The row's raw and tool_calls with content removed, or None when there was none to remove."""
    obj = json.loads(raw) if raw is not None else None
    kept = strip_prompts(obj) if type(obj) is dict else obj
    listed = json.loads(calls) if calls is not None else None
    kept_calls = _strip_calls(listed) if type(listed) is list else listed
    if kept == obj and kept_calls == listed:
        return None
    return (json.dumps(kept) if kept != obj else raw), (json.dumps(kept_calls) if kept_calls != listed else calls)


def purge_responses(con: duckdb.DuckDBPyConnection, cutoff: float, *, rows: bool) -> tuple[int, dict[str, int]]:
    """Clear content of responses created before `cutoff` (or, with rows, delete them and their events).
    Runs inside the caller's transaction. Returns (responses cleared, table -> rows deleted)."""
    deleted: dict[str, int] = {}
    if rows:
        old = f"SELECT id FROM responses WHERE {_OLD}"  # noqa: S608 - constant SQL; the cutoff is bound
        for table, where in (("response_events", f"response_id IN ({old})"), ("responses", _OLD)):
            sql = f"DELETE FROM {table} WHERE {where} RETURNING 1"  # noqa: S608 - constant names; cutoff bound
            deleted[table] = len(con.execute(sql, [cutoff]).fetchall())
        return 0, deleted
    found = con.execute(f"SELECT id, raw, tool_calls, instructions IS NOT NULL OR input IS NOT NULL "  # noqa: S608 - constant SQL; the cutoff is bound
                        f"FROM responses WHERE {_OLD}", [cutoff]).fetchall()
    changed: list[tuple[str | None, str | None, str]] = []
    for rid, raw, calls, has_prompt in found:
        cleared = _cleared(raw, calls)
        if cleared is not None or has_prompt:
            changed.append((*(cleared or (raw, calls)), rid))
    for i in range(0, len(changed), _BATCH):
        con.executemany("UPDATE responses SET instructions = NULL, input = NULL, raw = ?, tool_calls = ? "
                        "WHERE id = ?", changed[i:i + _BATCH])
    return len(changed), deleted

