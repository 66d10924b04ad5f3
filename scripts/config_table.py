"""Rewrite the configuration table in docs/configuration.md from settings/config.py SETTINGS (the one source).

    .venv/bin/python scripts/config_table.py          # rewrite docs/configuration.md in place
    .venv/bin/python scripts/config_table.py --check  # exit 1 if docs/configuration.md is stale
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtap.settings.config import SETTINGS  # noqa: E402

PAGE = ROOT / "docs" / "configuration.md"
START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"


def table() -> str:
    rows = ["| flag | env | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        rows.append(f"| `{s.flag}` | `{s.env}` | `{s.default or '—'}` | {s.help} |")
    return "\n".join(rows)


def main() -> int:
    path = PAGE
    text = path.read_text()
    new = re.sub(rf"{re.escape(START)}.*?{re.escape(END)}", f"{START}\n{table()}\n{END}", text, flags=re.S)
    if "--check" in sys.argv:
        return 0 if new == text else 1
    path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
