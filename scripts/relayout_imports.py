"""Port code written against the old layout (top-level `proxy`/`analytics` imports) to runtap.*.

    python scripts/relayout_imports.py          # git mv stragglers, rewrite imports, print what changed

For merging a branch that predates the move: after `git merge` (conflicts resolved), run this once.
Modules such a branch added at old-layout paths are moved where they belong (FILE_MOVES, with
`git mv`); then imports inside
proxy/, analytics/ and demo/ become relative; tests/, bench/ and scripts/ import runtap.*; modules
that moved (MOVES) follow. Idempotent. Paths in strings (`-m proxy`, file names) are left to review.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MOVES = {
    "proxy.records": "runtap.analytics.ingest.records",
    "proxy.sse": "runtap.analytics.ingest.sse",
    "proxy.capture": "runtap.analytics.ingest.decode",
    "proxy.writer": "runtap.analytics.ingest.writer",
    "analytics.merge": "runtap.analytics.ingest.merge",
    "analytics.store": "runtap.analytics.ingest.store",
    "analytics.spool": "runtap.analytics.ingest.spool",
    "proxy.metrics": "runtap.proxy.addons.metrics",
    "proxy.tracing": "runtap.proxy.addons.tracing",
    "proxy.run_metrics": "runtap.proxy.addons.run_metrics",
    "proxy.run_spans": "runtap.proxy.addons.run_spans",
    "proxy.otlp_encode": "runtap.proxy.addons.otlp_encode",
    "proxy.otlp_export": "runtap.proxy.addons.otlp_export",
    "proxy.sim": "runtap.demo.sim",
    "proxy.workload": "runtap.demo.workload",
}

# Modules other branches added in the old layout, and where they belong in this one (the direction
# test, tests/test_layout.py, names any module left on the wrong side).
LATE_MOVES = {
    "proxy.hold": "runtap.analytics.ingest.hold",
    "proxy.bounds": "runtap.analytics.ingest.bounds",
    "analytics.isolate": "runtap.analytics.ingest.isolate",
    "analytics.response_merge": "runtap.analytics.ingest.response_merge",
    "analytics.response_tables": "runtap.analytics.ingest.response_tables",
    "proxy.response_capture": "runtap.analytics.ingest.response_capture",
    "proxy.response_metrics": "runtap.proxy.addons.response_metrics",
    "proxy.response_spans": "runtap.proxy.addons.response_spans",
    "proxy.responses_workload": "runtap.demo.responses_workload",
}
MOVES.update(LATE_MOVES)


def path_of(module: str) -> Path:
    parts = module.removeprefix("runtap.").split(".")
    return ROOT.joinpath(*parts[:-1], parts[-1] + ".py")


def move_stragglers() -> None:
    for old, new in LATE_MOVES.items():
        src, dst = path_of(old), path_of(new)
        if src.exists() and not dst.exists():
            subprocess.run(["git", "mv", str(src), str(dst)], cwd=ROOT, check=True)  # noqa: S603, S607
            print("moved", src.relative_to(ROOT), "->", dst.relative_to(ROOT))


def new_name(old: str) -> str:
    for k in sorted(MOVES, key=len, reverse=True):
        if old == k or old.startswith(k + "."):
            return MOVES[k] + old[len(k):]
    return "runtap." + old

def module_of(path: Path) -> str | None:
    rel = path.relative_to(ROOT)
    if rel.parts[0] not in ("proxy", "analytics", "demo"):
        return None
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
        pkg = parts
    else:
        pkg = parts[:-1]
    return ".".join(["runtap", *pkg])

def relative(pkg: str, target: str) -> str:
    p, t = pkg.split("."), target.split(".")
    n = 0
    while n < min(len(p), len(t)) and p[n] == t[n]:
        n += 1
    dots = "." * (len(p) - n + 1)
    return dots + ".".join(t[n:])

# `from proxy.x import` inside a string (code a test runs in a subprocess)
STRING_IMPORT = re.compile(r"(?<=[\"'; ])from ((?:proxy|analytics)(?:\.\w+)+) import")
PAT = re.compile(r"^(\s*)from (proxy|analytics)((?:\.\w+)*) import (.+)$")
IMP = re.compile(r"^(\s*)import (proxy|analytics)((?:\.\w+)+) as (\w+)(.*)$")

def rewrite(path: Path) -> None:  # noqa: C901 - one pass over the lines
    pkg = module_of(path)
    text = path.read_text()
    out = []
    for line in text.split("\n"):
        m = PAT.match(line)
        if m:
            ind, top, rest, names = m.groups()
            old = top + rest
            if not rest and not names.startswith("("):
                # from proxy import a, b  -> per-name modules
                items = [x.strip() for x in names.split("#")[0].split(",")]
                comment = "  #" + names.split("#", 1)[1] if "#" in names else ""
                for item in items:
                    name, _, alias = item.partition(" as ")
                    tgt = new_name(f"{top}.{name}")
                    mod, _, leaf = tgt.rpartition(".")
                    src = relative(pkg, mod) if pkg else mod
                    out.append(f"{ind}from {src} import {leaf}{' as ' + alias if alias else ''}{comment}")
                continue
            tgt = new_name(old)
            src = relative(pkg, tgt) if pkg else tgt
            out.append(f"{ind}from {src} import {names}")
            continue
        m = IMP.match(line)
        if m:
            ind, top, rest, alias, tail = m.groups()
            tgt = new_name(top + rest)
            if pkg:
                mod, _, leaf = tgt.rpartition(".")
                out.append(f"{ind}from {relative(pkg, mod)} import {leaf} as {alias}{tail}")
            else:
                out.append(f"{ind}import {tgt} as {alias}{tail}")
            continue
        out.append(line)
    new = "\n".join(out).replace('resources.files("analytics")', 'resources.files("runtap.analytics")')
    if pkg is None:  # tests, bench, scripts: commands and code they run in subprocesses
        new = new.replace('"-m", "proxy.sim"', '"-m", "runtap.demo.sim"')
        new = new.replace('"-m", "proxy"', '"-m", "runtap.proxy"')
        new = STRING_IMPORT.sub(lambda m: f"from {new_name(m.group(1))} import", new)
    if new != text:
        path.write_text(new)
        print("rewrote", path.relative_to(ROOT))

def main() -> None:
    move_stragglers()
    for d in ("proxy", "analytics", "demo", "tests", "bench", "dashboards", "scripts"):
        for p in sorted((ROOT / d).rglob("*.py")):
            if p.name != "relayout_imports.py":
                rewrite(p)


if __name__ == "__main__":
    main()
