"""Taste, checked: no module over 600 lines, no function over 80 (the brief's limits)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("settings", "proxy", "analytics", "demo", "dashboards")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def sources() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def long_functions(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [f"{path.relative_to(root)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


def test_no_module_over_600_lines() -> None:
    big = [f"{p.relative_to(ROOT)} ({n} lines)" for p in sources()
           if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    assert big == []


def test_no_function_over_80_lines() -> None:
    assert [f for p in sources() for f in long_functions(p)] == []


def test_the_check_sees_a_long_function(tmp_path: Path) -> None:
    body = "".join(f"        x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "m.py").write_text(f"class C:\n    async def f(self) -> None:\n{body}")
    assert long_functions(tmp_path / "m.py", tmp_path) == ["m.py:2 f (81 lines)"]
