"""Azure AI Foundry's Responses API: the OpenAI routes under a project
(`/api/projects/{project}/openai/v1/responses`), where a request may name a stored agent.

The agent is an `AgentReference` (`{"type": "agent_reference", "name": ..., "version": ...}`) in the
body's `agent_reference` (`agent` in the first previews), and the response carries the one it ran as
under `agent_reference`, as Microsoft's Azure AI Responses protocol models have it
(azure-ai-agentserver-responses). The simulator does not run the agent's own definition: the request
still names its model.
"""

from __future__ import annotations

from typing import Final

from .errors import Json, bad

AGENT_FIELDS: Final = ("agent_reference", "agent")
PREFIX: Final = "/api/projects/{project}/openai/v1"


def agent_of(body: Json) -> Json | None:
    """The agent reference a create request names (as the response will carry it), or None."""
    for key in AGENT_FIELDS:
        ref = body.get(key)
        if ref is None:
            continue
        if not isinstance(ref, dict) or ref.get("type") != "agent_reference" or not isinstance(ref.get("name"), str):
            raise bad(f"Invalid value for '{key}': expected {{'type': 'agent_reference', 'name': ...}}.",
                      param=key, code="invalid_value")
        version = ref.get("version")
        if version is not None and not isinstance(version, str):
            raise bad(f"Invalid type for '{key}.version': expected a string.", param=f"{key}.version",
                      code="invalid_type")
        out: Json = {"type": "agent_reference", "name": ref["name"]}
        if version is not None:
            out["version"] = version
        return out
    return None
