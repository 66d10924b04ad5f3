"""The front door and the documentation site: the README stays short and starts with the two commands,
its links resolve, and docs/ builds with `mkdocs build --strict` (a dead link or anchor fails)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LINK = re.compile(r"(!?)\[[^\]]*\]\(([^)\s]+)\)")


def readme_links() -> list[tuple[bool, str]]:
    text = re.sub(r"```.*?```", "", README.read_text(encoding="utf-8"), flags=re.S)
    return [(bang == "!", target) for bang, target in LINK.findall(text)]


def test_readme_is_a_front_door_that_starts_with_the_two_commands() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail to docs/"
    assert lines[0] == "# runtap" and lines[2] == "```bash"
    assert lines[3].startswith("bash scripts/setup.sh && .venv/bin/runtap demo")
    assert lines[4].startswith("bash scripts/test.sh")
    # PyPI shows this file too: the pip way comes right after the clone commands
    assert "pip install runtap" in "\n".join(lines[5:10])
    assert "pip install 'runtap[fast,s3]'" in "\n".join(lines[5:10])


def test_readme_has_no_relative_images_and_every_relative_link_resolves() -> None:
    links = readme_links()
    assert links
    # PyPI renders the README as the long description, where a relative image is a broken picture
    assert [t for image, t in links if image and not t.startswith("https://")] == []
    for _, target in links:
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#")[0]
        assert (ROOT / path).exists(), f"README links to {target}, which does not exist"


def test_the_configuration_page_is_generated_from_the_settings() -> None:
    proc = subprocess.run([sys.executable, "scripts/config_table.py", "--check"], cwd=ROOT, timeout=60)
    assert proc.returncode == 0, "docs/configuration.md is stale: .venv/bin/python scripts/config_table.py"


def test_every_docs_page_is_in_the_site_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    missing = [p for p in pages if not re.search(rf":\s*{re.escape(p)}\s*$", nav, re.M)]
    assert missing == [], f"add a line under nav: in mkdocs.yml for each of {missing}"


def test_the_docs_site_builds_with_strict_link_checking(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner about MkDocs 2.0, not our site
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "WARNING" not in proc.stderr, proc.stderr[-4000:]
    built = {p.relative_to(tmp_path / "site").as_posix() for p in (tmp_path / "site").rglob("index.html")}
    for page in (ROOT / "docs").glob("*.md"):
        expected = "index.html" if page.stem == "index" else f"{page.stem}/index.html"
        assert expected in built, f"{page.name} did not become a page"
