"""A clone of runtap needs nothing outside its own tree: no test, script or module reads above the repo root."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# How code reaches above its own tree: a sibling checkout, or a parent of the repo root found by walking up.
ESCAPES = re.compile(r"\.\./shared|/shared/openai-openapi|parents\[[2-9]\]|\.parent\.parent\.parent")
SELF = Path(__file__).name


def _tracked_code() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / f for f in out.splitlines() if f.endswith((".py", ".sh", ".toml", ".cfg", ".ini")) or f == ".ci/run"]


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout (an sdist or an installed copy)")
def test_no_tracked_file_reaches_above_the_repo_root() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in _tracked_code()
        if path.name != SELF and path.exists()
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if ESCAPES.search(line)
    ]
    assert offenders == []


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout (an sdist or an installed copy)")
def test_spec_tests_pass_in_a_clone_with_nothing_beside_it(tmp_path: Path) -> None:
    """The committed tree, cloned into an empty directory, runs the tests that read the OpenAPI description."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    clone = tmp_path / "empty" / "runtap"
    subprocess.run(["git", "clone", "--quiet", "--no-local", str(ROOT), str(clone)], check=True, timeout=120)
    assert sorted(p.name for p in clone.parent.iterdir()) == ["runtap"]
    env = {k: v for k, v in os.environ.items() if k != "RUNTAP_OPENAPI_DIR" and not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(clone)  # the clone's code, not the editable install's
    result = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-header",
            "tests/test_routes.py::test_spec_paths_cover_exactly_the_nine_operations",
            "tests/test_sse.py::test_openai_spec_streams",
        ],
        cwd=clone, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert re.search(r"\b2 passed\b", result.stdout), result.stdout[-2000:]
