"""What a credential's fingerprint is computed from: the key itself, or the principal a JWT names.

An API key (OpenAI `sk-...`, an Azure OpenAI `api-key`) is stable, so its salted hash groups spend
per key. A Microsoft Entra ID access token is not: a TokenCredential hands out a new one about every
hour, and hashing it would split one caller into a new fingerprint per rotation. For a bearer value
that is a JWT, runtap therefore fingerprints the principal it names:

  1. tenant + object id (`tid`, `oid`): the user or the service principal / managed identity;
  2. else tenant + application id (`appid` in v1 tokens, `azp` in v2 tokens);
  3. else issuer + subject (`iss`, `sub`), the stable pair of any OpenID Connect token;
  4. else the token itself, as for a key.

The claims are decoded without verifying the signature: runtap never authorises anything, the
upstream does, and a forged token gets a 401 there (its fingerprint then names what the forger
claimed, in the rows of the requests that failed). No claim value is kept: the principal string is
only hashed, and only the hash is stored.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final

import orjson

# The principal is hashed apart from keys (no key contains NUL), and with its claim names, so that
# a tid+oid pair and a tid+appid pair of equal values stay two principals.
_DOMAIN: Final = b"jwt"
# An Entra ID access token is 1-3 KB; a header bigger than this is not decoded (hashed as a key).
_MAX_TOKEN_CHARS: Final = 16 << 10
_PAIRS: Final = (("tid", "oid"), ("tid", "appid"), ("tid", "azp"), ("iss", "sub"))


def _claims(token: str) -> dict[str, Any] | None:
    if len(token) > _MAX_TOKEN_CHARS or token.count(".") != 2:
        return None
    header, payload, _ = token.split(".")
    if not header.startswith("eyJ") or not payload.startswith("eyJ"):  # base64url of '{"'
        return None
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = orjson.loads(raw)
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def principal(token: str) -> bytes | None:
    """The bytes to hash for a JWT bearer token, or None when ``token`` is not a JWT naming a principal
    (then the token itself is hashed)."""
    claims = _claims(token)
    if claims is None:
        return None
    for first, second in _PAIRS:
        a, b = claims.get(first), claims.get(second)
        if type(a) is str and type(b) is str and a and b:
            return b"\x00".join((_DOMAIN, first.encode(), a.encode(), second.encode(), b.encode()))
    return None
