"""`runtap demo --once`, the README's first command, as a user runs it: a subprocess on a machine with
no upstream, whose summary must agree with the DuckDB file it leaves behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from runtap.proxy.commands.demo_db import prepare_db

from tests.fault_helpers import query

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(180)
def test_demo_runs_the_whole_product_offline_and_its_summary_matches_the_db(tmp_path: Path) -> None:
    db = tmp_path / "demo.duckdb"
    done = subprocess.run(
        [sys.executable, "-m", "runtap.proxy", "demo", "--once", "--rounds", "1", "--db", str(db),
         "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--log-level", "warning"],
        cwd=REPO, capture_output=True, text=True, timeout=150, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout

    # Runs by status, as printed, are the runs in the file, and every lifecycle end the demo promises
    # is there.
    block = out[out.index("runs by status (this demo):"):out.index("tokens by model:")]
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
    assert f"DuckDB file  {db}" in out
    # --once: no live addresses, only what works after the demo has exited
    assert "/metrics" not in out and f"runtap report cost --by metadata.tenant --db {db}" in out
    # fits a 100-column terminal (stdout is a pipe here, as when nothing says how wide the terminal is)
    # (measured with the default file's name: this test's temp path alone is 80 characters)
    shown = out.replace(str(db), "./runtap-demo.duckdb")
    assert [line for line in shown.splitlines() if len(line) > 100] == []
    # Runs are tagged with a tenant, so the README's `--by metadata.tenant` example has something to group.
    tenants = query(db, "SELECT DISTINCT metadata->>'tenant' FROM runs WHERE metadata->>'tenant' IS NOT NULL")
    assert len(tenants) >= 2

    # The Responses API is driven too, through every ending; what runtap captured of it is summarised
    # from the responses table where this build has one.
    line = re.search(r"responses done: (\d+) responses \(([^)]*)\)", out)
    assert line is not None, out[-3000:]
    sdk_statuses = {s: int(n) for s, n in (part.rsplit(" ", 1) for part in line[2].split(", "))}
    assert {"completed", "cancelled", "failed", "incomplete"} <= set(sdk_statuses)
    assert sum(sdk_statuses.values()) == int(line[1])
    block = out[out.index("responses by status (this demo):"):out.index("response tokens by model:")]
    printed = {m[1]: int(m[2]) for m in re.finditer(r"^\s+(\w+)\s+(\d+)$", block, re.M)}
    assert printed == dict(query(db, "SELECT status, count(*) FROM responses GROUP BY status"))
    assert printed == sdk_statuses  # every response the SDK saw, captured once, with its final status
    seen = re.search(r"tokens the SDK saw: input (\d+), cached (\d+), output (\d+), reasoning (\d+)", out)
    assert seen is not None
    assert tuple(int(n) for n in seen.groups()) == query(
        db, "SELECT sum(input_tokens), sum(cached_input_tokens), sum(output_tokens), sum(reasoning_tokens) "
            "FROM responses")[0]
    (transitions,) = query(db, "SELECT count(*) FROM response_events")[0]
    assert transitions > 0 and f"also captured: {transitions} response status transitions" in out
    # The closing lines name every table the user can query, both APIs' (and those tables exist).
    tables_line = next(line for line in out.splitlines() if line.strip().startswith("tables "))
    named = set(re.findall(r"\b(runs|run_steps|run_events|responses|response_events|requests)\b", tables_line))
    assert named == {"runs", "run_steps", "run_events", "responses", "response_events", "requests"}
    assert named <= {t for (t,) in query(db, "SELECT table_name FROM information_schema.tables")}

def _demo(cwd: Path, env: dict[str, str], *extra: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "runtap.proxy", "demo", "--once", "--rounds", "1", "--listen", "127.0.0.1:0",
         "--admin", "127.0.0.1:0", "--log-level", "warning", *extra],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=150, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.timeout(300)
def test_demo_keeps_to_its_own_file_and_counts_earlier_demos_apart(tmp_path: Path) -> None:
    """A shell set up for `runtap serve` (RUNTAP_DB, RUNTAP_EXPORT_DIR) runs the demo: nothing reaches
    those paths. A second demo in the same directory reports its own runs and says how many are older."""
    prod, lake = tmp_path / "prod.duckdb", tmp_path / "lake"
    env = {**os.environ, "RUNTAP_DB": str(prod), "RUNTAP_EXPORT_DIR": str(lake), "RUNTAP_EXPORT_INTERVAL": "1",
           "PYTHONPATH": str(REPO)}
    work = tmp_path / "work"
    work.mkdir()
    first = _demo(work, env)
    ignoring = next(line for line in first.splitlines() if "ignoring" in line)
    assert all(name in ignoring for name in ("RUNTAP_DB", "RUNTAP_EXPORT_DIR", "RUNTAP_EXPORT_INTERVAL"))
    assert not prod.exists() and not lake.exists()
    demo_db = work / "runtap-demo.duckdb"
    (n_first,) = query(demo_db, "SELECT count(*) FROM runs")[0]
    (r_first,) = query(demo_db, "SELECT count(*) FROM responses")[0]
    assert n_first > 0 and r_first > 0 and "earlier" not in first

    second = _demo(work, env)
    assert f"({n_first} runs from earlier demos already in it)" in second
    block = second[second.index("runs by status"):second.index("tokens by model:")]
    assert f"{n_first} earlier runs in the file not counted" in block
    printed = sum(int(m[1]) for m in re.finditer(r"^\s+\w+\s+(\d+)$", block, re.M))
    (n_all,) = query(demo_db, "SELECT count(*) FROM runs")[0]
    assert printed == n_all - n_first == n_first  # one round each time
    assert f"the file holds {n_all} runs: {printed} from this demo, {n_first} from earlier ones" in second
    assert re.search(r"^TOTAL\s+" + str(printed) + r"\s", second, re.M)  # cost covers this demo only
    # Responses likewise: the second demo's own, with those of the first counted apart.
    responses = second[second.index("responses by status"):second.index("response tokens by model:")]
    shown = re.search(r"responses done: (\d+) responses", second)
    assert shown is not None and f"this demo; {r_first} earlier responses in the file not counted" in responses
    assert sum(int(m[1]) for m in re.finditer(r"^\s+\w+\s+(\d+)$", responses, re.M)) == int(shown[1])
    assert not prod.exists() and not lake.exists()


def test_fresh_removes_the_demo_file_and_what_lies_beside_it(tmp_path: Path) -> None:
    db = str(tmp_path / "d.duckdb")
    for name in (db, db + ".wal", db + ".spool.jsonl", db + ".spool.rejected.jsonl"):
        Path(name).write_text("x")
    keep = tmp_path / "other.duckdb"
    keep.write_text("x")
    got = prepare_db(db, fresh=True)
    assert got.earlier_runs == 0 and len(got.removed) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.duckdb"]
    assert prepare_db(None, fresh=False).path == "./runtap-demo.duckdb"
