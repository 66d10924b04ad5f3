from __future__ import annotations

import pytest
from runtap.proxy import routes

CASES = [
    ("POST", "/v1/threads/thread_1/runs", routes.RUNS_CREATE),
    ("POST", "/v1/threads/runs", routes.THREADS_CREATE_AND_RUN),
    ("GET", "/v1/threads/thread_1/runs", routes.RUNS_LIST),
    ("GET", "/v1/threads/thread_1/runs/run_1", routes.RUNS_RETRIEVE),
    ("POST", "/v1/threads/thread_1/runs/run_1", routes.RUNS_UPDATE),
    ("POST", "/v1/threads/thread_1/runs/run_1/submit_tool_outputs", routes.RUNS_SUBMIT_TOOL_OUTPUTS),
    ("POST", "/v1/threads/thread_1/runs/run_1/cancel", routes.RUNS_CANCEL),
    ("GET", "/v1/threads/thread_1/runs/run_1/steps", routes.STEPS_LIST),
    ("GET", "/v1/threads/thread_1/runs/run_1/steps/step_1", routes.STEPS_RETRIEVE),
]


@pytest.mark.parametrize("prefix", ["/v1", "/openai", "/api/v1", "/deep/er/prefix/v1", ""])
@pytest.mark.parametrize(("method", "path", "operation"), CASES)
def test_the_nine_runs_operations_under_any_prefix(prefix: str, method: str, path: str,
                                                    operation: str) -> None:
    assert routes.classify(method, prefix + path.removeprefix("/v1")) == operation


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/threads"),
    ("GET", "/v1/threads/thread_1"),
    ("POST", "/v1/threads/thread_1/messages"),
    ("GET", "/v1/threads/thread_1/messages"),
    ("DELETE", "/v1/threads/thread_1/runs/run_1"),
    ("GET", "/v1/threads/runs"),
    ("POST", "/v1/threads/thread_1/runs/run_1/steps"),
    ("GET", "/v1/threads/thread_1/runs/run_1/cancel"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/assistants"),
    ("GET", "/v1/runs"),
    ("GET", "/v1/threads/thread_1/runs/run_1/steps/step_1/extra"),
])
def test_other_calls_are_not_runs_operations(method: str, path: str) -> None:
    assert routes.classify(method, path) is None


def test_spec_paths_cover_exactly_the_nine_operations() -> None:
    """Every Runs path in the official spec maps to an operation (the spec's paths carry no /v1)."""
    import re

    from tests import spec_files

    spec = spec_files.v2_spec()
    paths = re.findall(r"^  (/threads[^:]*):$", spec.read_text(), flags=re.M)
    found = set()
    for p in paths:
        concrete = re.sub(r"\{[^}]+\}", "x_1", p)
        for method in ("GET", "POST"):
            op = routes.classify(method, "/v1" + concrete)
            if op:
                found.add(op)
    assert found == set(routes.OPERATIONS)
