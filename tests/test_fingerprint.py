"""Key fingerprints: an API key by its salted hash, a JWT bearer token by the principal it names.

Entra ID tokens rotate about hourly; one caller must keep one fingerprint across rotations, another
caller must get another, and no claim value may reach the database.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import httpx2 as httpx
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from runtap.proxy.fingerprint import principal
from runtap.proxy.forward import KeyFingerprints

from tests.azure_client import unsigned_jwt
from tests.conftest import start_stack

SALT = "pepper"
TENANT = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
USER_A = "aaaaaaaa-1111-4222-8333-444444444444"
USER_B = "bbbbbbbb-5555-4666-8777-888888888888"
APP = "cccccccc-9999-4aaa-8bbb-cccccccccccc"
AZURE_KEY = "0123456789abcdef0123456789abcdef"


def _token(serial: int, **claims: object) -> str:
    return unsigned_jwt({"aud": "https://ai.azure.com", "iat": 1_767_000_000 + serial, "exp": 1_767_003_600 + serial,
                         "uti": f"u{serial}", **claims})


def _of(fps: KeyFingerprints, **headers: str) -> str | None:
    return fps.of(CIMultiDictProxy(CIMultiDict(headers)))


def test_two_tokens_of_one_principal_share_a_fingerprint_and_another_principal_does_not() -> None:
    fps = KeyFingerprints(SALT)
    a1 = _of(fps, Authorization=f"Bearer {_token(1, tid=TENANT, oid=USER_A, appid=APP)}")
    a2 = _of(fps, Authorization=f"bearer {_token(2, tid=TENANT, oid=USER_A, appid=APP)}")
    b = _of(fps, Authorization=f"Bearer {_token(3, tid=TENANT, oid=USER_B, appid=APP)}")
    other_tenant = _of(fps, Authorization=f"Bearer {_token(4, tid=USER_B, oid=USER_A)}")
    assert a1 == a2
    assert len({a1, b, other_tenant}) == 3
    # The salt matters: another deployment's fingerprints cannot be joined with these.
    assert _of(KeyFingerprints("other"), Authorization=f"Bearer {_token(1, tid=TENANT, oid=USER_A)}") != a1


def test_claim_fallbacks_appid_azp_then_issuer_and_subject() -> None:
    assert principal(_token(1, tid=TENANT, appid=APP)) == principal(_token(2, tid=TENANT, appid=APP, azp="x"))
    assert principal(_token(1, tid=TENANT, azp=APP)) != principal(_token(1, tid=TENANT, appid=APP))
    assert principal(_token(1, tid=TENANT, oid=APP)) != principal(_token(1, tid=TENANT, appid=APP))
    assert principal(_token(1, iss="https://idp.example", sub="s1")) == principal(
        _token(9, iss="https://idp.example", sub="s1"))
    # A JWT naming no principal (or only half of one) is hashed as the key it is: no two tokens alike.
    assert principal(_token(1, oid=USER_A)) is None
    assert principal(_token(1, tid=TENANT, oid=7)) is None


def test_keys_keep_the_salted_hash_of_the_key_in_either_header() -> None:
    fps = KeyFingerprints(SALT)
    expected = hashlib.sha256(SALT.encode() + AZURE_KEY.encode()).hexdigest()[:12]
    assert _of(fps, **{"api-key": AZURE_KEY}) == expected
    assert _of(fps, Authorization=f"Bearer {AZURE_KEY}") == expected
    assert _of(fps, Authorization="Bearer sk-proj-abc") == hashlib.sha256(b"pepper" + b"sk-proj-abc").hexdigest()[:12]
    assert _of(fps) is None
    # Not JWTs: two dots but no JSON, a bad payload, a JSON array payload.
    for fake in ("eyJ.eyJ.x", "eyJhbGciOiJub25lIn0.eyJ!!!.x", "eyJhbGciOiJub25lIn0.WzEsMl0.x", "a.b.c"):
        assert principal(fake) is None
        as_key = hashlib.sha256(SALT.encode() + fake.encode()).hexdigest()[:12]
        assert _of(fps, Authorization=f"Bearer {fake}") == as_key


@given(st.text(max_size=300))
def test_any_bearer_value_gets_a_fingerprint_and_never_an_error(value: str) -> None:
    principal(value)
    principal("eyJ" + value + ".eyJ" + value + "." + value)


async def test_through_runtap_one_principal_one_fingerprint_and_no_claim_stored(tmp_path: Path) -> None:
    stack, sim_runner = await start_stack(tmp_path)
    callers = {
        "user a, token 1": {"Authorization": f"Bearer {_token(1, tid=TENANT, oid=USER_A, appid=APP)}"},
        "user a, token 2": {"Authorization": f"Bearer {_token(2, tid=TENANT, oid=USER_A, appid=APP)}"},
        "user b": {"Authorization": f"Bearer {_token(3, tid=TENANT, oid=USER_B, appid=APP)}"},
        "azure openai key": {"api-key": AZURE_KEY},
    }
    try:
        async with httpx.AsyncClient(base_url=stack.proxy_url, timeout=30) as client:
            for headers in callers.values():
                r = await client.get("/api/projects/p1/threads/thread_nope/runs?api-version=v1", headers=headers)
                assert r.status_code == 404
        stack.flush()
    finally:
        await stack.running.stop()
        await sim_runner.cleanup()
    con = duckdb.connect(stack.settings.db)
    try:
        rows = con.execute(
            "SELECT key_fingerprint, api_provider, api_version FROM requests ORDER BY started_at").fetchall()
        cells = [c for table in ("requests", "runs", "run_steps", "run_events")
                 for row in con.execute(f"SELECT CAST(COLUMNS(*) AS VARCHAR) FROM {table}").fetchall()  # noqa: S608
                 for c in row]
    finally:
        con.close()
    fps = [r[0] for r in rows]
    assert len(fps) == 4 and fps[0] == fps[1] and len(set(fps)) == 3
    assert fps[3] == hashlib.sha256(stack.settings.key_salt.encode() + AZURE_KEY.encode()).hexdigest()[:12]
    assert {(r[1], r[2]) for r in rows} == {("azure", "v1")}
    stored = " ".join(str(c) for c in cells)
    raw = Path(stack.settings.db).read_bytes()
    for claim in (TENANT, USER_A, USER_B, APP, AZURE_KEY):
        assert claim not in stored
        assert claim.encode() not in raw
