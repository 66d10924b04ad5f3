"""The real azure-ai-agents SDK pointed at a plain-http, loopback endpoint (a sidecar, a simulator).

azure-core refuses to send a bearer token to a non-https URL. `LoopbackBearerPolicy` lifts that for
one client, as docs/azure.md tells users to do for a sidecar on 127.0.0.1; `FakeEntraCredential`
issues unsigned Entra-ID-shaped JWTs (tid, oid, appid claims), a new one whenever the policy asks,
so every request of a test may carry a different token of the same principal.
"""

from __future__ import annotations

import base64
import itertools
import time
from typing import Any

import orjson
from azure.ai.agents import AgentsClient
from azure.core.credentials import AccessToken
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import BearerTokenCredentialPolicy

SCOPE = "https://ai.azure.com/.default"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_jwt(claims: dict[str, Any]) -> str:
    header = {"typ": "JWT", "alg": "RS256", "kid": "test-key"}
    return f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(claims))}.{_b64(b'not-a-signature')}"


class FakeEntraCredential:
    """A TokenCredential: each get_token call returns a new token of one principal. With a lifetime
    under azure-core's refresh window (300 s), the bearer policy asks for a new token on every request,
    which is token rotation at its most frequent."""

    def __init__(self, tenant: str, object_id: str, app_id: str, *, lifetime_s: int = 120) -> None:
        self.tenant, self.object_id, self.app_id = tenant, object_id, app_id
        self.lifetime_s = lifetime_s
        self.issued: list[str] = []
        self._serial = itertools.count()

    def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                  enable_cae: bool = False, **kwargs: Any) -> AccessToken:
        now = int(time.time())
        token = unsigned_jwt({
            "aud": "https://ai.azure.com", "iss": f"https://sts.windows.net/{self.tenant}/",
            "iat": now, "nbf": now, "exp": now + self.lifetime_s, "tid": self.tenant, "oid": self.object_id,
            "appid": self.app_id, "scp": " ".join(scopes), "uti": f"uti{next(self._serial)}",
        })
        self.issued.append(token)
        return AccessToken(token, now + self.lifetime_s)


class LoopbackBearerPolicy(BearerTokenCredentialPolicy):
    """BearerTokenCredentialPolicy that also sends the token over plain http (loopback only)."""

    def on_request(self, request: PipelineRequest[Any]) -> None:
        request.context.options["enforce_https"] = False
        super().on_request(request)


def agents_client(endpoint: str, credential: FakeEntraCredential) -> AgentsClient:
    return AgentsClient(endpoint=endpoint, credential=credential,  # type: ignore[arg-type]
                        authentication_policy=LoopbackBearerPolicy(credential, SCOPE))
