"""One settings source: every command that takes a setting (serve, demo, report, sql, export, purge)
declares it through settings/config.py's SETTINGS, so the flag, its RUNTAP_* twin, default and help are
the same everywhere."""

from __future__ import annotations

import argparse
import ast
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from runtap.proxy.__main__ import build_parser, main
from runtap.settings.config import SETTINGS

BY_FLAG = {s.flag: s for s in SETTINGS}
# The demo's --db is its own file on purpose (issue 11: ./runtap-demo.duckdb, RUNTAP_DB ignored), so a
# demo never writes into a real capture: not the sidecar's setting under the same name.
OWN_MEANING = {("demo", "--db")}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_setting_flag_of_every_command_comes_from_settings() -> None:
    seen: dict[str, set[str]] = {}
    for command, parser in subcommands().items():
        for action in parser._actions:
            for flag in action.option_strings:
                s = BY_FLAG.get(flag)
                if s is None or (command, flag) in OWN_MEANING:
                    continue
                seen.setdefault(flag, set()).add(command)
                assert action.dest == s.name, (command, flag)
                assert action.help is not None and action.help.startswith(s.help.replace("%", "%%")), (command, flag)
                assert f"[env {s.env}; default" in action.help, (command, flag)
    assert seen["--db"] == {"serve", "report", "sql", "export", "purge"}
    assert {"export"} <= seen["--instance"] and {"purge"} <= seen["--spool"]


def test_analytics_commands_read_the_same_variables_as_serve(tmp_path: object, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    missing = os.path.join(str(tmp_path), "from-env.duckdb")
    monkeypatch.setenv("RUNTAP_DB", missing)
    assert main(["purge", "--before", "30d"]) == 1
    assert f"no capture database at {missing}" in capsys.readouterr().err
    monkeypatch.setenv("RUNTAP_DB", "")  # empty: the default file, which does not exist here either
    monkeypatch.chdir(str(tmp_path))
    assert main(["purge", "--before", "30d"]) == 1
    assert "no capture database at ./runtap.duckdb" in capsys.readouterr().err


ROOT = Path(__file__).resolve().parents[1]
# Where the spool default may be spelled out: its one definition (spool_path_for and --spool's help),
# and the demo's list of side files `runtap demo --fresh` deletes beside its database.
SPOOL_DEFAULT_AT = {"settings/config.py", "proxy/commands/demo_db.py"}


def spool_default_spelled(path: Path) -> bool:
    return any(isinstance(n, ast.Constant) and isinstance(n.value, str) and ".spool.jsonl" in n.value
               for n in ast.walk(ast.parse(path.read_text())))


def test_the_spool_default_is_written_once() -> None:
    # the writer and purge ask settings/config.py's spool_path_for rather than repeating "<db>.spool.jsonl"
    spelled = {p.relative_to(ROOT).as_posix() for folder in ("settings", "proxy", "analytics", "demo")
               for p in (ROOT / folder).rglob("*.py") if spool_default_spelled(p)}
    assert spelled <= SPOOL_DEFAULT_AT


def test_writer_and_purge_default_to_the_spool_serve_uses(tmp_path: Path) -> None:
    from runtap.analytics.commands.purge import purge
    from runtap.analytics.ingest.store import Store
    from runtap.analytics.ingest.writer import WriterConfig
    from runtap.settings.config import settings_for

    db = str(tmp_path / "c.duckdb")
    spool = Path(settings_for(db=db).spool_path)
    assert WriterConfig(db_path=db).spool == str(spool)
    Store(db).close()
    spool.write_text("not json\n")
    purge(db, datetime.now(UTC))  # replays serve's spool first: the unreadable line is set aside
    assert spool.read_text() == ""
