"""`runtap purge --before WHEN`: delete stored prompt content (and with --rows, whole rows) older than WHEN."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import duckdb

from ...settings.config import add_arguments, spool_path_for
from ..ingest.spool import Spool
from ..ingest.store import Store, StoreError
from ..reports import ReportError, parse_when
from .common import db_path, err, spool_path
from .purge_responses import purge_responses

HELP = "delete stored prompt content (and optionally whole rows) captured before a date"

DESCRIPTION = """\
With --store-prompts, runtap keeps run instructions, additional_instructions and additional_messages
in the `runs` table (columns of the same names, and `instructions` inside `raw`), and a response's
instructions, input, output text, tool arguments and template variables in the `responses` table
(`instructions`, `input`, `tool_calls`, `raw`). This clears them for runs and responses created before
WHEN; with --rows it deletes those runs (with their steps and status events), those responses (with
their status events), and the `requests` rows that started before WHEN.

The database file is then rewritten (a fresh copy replaces it), because DuckDB leaves deleted values in
free blocks of the old file. A spool left by a run that could not write to the database is replayed
into it first, so purged content cannot come back at the next start. Exported Parquet lakes are not
touched. The database must not be held by a running `runtap serve`: stop it, purge, start it again.
"""

# Prompt content columns of `runs` (analytics/schema.sql) and the key of `raw` that holds the same text.
PROMPT_COLUMNS: Final = ("instructions", "additional_instructions", "additional_messages")
_LOCK_RE: Final = re.compile(r"Could not set lock on file|Conflicting lock is held", re.IGNORECASE)
_OLD: Final = "coalesce(created_at, first_seen_at) < to_timestamp(?)"


@dataclass(frozen=True, slots=True)
class PurgeResult:
    prompts_cleared: int  # runs whose prompt content was cleared
    responses_cleared: int  # responses whose prompt or output content was cleared
    deleted: dict[str, int]  # table -> rows deleted (only with rows=True)
    replayed: int  # spooled items replayed before purging
    size_before: int
    size_after: int


def add_parser(sub: Any) -> None:
    p = sub.add_parser("purge", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n"
                              "  runtap purge --before 30d            # prompt content older than 30 days\n"
                              "  runtap purge --before 2024-06-01 --rows --db /data/runtap.duckdb")
    p.add_argument("--before", metavar="WHEN", required=True,
                   help="a date (2024-06-01), a date-time (2024-06-01T12:00:00Z) or an age (30d, 12h), UTC")
    p.add_argument("--rows", action="store_true",
                   help="delete the runs (with their steps and events) and requests themselves")
    add_arguments(p, ["db"])
    add_arguments(p, ["spool"])
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    db = db_path(args)
    spool = spool_path(args, db)
    try:
        before = parse_when(args.before)
    except ReportError as exc:
        err(f"error: --before: {exc}")
        return 2
    if not os.path.exists(db):
        err(f"error: no capture database at {db}")
        return 1
    try:
        result = purge(db, before, rows=args.rows, spool_path=spool)
    except StoreError as exc:
        if _LOCK_RE.search(str(exc)):
            err(f"error: {db} is held by a running `runtap serve`; stop it, purge, then start it again")
        else:
            err(f"error: {exc}")
        return 1
    except (duckdb.Error, OSError) as exc:
        err(f"error: {exc}")
        return 1
    when = before.isoformat(timespec="seconds")
    print(f"replayed {result.replayed} spooled item(s); cleared prompt content of "
          f"{result.prompts_cleared} run(s) and {result.responses_cleared} response(s) created before {when}")
    if args.rows:
        print("deleted " + ", ".join(f"{n} {t}" for t, n in result.deleted.items()))
    print(f"rewrote {db}: {result.size_before} -> {result.size_after} bytes")
    return 0


def purge(db: str, before: datetime, *, rows: bool = False, spool_path: str | None = None) -> PurgeResult:
    """Clear prompt content (or delete rows) older than `before`, then rewrite the file."""
    size_before = os.path.getsize(db)
    cutoff = before.timestamp()
    store = Store(db)  # takes DuckDB's write lock: fails while `runtap serve` holds the file
    try:
        replayed = 0
        spool_file = spool_path_for(db, spool_path or "")
        if os.path.exists(spool_file) and os.path.getsize(spool_file):
            replayed = Spool(spool_file, max_bytes=1 << 62).replay(store)
        con = store.connection
        con.execute("BEGIN")
        try:
            cleared, deleted = _purge(con, cutoff, rows)
            responses_cleared, responses_deleted = purge_responses(con, cutoff, rows=rows)
            deleted.update(responses_deleted)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        store.close()
    _rewrite(db)
    return PurgeResult(cleared, responses_cleared, deleted, replayed, size_before, os.path.getsize(db))


def _purge(con: duckdb.DuckDBPyConnection, cutoff: float, rows: bool) -> tuple[int, dict[str, int]]:
    deleted: dict[str, int] = {}
    if rows:
        old_runs = f"SELECT id FROM runs WHERE {_OLD}"  # noqa: S608 - table and column names are constants; the cutoff is bound
        for table, where in (("run_steps", f"run_id IN ({old_runs})"), ("run_events", f"run_id IN ({old_runs})"),
                             ("runs", _OLD), ("requests", "started_at < to_timestamp(?)")):
            deleted[table] = _count(con, f"DELETE FROM {table} WHERE {where} RETURNING 1", cutoff)  # noqa: S608 - table and column names are constants; the cutoff is bound
    has_prompt = " OR ".join(f"{c} IS NOT NULL" for c in PROMPT_COLUMNS) + \
        " OR json_exists(raw, '$.instructions')"
    cleared = _count(con, f"UPDATE runs SET {', '.join(f'{c} = NULL' for c in PROMPT_COLUMNS)}, "  # noqa: S608 - table and column names are constants; the cutoff is bound
                          "raw = json_merge_patch(raw, '{\"instructions\": null}') "
                          f"WHERE {_OLD} AND ({has_prompt}) RETURNING 1", cutoff)
    return cleared, deleted


def _count(con: duckdb.DuckDBPyConnection, sql: str, cutoff: float) -> int:
    return len(con.execute(sql, [cutoff]).fetchall())


def _rewrite(db: str) -> None:
    """Copy every table into a fresh file and swap it in: the old file keeps deleted values in its free
    blocks until they happen to be reused."""
    fresh = db + ".purge-tmp"
    for leftover in (fresh, fresh + ".wal"):
        if os.path.exists(leftover):
            os.remove(leftover)
    con = duckdb.connect(db)
    try:
        src = con.execute("SELECT current_database()").fetchone()
        if src is None:
            raise duckdb.InternalException("current_database() returned no row")
        con.execute(f"ATTACH '{_sql_str(fresh)}' AS purged")
        con.execute(f"COPY FROM DATABASE {_ident(src[0])} TO purged")
        con.execute("DETACH purged")
    finally:
        con.close()
    with open(fresh, "rb") as f:
        os.fsync(f.fileno())
    os.replace(fresh, db)
    wal = db + ".wal"
    if os.path.exists(wal):  # the old file's log: closed cleanly above, so it holds nothing to replay
        os.remove(wal)
    fd = os.open(os.path.dirname(os.path.abspath(db)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sql_str(value: str) -> str:
    return value.replace("'", "''")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
