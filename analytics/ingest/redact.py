"""Credentials an API object can echo, removed before anything is stored (no key or token at rest,
whatever --store-prompts says). Their values become `<redacted>`; header names stay, so a reader still
sees what was sent.

- A response carries the `tools` of its request. An MCP tool there holds an OAuth access token
  (`authorization`) and `headers` for the MCP server, typically another credential (OpenAPI
  description: MCPTool).
- An Azure AI Foundry agents run carries its `tool_resources`, whose `mcp` entries hold the MCP
  server's `headers` (Azure REST spec, Azure.AI.Agents MCPToolResource, api-version 2025-05-15-preview).
"""

from __future__ import annotations

from typing import Any, Final

REDACTED: Final = "<redacted>"


def _tool(tool: Any) -> Any:
    if type(tool) is not dict or ("authorization" not in tool and "headers" not in tool):
        return tool
    out = dict(tool)
    if out.get("authorization") is not None:
        out["authorization"] = REDACTED
    headers = out.get("headers")
    if type(headers) is dict:
        out["headers"] = {name: REDACTED for name in headers}
    elif headers is not None:
        out["headers"] = REDACTED
    return out


def redact_secrets(obj: dict[str, Any]) -> dict[str, Any]:
    """A response object, or a copy of it whose tools carry no credential."""
    tools = obj.get("tools")
    if type(tools) is not list or not any(type(t) is dict and ("authorization" in t or "headers" in t)
                                          for t in tools):
        return obj
    return dict(obj, tools=[_tool(t) for t in tools])


def redact_run_secrets(obj: dict[str, Any]) -> dict[str, Any]:
    """A run object, or a copy of it whose MCP tool resources carry no header value."""
    resources = obj.get("tool_resources")
    mcp = resources.get("mcp") if type(resources) is dict else None
    if type(mcp) is not list or not any(type(m) is dict and "headers" in m for m in mcp):
        return obj
    return dict(obj, tool_resources=dict(resources, mcp=[_tool(m) for m in mcp]))  # type: ignore[arg-type]
