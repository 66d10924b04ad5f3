"""What every response carries: OpenAI's headers, error bodies, explicit gzip; plus fault injection."""

from __future__ import annotations

import asyncio
import gzip
import time
import uuid
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from .errors import ApiError, Json
from .objects import Version, api_version
from .state import Sim

SIM = web.AppKey("sim", Sim)
STARTED = web.RequestKey("sim_started", float)

RATE_LIMIT_REQUESTS = 10_000
RATE_LIMIT_TOKENS = 2_000_000
_FAULTS: dict[int, tuple[str, str, str | None]] = {
    400: ("Simulated bad request (x-sim-status: 400).", "invalid_request_error", None),
    401: (
        "Incorrect API key provided: sk-****. You can find your API key at the dashboard.",
        "invalid_request_error",
        "invalid_api_key",
    ),
    403: ("You are not allowed to sample from this model.", "invalid_request_error", None),
    404: ("Simulated not found (x-sim-status: 404).", "invalid_request_error", None),
    409: ("Simulated conflict (x-sim-status: 409).", "invalid_request_error", None),
    429: (
        "Rate limit reached for requests on your organization. Limit: 10000 / min. Please try again in 1s.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}
_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


def sim_of(request: web.Request) -> Sim:
    return request.app[SIM]


def version_of(request: web.Request) -> Version:
    return api_version(request.headers.get("OpenAI-Beta"))


def accepts_gzip(request: web.Request) -> bool:
    for item in request.headers.get("Accept-Encoding", "").split(","):
        name, _, params = item.partition(";")
        if name.strip().lower() not in ("gzip", "*"):
            continue
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        return quality > 0
    return False


def json_response(
    request: web.Request, body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    data = orjson.dumps(body)
    out = {"Content-Type": "application/json", **(headers or {})}
    # Compressed here, not by aiohttp, so that when the body is gzipped is a fixed, testable rule.
    if len(data) >= sim_of(request).config.gzip_min_bytes and accepts_gzip(request):
        data = gzip.compress(data, mtime=0)
        out["Content-Encoding"] = "gzip"
    return web.Response(body=data, status=status, headers=out)


def error_response(
    request: web.Request, error: ApiError, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response(request, error.body(), status=error.status, headers=headers)


async def read_json(request: web.Request) -> Json:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
            "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not "
            "valid JSON.)",
        ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid request body: expected a JSON object.")
    return body


def fault_response(request: web.Request, raw_status: str) -> web.Response:
    try:
        status = int(raw_status)
    except ValueError:
        status = 0
    if not 400 <= status <= 599:
        return error_response(
            request, ApiError(400, f"x-sim-status must be an HTTP error status, got {raw_status!r}.")
        )
    message, type_, code = _FAULTS.get(
        status,
        (
            f"Simulated error (x-sim-status: {status}).",
            "server_error" if status >= 500 else "invalid_request_error",
            None,
        ),
    )
    headers: dict[str, str] = {}
    if status in (429, 503):
        headers["retry-after"] = "1"
    if status == 429:
        headers.update(
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "1s",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "1s",
            }
        )
    return error_response(request, ApiError(status, message, type_=type_, code=code), headers)


@web.middleware
async def sim_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[STARTED] = time.perf_counter()
    delay = request.headers.get("x-sim-delay-ms")
    if delay:
        try:
            await asyncio.sleep(max(0, int(delay)) / 1000)
        except ValueError:
            return error_response(
                request, ApiError(400, f"x-sim-delay-ms must be an integer, got {delay!r}.")
            )
    forced = request.headers.get("x-sim-status")
    if forced:
        return fault_response(request, forced)
    if not request.headers.get("Authorization") and not request.headers.get("api-key"):
        return error_response(request, ApiError(401, _NO_KEY))
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(request, error)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        return error_response(request, ApiError(404, f"Invalid URL ({request.method} {request.path})"))


async def add_openai_headers(request: web.Request, response: web.StreamResponse) -> None:
    sim = sim_of(request)
    sim.requests_served += 1
    started = request.get(STARTED)
    elapsed_ms = 0 if started is None else int((time.perf_counter() - started) * 1000)
    headers = response.headers
    headers.setdefault("x-request-id", f"req_{uuid.uuid4().hex}")
    headers["openai-version"] = "2020-10-01"
    headers["openai-processing-ms"] = str(elapsed_ms)
    headers["openai-poll-after-ms"] = str(sim.config.poll_after_ms)
    used = sim.requests_served % RATE_LIMIT_REQUESTS
    headers.setdefault("x-ratelimit-limit-requests", str(RATE_LIMIT_REQUESTS))
    headers.setdefault("x-ratelimit-remaining-requests", str(RATE_LIMIT_REQUESTS - used))
    headers.setdefault("x-ratelimit-reset-requests", "6ms")
    headers.setdefault("x-ratelimit-limit-tokens", str(RATE_LIMIT_TOKENS))
    headers.setdefault("x-ratelimit-remaining-tokens", str(RATE_LIMIT_TOKENS - 100 * used))
    headers.setdefault("x-ratelimit-reset-tokens", "0s")
