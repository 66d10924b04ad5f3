"""The price book: what a model's tokens and a tool's calls cost, from the shipped CSV plus the user's.

Matching (implemented in views.sql, view `run_prices`; documented here and in docs/prices.md):
  1. exact: a run's model equals a price-book name (case-insensitive); the row whose effective_from is
     the latest on or before the run's UTC day applies (aliases like gpt-4o changed price over time).
  2. snapshot: else, a name ending in a date, `BASE-YYYY-MM-DD` (gpt-4o-2024-08-06), takes BASE's price
     as of that date: a dated snapshot keeps the price it launched with.
  3. else the run is unpriced: it costs NULL, never 0, and the `unpriced` report lists its model.
A run dated before a name's first effective_from takes that first row, so a price added today still
prices last month's runs.

User prices (`--prices FILE` / RUNTAP_PRICES) use the same CSV columns; only `name` and the two token
prices (models) or `unit_usd` (tools) are required. A name that appears in the user's file takes all its
rows from there: the built-in rows for that name are dropped, so an override wins on every date.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:  # the relay validates --prices at start-up without loading DuckDB
    import duckdb

Kind = Literal["model", "tool"]

PRICES_ENV: Final = "RUNTAP_PRICES"
COLUMNS: Final = ("name", "kind", "effective_from", "prompt_usd_per_1m", "completion_usd_per_1m",
                  "unit_usd", "unit", "cached_prompt_usd_per_1m")
_EPOCH: Final = date(1970, 1, 1)


class PriceError(ValueError):
    """A price CSV is malformed; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Price:
    name: str
    kind: Kind
    effective_from: date
    prompt_usd_per_1m: float | None = None
    completion_usd_per_1m: float | None = None
    unit_usd: float | None = None
    unit: str | None = None
    source: str = "builtin"
    # prompt caching (Responses usage.input_tokens_details.cached_tokens); None: the prompt price
    cached_prompt_usd_per_1m: float | None = None


def _number(raw: str | None, what: str, where: str) -> float | None:
    if raw is None or not raw.strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        raise PriceError(f"{where}: {what} is not a number: {raw!r}") from None
    if value < 0 or value != value:
        raise PriceError(f"{where}: {what} must be a non-negative number, got {raw!r}")
    return value


def _row(fields: Mapping[str, str | None], where: str, source: str) -> Price:
    name = (fields.get("name") or "").strip()
    if not name:
        raise PriceError(f"{where}: empty name")
    kind = (fields.get("kind") or "model").strip().lower()
    if kind not in ("model", "tool"):
        raise PriceError(f"{where}: kind must be 'model' or 'tool', got {kind!r}")
    raw_date = (fields.get("effective_from") or "").strip()
    try:
        effective = date.fromisoformat(raw_date) if raw_date else _EPOCH
    except ValueError:
        raise PriceError(f"{where}: effective_from must be YYYY-MM-DD, got {raw_date!r}") from None
    prompt = _number(fields.get("prompt_usd_per_1m"), "prompt_usd_per_1m", where)
    completion = _number(fields.get("completion_usd_per_1m"), "completion_usd_per_1m", where)
    unit_usd = _number(fields.get("unit_usd"), "unit_usd", where)
    unit = (fields.get("unit") or "").strip() or None
    cached = _number(fields.get("cached_prompt_usd_per_1m"), "cached_prompt_usd_per_1m", where)
    if kind == "model" and (prompt is None or completion is None):
        raise PriceError(f"{where}: model {name!r} needs prompt_usd_per_1m and completion_usd_per_1m")
    if kind == "tool" and unit_usd is None:
        raise PriceError(f"{where}: tool {name!r} needs unit_usd")
    return Price(name, "model" if kind == "model" else "tool", effective, prompt, completion, unit_usd,
                 unit or ("call" if kind == "tool" else None), source, cached)


def parse_prices(text: str, *, source: str) -> list[Price]:
    """Rows of a price CSV; '#' lines (source and date notes) and blank lines are skipped."""
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise PriceError(f"{source}: no header line")
    reader = csv.DictReader(io.StringIO("\n".join(line for _, line in lines)))
    header = [h.strip() for h in reader.fieldnames or ()]
    unknown = set(header) - set(COLUMNS)
    if unknown or "name" not in header:
        raise PriceError(f"{source}:{lines[0][0]}: header must be a subset of {','.join(COLUMNS)} "
                         f"including name; got {','.join(header)}")
    reader.fieldnames = header
    rows = []
    for (lineno, _), fields in zip(lines[1:], reader, strict=True):
        if None in fields:
            raise PriceError(f"{source}:{lineno}: more fields than the header has")
        rows.append(_row(fields, f"{source}:{lineno}", source))
    seen: set[tuple[str, str, date]] = set()
    for row in rows:
        key = (row.name.lower(), row.kind, row.effective_from)
        if key in seen:
            raise PriceError(f"{source}: {row.name} ({row.kind}) has two rows effective {row.effective_from}")
        seen.add(key)
    return rows


def builtin_prices() -> list[Price]:
    text = resources.files("runtap.analytics").joinpath("prices.csv").read_text(encoding="utf-8")
    return parse_prices(text, source="builtin")


@dataclass(frozen=True, slots=True)
class PriceBook:
    rows: tuple[Price, ...]

    @classmethod
    def merged(cls, builtin: Iterable[Price], user: Iterable[Price]) -> PriceBook:
        user_rows = list(user)
        overridden = {(p.name.lower(), p.kind) for p in user_rows}
        kept = [p for p in builtin if (p.name.lower(), p.kind) not in overridden]
        return cls(tuple(kept + user_rows))

    def to_sql(self, *, temp: bool = True) -> str:
        """A statement that creates table `price_book` with these rows (for a connection or a script)."""
        def lit(v: object) -> str:
            if v is None:
                return "NULL"
            if isinstance(v, date):
                return f"DATE '{v.isoformat()}'"
            if isinstance(v, float):
                return repr(v)
            return "'" + str(v).replace("'", "''") + "'"

        values = ",\n  ".join(
            "(" + ", ".join(lit(v) for v in (p.name, p.kind, p.effective_from, p.prompt_usd_per_1m,
                                              p.completion_usd_per_1m, p.unit_usd, p.unit, p.source,
                                              p.cached_prompt_usd_per_1m)) + ")"
            for p in self.rows)
        # Typed empty relation first, so a book with no rows (or only tools) still has the right types.
        return (f"CREATE OR REPLACE {'TEMP ' if temp else ''}TABLE price_book AS\n"  # noqa: S608 - row values are SQL literals escaped by lit()
                "SELECT * FROM (SELECT NULL::VARCHAR AS name, NULL::VARCHAR AS kind, NULL::DATE AS "
                "effective_from, NULL::DOUBLE AS prompt_usd_per_1m, NULL::DOUBLE AS completion_usd_per_1m, "
                "NULL::DOUBLE AS unit_usd, NULL::VARCHAR AS unit, NULL::VARCHAR AS source, "
                "NULL::DOUBLE AS cached_prompt_usd_per_1m) WHERE false"
                + (f"\nUNION ALL SELECT * FROM (VALUES\n  {values}\n)" if self.rows else "") + ";\n")  # noqa: S608 - row values are SQL literals escaped by lit()

    def install(self, conn: duckdb.DuckDBPyConnection) -> None:
        conn.execute(self.to_sql())


def load_price_book(path: str | None = None, *, environ: Mapping[str, str] | None = None) -> PriceBook:
    """Built-in prices, overridden/extended by `path`, else by $RUNTAP_PRICES when set."""
    env = os.environ if environ is None else environ
    user_path = path or env.get(PRICES_ENV) or None
    user: list[Price] = []
    if user_path:
        try:
            text = Path(user_path).read_text(encoding="utf-8")
        except OSError as exc:
            raise PriceError(f"cannot read price file {user_path}: {exc.strerror or exc}") from None
        user = parse_prices(text, source=user_path)
    return PriceBook.merged(builtin_prices(), user)
