"""Which Azure AI Foundry agent a response ran as: `responses.agent_name` and `responses.agent_version`.

OpenAI's Responses API has no agent (its reusable prompt template, `prompt.id`, is the nearest thing).
Azure AI Foundry's does: a request names a stored agent with an `AgentReference`
(`{"type": "agent_reference", "name": ..., "version": ...}`, `version` optional: the latest), and the
response object carries the one it ran as. Microsoft's Azure AI Responses protocol models
(azure-ai-agentserver-responses 2.3, generated from the service's TypeSpec) name the field
`agent_reference` on both the create request ("the agent to use for generating the response") and the
response ("the agent used for this response"); azure-ai-projects 2.x reads it from `extra_body` under the
same name. The first previews and Microsoft's samples for them sent it as `agent`, which is read too:
with the `agent_reference` type it cannot be OpenAI's (whose `agent` tags output items of its
multi-agent beta, never the request or the response).

An agent reference is configuration (a name and a version), not a prompt: it is stored without
--store-prompts, as prompt.id is.
"""

from __future__ import annotations

from typing import Any, Final

FIELDS: Final = ("agent_reference", "agent")
AGENT_REFERENCE: Final = "agent_reference"
# Foundry agent names are at most 63 characters; anything far longer is not a name.
_MAX_LEN: Final = 256


def _short(v: Any) -> str | None:
    if type(v) is int:
        v = str(v)
    return v if type(v) is str and 0 < len(v) <= _MAX_LEN else None


def agent_reference(obj: dict[str, Any]) -> tuple[str | None, str | None]:
    """(name, version) of the agent reference a request body or response object carries, else
    (None, None). A value that is not an agent reference with a name is ignored."""
    for key in FIELDS:
        ref = obj.get(key)
        if type(ref) is dict and ref.get("type") == AGENT_REFERENCE:
            name = _short(ref.get("name"))
            if name is not None:
                return name, _short(ref.get("version"))
    return None, None
