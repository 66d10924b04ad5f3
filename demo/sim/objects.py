"""Builders for Assistants objects, and how one stored object renders under `assistants=v1` or `v2`.

Objects are stored as one superset dict (v1 and v2 fields both present); `render` drops what the
requested API version does not have, so a v1 client never sees `tool_resources` and a v2 client never
sees `file_ids`.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Literal

from .errors import Json, bad, invalid_type

Version = Literal["v1", "v2"]

DEFAULT_EXPIRY_S = 600  # the service expires a run that waits on tool outputs for 10 minutes

_V2_ONLY: dict[str, frozenset[str]] = {
    "assistant": frozenset({"tool_resources", "temperature", "top_p", "response_format"}),
    "thread": frozenset({"tool_resources"}),
    "thread.message": frozenset({"attachments"}),
    "thread.run": frozenset({"parallel_tool_calls"}),
}
_V1_ONLY: dict[str, frozenset[str]] = {
    "assistant": frozenset({"file_ids"}),
    "thread.message": frozenset({"file_ids"}),
    "thread.run": frozenset({"file_ids"}),
}
_BETA = re.compile(r"assistants=(v\d+)")


def api_version(header: str | None) -> Version:
    """Pick the Assistants API version from `OpenAI-Beta` (e.g. "assistants=v1"); v2 when absent."""
    if header:
        match = _BETA.search(header)
        if match:
            if match.group(1) == "v1":
                return "v1"
            if match.group(1) != "v2":
                raise bad(f"Invalid value for 'OpenAI-Beta' header: '{header}'.", code="invalid_beta")
    return "v2"


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def tokens(text: str) -> int:
    # Roughly 4 characters per token, as OpenAI's own rule of thumb; deterministic is what matters here.
    return (len(text) + 3) // 4


def render(obj: Json, version: Version) -> Json:
    drop = (_V1_ONLY if version == "v2" else _V2_ONLY).get(obj.get("object", ""), frozenset())
    out = {k: v for k, v in obj.items() if k not in drop}
    if "tools" in out:
        out["tools"] = render_tools(out["tools"], version)
    return out


def render_tools(tools: list[Json], version: Version) -> list[Json]:
    # v1's `retrieval` tool became `file_search` in v2; map so either client reads its own names.
    old, new = ("file_search", "retrieval") if version == "v1" else ("retrieval", "file_search")
    return [{"type": new} if tool.get("type") == old else tool for tool in tools]


def check_tools(body: Json, name: str = "tools") -> list[Json] | None:
    tools = body.get(name)
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise invalid_type(name, tools, "an array")
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind not in ("function", "code_interpreter", "file_search", "retrieval"):
            raise bad(
                f"Invalid value: '{kind}'. Supported values are: 'code_interpreter', 'function', "
                "and 'file_search'.",
                param=f"{name}[{i}].type",
                code="invalid_value",
            )
        if kind == "function":
            fn = tool.get("function")
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise bad(
                    f"Missing required parameter: '{name}[{i}].function.name'.",
                    param=f"{name}[{i}].function.name",
                    code="missing_required_parameter",
                )
    return [dict(t) for t in tools]


def text_content(value: str) -> Json:
    return {"type": "text", "text": {"value": value, "annotations": []}}


def message_content(raw: Any, param: str) -> list[Json]:
    if isinstance(raw, str):
        return [text_content(raw)]
    if not isinstance(raw, list) or not raw:
        raise bad(f"Invalid '{param}': expected a string or a non-empty array of content parts.", param=param)
    parts: list[Json] = []
    for i, part in enumerate(raw):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(text_content(part["text"]))
        elif kind in ("image_file", "image_url") and isinstance(part.get(kind), dict):
            parts.append({"type": kind, kind: dict(part[kind])})
        else:
            raise bad(f"Invalid content part at '{param}[{i}]'.", param=f"{param}[{i}]")
    return parts


def message_text(message: Json) -> str:
    return "".join(part["text"]["value"] for part in message.get("content", ()) if part.get("type") == "text")


def assistant(body: Json, now: int) -> Json:
    return {
        "id": new_id("asst"),
        "object": "assistant",
        "created_at": now,
        "name": body.get("name"),
        "description": body.get("description"),
        "model": body["model"],
        "instructions": body.get("instructions"),
        "tools": body.get("tools") or [],
        "tool_resources": body.get("tool_resources") or {},
        "file_ids": list(body.get("file_ids") or []),
        "metadata": body.get("metadata") or {},
        "temperature": body.get("temperature", 1.0),
        "top_p": body.get("top_p", 1.0),
        "response_format": body.get("response_format") or "auto",
    }


def thread(body: Json, now: int) -> Json:
    return {
        "id": new_id("thread"),
        "object": "thread",
        "created_at": now,
        "tool_resources": body.get("tool_resources") or {},
        "metadata": body.get("metadata") or {},
    }


def message(
    thread_id: str,
    role: str,
    content: list[Json],
    now: int,
    *,
    status: str = "completed",
    assistant_id: str | None = None,
    run_id: str | None = None,
    attachments: list[Json] | None = None,
    file_ids: list[str] | None = None,
    metadata: dict[str, str] | None = None,
) -> Json:
    return {
        "id": new_id("msg"),
        "object": "thread.message",
        "created_at": now,
        "thread_id": thread_id,
        "status": status,
        "incomplete_details": None,
        "completed_at": now if status == "completed" else None,
        "incomplete_at": None,
        "role": role,
        "content": content,
        "assistant_id": assistant_id,
        "run_id": run_id,
        "attachments": attachments or [],
        "file_ids": file_ids or [],
        "metadata": metadata or {},
    }


def message_from_request(thread_id: str, body: Any, now: int, param: str = "") -> Json:
    prefix = f"{param}." if param else ""
    if not isinstance(body, dict):
        raise invalid_type(param or "body", body, "an object")
    role = body.get("role")
    if role not in ("user", "assistant"):
        if role is None:
            raise bad(
                f"Missing required parameter: '{prefix}role'.",
                param=f"{prefix}role",
                code="missing_required_parameter",
            )
        raise bad(
            f"Invalid value: '{role}'. Supported values are: 'user' and 'assistant'.",
            param=f"{prefix}role",
            code="invalid_value",
        )
    if body.get("content") is None:
        raise bad(
            f"Missing required parameter: '{prefix}content'.",
            param=f"{prefix}content",
            code="missing_required_parameter",
        )
    meta = body.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise invalid_type(f"{prefix}metadata", meta, "an object")
    return message(
        thread_id,
        role,
        message_content(body["content"], f"{prefix}content"),
        now,
        attachments=body.get("attachments"),
        file_ids=body.get("file_ids"),
        metadata=meta,
    )


def run_step(run: Json, step_type: str, details: Json, now: int) -> Json:
    return {
        "id": new_id("step"),
        "object": "thread.run.step",
        "created_at": now,
        "run_id": run["id"],
        "assistant_id": run["assistant_id"],
        "thread_id": run["thread_id"],
        "type": step_type,
        "status": "in_progress",
        "cancelled_at": None,
        "completed_at": None,
        "expired_at": None,
        "failed_at": None,
        "last_error": None,
        "step_details": details,
        "metadata": {},
        "usage": None,
    }


def usage(prompt: int, completion: int) -> Json:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def deleted(kind: str, id_: str) -> Json:
    return {"id": id_, "object": f"{kind}.deleted", "deleted": True}


def page(data: list[Json], has_more: bool) -> Json:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
