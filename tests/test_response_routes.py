from __future__ import annotations

import re

import pytest
from runtap.proxy import response_routes as rr
from runtap.proxy import routes

CASES = [
    ("POST", "/v1/responses", rr.RESPONSES_CREATE),
    ("GET", "/v1/responses/resp_1", rr.RESPONSES_RETRIEVE),
    ("DELETE", "/v1/responses/resp_1", rr.RESPONSES_DELETE),
    ("POST", "/v1/responses/resp_1/cancel", rr.RESPONSES_CANCEL),
    ("GET", "/v1/responses/resp_1/input_items", rr.RESPONSES_INPUT_ITEMS),
    ("POST", "/v1/conversations", rr.CONVERSATIONS_CREATE),
]


@pytest.mark.parametrize("prefix", ["/v1", "/openai/v1", "/openai", "/api/v1", ""])
@pytest.mark.parametrize(("method", "path", "operation"), CASES)
def test_responses_operations_under_any_prefix(prefix: str, method: str, path: str, operation: str) -> None:
    assert routes.classify(method, prefix + path.removeprefix("/v1")) == operation


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/responses"),
    ("POST", "/v1/responses/resp_1"),
    ("POST", "/v1/responses/input_tokens/extra"),
    ("GET", "/v1/responses/resp_1/cancel"),
    ("POST", "/v1/responses/resp_1/input_items"),
    ("GET", "/v1/conversations"),
    ("GET", "/v1/conversations/conv_1"),
    ("POST", "/v1/conversations/conv_1/items"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
])
def test_other_calls_pass_through_unclassified(method: str, path: str) -> None:
    assert routes.classify(method, path) is None


def test_response_id_from_path() -> None:
    assert rr.response_id("/openai/v1/responses/resp_9/input_items") == "resp_9"
    assert rr.response_id("/v1/responses") is None


def test_spec_paths_give_the_six_operations() -> None:
    """Each Responses path of the official spec maps to its operation and nothing else does."""
    from tests import spec_files

    spec = spec_files.v2_spec().read_text()
    found = set()
    for path in re.findall(r"^  (/(?:responses|conversations)[^:]*):$", spec, flags=re.M):
        block = spec.split(f"\n  {path}:\n", 1)[1].split("\n  /", 1)[0]
        concrete = re.sub(r"\{[^}]+\}", "x_1", path)
        for method in re.findall(r"^    (get|post|delete):$", block, flags=re.M):
            op = routes.classify(method.upper(), "/v1" + concrete)
            if op:
                found.add(op)
    assert found == set(rr.OPERATIONS)
