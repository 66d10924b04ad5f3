"""An Azure AI Foundry agent named in a Responses call (its AgentReference, `agent_reference`, earlier
`agent`) is the response's agent key: captured into responses.agent_name / agent_version from the
response or, when the upstream does not echo it, from the create request; top-assistants ranks by it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import httpx2 as httpx
import openai
import orjson
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from runtap.analytics.ingest.decode import CaptureDecoder
from runtap.analytics.ingest.records import Exchange, RequestBody, ResponseBody, Snapshot
from runtap.analytics.ingest.response_agents import agent_reference
from runtap.analytics.ingest.store import Store
from runtap.analytics.prices import load_price_book
from runtap.analytics.reports import make_params, open_db, run_report
from runtap.demo.sim import SimConfig, start_sim
from runtap.proxy.app import build_runtime
from runtap.proxy.serve import start

from tests import response_factory as rf
from tests.conftest import stack_settings

T0 = 1_760_000_000


def ref(name: Any, version: Any = None, kind: Any = "agent_reference") -> dict[str, Any]:
    out = {"type": kind, "name": name}
    if version is not None:
        out["version"] = version
    return out


def test_an_agent_reference_is_read_under_either_name_and_nothing_else_is() -> None:
    assert agent_reference({"agent_reference": ref("support-bot", "3")}) == ("support-bot", "3")
    assert agent_reference({"agent": ref("triage")}) == ("triage", None)
    assert agent_reference({"agent_reference": ref("a"), "agent": ref("b")}) == ("a", None)
    # OpenAI's multi-agent beta tags output items with {"agent_name": ...}: not a reference to a stored agent
    assert agent_reference({"agent": {"agent_name": "planner"}}) == (None, None)
    assert agent_reference({"agent": ref("x", kind="agent")}) == (None, None)
    assert agent_reference({"agent_reference": ref("")}) == (None, None)
    assert agent_reference({"agent_reference": ref("x" * 300)}) == (None, None)
    assert agent_reference({"agent_reference": ref("bot", 7)}) == ("bot", "7")


@given(st.dictionaries(st.sampled_from(["agent_reference", "agent", "model"]),
                       st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=300),
                                    lambda inner: st.lists(inner, max_size=3)
                                    | st.dictionaries(st.sampled_from(["type", "name", "version"]), inner,
                                                      max_size=3), max_leaves=8)))
def test_any_value_gives_a_short_name_or_none(obj: dict[str, Any]) -> None:
    name, version = agent_reference(obj)
    assert name is None or (type(name) is str and 0 < len(name) <= 256)
    assert version is None or (name is not None and type(version) is str and 0 < len(version) <= 256)


def _snap(obj: dict[str, Any], t: float, extra: dict[str, Any] | None = None) -> Snapshot:
    return Snapshot("response", obj, t, "response", "responses.retrieve", None, "fp", "r", extra or {})


def test_the_response_echo_is_captured_and_a_later_poll_without_it_erases_nothing(tmp_path: Path) -> None:
    """Azure's Responses protocol stamps `agent_reference` on the response object itself."""
    db = str(tmp_path / "c.duckdb")
    store = Store(db)
    echoed = rf.response("resp_a", created_at=T0, agent_reference=ref("support-bot", "3"))
    store.apply([_snap(echoed, T0 + 1)], [])
    store.apply([_snap(rf.response("resp_a", created_at=T0), T0 + 2)], [])
    store.close()
    con = duckdb.connect(db)
    assert con.execute("SELECT agent_name, agent_version FROM responses").fetchall() == [("support-bot", "3")]
    con.close()


def test_an_upstream_that_does_not_echo_it_leaves_the_request_s_reference(tmp_path: Path) -> None:
    dec = CaptureDecoder()
    ex = Exchange(id="x1", method="POST", path="/api/projects/p/openai/v1/responses", operation="responses.create",
                  api_version=None, key_fingerprint=None, started_at=T0)
    dec.decode(RequestBody(ex, orjson.dumps({"model": rf.MODEL, "input": "hi", "agent": ref("triage")}), False))
    snaps = dec.decode(ResponseBody(ex, 200, orjson.dumps(rf.response("resp_b", created_at=T0)), False))
    db = str(tmp_path / "c.duckdb")
    store = Store(db)
    store.apply(snaps, [])
    store.close()
    con = duckdb.connect(db)
    assert con.execute("SELECT agent_name, agent_version FROM responses").fetchall() == [("triage", None)]
    con.close()


async def test_the_real_sdk_names_foundry_agents_and_top_assistants_ranks_by_them(tmp_path: Path) -> None:
    """The openai SDK on a Foundry project's Responses path sends the reference in extra_body as
    azure-ai-projects does (`agent_reference`) and as its first previews did (`agent`); the simulated
    upstream echoes it on the response. A poll of the same response keeps it."""
    sim_runner, sim_url = await start_sim(SimConfig())
    settings = stack_settings(tmp_path, sim_url.removesuffix("/v1"))
    running = await start(settings, runtime=build_runtime(settings, registry=CollectorRegistry()))
    client = openai.AsyncOpenAI(base_url=running.proxy_url + "/api/projects/proj-1/openai/v1/",
                                api_key="sk-test-azure", http_client=httpx.AsyncClient())
    try:
        a = await client.responses.create(model="gpt-4o-mini", input="Hi.",
                                          extra_body={"agent_reference": ref("support-bot", "3")})
        b = await client.responses.create(model="gpt-4o-mini", input="Hi again.",
                                          extra_body={"agent_reference": ref("support-bot", "4")})
        c = await client.responses.create(model="gpt-4o-mini", input="Route this.", stream=True,
                                          extra_body={"agent": ref("triage")})
        streamed = [e.response.id async for e in c if e.type == "response.completed"]
        d = await client.responses.create(model="gpt-4o-mini", input="No agent.")
        polled = await client.responses.retrieve(a.id)
        assert (polled.model_extra or {}).get("agent_reference") == ref("support-bot", "3")
    finally:
        await client.close()
        await running.stop()
        await sim_runner.cleanup()
    con = duckdb.connect(settings.db)
    rows = {r[0]: r[1:] for r in con.execute(
        "SELECT id, agent_name, agent_version, api_provider, api_version FROM responses").fetchall()}
    con.close()
    assert rows == {a.id: ("support-bot", "3", "azure", "v1"), b.id: ("support-bot", "4", "azure", "v1"),
                    streamed[0]: ("triage", None, "azure", "v1"), d.id: (None, None, "azure", "v1")}
    conn = open_db(settings.db, load_price_book(environ={}))
    ranked = {(r["assistant_id"], r["api"]): r["runs"]
              for r in run_report(conn, "top-assistants", make_params()).records()}
    conn.close()
    # one agent across its versions, as an assistant is one row however often it was updated
    assert ranked == {("support-bot", "responses"): 2, ("triage", "responses"): 1, (None, "responses"): 1}


async def test_openai_s_own_paths_still_refuse_an_agent_reference() -> None:
    """The simulator stays faithful: only a Foundry project's Responses API knows agents."""
    sim_runner, sim_url = await start_sim(SimConfig())
    client = openai.AsyncOpenAI(base_url=sim_url, api_key="sk-test", http_client=httpx.AsyncClient())
    try:
        try:
            await client.responses.create(model="gpt-4o-mini", input="Hi.",
                                          extra_body={"agent_reference": ref("support-bot")})
        except openai.BadRequestError as exc:
            assert "agent_reference" in str(exc)
        else:
            raise AssertionError("the OpenAI path accepted an agent reference")
    finally:
        await client.close()
        await sim_runner.cleanup()
