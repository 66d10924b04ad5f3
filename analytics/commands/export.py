"""`runtap export`: write captured rows to a hive-partitioned Parquet lake (local or s3://)."""

from __future__ import annotations

import argparse
from typing import Any

import duckdb

from ...settings.config import add_arguments
from ..lake import LakeError, check_instance, export
from ..reports import DatabaseLocked
from .common import db_path, err, instance_id

HELP = "export runs, steps, responses, their events and requests to Parquet for a fleet-wide lake"

DESCRIPTION = """\
Write the rows captured since the last export to OUT as hive-partitioned Parquet:

  OUT/table=<runs|run_steps|run_events|requests|responses|response_events>/date=YYYY-MM-DD/instance=<id>/
      part-*.parquet

Idempotent: a row already exported is not written again; a run that changed since (final status,
usage; a response likewise) is written again and readers take its latest version. Point every sidecar at the same OUT (a
shared directory or s3://bucket/prefix) with its own --instance, then:
  runtap report cost --lake 'OUT/**/*.parquet'

s3:// uses the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN / AWS_REGION variables and
AWS_ENDPOINT_URL for S3-compatible stores (MinIO, R2, ...); it needs `pip install 'runtap[s3]'`.
The database must not be held by a running `runtap serve` (DuckDB admits no second process).
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("export", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p, ["db"])
    p.add_argument("--out", metavar="DIR", required=True, help="lake root: a directory or s3://bucket/prefix")
    add_arguments(p, ["instance"])
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    db = db_path(args)
    instance = instance_id(args)
    try:
        check_instance(instance)
        result = export(db, args.out, instance=instance)
    except DatabaseLocked as exc:
        err(f"error: {db} is held by a running `runtap serve` ({exc.detail}); DuckDB lets no other process "
            "open it. Export from a stopped sidecar, or let the sidecar export periodically.")
        return 1
    except LakeError as exc:
        err(f"error: {exc}")
        return 2 if "instance id" in str(exc) else 1
    except (FileNotFoundError, duckdb.Error, OSError) as exc:
        err(f"error: {exc}")
        return 1
    counts = ", ".join(f"{t}={n}" for t, n in result.rows.items())
    print(f"exported {result.total} row(s) to {result.out} as instance {result.instance} "
          f"(export {result.export_id}): {counts}")
    return 0
