"""pytest plugin: a test fails when proxy/ or analytics/ code blocks an event loop for >= 0.25 s.

Registered from tests/conftest.py with `pytest_plugins = ["tests.conftest_loopguard"]` (or
`-p tests.conftest_loopguard`). `RUNTAP_LOOPGUARD_S` changes the threshold (0 turns the guard off);
`@pytest.mark.allow_loop_blocking` exempts one test. See tests/loopguard.py for how blame is assigned.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.loopguard import DEFAULT_THRESHOLD_S, LoopGuard

_GUARD = pytest.StashKey[LoopGuard | None]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_loop_blocking: the loop guard does not fail this test")
    threshold = float(os.environ.get("RUNTAP_LOOPGUARD_S", DEFAULT_THRESHOLD_S))
    guard = LoopGuard(threshold) if threshold > 0 else None
    if guard is not None:
        guard.install()
    config.stash[_GUARD] = guard


def pytest_unconfigure(config: pytest.Config) -> None:
    guard = config.stash.get(_GUARD, None)
    if guard is not None:
        guard.uninstall()


@pytest.fixture(autouse=True)
def loop_guard(request: pytest.FixtureRequest) -> Iterator[LoopGuard | None]:
    guard = request.config.stash.get(_GUARD, None)
    if guard is None:
        yield None
        return
    guard.take()  # blocks from before this test (another test's teardown) are not its fault
    yield guard
    blocks = guard.take()
    if blocks and request.node.get_closest_marker("allow_loop_blocking") is None:
        pytest.fail("blocking call on the event loop:\n" + "\n".join(b.describe() for b in blocks),
                    pytrace=False)
