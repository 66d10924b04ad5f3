"""The Responses half of `runtap demo`'s summary: what the SDK saw, and what runtap captured."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

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


def captured(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Responses by status and tokens by model, from the `responses` table when this build captures
    responses; otherwise one line saying so (the capture side lands separately: issue 14)."""
    has_table = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'responses'").fetchone()
    if not has_table or not has_table[0]:
        return ["responses: not captured by this build yet (TODO issue 14: the responses table)"]
    lines = ["responses by status:"]
    for status, n in con.execute(
            "SELECT status, count(*) FROM responses GROUP BY 1 ORDER BY 2 DESC, 1").fetchall():
        lines.append(f"  {status:<16} {n:>6}")
    lines.append("response tokens by model:")
    lines.append(f"  {'model':<16} {'responses':>9} {'input':>8} {'cached':>8} {'output':>8} {'reasoning':>9}")
    for model, n, i, c, o, r in con.execute(
            "SELECT model, count(*), coalesce(sum(input_tokens), 0), coalesce(sum(cached_input_tokens), 0), "
            "coalesce(sum(output_tokens), 0), coalesce(sum(reasoning_tokens), 0) "
            "FROM responses GROUP BY 1 ORDER BY 1").fetchall():
        lines.append(f"  {model:<16} {n:>9} {i:>8} {c:>8} {o:>8} {r:>9}")
    return lines
