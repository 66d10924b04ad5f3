"""The demo's own DuckDB file: where it is, what earlier demos left in it, and --fresh."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Final

import duckdb

from ...settings.config import ConfigError

DEFAULT_DB: Final = "./runtap-demo.duckdb"
# Beside the database: its WAL and the capture spool files (settings/config.py Settings.spool_path).
SIDE_FILES: Final = (".wal", ".spool.jsonl", ".spool.rejected.jsonl")


@dataclasses.dataclass(frozen=True)
class DemoDb:
    path: str
    earlier_runs: int
    removed: tuple[str, ...] = ()


def _count_runs(path: str) -> int:
    try:
        con = duckdb.connect(path, read_only=True)
    except duckdb.IOException as exc:
        raise ConfigError(f"{path} is held by another process ({exc}); stop it or pass --db ANOTHER_FILE") from None
    try:
        (n,) = con.execute("SELECT count(*) FROM runs").fetchone() or (0,)
        return int(n)
    except duckdb.CatalogException:
        return 0  # an empty database, or one without runtap's tables yet
    finally:
        con.close()


def prepare_db(db: str | None, *, fresh: bool) -> DemoDb:
    path = db or DEFAULT_DB
    removed: list[str] = []
    if fresh:
        for candidate in (path, *(path + suffix for suffix in SIDE_FILES)):
            if Path(candidate).exists():
                Path(candidate).unlink()
                removed.append(candidate)
    earlier = _count_runs(path) if Path(path).exists() else 0
    return DemoDb(path=path, earlier_runs=earlier, removed=tuple(removed))
