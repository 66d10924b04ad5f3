"""`runtap` command line: one subcommand per module in proxy/commands/."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..settings.config import ConfigError
from .commands import COMMANDS, load

DESCRIPTION = """\
runtap: an observability sidecar for OpenAI-style agent work: Assistants Runs and the Responses API.

Point your OpenAI client's base_url at runtap; it forwards every call and stream to the upstream
unchanged and captures every run, run step and response into DuckDB, with Prometheus metrics,
OpenTelemetry traces and SQL cost reports.
"""

EPILOG = """\
examples:
  runtap demo                                   # offline: simulated upstream + proxy + SDK workload
  runtap serve --upstream https://api.openai.com --listen 127.0.0.1:8080 --db runtap.duckdb
  # then in the app: OpenAI(base_url="http://127.0.0.1:8080/v1")

Every flag of `serve` has a RUNTAP_* environment twin; `runtap COMMAND --help` lists them.
"""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command's parser, or only `command`'s (a known name): the others are not imported."""
    parser = argparse.ArgumentParser(prog="runtap", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS if command not in COMMANDS else (command,):
        load(name).add_parser(sub)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    # `runtap` itself has no option but -h, so a command line that names one starts with it; anything
    # else (`runtap -h serve`: the top-level help) gets every command's parser.
    return argv[0] if argv and not argv[0].startswith("-") else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_command(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        rc: int = args.run(args)
    except ConfigError as exc:
        print(f"runtap: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
