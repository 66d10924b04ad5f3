"""Which API, and which version of it, a request asked for: the provider and the version, kept apart.

OpenAI says its Assistants version in the `OpenAI-Beta: assistants=v2` header. Azure (AI Foundry
agents under `/api/projects/P/...`, Azure OpenAI resources under `/openai/...`) says it in the
`api-version` query parameter, and its `v1` serves v2-shaped objects: a bare "v1" column could not
tell the two apart, so the provider is recorded beside the version, which is kept verbatim.

Rules, in order: an `api-version` query parameter makes the request `azure` with that value; else an
`assistants=` entry in `OpenAI-Beta` makes it `openai` with that value; else both are None (a
compatible server, or a call that named no version).
"""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote_plus

OPENAI: Final = "openai"
AZURE: Final = "azure"
# A version is a short token (v1, 2025-05-15-preview); anything longer or odder is not stored, so a
# hostile query cannot put arbitrary text into every row.
MAX_VERSION_CHARS: Final = 64
_ALLOWED: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")


def beta_version(beta: str | None) -> str | None:
    """The `assistants=` value of an OpenAI-Beta header ("v2"), None when absent."""
    if not beta:
        return None
    for part in beta.split(","):
        name, _, value = part.strip().partition("=")
        if name == "assistants":
            return value or None
    return None


def query_version(query: str) -> str | None:
    """The `api-version` value of a raw (still percent-encoded) query string; "" when present but
    empty or unusable, None when absent."""
    if "api-version" not in query:
        return None
    for pair in query.split("&"):
        name, eq, value = pair.partition("=")
        if name != "api-version" or not eq:
            continue
        if "%" in value or "+" in value:
            value = unquote_plus(value)
        if len(value) <= MAX_VERSION_CHARS and _ALLOWED.issuperset(value):
            return value
        return ""
    return None


def requested(beta: str | None, raw_path: str) -> tuple[str | None, str | None]:
    """(provider, version) for a request's OpenAI-Beta header and raw path (query included)."""
    _, sep, query = raw_path.partition("?")
    if sep:
        version = query_version(query)
        if version is not None:
            return AZURE, version or None
    version = beta_version(beta)
    return (OPENAI, version) if version is not None else (None, None)
