"""The Responses half of `runtap demo`'s summary: what the SDK saw, and what runtap captured."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Final

import duckdb

if TYPE_CHECKING:  # the workload needs the openai SDK; this summary does not
    from ...demo.responses_workload import ResponsesResult


def sdk_view(res: ResponsesResult) -> str:
    statuses = Counter(res.responses.values())
    shown = ", ".join(f"{status} {n}" for status, n in sorted(statuses.items(), key=lambda kv: (-kv[1], kv[0])))
    sums = [sum(u[i] for u in res.usage.values()) for i in range(4)]
    return (f"responses done: {len(res.responses)} responses ({shown}),\n"
            f"  {res.calls} API calls; tokens the SDK saw: input {sums[0]}, cached {sums[1]}, "
            f"output {sums[2]}, reasoning {sums[3]}")


# This demo's responses: those runtap first saw after it started, as for runs (proxy/commands/demo.py).
_BY_STATUS: Final = """WITH mine AS (SELECT * FROM responses WHERE first_seen_at >= $since)
SELECT status, count(*) FROM mine GROUP BY 1 ORDER BY 2 DESC, 1"""
_BY_MODEL: Final = """WITH mine AS (SELECT * FROM responses WHERE first_seen_at >= $since)
SELECT model, count(*), coalesce(sum(input_tokens), 0), coalesce(sum(cached_input_tokens), 0),
       coalesce(sum(output_tokens), 0), coalesce(sum(reasoning_tokens), 0)
FROM mine GROUP BY 1 ORDER BY 1"""
_COUNTS: Final = """SELECT count(*) FILTER (WHERE first_seen_at < $since),
       (SELECT count(*) FROM response_events WHERE response_id IN (
            SELECT id FROM responses WHERE first_seen_at >= $since))
FROM responses"""


def captured(con: duckdb.DuckDBPyConnection, since: datetime) -> list[str]:
    """This demo's responses by status and tokens by model, from the `responses` table; responses that
    earlier demos left in the file are counted apart."""
    at = {"since": since}
    earlier, events = con.execute(_COUNTS, at).fetchone() or (0, 0)
    scope = "this demo" if not earlier else f"this demo; {earlier} earlier responses in the file not counted"
    lines = [f"responses by status ({scope}):"]
    for status, n in con.execute(_BY_STATUS, at).fetchall():
        lines.append(f"  {status:<16} {n:>6}")
    lines.append("response tokens by model:")
    lines.append(f"  {'model':<16} {'responses':>9} {'input':>8} {'cached':>8} {'output':>8} {'reasoning':>9}")
    for model, n, i, c, o, r in con.execute(_BY_MODEL, at).fetchall():
        lines.append(f"  {model:<16} {n:>9} {i:>8} {c:>8} {o:>8} {r:>9}")
    lines.append(f"also captured: {events} response status transitions")
    return lines
