"""Named SQL reports over the capture tables: load the price book and views into a connection, run one.

A report is one file, analytics/reports/NAME.sql, whose header comment names what it answers, its
columns and which of them add up (the `totals:` line). Parameters reach the SQL as DuckDB variables
(runtap_since, runtap_until, runtap_by, runtap_limit; see views.sql), so the same file runs unchanged
from the DuckDB CLI.

Sources: `open_db` (a capture file, read-only) and analytics.lake.open_lake (Parquet export). Both end
in `prepare`, which installs the price book and the views as TEMP objects on that one connection.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Final

import duckdb

from .ingest.response_tables import ensure_response_tables, with_schema3_columns
from .prices import PriceBook

BY_COLUMN: Final = "by_value"
_BY_RE: Final = re.compile(r"^(key_fingerprint|api_version|conversation|api|metadata\.[A-Za-z0-9_.:@/-]{1,128})$")
_RELATIVE_RE: Final = re.compile(r"^([0-9]{1,12})\s*([smhdw])$")
_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# Python cannot fetch TIMESTAMPTZ without pytz (not a dependency): results carry ISO-8601 UTC text.
_TZ_TYPES: Final = ("TIMESTAMP WITH TIME ZONE",)
_LOCK_RE: Final = re.compile(r"Could not set lock on file|Conflicting lock is held", re.IGNORECASE)


# Bounds checked before any query, so a parameter is answered with a 4xx, never reaches DuckDB as an
# overflow: times from 1900 to the end of year 9999 (what a Python datetime holds), ages up to 100
# years, at most a million rows.
EARLIEST: Final = datetime(1900, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
MAX_AGE: Final = timedelta(days=36_525)
MAX_LIMIT: Final = 1_000_000
_MAX_PARAM_CHARS: Final = 256


class ReportError(ValueError):
    """Bad report name or parameter; the message is shown to the user as is."""


class DatabaseLocked(RuntimeError):
    """The capture file is held by another process (a live `runtap serve`)."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path} is locked by another process: {detail}")
        self.path = path
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ReportSpec:
    name: str
    question: str
    description: str
    columns: tuple[tuple[str, str], ...]  # (column, "TYPE  meaning")
    totals: frozenset[str]
    sql: str


@dataclass(frozen=True, slots=True)
class ReportParams:
    since: datetime | None = None
    until: datetime | None = None
    by: str | None = None
    limit: int | None = None

    def query(self) -> dict[str, str]:
        """As URL query parameters for the admin endpoint."""
        q: dict[str, str] = {}
        if self.since is not None:
            q["since"] = self.since.isoformat()
        if self.until is not None:
            q["until"] = self.until.isoformat()
        if self.by is not None:
            q["by"] = self.by
        if self.limit is not None:
            q["limit"] = str(self.limit)
        return q


@dataclass(slots=True)
class ReportResult:
    name: str
    columns: list[str]
    rows: list[tuple[Any, ...]]
    totals: frozenset[str] = field(default_factory=frozenset)

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def _parse_header(name: str, text: str) -> ReportSpec:
    header: list[str] = []
    body: list[str] = []
    for line in text.splitlines():
        if not body and line.startswith("--"):
            header.append(line[2:].removeprefix(" "))
        elif body or line.strip():
            body.append(line)
    first = header[0] if header else ""
    prefix = f"{name}:"
    if not first.startswith(prefix):
        raise ReportError(f"analytics/reports/{name}.sql: header must start with '-- {name}: QUESTION'")
    description: list[str] = []
    columns: list[tuple[str, str]] = []
    totals: frozenset[str] = frozenset()
    section = "description"
    for line in header[1:]:
        if line.startswith("columns:"):
            section = "columns"
        elif line.startswith("totals:"):
            totals = frozenset(line.removeprefix("totals:").split())
            section = "end"
        elif section == "columns" and line.startswith("  ") and line.strip():
            col, _, doc = line.strip().partition(" ")
            columns.append((col, doc.strip()))
        elif section == "description":
            description.append(line)
    return ReportSpec(name, first.removeprefix(prefix).strip(), "\n".join(description).strip(),
                      tuple(columns), totals, "\n".join(body).strip().rstrip(";"))


@functools.cache
def report_specs() -> dict[str, ReportSpec]:
    folder = resources.files("runtap.analytics").joinpath("reports")
    specs = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            name = entry.name.removesuffix(".sql")
            specs[name] = _parse_header(name, entry.read_text(encoding="utf-8"))
    return specs


def report_source(name: str) -> str:
    """The report's file as shipped (header comment included), for the DuckDB CLI: `runtap report NAME --sql`."""
    if name not in report_specs():
        raise ReportError(f"unknown report {name!r}; reports: {', '.join(report_specs())}")
    return resources.files("runtap.analytics").joinpath("reports", f"{name}.sql").read_text(encoding="utf-8")


def views_sql() -> str:
    root = resources.files("runtap.analytics")
    return "\n".join(root.joinpath(name).read_text(encoding="utf-8") for name in ("views.sql", "response_views.sql"))


def setup_script(prices: PriceBook) -> str:
    """SQL that creates the price book and the views: for the DuckDB CLI or any SQL client."""
    return ("-- runtap report setup: run in a session on the capture file (duckdb -readonly runtap.duckdb)\n"
            + prices.to_sql() + "\n" + views_sql())


def prepare(conn: duckdb.DuckDBPyConnection, prices: PriceBook) -> None:
    prices.install(conn)
    ensure_response_tables(conn)
    sql = views_sql()
    described = conn.execute("SELECT * FROM runs LIMIT 0").description or []
    if "api_provider" not in {d[0] for d in described}:
        # A file opened read-only before a runtap of schema version 2 wrote to it, or a lake exported
        # before then: no provider column (views.sql reads a version without one as OpenAI's).
        sql = sql.replace("r.api_provider", "CAST(NULL AS VARCHAR)")
    conn.execute(with_schema3_columns(conn, sql))


def parse_when(value: str, *, now: datetime | None = None) -> datetime:
    """ISO date or date-time (UTC unless it has an offset), or an age such as 7d, 12h, 30m, 2w; within
    EARLIEST..LATEST and MAX_AGE (ReportError otherwise)."""
    v = value.strip()
    if len(v) > _MAX_PARAM_CHARS:
        raise ReportError(f"expected a date, a date-time or an age, got {len(v)} characters")
    rel = _RELATIVE_RE.match(v.lower())
    if rel:
        base = now or datetime.now(UTC)
        try:
            age = timedelta(**{_UNITS[rel.group(2)]: int(rel.group(1))})
        except OverflowError:
            age = MAX_AGE + MAX_AGE
        if age > MAX_AGE:
            raise ReportError(f"an age of at most {MAX_AGE.days} days (100 years), got {value!r}")
        t = base - age
    else:
        t = _parse_time(value, v)
    if not EARLIEST <= t <= LATEST:
        raise ReportError(f"a time between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}, got {value!r}")
    return t


def _parse_time(value: str, v: str) -> datetime:
    try:
        if len(v) == 10:
            d = date.fromisoformat(v)
            t = datetime(d.year, d.month, d.day, tzinfo=UTC)
        else:
            t = datetime.fromisoformat(v.replace("Z", "+00:00"))
            t = t.astimezone(UTC) if t.tzinfo is not None else t.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise ReportError(f"expected a date (2024-06-01), a date-time (2024-06-01T12:00:00Z) or an age "
                          f"(7d, 12h), got {value[:80]!r}") from None
    return t


def validate_by(by: str | None) -> str | None:
    if by is None or by == "":
        return None
    if not _BY_RE.match(by):
        raise ReportError(
            f"--by must be metadata.KEY, key_fingerprint, api_version, conversation or api, got {by[:80]!r}"
        )
    return by


def make_params(*, since: str | None = None, until: str | None = None, by: str | None = None,
                limit: str | int | None = None, now: datetime | None = None) -> ReportParams:
    lim: int | None = None
    if isinstance(limit, int):
        if not 0 < limit <= MAX_LIMIT:
            got = "a larger one" if limit > 0 else limit
            raise ReportError(f"limit must be an integer from 1 to {MAX_LIMIT:,}, got {got}")
        lim = limit
    elif limit is not None and limit != "":
        text = limit.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 7) or not 0 < int(text) <= MAX_LIMIT:
            raise ReportError(f"limit must be an integer from 1 to {MAX_LIMIT:,}, got {limit[:40]!r}")
        lim = int(text)
    params = ReportParams(parse_when(since, now=now) if since else None,
                          parse_when(until, now=now) if until else None, validate_by(by), lim)
    if params.since and params.until and params.since >= params.until:
        raise ReportError("--since must be before --until")
    return params


def _set_params(conn: duckdb.DuckDBPyConnection, params: ReportParams) -> None:
    values: dict[str, tuple[str, Any]] = {
        "runtap_since": ("CAST(? AS TIMESTAMPTZ)", params.since.isoformat() if params.since else None),
        "runtap_until": ("CAST(? AS TIMESTAMPTZ)", params.until.isoformat() if params.until else None),
        "runtap_by": ("CAST(? AS VARCHAR)", params.by),
        "runtap_limit": ("CAST(? AS BIGINT)", params.limit),
    }
    for name, (expr, value) in values.items():
        if value is None:
            conn.execute(f"RESET VARIABLE {name}")
        else:
            conn.execute(f"SET VARIABLE {name} = {expr}", [value])


def _fetch(conn: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    rel: duckdb.DuckDBPyRelation | None = conn.sql(sql)
    if rel is None:  # a statement without a result (SET, CREATE ...)
        return [], []
    columns = list(rel.columns)
    if any(str(t) in _TZ_TYPES for t in rel.types):
        exprs = []
        for col, typ in zip(columns, rel.types, strict=True):
            q = '"' + col.replace('"', '""') + '"'
            if str(typ) in _TZ_TYPES:
                exprs.append(f"strftime(timezone('UTC', {q}), '%Y-%m-%dT%H:%M:%SZ') AS {q}")
            else:
                exprs.append(q)
        rel = rel.project(", ".join(exprs))
    return columns, rel.fetchall()


def run_report(conn: duckdb.DuckDBPyConnection, name: str,
               params: ReportParams | None = None) -> ReportResult:
    """Run report NAME on a prepared connection. Without --by the by_value column is dropped; with it,
    the column is named after the key (e.g. `metadata.tenant`)."""
    spec = report_specs().get(name)
    if spec is None:
        raise ReportError(f"unknown report {name!r}; reports: {', '.join(report_specs())}")
    p = params or ReportParams()
    _set_params(conn, p)
    columns, rows = _fetch(conn, spec.sql)
    if BY_COLUMN in columns:
        i = columns.index(BY_COLUMN)
        if p.by is None:
            columns = columns[:i] + columns[i + 1:]
            rows = [row[:i] + row[i + 1:] for row in rows]
        else:
            columns[i] = p.by
    return ReportResult(name, columns, rows, spec.totals)


def run_sql(conn: duckdb.DuckDBPyConnection, sql: str, params: ReportParams | None = None) -> ReportResult:
    _set_params(conn, params or ReportParams())
    columns, rows = _fetch(conn, sql)
    return ReportResult("sql", columns, rows)


def open_db(path: str | Path, prices: PriceBook, *, install_views: bool = True) -> duckdb.DuckDBPyConnection:
    """A read-only connection to a capture file with the report views installed.

    Raises DatabaseLocked when a live `runtap serve` holds the file: DuckDB allows one writing process
    and no concurrent readers from other processes."""
    p = str(path)
    if not Path(p).exists():
        raise FileNotFoundError(f"no capture database at {p}")
    try:
        conn = duckdb.connect(p, read_only=True)
    except duckdb.IOException as exc:
        if _LOCK_RE.search(str(exc)):
            holder = re.search(r"\(PID (\d+)\)", str(exc))
            raise DatabaseLocked(p, f"pid {holder.group(1)}" if holder else str(exc)) from None
        raise
    try:
        conn.execute("SET TimeZone = 'UTC'")
        if install_views:
            prepare(conn, prices)
    except Exception:
        conn.close()
        raise
    return conn

