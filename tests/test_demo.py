"""`runtap demo --once`, the README's first command, as a user runs it: a subprocess on a machine with
no upstream, whose summary must agree with the DuckDB file it leaves behind."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fault_helpers import query

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(180)
def test_demo_runs_the_whole_product_offline_and_its_summary_matches_the_db(tmp_path: Path) -> None:
    db = tmp_path / "demo.duckdb"
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "demo", "--once", "--rounds", "1", "--db", str(db),
         "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--log-level", "warning"],
        cwd=REPO, capture_output=True, text=True, timeout=150, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout

    # Runs by status, as printed, are the runs in the file, and every lifecycle end the demo promises
    # is there.
    block = out[out.index("runs by status:"):out.index("tokens by model:")]
    printed = {m[1]: int(m[2]) for m in re.finditer(r"^\s+(\w+)\s+(\d+)$", block, re.M)}
    stored = dict(query(db, "SELECT status, count(*) FROM runs GROUP BY status"))
    assert printed == stored
    assert {"completed", "failed", "incomplete", "cancelled"} <= set(stored)
    total = int(re.search(r"workload done: (\d+) runs", out)[1])  # type: ignore[index]
    assert sum(stored.values()) == total

    # Tokens by model, as printed, are the stored usage.
    rows = re.finditer(r"^\s+([\w.\-]+)\s+(\d+)\s+(\d+)\s+(\d+)$", out[out.index("tokens by model:"):], re.M)
    tokens = {m[1]: (int(m[2]), int(m[3]), int(m[4])) for m in rows}
    assert tokens == {model: (runs, prompt, completion) for model, runs, prompt, completion in query(
        db, "SELECT model, count(*), sum(prompt_tokens), sum(completion_tokens) FROM runs GROUP BY model")}

    # The cost table closes with a total, and the user is told where everything is.
    assert re.search(r"^TOTAL\s+" + str(total) + r"\s", out, re.M)
    assert f"DuckDB file : {db}" in out
    assert re.search(r"admin\s+: http://127\.0\.0\.1:\d+/metrics", out)
    # Runs are tagged with a tenant, so the README's `--by metadata.tenant` example has something to group.
    tenants = query(db, "SELECT DISTINCT metadata->>'tenant' FROM runs WHERE metadata->>'tenant' IS NOT NULL")
    assert len(tenants) >= 2

    # The Responses API is driven too, through every ending; what runtap captured of it is summarised
    # from the responses table where this build has one.
    line = re.search(r"responses workload done: (\d+) responses \(([^)]*)\)", out)
    assert line is not None, out[-3000:]
    sdk_statuses = {s: int(n) for s, n in (part.rsplit(" ", 1) for part in line[2].split(", "))}
    assert {"completed", "cancelled", "failed", "incomplete"} <= set(sdk_statuses)
    assert sum(sdk_statuses.values()) == int(line[1])
    tables = {t for (t,) in query(db, "SELECT table_name FROM information_schema.tables")}
    if "responses" in tables:
        block = out[out.index("responses by status:"):out.index("response tokens by model:")]
        printed = {m[1]: int(m[2]) for m in re.finditer(r"^\s+(\w+)\s+(\d+)$", block, re.M)}
        assert printed == dict(query(db, "SELECT status, count(*) FROM responses GROUP BY status"))
        assert printed == sdk_statuses  # every response the SDK saw, captured once, with its final status
        seen = re.search(r"tokens the SDK saw: input (\d+), cached (\d+), output (\d+), reasoning (\d+)", out)
        assert seen is not None
        assert tuple(int(n) for n in seen.groups()) == query(
            db, "SELECT sum(input_tokens), sum(cached_input_tokens), sum(output_tokens), sum(reasoning_tokens) "
                "FROM responses")[0]
    else:
        assert "responses: not captured by this build yet" in out
