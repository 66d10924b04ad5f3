"""The analytics subcommands of `runtap` (report, sql, export, purge): they read the capture database
and the lake, never the relay. Each module has `add_parser(subparsers)`, as proxy/commands/ does."""

from __future__ import annotations

from types import ModuleType

from . import export, purge, report, sql

COMMANDS: tuple[ModuleType, ...] = (report, sql, export, purge)
