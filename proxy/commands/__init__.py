"""Subcommands. Each module has `add_parser(subparsers)`, which registers a parser whose `run`
default is the function `run(args) -> int` that carries the command out. The relay's own commands live
here; the analytics ones (report, sql, export, purge) in analytics/commands/.

Modules are named, not imported: `runtap serve` loads only serve's module, so the relay process never
maps DuckDB or the report code the analytics commands import (issue 16: the sidecar's RSS)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Final

# name -> module, relative to this package; in the order `runtap --help` lists them
COMMANDS: Final[dict[str, str]] = {
    "serve": ".serve", "demo": ".demo", "report": "...analytics.commands.report",
    "sql": "...analytics.commands.sql", "export": "...analytics.commands.export",
    "purge": "...analytics.commands.purge", "dashboards": ".dashboards",
}


def load(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name], __package__)
