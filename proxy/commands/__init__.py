"""Subcommands. Each module has `add_parser(subparsers)`, which registers a parser whose `run`
default is the function `run(args) -> int` that carries the command out."""

from __future__ import annotations

from types import ModuleType

from . import dashboards, demo, export, purge, report, serve, sql

COMMANDS: tuple[ModuleType, ...] = (serve, demo, report, sql, export, purge, dashboards)
