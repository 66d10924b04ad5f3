"""Which provider and version of the Responses API a request called: `responses.api_provider` and
`responses.api_version`, in the shape runs have them (proxy/api_versions.py) so a report can group both
APIs by one `provider:version` key.

The Responses API has no version header: `OpenAI-Beta: assistants=...` versions the Assistants API
only, so an app that sends it on every call says nothing about its responses. What names the version
is, in order:
- an `api-version` query parameter (Azure OpenAI `/openai/responses?api-version=...`, AI Foundry
  `/api/projects/P/openai/responses?api-version=...`): `azure` and that value, as the relay already
  recorded it on the exchange;
- the path's version segment before `responses`: Azure OpenAI's GA `/openai/v1/responses` is `azure`
  and `v1`; any other `.../v1/responses` (OpenAI, and compatible servers that copy its paths) is
  `openai` and `v1`;
- else nothing (NULL, NULL): a server whose paths name no version.
"""

from __future__ import annotations

import re
from typing import Final

AZURE: Final = "azure"
OPENAI: Final = "openai"
_VERSION_SEGMENT: Final = re.compile(r"^v[0-9]{1,3}$")


def response_api_version(path: str, provider: str | None,
                         version: str | None) -> tuple[str | None, str | None]:
    """(provider, version) for a Responses request: its path (no query) and what the relay recorded
    for it (proxy/api_versions.requested)."""
    if provider == AZURE:
        return AZURE, version
    parts = [p for p in path.split("/") if p]
    try:
        i = len(parts) - 1 - parts[::-1].index("responses")
    except ValueError:
        return None, None
    if i >= 1 and _VERSION_SEGMENT.match(parts[i - 1]):
        azure = i >= 2 and parts[i - 2] == "openai"
        return (AZURE if azure else OPENAI), parts[i - 1]
    return None, None
