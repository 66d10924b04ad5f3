"""The package layout: one import root, and dependencies that run one way.

The relay (runtap.proxy: forwarding, errors, routes, admin, serve) calls a tap; the addons behind it
(runtap.proxy.addons) use the ingest path; the ingest path, the reports and the analytics commands
(runtap.analytics) import nothing from the relay; the settings every command shares (runtap.settings)
import nothing of runtap at all; and the sidecar's runtime imports nothing from the demo.

    runtap.proxy -> runtap.analytics -> runtap.settings;   runtap.proxy -> runtap.settings
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"settings": "runtap.settings", "proxy": "runtap.proxy", "analytics": "runtap.analytics",
           "demo": "runtap.demo", "dashboards": "runtap.dashboards"}

# (importer prefix, forbidden prefix, why)
FORBIDDEN = [
    *[("runtap.settings", other, "settings are the bottom layer: every command reads them, they import no command")
      for other in ("runtap.proxy", "runtap.analytics", "runtap.demo", "runtap.dashboards")],
    ("runtap.analytics", "runtap.proxy", "analytics (ingest, store, reports) never imports the relay"),
    ("runtap.analytics", "runtap.demo", "analytics never imports the demo"),
    ("runtap.proxy", "runtap.demo", "the sidecar's runtime never imports the demo (runtap[demo] is optional)"),
    ("runtap.dashboards", "runtap.", "dashboards are data"),
] + [
    (core, forbidden, "the relay calls the tap; it knows no addon and nothing of capture")
    for core in ("runtap.proxy.forward", "runtap.proxy.tap", "runtap.proxy.errors", "runtap.proxy.routes")
    for forbidden in ("runtap.proxy.addons", "runtap.analytics")
] + [
    # admin and serve are relay too: they may read reports and prices, but reach the addons and the
    # ingest path only through the runtime app.py composes
    (core, forbidden, "admin and serve know no addon and no ingest module; app.py composes them")
    for core in ("runtap.proxy.admin", "runtap.proxy.serve")
    for forbidden in ("runtap.proxy.addons", "runtap.analytics.ingest")
]
# (importer, target prefix) exempt from FORBIDDEN: the demo command reaches into runtap.demo lazily,
# with an install hint; the relay builds the Exchange record (a plain dataclass) its flows carry and
# tags it with the operation names the ingest path decodes by (constants).
ALLOWED = {
    ("runtap.proxy.commands.demo", "runtap.demo"),
    ("runtap.proxy.commands.demo_responses", "runtap.demo"),  # for type checking only
    ("runtap.proxy.forward", "runtap.analytics.ingest.records"),
    ("runtap.proxy.routes", "runtap.analytics.ingest.operations"),  # the operation names, declared once
    ("runtap.proxy.tap", "runtap.analytics.ingest.records"),
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [FOLDERS[rel.parts[0]], *rel.parts[1:]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level \
                else node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def sources() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def violations(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for importer, targets in sorted(edges.items()):
        for target in sorted(targets):
            for src, dst, why in FORBIDDEN:
                if importer.startswith(src) and target.startswith(dst) and not target.startswith(importer) \
                        and not any(importer == i and target.startswith(t) for i, t in ALLOWED):
                    bad.append(f"{importer} imports {target}: {why}")
    return bad


def test_dependencies_run_one_way() -> None:
    edges = {module_name(p): imports_of(p) for p in sources()}
    assert violations(edges) == []


def test_the_direction_check_catches_a_wrong_way_import() -> None:
    # relative imports are resolved, so `from ...proxy import x` in an ingest module is caught too
    edges = {"runtap.analytics.ingest.store": {"runtap.proxy.forward"},
             "runtap.analytics.commands.report": {"runtap.proxy.admin_reports", "runtap.settings.config"},
             "runtap.proxy.forward": {"runtap.demo.sim", "runtap.proxy.addons.metrics",
                                      "runtap.analytics.ingest.records"},
             "runtap.proxy.commands.demo": {"runtap.demo.sim"},
             "runtap.proxy.admin": {"runtap.analytics.prices", "runtap.proxy.addons.metrics"},
             "runtap.settings.config": {"runtap.proxy.workers", "runtap.settings"}}
    assert violations(edges) == [
        "runtap.analytics.commands.report imports runtap.proxy.admin_reports: "
        "analytics (ingest, store, reports) never imports the relay",
        "runtap.analytics.ingest.store imports runtap.proxy.forward: "
        "analytics (ingest, store, reports) never imports the relay",
        "runtap.proxy.admin imports runtap.proxy.addons.metrics: "
        "admin and serve know no addon and no ingest module; app.py composes them",
        "runtap.proxy.forward imports runtap.demo.sim: "
        "the sidecar's runtime never imports the demo (runtap[demo] is optional)",
        "runtap.proxy.forward imports runtap.proxy.addons.metrics: "
        "the relay calls the tap; it knows no addon and nothing of capture",
        "runtap.settings.config imports runtap.proxy.workers: "
        "settings are the bottom layer: every command reads them, they import no command",
    ]


def test_code_uses_relative_imports_inside_the_package() -> None:
    absolute = [f"{p.relative_to(ROOT)}: {name}" for p in sources()
                for node in ast.walk(ast.parse(p.read_text()))
                if isinstance(node, ast.ImportFrom | ast.Import)
                for name in ([node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names])
                if getattr(node, "level", 0) == 0 and name.split(".")[0] in ("runtap", *FOLDERS)]
    assert absolute == []


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_source_folders_are_not_importable_under_their_own_names(folder: str) -> None:
    with pytest.raises(ModuleNotFoundError, match=f"import runtap.{folder}"):
        importlib.import_module(folder)
    assert importlib.import_module(FOLDERS[folder]).__name__ == FOLDERS[folder]


def test_the_demo_says_what_to_install_when_its_extra_is_missing(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    from runtap.proxy.__main__ import main

    monkeypatch.setitem(sys.modules, "openai", None)  # as in an install without runtap[demo]
    assert main(["demo", "--once"]) == 2
    assert "pip install 'runtap[demo]'" in capsys.readouterr().err
