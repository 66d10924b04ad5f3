"""The DuckDB side of capture: merge snapshot batches into `runs`/`run_steps`, log requests.

One thread owns a Store (its write thread, store_thread.py); nothing here is thread-safe and nothing needs to be.

No Python value is ever bound as a DuckDB parameter here (sql_literal.py: binding one loads
pandas, numpy and pyarrow when they are installed).

Write path, chosen by measurement (``python -m bench.ingest_store --write-paths 5000``): binding
Python values as DuckDB parameters costs from tens of microseconds to milliseconds per value in
duckdb 1.5 without pandas (every conversion first tries ``import pandas``), so executemany and
multi-row VALUES manage tens to hundreds of rows/s. Instead each table's rows are encoded once
with orjson into a private staging file and loaded with ``read_json`` inside the batch's
transaction (INSERT for new rows, UPDATE for changed ones): thousands of rows/s, DuckDB parses
in C++ and copies JSON columns as text. Columns built in Python as a pyarrow table measured no
faster (14-18 us a run row to build, 10-13 us to insert, against 4-6 and 14-21 here) and would load
pyarrow into the sidecar. What a batch costs in DuckDB is mostly per statement (~4 ms CPU to bind
and run an INSERT of one run row into the 50-column table, ~1 ms its commit), then ~15 us a run row:
at the few hundred rows a batch the capture writer sees, binding is most of it. So a batch sends its
statements in as few calls as it can (``_execute``), and the timestamp projection is the cheapest.

Reads are one query per table per batch for the ids not in a bounded LRU of committed rows, less
those a filter of the table's ids knows were never stored (known_ids.py: new runs and steps). JSON
and list columns are never read back (that would cost more than the merge itself): the merge only
needs to know that a value exists (``KEPT``), and the update keeps the stored value unless the
batch brings a new one.
"""

from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from importlib import resources
from typing import Any

import duckdb
import orjson

from .health import DbMemory, parse_size
from .known_ids import TableIds
from .merge import KEPT, Effect, Row, RunEvent, merge_run, merge_step
from .records import RequestRecord, Snapshot
from .response_merge import ResponseEvent, merge_responses
from .sql_literal import sql_string
from .staging import Staging
from .table_sql import WRITE_MODES, Table, changed_name, table_sql

SCHEMA_VERSION = 4  # 2: api_provider on runs, run_steps and requests; 3: api_version, api_provider, prompt_id and
# prompt_version on responses; 4: agent_name, agent_version on responses (schema.sql adds them to older files)
DEFAULT_CACHE_ROWS = 10_000  # a table's most recent rows: ~10k objects in flight; at 50k the caches held ~100 MB
# DuckDB checkpoints when the WAL reaches this size, and a checkpoint rewrites each table's last,
# partly filled row group (up to 122,880 rows of JSON) whole: at the default 16MB, checkpoints took
# most of the ingest time once runs numbered ~100k; 64MB measured ~1.4x faster over 1.6M snapshots,
# for ~64MB more WAL to replay after a crash.
CHECKPOINT_THRESHOLD = "64MB"
# Errors that mean DuckDB's buffer pool could not hold what a statement needed (duckdb 1.5 reports a
# commit that ran out as a TransactionException, with the buffer manager's message).
_OUT_OF_MEMORY = re.compile(r"Out of Memory|could not allocate|failed to allocate|failed to pin|failed to reserve")
# Set on a poisoned instance: its checkpoints (CHECKPOINT, the one at shutdown) stop before the header
# write, which is what would make them the file's state; the WAL keeps every commit.
_NO_CHECKPOINT = "SET debug_checkpoint_abort = 'before_header'"
_POISON_MARK = "runtap_poisoned"  # an in-memory database attached to a poisoned instance
_IDS = "(SELECT unnest(from_json({}, '[\"VARCHAR\"]')))"
_SAFE_ID = re.compile(r"[A-Za-z0-9_\-.:]{1,200}")  # may be spliced into SQL as a literal
_LOOKUP_CHUNK = 256  # DuckDB turns a longer IN list into a join, i.e. a scan
_SCAN_ROWS_PER_ID = 300  # an index lookup costs about as much as scanning 300 ids
log = logging.getLogger(__name__)


def _response_ids(snaps: list[Snapshot]) -> set[str]:
    """The responses a batch touches: its own, and those whose tool rounds its requests answer."""
    ids = {s.obj["id"] for s in snaps}
    for s in snaps:
        answers = s.extra.get("answers") if s.extra else None
        if type(answers) is list:
            ids.update(a for a in answers if type(a) is str)
    return ids


def _id_literals(ids: Sequence[str]) -> str | None:
    """``ids`` as a list of SQL string literals, or None if one of them may not be spliced into SQL."""
    if all(map(_SAFE_ID.fullmatch, ids)):
        return ", ".join(f"'{obj_id}'" for obj_id in ids)
    return None


def out_of_memory(exc: BaseException) -> bool:
    """True for DuckDB's buffer pool running out (--db-memory-limit), whatever exception type carries it."""
    return isinstance(exc, duckdb.OutOfMemoryException) or (
        isinstance(exc, duckdb.Error) and _OUT_OF_MEMORY.search(str(exc)) is not None)


class StoreError(Exception):
    """The store could not be opened, or could not take a batch (nothing of it was written).

    ``effects`` holds what the batch would have emitted when only the write failed: the caller
    may emit them now and spool the batch, whose replay then emits nothing. Empty when the merge
    did not run (the store failed loading rows): the batch is spooled for its replay to emit them.
    """

    def __init__(self, message: str, *, effects: Sequence[Effect] = ()) -> None:
        super().__init__(message)
        self.effects: list[Effect] = list(effects)


def _size_literal(value: str) -> str:
    """A DuckDB memory size such as 512MB or 1.5GiB; anything else is refused before it reaches SQL."""
    if not re.fullmatch(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", value.strip()):
        raise StoreError(f"invalid DuckDB memory limit {value!r} (expected e.g. 512MB or 2GiB)")
    return value.strip()


def _kept_as_null(value: Any) -> None:
    if value is KEPT:
        return None
    raise TypeError(f"cannot store a {type(value).__name__}")


class Store:
    """Owns one DuckDB connection; ``apply`` merges a batch in one transaction."""

    def __init__(
        self,
        path: str,
        *,
        store_prompts: bool = False,
        read_only: bool = False,
        cache_rows: int = DEFAULT_CACHE_ROWS,
        threads: int | None = 1,
        memory_limit: str | None = None,
    ) -> None:
        """``threads``: DuckDB worker threads for this database. 1 keeps capture off the cores the
        proxy needs and measured faster on 2 shared cores (bench/ingest_store.py --threads);
        None leaves DuckDB's default (one per core). ``memory_limit`` (e.g. "512MB") bounds DuckDB's
        buffer pool, which otherwise may grow to 80% of RAM beside the proxy; None keeps DuckDB's default."""
        if cache_rows < 0:
            raise ValueError(f"cache_rows must be >= 0, got {cache_rows}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self._path = path
        self._store_prompts = store_prompts
        self._read_only = read_only
        self._cache_rows = cache_rows
        # Cached rows are tuples in column order: a 39-column dict costs ~2.5x the memory of the tuple,
        # and 2 x 50,000 of them were most of the RSS growth in the soak.
        self._cache: dict[str, OrderedDict[str, tuple[Any, ...]]] = {"runs": OrderedDict(), "run_steps": OrderedDict(),
                                                                     "responses": OrderedDict()}
        self._staging: Staging | None = None
        self._pending: list[str] = []  # statements of the open batch not yet sent: see _execute
        self._tables: dict[str, Table] = {}
        self._row_counts = {"runs": 0, "run_steps": 0, "responses": 0}
        self._ids = TableIds(self._read_ids, self._row_counts.__getitem__)  # which ids are certainly new
        self._con: duckdb.DuckDBPyConnection | None = None
        self._memory_limit: int | None = None  # bytes: only __init__ sets it, so memory() reads it once
        # Why this store may not be used any more (out of memory, fatal error); see _poison_if_broken.
        self.poisoned: str | None = None
        self.out_of_memory = False  # ... because DuckDB ran out of memory
        self.broken_by: BaseException | None = None  # ... the error that said so
        wal_left = not read_only and os.path.exists(path + ".wal")
        try:
            self._con = duckdb.connect(path, read_only=read_only)
            if not read_only:
                self._check_fresh()
            if threads is not None:
                self._con.execute(f"SET threads = {int(threads)}")
            if memory_limit is not None:
                # SET takes no bound parameters; the literal is validated by _size_literal.
                self._con.execute(f"SET memory_limit = '{_size_literal(memory_limit)}'")
                # DuckDB's jemalloc otherwise keeps what a batch freed: 40-90 MiB of RSS after a burst.
                self._con.execute("SET allocator_background_threads = true")
            if read_only:
                self._check_version()
                return
            self._apply_schema()
            if wal_left:
                # The WAL a crash or a poisoned instance left is replayed into memory that is not
                # evicted until a checkpoint: after running out of memory the reopened store would
                # otherwise start with less room than the one that failed.
                self.connection.execute("CHECKPOINT")
            self.connection.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
            self._staging = Staging(path)
            self._tables = self._describe(self._staging)
            for name in self._row_counts:
                got = self.connection.execute(f"SELECT count(*) FROM {name}").fetchone()  # noqa: S608 - names come from runtap's schema catalog; values are bound
                self._row_counts[name] = got[0] if got else 0
        except (duckdb.Error, OSError, StoreError) as exc:
            # Out of memory replaying the WAL or checkpointing it: never checkpoint this instance (at close)
            self._poison_if_broken(exc)
            self._abort()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot open DuckDB database {path!r}: {exc}") from exc

    def _check_fresh(self) -> None:
        """duckdb's Python client hands out the cached instance of a path while anything in the process
        still holds a connection to it: a poisoned one must not be written again."""
        got = self.connection.execute(
            f"SELECT count(*) FROM duckdb_databases() WHERE database_name = '{_POISON_MARK}'").fetchone()  # noqa: S608 - a constant
        if got and got[0]:
            raise StoreError(f"{self._path!r}: a connection outside the capture store still holds the DuckDB "
                             "instance that failed; it cannot be reused until that connection is closed")

    def _poison_if_broken(self, exc: BaseException) -> bool:
        """After DuckDB ran out of memory (or failed FATAL), never use this instance again.

        duckdb 1.5.5 and 1.5.6: a commit that runs out of memory leaves the in-memory table and its
        primary-key index out of step. Later commits on the instance store rows under another row's id,
        and a checkpoint (including the one at close) either fails FATAL ("Corrupted in-memory column
        ... misaligned count") or writes an index that holds ids of the failed batch, which can then never
        be written ("Duplicate key"). The WAL has every commit as it was made, so: block checkpoints on
        this instance, mark it (see _check_fresh), invalidate it, and let the next open replay the WAL.
        """
        if not (out_of_memory(exc) or isinstance(exc, duckdb.FatalException)):
            return False
        self._ids.stop()
        self.out_of_memory = out_of_memory(exc)
        self.broken_by = exc
        self.poisoned = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        con = self._con
        if con is not None:
            # The CHECKPOINT is expected to fail FATAL (aborted before its header): that invalidates the
            # instance for every connection to it (readers included), which is the point.
            for sql in (_NO_CHECKPOINT, f"ATTACH ':memory:' AS {_POISON_MARK}", "CHECKPOINT"):
                try:
                    con.execute(sql)
                except duckdb.Error:
                    log.debug("poisoning the DuckDB instance: %s failed", sql, exc_info=True)
        return True

    def memory(self) -> DbMemory:
        """What DuckDB's buffer pool holds, by tag, and its limit (on the writing thread: no lock needed)."""
        con = self.connection
        tags = con.execute("SELECT tag, memory_usage_bytes FROM duckdb_memory()").fetchall()
        if self._memory_limit is None:
            got = con.execute("SELECT current_setting('memory_limit')").fetchone()
            self._memory_limit = parse_size(str(got[0]) if got else "")
        return DbMemory(by_tag={str(t).lower(): int(n) for t, n in tags}, limit=self._memory_limit)

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The write connection: only the thread that writes uses it."""
        if self._con is None:
            raise StoreError(f"store {self._path!r} is closed")
        return self._con

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A read connection of the caller's own (reports, exports): a separate DuckDB connection to
        the same database instance, so a reader never shares the writer's transaction or cursor state.
        DuckDB lets only this process open the file, which is why readers do not open it themselves."""
        if self.poisoned is not None:
            raise StoreError(f"store {self._path!r} failed ({self.poisoned}) and is being reopened")
        return self.connection.cursor()

    def _apply_schema(self) -> None:
        con = self.connection
        ddl = resources.files("runtap.analytics").joinpath("schema.sql").read_text(encoding="utf-8")
        con.execute("BEGIN")
        try:
            con.execute(ddl)
            found = self._check_version()
            if found is None or found < SCHEMA_VERSION:
                # schema.sql has just brought an older file up to this version (its ALTERs)
                # a literal, not a bound value: see sql_literal.py
                con.execute(f"INSERT INTO schema_version (version) VALUES ({int(SCHEMA_VERSION)})")  # noqa: S608 - an int constant
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def _check_version(self) -> int | None:
        try:
            got = self.connection.execute("SELECT max(version) FROM schema_version").fetchone()
        except duckdb.CatalogException as exc:
            raise StoreError(f"{self._path!r} is not a runtap database (no schema_version)") from exc
        found: int | None = got[0] if got else None
        if found is not None and found > SCHEMA_VERSION:
            raise StoreError(
                f"{self._path!r} has schema version {found}, newer than this runtap ({SCHEMA_VERSION}); "
                "upgrade runtap or use another database file"
            )
        return found

    def _describe(self, staging: Staging) -> dict[str, Table]:
        rows = self.connection.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = current_database() AND table_schema = 'main' "
            "ORDER BY table_name, ordinal_position"
        ).fetchall()
        cols: dict[str, list[tuple[str, str]]] = {t: [] for t in WRITE_MODES}
        for table, col, dtype in rows:
            if table in cols:
                cols[table].append((col, dtype))
        return {t: table_sql(t, c, staging.path(t), staging.path(changed_name(t))) for t, c in cols.items()}

    def _read_ids(self, name: str) -> Iterator[list[str]]:
        """A table's ids in chunks, from a reader of its own: the query runs now, on the writer's thread
        between batches (the filter must hold every id committed so far); the chunks may be read on
        another thread (known_ids.py builds filters off the writer's thread)."""
        reader = self.connection.cursor()
        result = reader.execute(f"SELECT id FROM {name}")  # noqa: S608 - names come from runtap's schema catalog

        def chunks() -> Iterator[list[str]]:
            try:
                while rows := result.fetchmany(65_536):
                    yield [r[0] for r in rows]
            finally:
                reader.close()

        return chunks()

    def _load(self, table: Table, ids: Iterable[str], *, filtered: bool) -> dict[str, Row]:
        """Current rows for ``ids``: LRU hits, then ONE query for the misses that may be stored
        (``filtered``) or for every miss (spool replays, and a batch merged again: see ``apply``)."""
        cache = self._cache[table.name]
        found: dict[str, Row] = {}
        missing: list[str] = []
        for obj_id in ids:
            cached = cache.get(obj_id)
            if cached is None:
                missing.append(obj_id)
            else:
                cache.move_to_end(obj_id)
                found[obj_id] = dict(zip(table.columns, cached, strict=True))
        if missing and filtered:
            absent = self._ids.unknown(table.name, missing)
            if absent:
                missing = [obj_id for obj_id in missing if obj_id not in absent]
        if missing:
            cols = table.columns
            heavy = table.heavy
            for values in self._fetch(table, missing):
                row = dict(zip(cols, values, strict=True))
                for col in heavy:
                    row[col] = KEPT if row[col] else None
                found[row["id"]] = row
        return found

    def _fetch(self, table: Table, ids: list[str]) -> list[tuple[Any, ...]]:
        """Rows for ``ids``, by ART index lookups while that beats scanning the id column.

        DuckDB uses the index for ``id IN (<literals>)`` of a few hundred values (~10 us a row,
        flat); a join against a list scans the whole table (~35 ns a stored row). Without this
        switch a months-old capture file would make every batch slower.
        """
        con = self.connection
        if len(ids) * _SCAN_ROWS_PER_ID < self._row_counts[table.name]:
            chunks = [_id_literals(ids[i : i + _LOOKUP_CHUNK]) for i in range(0, len(ids), _LOOKUP_CHUNK)]
            if None not in chunks:
                rows: list[tuple[Any, ...]] = []
                for literals in chunks:
                    rows += con.execute(f"{table.select_sql}({literals})").fetchall()
                return rows
        return con.execute(table.select_sql + _IDS.format(sql_string(orjson.dumps(ids).decode()))).fetchall()

    def _stage(self, name: str, items: Sequence[Any]) -> None:
        if self._staging is None:
            raise StoreError(f"store {self._path!r} is closed")
        self._staging.write(name, orjson.dumps(items, default=_kept_as_null))

    def _write(self, table: Table, items: Sequence[Any], sql: str | None = None) -> None:
        """Stage ``items`` and queue their INSERT for the batch's next round trip (_execute)."""
        if items:
            self._stage(table.name, items)
            self._pending.append(sql or table.write_sql)

    def _execute(self, sql: str) -> duckdb.DuckDBPyConnection:
        """Run the queued statements and ``sql`` in one call: each call costs 0.1-0.4 ms of CPU in the
        client besides DuckDB's own work, and a batch makes up to ten. Its result is ``sql``'s."""
        statements, self._pending = self._pending, []
        statements.append(sql)
        return self.connection.execute(";\n".join(statements))

    def _update(self, table: Table, rows: list[Row], columns: set[str]) -> None:
        """Update rows known to be stored. A plain UPDATE costs ~40% less than the upsert (its fixed
        cost per statement dominates small batches: bench/ingest_store.py); if a row was not there
        after all, the upsert writes the staged rows again, which sets the same values.

        The UPDATE sets only the ``columns`` some row changed, and it joins the staged rows to the
        whole table: a literal id list lets DuckDB read only those rows by index (100 rows of a
        500k-row table: 139 against 298 ms)."""
        if not rows or not columns:
            return
        self._stage(table.changed_staging_name, rows)
        sql = table.update_of(columns)
        literals = _id_literals([row["id"] for row in rows]) if len(rows) <= _LOOKUP_CHUNK else None
        if literals is not None:
            sql += f" AND {table.name}.id IN ({literals})"
        got = self._execute(sql).fetchone()
        if got is None or got[0] != len(rows):
            self._execute(table.upsert_sql)

    def _write_rows(self, table: Table, merged: dict[str, Row], before: dict[str, Row]) -> list[str]:
        """Write the rows the batch changed: new ones by INSERT, changed ones by UPDATE (in
        place: DuckDB does not vacuum deleted rows of a table with an ART index, so
        DELETE + INSERT, though faster per batch, would grow the file for ever). Returns the ids
        of the new rows."""
        fresh: list[Row] = []
        changed: list[Row] = []
        columns: set[str] = set()  # those some changed row changed
        strip = table.name == "runs" and not self._store_prompts
        for key, row in merged.items():
            raw = row.get("raw")
            if strip and type(raw) is dict and "instructions" in raw:
                # the prompt stays out of the database unless --store-prompts
                # copy-then-delete: a C-level copy, ~5x cheaper than a filtering comprehension
                stripped = raw.copy()
                del stripped["instructions"]
                row["raw"] = stripped
            old = before.get(key)
            if old is None:
                fresh.append(row)
            elif old != row:
                changed.append(row)
                columns.update(col for col, value in row.items() if col not in columns and old.get(col) != value)
                columns.update(col for col in old.keys() - row.keys() if old[col] is not None)
        self._write(table, fresh)
        self._update(table, changed, columns)
        return [row["id"] for row in fresh]

    def apply(self, snapshots: list[Snapshot], requests: list[RequestRecord], *, replay: bool = False,
              emit: bool | None = None) -> list[Effect]:
        """Merge ``snapshots`` and insert ``requests`` in ONE transaction; return the effects.

        On failure nothing is written, the cache is untouched and StoreError is raised (the
        caller spools the batch). ``replay=True`` (spool replay) returns no effects unless ``emit``
        says so (a spooled batch whose effects were never emitted).
        """
        if replay:  # a replay reads back every id it misses: the filters never decide what a replay does
            return self._apply(snapshots, requests, replay=True, emit=emit, filtered=False)
        try:
            return self._apply(snapshots, requests, replay=False, emit=emit, filtered=True)
        except StoreError as exc:
            if not isinstance(exc.__cause__, duckdb.ConstraintException) or self.poisoned is not None:
                raise
        # An INSERT of a row the filters called new hit a stored one: inserted behind the store's back.
        self._ids.forget()
        return self._apply(snapshots, requests, replay=False, emit=emit, filtered=False)

    def _apply(self, snapshots: list[Snapshot], requests: list[RequestRecord], *, replay: bool,
               emit: bool | None, filtered: bool) -> list[Effect]:
        if self._read_only:
            raise StoreError(f"store {self._path!r} is read-only")
        if self.poisoned is not None:
            raise StoreError(f"store {self._path!r} failed ({self.poisoned}) and must be reopened")
        con = self.connection
        emit = not replay if emit is None else emit
        runs = self._tables["runs"]
        steps = self._tables["run_steps"]
        run_snaps: list[Snapshot] = []
        step_snaps: list[Snapshot] = []
        resp_snaps: list[Snapshot] = []
        for snap in snapshots:
            if type(snap.obj.get("id")) is str:  # an object without an id cannot be merged
                if snap.kind == "response":
                    resp_snaps.append(snap)
                else:
                    (run_snaps if snap.kind == "run" else step_snaps).append(snap)
        resps = self._tables["responses"]
        resp_events: list[ResponseEvent] = []
        merged_resps: dict[str, Row] = {}
        before_resps: dict[str, Row] = {}
        effects: list[Effect] = []
        events: list[RunEvent] = []
        merged_runs: dict[str, Row] = {}
        merged_steps: dict[str, Row] = {}
        try:
            before_runs = self._load(runs, {s.obj["id"] for s in run_snaps}, filtered=filtered)
            before_steps = self._load(steps, {s.obj["id"] for s in step_snaps}, filtered=filtered)
            for snap in run_snaps:
                rid = snap.obj["id"]
                row = merged_runs.get(rid)
                if row is None and rid in before_runs:
                    row = dict(before_runs[rid])
                merged_runs[rid] = merge_run(
                    row, snap, events=events, effects=effects, store_prompts=self._store_prompts, emit=emit
                )
            for snap in step_snaps:
                sid = snap.obj["id"]
                row = merged_steps.get(sid)
                if row is None and sid in before_steps:
                    row = dict(before_steps[sid])
                merged_steps[sid] = merge_step(row, snap, effects=effects, emit=emit)
            if resp_snaps:
                before_resps = self._load(resps, _response_ids(resp_snaps), filtered=filtered)
                merged_resps = merge_responses(before_resps, resp_snaps, events=resp_events, effects=effects,
                                               store_prompts=self._store_prompts, emit=emit)
        except Exception as exc:
            self._poison_if_broken(exc)
            raise StoreError(f"cannot merge batch into {self._path!r}: {exc!r}") from exc
        try:
            self._pending = ["BEGIN"]
            new_runs = self._write_rows(runs, merged_runs, before_runs)
            new_steps = self._write_rows(steps, merged_steps, before_steps)
            self._write(self._tables["run_events"], events)
            new_resps = self._write_rows(resps, merged_resps, before_resps)
            self._write(self._tables["response_events"], resp_events)
            self._write(self._tables["requests"], requests, self._tables["requests"].replay_sql if replay else None)
            self._execute("COMMIT")
        except Exception as exc:
            self._pending = []
            try:
                con.execute("ROLLBACK")
            except duckdb.Error:
                log.debug("rollback after a failed batch failed too", exc_info=True)
            self._poison_if_broken(exc)
            raise StoreError(f"cannot write batch to {self._path!r}: {exc!r}", effects=effects) from exc
        for name, new in (("runs", new_runs), ("run_steps", new_steps), ("responses", new_resps)):
            self._row_counts[name] += len(new)
            self._ids.added(name, new)
        self._remember(runs, merged_runs)
        self._remember(steps, merged_steps)
        self._remember(resps, merged_resps)
        return effects if emit else []

    def _remember(self, table: Table, rows: dict[str, Row]) -> None:
        """Cache committed rows only, so a rolled-back batch never leaks into a later merge."""
        cache = self._cache[table.name]
        heavy = table.heavy
        columns = table.columns
        for key, row in rows.items():
            for col in heavy:
                if row.get(col) is not None:
                    row[col] = KEPT  # the cache holds scalars only (memory, GC time)
            # Packed in column order; a column the row lacks (the prompt columns without
            # --store-prompts) is None, which the merge and the upsert treat alike. A key that is
            # not a column is dropped, as read_json drops it from the write.
            cache[key] = tuple(map(row.get, columns))
            cache.move_to_end(key)
        while len(cache) > self._cache_rows:
            cache.popitem(last=False)

    def _abort(self) -> None:
        """Release what a failed __init__ opened, without letting a second error hide the first."""
        con, self._con = self._con, None
        if con is not None:
            try:
                con.close()
            except duckdb.Error:
                log.debug("closing a store that failed to open failed too", exc_info=True)
        if self._staging is not None:
            self._staging.close()

    def close(self) -> None:
        """CHECKPOINT (so the next open replays no WAL) and close. Idempotent. Closing the write connection
        closes the readers made from it too, which lets the DuckDB instance go (see _check_fresh)."""
        self._ids.stop()
        con, self._con = self._con, None
        try:
            if con is not None:
                try:
                    if not self._read_only and self.poisoned is None:
                        con.execute("CHECKPOINT")
                finally:
                    con.close()
        finally:
            if self._staging is not None:
                self._staging.close()
