"""The SQL the store runs for each table, derived from the catalog so schema.sql stays the only column list.

Rows reach DuckDB through staging files (staging.py) read by ``read_json``; see store.py for why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .sql_literal import sql_string

WRITE_MODES: dict[str, Literal["insert", "ignore"]] = {
    "runs": "insert",
    "run_steps": "insert",
    "run_events": "insert",
    "responses": "insert",
    "response_events": "insert",
    # A re-replayed spool batch (a crash before the spool was truncated) must not fail on its own
    # requests. Only replays can repeat an id (ids are unique per process), so live batches use a
    # plain INSERT: OR IGNORE costs ~3 us a row (8.8 vs 5.7 us CPU, 1,000-row batches).
    "requests": "ignore",
}


@dataclass(frozen=True, slots=True)
class Table:
    """SQL for one table, derived from the catalog so schema.sql stays the only column list."""

    name: str
    columns: tuple[str, ...]
    heavy: tuple[str, ...]  # JSON and list columns: read back as KEPT/None only
    changed_staging_name: str  # Staging's name of the file update_of and upsert_sql read changed rows from
    select_sql: str  # current rows WHERE id IN <list>; times as float epoch seconds
    write_sql: str  # INSERT from read_json(staging)
    replay_sql: str  # write_sql for spool replays: INSERT OR IGNORE where the table's mode says so
    upsert_sql: str  # the same, ON CONFLICT updating in place (keeps stored JSON where the row has KEPT)
    update_sets: dict[str, str]  # the SET item of each column but id, for an UPDATE of some columns only
    reads: dict[str, str]  # read_json's columns entry of each column ('name': 'TYPE')
    projections: dict[str, str]  # each column as the staged SELECT produces it (times from float seconds)
    changed_staging: str  # the file of Staging's changed_staging_name

    def update_of(self, columns: set[str]) -> str:
        """UPDATE of stored rows from the changed rows, as the upsert would set them, setting only
        ``columns``: DuckDB's cost of an UPDATE grows with every column it sets, the JSON ones most
        (100 rows of a 300k-row table: 124 ms all columns, 12 ms two scalars). The staged file is
        read for the id and those columns only (read_json skips the other keys): binding a read of
        all 43 columns of ``runs`` was most of the fixed cost of a small batch's UPDATE."""
        cols = [c for c in self.columns if c in columns and c in self.update_sets]
        sets = ", ".join(self.update_sets[c] for c in cols)
        read = ["id", *cols]
        spec = ", ".join(self.reads[c] for c in read)
        named = ", ".join(f"{self.projections[c]} AS {_quote(c)}" for c in read)
        source = f"read_json({sql_string(self.changed_staging)}, format = 'array', columns = {{{spec}}})"
        return (f"UPDATE {self.name} SET {sets} FROM (SELECT {named} FROM {source}) AS staged "  # noqa: S608 - names come from runtap's schema catalog
                f"WHERE {self.name}.id = staged.id")


def _quote(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


def changed_name(table: str) -> str:
    """Staging's name of a table's changed rows (its new rows go under the table's own name)."""
    return f"{table}.changed"


def table_sql(name: str, cols: list[tuple[str, str]], staging: str, changed_staging: str) -> Table:
    """``staging`` and ``changed_staging``: the files of Staging's ``name`` and ``changed_name(name)``."""
    mode = WRITE_MODES[name]
    selects: list[str] = []
    reads: list[str] = []
    projections: list[str] = []
    updates: list[str] = []
    heavy: list[str] = []
    sets: dict[str, str] = {}
    for col, dtype in cols:
        q = _quote(col)
        if dtype.startswith("TIMESTAMP"):
            # times travel as float seconds. to_timestamp rounds to the microsecond as the merge's quantize()
            # does (make_timestamptz(CAST(round(x * 1e6) ...)) was 1 us off for ~1 in 2,000 times after 2106),
            # and binds in ~1 ms less a statement: binding, not rows, is most of a small batch's cost.
            selects.append(f"CAST(epoch_us({q}) AS DOUBLE) / 1000000")
            reads.append(f"{col!r}: 'DOUBLE'")
            projections.append(f"to_timestamp({q})")
        elif dtype == "JSON" or dtype.endswith("[]"):
            heavy.append(col)
            selects.append(f"{q} IS NOT NULL")
            reads.append(f"{col!r}: '{dtype}'")
            projections.append(q)
        else:
            selects.append(q)
            reads.append(f"{col!r}: '{dtype}'")
            projections.append(q)
        if col != "id":
            # the merge never turns a value into NULL for these (rule 3), so NULL means "kept"
            value = f"COALESCE(excluded.{q}, {name}.{q})" if col in heavy else f"excluded.{q}"
            updates.append(f"{q} = {value}")
            sets[col] = f"{q} = {value.replace('excluded.', 'staged.')}"
    spec = ", ".join(reads)

    def source(path: str) -> str:
        return f"read_json({sql_string(path)}, format = 'array', columns = {{{spec}}})"

    columns = ", ".join(_quote(c) for c, _ in cols)
    # names come from runtap's schema catalog; values are staged, never spliced in
    into = f"INTO {name} ({columns}) SELECT {', '.join(projections)} FROM {source(staging)}"  # noqa: S608
    write = f"INSERT {into}"
    return Table(
        name=name,
        columns=tuple(c for c, _ in cols),
        heavy=tuple(heavy),
        changed_staging_name=changed_name(name),
        select_sql=f"SELECT {', '.join(selects)} FROM {name} WHERE id IN ",  # noqa: S608 - names come from runtap's schema catalog; values are bound
        write_sql=write,
        replay_sql=f"INSERT OR IGNORE {into}" if mode == "ignore" else write,
        upsert_sql=(f"INSERT INTO {name} ({columns}) SELECT {', '.join(projections)} "  # noqa: S608 - as above
                    f"FROM {source(changed_staging)} ON CONFLICT (id) DO UPDATE SET {', '.join(updates)}"),
        update_sets=sets,
        reads={c: r for (c, _), r in zip(cols, reads, strict=True)},
        projections={c: p for (c, _), p in zip(cols, projections, strict=True)},
        changed_staging=changed_staging,
    )
