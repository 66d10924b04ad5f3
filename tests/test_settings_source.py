"""One settings source: every command that takes a setting (serve, demo, report, sql, export, purge)
declares it through settings/config.py's SETTINGS, so the flag, its RUNTAP_* twin, default and help are
the same everywhere."""

from __future__ import annotations

import argparse
import os

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
