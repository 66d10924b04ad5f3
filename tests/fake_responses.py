"""A small Responses API upstream for the capture tests, faithful to the spec's shapes (openapi.yaml):
JSON and SSE creates (events numbered by sequence_number, written in uneven chunks), background
responses that advance one status per poll, stream resume with `starting_after`, cancel, delete,
input_items, conversations, function tools, reasoning and cached tokens, `incomplete` by
max_output_tokens, `failed`, and 4xx/5xx errors. Bodies of 256 bytes or more are gzipped for clients
that accept it, as the real API does. Every answer carries an x-request-id.

Until the simulator serves the Responses API (proxy/sim) this is what the tests drive; it keeps no
wall-clock behaviour, so nothing here needs a sleep.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import random
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests import response_factory as rf

FAIL_MODEL = "fail-model"
BOOM_MODEL = "boom-model"  # answers 500
MISSING_MODEL = "missing-model"  # answers 404


@dataclass
class _Stored:
    final: dict[str, Any]
    status: str
    events: list[tuple[str, dict[str, Any]]]
    input_items: list[dict[str, Any]] = field(default_factory=list)


class FakeResponses:
    def __init__(self, *, seed: int = 7) -> None:
        self._ids = itertools.count(1)
        self._rand = random.Random(seed)
        self.responses: dict[str, _Stored] = {}
        self.conversations: dict[str, list[str]] = {}
        self.created = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/responses", self._create)
        app.router.add_get("/v1/responses/{rid}", self._retrieve)
        app.router.add_delete("/v1/responses/{rid}", self._delete)
        app.router.add_post("/v1/responses/{rid}/cancel", self._cancel)
        app.router.add_get("/v1/responses/{rid}/input_items", self._input_items)
        app.router.add_post("/v1/conversations", self._conversation)
        return app

    # --- helpers -----------------------------------------------------------------------------------

    def _rid(self) -> str:
        return f"req_{next(self._ids):06d}"

    def _json(self, request: web.Request, value: Any, status: int = 200) -> web.Response:
        body = json.dumps(value).encode()
        headers = {"x-request-id": self._rid(), "Content-Type": "application/json"}
        if len(body) >= 256 and "gzip" in request.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, status=status, headers=headers)

    def _error(self, request: web.Request, status: int, code: str, message: str) -> web.Response:
        return self._json(request, {"error": {"message": message, "type": "invalid_request_error",
                                              "param": None, "code": code}}, status)

    async def _sse(self, request: web.Request, events: list[tuple[str, dict[str, Any]]]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "x-request-id": self._rid(), "Cache-Control": "no-cache"})
        await resp.prepare(request)
        data = rf.stream_bytes(events)
        pos = 0
        try:
            while pos < len(data):  # uneven chunks: an event, a line, a UTF-8 character may straddle two
                n = self._rand.choice((1, 3, 17, 64, 200, 777))
                await resp.write(data[pos:pos + n])
                await asyncio.sleep(0)
                pos += n
            await resp.write_eof()
        except ConnectionResetError:  # the client dropped the stream (to resume it later)
            pass
        return resp

    def _usage(self, body: dict[str, Any], text: str) -> dict[str, Any]:
        model = str(body.get("model"))
        prompt = 30 + len(json.dumps(body.get("input"))) // 4
        cached = 1024 if prompt >= 1024 else (16 if body.get("previous_response_id") or body.get("conversation") else 0)
        reasoning = 64 if model.startswith(("o", "gpt-5")) else 0
        output = len(text) // 4 + 5 + reasoning
        cap = body.get("max_output_tokens")
        if isinstance(cap, int) and output > cap:
            output = cap
        return rf.usage(input_tokens=prompt, cached=cached, output_tokens=output, reasoning=min(reasoning, output))

    def _final(self, rid: str, body: dict[str, Any]) -> dict[str, Any]:
        model = body.get("model")
        items = body.get("input")
        answered = isinstance(items, list) and any(
            isinstance(i, dict) and i.get("type") == "function_call_output" for i in items)
        n = next(self._ids)
        if body.get("tools") and not answered:
            output = [rf.function_call(call_id=f"call_{n}", fid=f"fc_{n}")]
            text = output[0]["arguments"]
        else:
            text = "It is sunny in Paris, 21 degrees." if answered else "Hello! How can I help you today?"
            output = [rf.message(text, mid=f"msg_{n}")]
        usage = self._usage(body, text)
        status = "completed"
        extra: dict[str, Any] = {}
        cap = body.get("max_output_tokens")
        if isinstance(cap, int) and usage["output_tokens"] >= cap:
            status, extra["incomplete_details"] = "incomplete", {"reason": "max_output_tokens"}
        if model == FAIL_MODEL:
            status, output, usage = "failed", [], None
            extra["error"] = {"code": "server_error", "message": "The model failed to generate a response."}
        conv = body.get("conversation")
        conv_id = conv if isinstance(conv, str) else conv.get("id") if isinstance(conv, dict) else None
        final = rf.response(rid, status, created_at=1_760_000_000 + n, output=output, model=model,
                            background=bool(body.get("background")), conversation={"id": conv_id} if conv_id else None,
                            previous_response_id=body.get("previous_response_id"),
                            max_output_tokens=cap, tools=body.get("tools") or [],
                            metadata=body.get("metadata") or {}, store=body.get("store", True), **extra)
        final["usage"] = usage
        if status != "completed":
            final["completed_at"] = None
        return final

    # --- routes ------------------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = body.get("model")
        if model == MISSING_MODEL:
            return self._error(request, 404, "model_not_found", f"The model `{model}` does not exist.")
        if model == BOOM_MODEL:
            return self._error(request, 500, "server_error", "The server had an error.")
        self.created += 1
        rid = f"resp_{next(self._ids):08x}{self._rand.getrandbits(32):08x}"
        final = self._final(rid, body)
        events = rf.stream_events(final, deltas=7)
        stored = _Stored(final, "queued" if body.get("background") else final["status"], events,
                         body["input"] if isinstance(body.get("input"), list) else
                         [{"type": "message", "role": "user", "content": [{"type": "input_text",
                                                                             "text": str(body.get("input"))}]}])
        self.responses[rid] = stored
        conv = final.get("conversation")
        if conv:
            self.conversations.setdefault(conv["id"], []).append(rid)
        if body.get("stream"):
            if body.get("background"):
                stored.status = final["status"]
                queued = dict(final, status="queued", output=[], usage=None, completed_at=None)
                head = [("response.created", {"type": "response.created", "response": queued}),
                        ("response.queued", {"type": "response.queued", "response": queued})]
                events = head + events[1:]
                for seq, (_, data) in enumerate(events):
                    data["sequence_number"] = seq
                stored.events = events
            return await self._sse(request, stored.events)
        if body.get("background"):
            return self._json(request, self._view(stored))
        return self._json(request, final)

    def _view(self, stored: _Stored) -> dict[str, Any]:
        if stored.status == stored.final["status"]:
            return stored.final
        return dict(stored.final, status=stored.status, output=[], usage=None, completed_at=None,
                    error=None, incomplete_details=None)

    async def _retrieve(self, request: web.Request) -> web.StreamResponse:
        stored = self.responses.get(request.match_info["rid"])
        if stored is None:
            return self._error(request, 404, "not_found", "No response found.")
        if request.query.get("stream") == "true":
            after = int(request.query.get("starting_after", "-1"))
            stored.status = stored.final["status"]
            return await self._sse(request, [e for e in stored.events if e[1]["sequence_number"] > after])
        view = self._view(stored)
        if stored.status == "queued":  # one status per poll: queued -> in_progress -> final
            stored.status = "in_progress"
        elif stored.status == "in_progress":
            stored.status = stored.final["status"]
        return self._json(request, view)

    async def _cancel(self, request: web.Request) -> web.Response:
        stored = self.responses.get(request.match_info["rid"])
        if stored is None:
            return self._error(request, 404, "not_found", "No response found.")
        if stored.status in ("queued", "in_progress"):
            stored.final = dict(stored.final, status="cancelled", output=[], usage=None, completed_at=None)
            stored.status = "cancelled"
        return self._json(request, self._view(stored))

    async def _delete(self, request: web.Request) -> web.Response:
        rid = request.match_info["rid"]
        if self.responses.pop(rid, None) is None:
            return self._error(request, 404, "not_found", "No response found.")
        return self._json(request, {"id": rid, "object": "response.deleted", "deleted": True})

    async def _input_items(self, request: web.Request) -> web.Response:
        stored = self.responses.get(request.match_info["rid"])
        if stored is None:
            return self._error(request, 404, "not_found", "No response found.")
        data = [dict(i, id=f"item_{n}") for n, i in enumerate(stored.input_items)]
        return self._json(request, {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                                    "last_id": data[-1]["id"] if data else None, "has_more": False})

    async def _conversation(self, request: web.Request) -> web.Response:
        cid = f"conv_{next(self._ids):08x}"
        self.conversations[cid] = []
        return self._json(request, {"id": cid, "object": "conversation", "created_at": 1_760_000_000,
                                    "metadata": {}})


async def start_fake() -> tuple[web.AppRunner, str, FakeResponses]:
    fake = FakeResponses()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    return runner, f"http://127.0.0.1:{port}", fake
