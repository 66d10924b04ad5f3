"""What the analytics commands (report, sql, export, purge) share: settings from settings/config.py's one
list, and how they speak to the user."""

from __future__ import annotations

import argparse
import socket
import sys

from ...settings.config import HostPort, resolve_one, spool_path_for


def err(message: str) -> None:
    print(f"runtap: {message}", file=sys.stderr)


def db_path(args: argparse.Namespace) -> str:
    """--db, else RUNTAP_DB, else the default: the same file `runtap serve` captures into."""
    db: str = resolve_one("db", getattr(args, "db", None))  # parse_db: "" is the default file
    return db


def spool_path(args: argparse.Namespace, db: str) -> str:
    return spool_path_for(db, resolve_one("spool", getattr(args, "spool", None)))


def instance_id(args: argparse.Namespace) -> str:
    instance: str = resolve_one("instance", getattr(args, "instance", None))
    return instance or socket.gethostname()


def admin_url() -> str:
    """The admin listener of a sidecar started with the same environment (RUNTAP_ADMIN)."""
    hp: HostPort = resolve_one("admin", None)
    host = f"[{hp.host}]" if ":" in hp.host else hp.host
    return f"http://{host}:{hp.port}"
