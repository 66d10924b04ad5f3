"""`runtap demo`: the whole product on one machine with no internet.

Starts the built-in simulated upstream, runtap in front of it, drives a realistic workload through
runtap with the real `openai` SDK, and prints what was captured.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import logging
import signal
import sys
from typing import Any

import duckdb

from analytics.formats import render
from analytics.prices import load_price_book
from analytics.reports import make_params, prepare, run_report
from proxy.commands import demo_responses
from proxy.config import HostPort, add_arguments, resolve
from proxy.serve import Running, start
from proxy.sim import SimConfig, start_sim
from proxy.workload import run_workload

HELP = "offline demo: simulated upstream + runtap + an SDK workload, then a summary"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help=HELP, description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2, help="workload rounds (11 runs each) [default 2]")
    p.add_argument("--once", action="store_true",
                   help="exit after the summary instead of serving until Ctrl-C")
    add_arguments(p, ["listen", "admin", "db", "store_prompts", "log_level"])
    p.set_defaults(run=run)


def _say(msg: str) -> None:
    print(f"runtap demo: {msg}", flush=True)


def summary(db: str) -> str:
    con = duckdb.connect(db)
    try:
        lines = ["runs by status:"]
        for status, n in con.execute(
                "SELECT status, count(*) FROM runs GROUP BY 1 ORDER BY 2 DESC, 1").fetchall():
            lines.append(f"  {status:<16} {n:>6}")
        lines.append("tokens by model:")
        lines.append(f"  {'model':<16} {'runs':>6} {'prompt':>10} {'completion':>11}")
        for model, n, p, c in con.execute(
                "SELECT model, count(*), coalesce(sum(prompt_tokens),0), coalesce(sum(completion_tokens),0) "
                "FROM runs GROUP BY 1 ORDER BY 1").fetchall():
            lines.append(f"  {model:<16} {n:>6} {p:>10} {c:>11}")
        (steps,) = con.execute("SELECT count(*) FROM run_steps").fetchone() or (0,)
        (events,) = con.execute("SELECT count(*) FROM run_events").fetchone() or (0,)
        (reqs,) = con.execute("SELECT count(*) FROM requests").fetchone() or (0,)
        lines.append(f"also captured: {steps} run steps, {events} status transitions, {reqs} requests")
        lines.extend(demo_responses.captured(con))
        return "\n".join(lines)
    finally:
        con.close()


def cost_table(running: Running) -> str:
    """The `cost` report on a cursor of the live store: the same SQL `runtap report cost` runs."""
    assert running.runtime.writer is not None  # noqa: S101 - invariant for the type checker, not an input check
    conn = running.runtime.writer.cursor()
    try:
        prepare(conn, load_price_book(running.runtime.settings.prices or None))
        return render(run_report(conn, "cost", make_params()), "table")
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
    # The SDK logs every HTTP call at INFO; the demo's own progress lines say what matters.
    for noisy in ("httpx", "httpx2", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Like the sidecar's runtime, `runtap demo`'s CLI does not need the openai SDK until the demo runs.
    from proxy.responses_workload import run_responses_workload

    sim_runner, sim_url = await start_sim(SimConfig())
    upstream = sim_url.removesuffix("/v1")
    settings = resolve({**vars(args), "upstream": upstream})
    _say(f"simulated OpenAI upstream on {sim_url} (no internet needed)")
    running = await _start_with_fallback(settings)
    try:
        _say(f"runtap proxy on {running.proxy_url} -> {upstream}; capturing into {settings.db}")
        res = await run_workload(running.proxy_url + "/v1", rounds=args.rounds, progress=_say)
        assert running.runtime.writer is not None  # noqa: S101 - invariant for the type checker, not an input check
        running.runtime.writer.flush(timeout=30)
        _say(f"workload done: {len(res.runs)} runs, {res.calls} API calls, "
             f"{sum(res.errors.values())} expected API errors (404, 429) passed through")
        responses = await run_responses_workload(running.proxy_url + "/v1", rounds=args.rounds, progress=_say)
        running.runtime.writer.flush(timeout=30)
        _say(demo_responses.sdk_view(responses))
        print(summary(settings.db), flush=True)
        print("cost (runtap report cost; built-in price book):", flush=True)
        print(cost_table(running), flush=True)
        print(f"""
DuckDB file : {settings.db}   (tables runs, run_steps, run_events, requests)
admin       : {running.admin_url}/metrics  {running.admin_url}/healthz  {running.admin_url}/readyz
proxy       : {running.proxy_url}/v1  (OpenAI(base_url=...) points here)
reports     : runtap report cost --url {running.admin_url}   (while this runs; --db {settings.db} after)
by tenant   : runtap report cost --by metadata.tenant --db {settings.db}   (the demo tags runs with a tenant)
html        : runtap report --html runtap-report.html --db {settings.db}   (after this process exits)""",
              flush=True)
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


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_demo(args))
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 0
