"""Azure AI Foundry agents: the same threads / runs / steps / assistants / messages endpoints under
`/api/projects/{project}`, each call carrying `?api-version=`.

What the `azure-ai-agents` SDK (1.1.0) puts on the wire: `api-version=v1` on every call, no
`OpenAI-Beta` header (v1 of the agents service serves the Assistants v2 object shapes), a bearer
token from an Entra ID credential, and list pages fetched with `after=<last_id>` until a page comes
back with `last_id: null`. The handlers are the OpenAI ones; this module only adds the routes and
the api-version check the service makes.
"""

from __future__ import annotations

import re
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from . import routes_objects, routes_runs
from .errors import ApiError

PREFIX: Final = "/api/projects/{project}"
_PATH_PREFIX: Final = "/api/projects/"
# "v1", or a dated version such as 2025-05-15-preview (older SDK builds sent those).
SUPPORTED: Final = re.compile(r"v1|\d{4}-\d{2}-\d{2}(-preview)?")


def check_api_version(request: web.Request) -> None:
    values = request.query.getall("api-version", [])
    if not values:
        raise ApiError(400, "Missing required query parameter: 'api-version'.", param="api-version",
                       code="missing_required_parameter")
    if len(values) > 1 or not SUPPORTED.fullmatch(values[0]):
        raise ApiError(400, f"Unsupported api-version '{values[-1]}'. The supported version is v1.",
                       param="api-version", code="invalid_value")


@web.middleware
async def azure_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # A project's OpenAI v1 surface (/api/projects/P/openai/v1/...: Responses, conversations) is
    # versioned by its path: azure-ai-projects 2.x calls it without an api-version.
    if request.path.startswith(_PATH_PREFIX) and "/openai/v1/" not in request.path:
        check_api_version(request)
    return await handler(request)


def add_routes(router: web.UrlDispatcher) -> None:
    routes_runs.add_routes(router, PREFIX)
    routes_objects.add_routes(router, PREFIX)
