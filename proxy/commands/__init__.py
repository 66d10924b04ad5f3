"""Subcommands. Each module has `add_parser(subparsers)`, which registers a parser whose `run`
default is the function `run(args) -> int` that carries the command out. The relay's own commands live
here; the analytics ones (report, sql, export, purge) in analytics/commands/."""

from __future__ import annotations

from types import ModuleType

from ...analytics.commands import export, purge, report, sql
from . import dashboards, demo, serve

COMMANDS: tuple[ModuleType, ...] = (serve, demo, report, sql, export, purge, dashboards)
