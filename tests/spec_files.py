"""Where the tests find the OpenAI OpenAPI description: the vendored copy, or RUNTAP_OPENAPI_DIR."""

from __future__ import annotations

import os
from pathlib import Path

VENDORED = Path(__file__).resolve().parent / "data" / "openai-openapi"


def spec_dir() -> Path:
    return Path(os.environ.get("RUNTAP_OPENAPI_DIR") or VENDORED)


def v2_spec() -> Path:
    return spec_dir() / "openapi.yaml"


def v1_spec() -> Path:
    return spec_dir() / "openapi-af97d0a6f1fcc5dcbb6e8135b3b8a7b8e22b7d0a-assistants-v1.yaml"
