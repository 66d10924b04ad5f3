"""`runtap demo`: the whole product on one machine with no internet.

Starts the built-in simulated upstream, runtap in front of it, drives a realistic workload through
runtap with the real `openai` SDK, and prints what was captured.

The demo never touches a real capture: it writes ./runtap-demo.duckdb (or the --db given on its own
command line) and reads no RUNTAP_* variable, so a shell set up for `runtap serve` (RUNTAP_DB,
RUNTAP_SPOOL, RUNTAP_EXPORT_DIR, ...) cannot send demo runs into production files or a lake.
Runs left by earlier demos in that file are counted apart from this one's; --fresh starts it empty.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import importlib.util
import logging
import os
import signal
import sys
from datetime import UTC, datetime
from typing import Any, Final

import duckdb

from ...analytics.formats import render, terminal_width
from ...analytics.prices import load_price_book
from ...analytics.reports import make_params, prepare, run_report
from ...settings.config import SETTINGS, HostPort, add_arguments, resolve
from ..serve import Running, start
from . import demo_responses
from .demo_db import DemoDb, prepare_db

HELP = "offline demo: simulated upstream + runtap + an SDK workload, then a summary"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help=HELP, description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2, help="workload rounds (11 runs each) [default 2]")
    p.add_argument("--once", action="store_true",
                   help="exit after the summary instead of serving until Ctrl-C")
    p.add_argument("--db", metavar="FILE", default=None,
                   help="DuckDB file for the demo's runs [default ./runtap-demo.duckdb; RUNTAP_DB is ignored]")
    p.add_argument("--fresh", action="store_true",
                   help="start with an empty file (removes FILE, its WAL and its spool first)")
    add_arguments(p, ["listen", "admin", "store_prompts", "log_level"])
    p.set_defaults(run=run)


def _say(msg: str) -> None:
    print(f"runtap demo: {msg}", flush=True)


# This demo's rows: runs runtap first saw after it started (earlier demos' runs stay in the file).
_BY_STATUS: Final = """WITH mine AS (SELECT * FROM runs WHERE first_seen_at >= $since)
SELECT status, count(*) FROM mine GROUP BY 1 ORDER BY 2 DESC, 1"""
_BY_MODEL: Final = """WITH mine AS (SELECT * FROM runs WHERE first_seen_at >= $since)
SELECT model, count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0)
FROM mine GROUP BY 1 ORDER BY 1"""
_COUNTS: Final = """WITH mine AS (SELECT id FROM runs WHERE first_seen_at >= $since)
SELECT (SELECT count(*) FROM mine),
       (SELECT count(*) FROM run_steps WHERE run_id IN (SELECT id FROM mine)),
       (SELECT count(*) FROM run_events WHERE run_id IN (SELECT id FROM mine)),
       (SELECT count(*) FROM requests WHERE started_at >= $since)"""


def summary(db: str, since: datetime, earlier: int) -> str:
    con = duckdb.connect(db)
    try:
        at = {"since": since}
        mine, steps, events, reqs = con.execute(_COUNTS, at).fetchone() or (0, 0, 0, 0)
        scope = "this demo" if not earlier else f"this demo; {earlier} earlier runs in the file not counted"
        lines = [f"runs by status ({scope}):"]
        lines += [f"  {status:<16} {n:>6}" for status, n in con.execute(_BY_STATUS, at).fetchall()]
        lines.append("tokens by model:")
        lines.append(f"  {'model':<16} {'runs':>6} {'prompt':>10} {'completion':>11}")
        lines += [f"  {m:<16} {n:>6} {p:>10} {c:>11}" for m, n, p, c in con.execute(_BY_MODEL, at).fetchall()]
        lines.append(f"also captured: {steps} run steps, {events} run status transitions, {reqs} requests")
        if earlier:
            lines.append(f"the file holds {mine + earlier} runs: {mine} from this demo, {earlier} from earlier "
                         "ones (--fresh starts empty)")
        lines.extend(demo_responses.captured(con, since))
        return "\n".join(lines)
    finally:
        con.close()


def cost_table(running: Running, since: datetime) -> str:
    """The `cost` report on a cursor of the live store: the same SQL `runtap report cost` runs, over the
    runs created since this demo started (the API's created_at is whole seconds)."""
    assert running.runtime.writer is not None  # noqa: S101 - invariant for the type checker, not an input check
    conn = running.runtime.writer.reader()
    try:
        prepare(conn, load_price_book(running.runtime.settings.prices or None))
        params = make_params(since=since.replace(microsecond=0).isoformat())
        return render(run_report(conn, "cost", params), "table", width=min(terminal_width(), 100))
    finally:
        conn.close()


async def _start_with_fallback(settings: Any) -> Running:
    try:
        return await start(settings)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        _say(f"{settings.listen} or {settings.admin} is busy; using free ports instead")
        free = dataclasses.replace(settings, listen=HostPort(settings.listen.host, 0),
                                   admin=HostPort(settings.admin.host, 0))
        return await start(free)


async def _demo(args: argparse.Namespace) -> int:
    # The simulator and workload are the runtap[demo] extra, not the sidecar's runtime: imported here only.
    from ...demo.sim import SimConfig, start_sim
    from ...demo.workload import run_workload

    # The SDK logs every HTTP call at INFO; the demo's own progress lines say what matters.
    for noisy in ("httpx", "httpx2", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    ignored = sorted(s.env for s in SETTINGS if s.env in os.environ)
    if ignored:
        _say(f"ignoring {', '.join(ignored)}: the demo never touches a real capture (--db FILE picks its file)")
    demo: DemoDb = prepare_db(args.db, fresh=args.fresh)
    if demo.removed:
        _say(f"--fresh: removed {', '.join(demo.removed)}")
    # Like the sidecar's runtime, `runtap demo`'s CLI does not need the openai SDK until the demo runs.
    from ...demo.responses_workload import run_responses_workload

    sim_runner, sim_url = await start_sim(SimConfig())
    upstream = sim_url.removesuffix("/v1")
    settings = resolve({**vars(args), "upstream": upstream, "db": demo.path}, environ={})
    _say(f"simulated OpenAI upstream on {sim_url} (no internet needed)")
    running = await _start_with_fallback(settings)
    try:
        earlier = f" ({demo.earlier_runs} runs from earlier demos already in it)" if demo.earlier_runs else ""
        _say(f"runtap proxy on {running.proxy_url} -> {upstream}")
        _say(f"capturing into {settings.db}{earlier}")
        since = datetime.now(UTC)
        res = await run_workload(running.proxy_url + "/v1", rounds=args.rounds, progress=_say)
        assert running.runtime.writer is not None  # noqa: S101 - invariant for the type checker, not an input check
        running.runtime.writer.flush(timeout=30)
        _say(f"workload done: {len(res.runs)} runs, {res.calls} API calls, "
             f"{sum(res.errors.values())} expected API errors (404, 429) passed through")
        responses = await run_responses_workload(running.proxy_url + "/v1", rounds=args.rounds, progress=_say)
        running.runtime.writer.flush(timeout=30)
        _say(demo_responses.sdk_view(responses))
        print(summary(settings.db, since, demo.earlier_runs), flush=True)
        print("cost of this demo's runs and responses (runtap report cost; built-in price book):", flush=True)
        print(cost_table(running, since), flush=True)
        print(where_to_look(running, settings.db, once=args.once), flush=True)
        if not args.once:
            _say("serving until Ctrl-C (the proxy, admin endpoints and simulated upstream stay up)")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
    finally:
        await running.stop()
        await sim_runner.cleanup()
    return 0


def where_to_look(running: Running, db: str, *, once: bool) -> str:
    admin = running.admin_url
    live = "" if once else f"""
admin        {admin}/metrics  /healthz  /readyz
proxy        {running.proxy_url}/v1  (point OpenAI(base_url=...) here)
while this runs:
  runtap report cost --url {admin}
after Ctrl-C:"""
    return f"""
DuckDB file  {db}
  tables runs, run_steps, run_events (Assistants); responses, response_events (Responses); requests{live}
  runtap report cost --by metadata.tenant --db {db}   (both APIs carry a tenant)
  runtap report --html runtap-report.html --db {db}"""


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("openai") is None:
        print("runtap demo: the demo drives its workload with the openai SDK, which the sidecar itself does "
              "not need; install it with: pip install 'runtap[demo]'", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_demo(args))
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 0
