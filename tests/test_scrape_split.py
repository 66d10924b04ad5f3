"""`--capture-mode process`: one /metrics scrape is the relay's families followed by the capture
process's, joined as bytes (proxy/scrape_split.py). What a user reads must not tell the modes apart.

The real `runtap serve` in both modes, the same traffic through the real `openai` SDK (streamed runs and
responses, plain creates, a 404 the relay does not capture), then one scrape each:
every family once, promtool's lint passes, and the same families, series and totals in both modes.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from pathlib import Path

import aiohttp
import openai
import pytest
from runtap.analytics.ingest.health import CaptureHealth, Event, Kind
from runtap.proxy.scrape_split import RELAY_FAMILIES, decode_share, encode_share

from tests.fault_helpers import API_KEY, start_runtap, terminate
from tests.metrics_scrape import Scrape, scrape
from tests.promstack import require_binary

STREAMED_RUNS, PLAIN_RUNS, STREAMED_RESPONSES = 3, 4, 2
REQUESTS = 1 + STREAMED_RUNS + PLAIN_RUNS + STREAMED_RESPONSES + 1  # assistant, ..., one 404
# Timing, not counting: these differ between two runs of the same traffic (so do every histogram's
# buckets and sums, and the depth of a queue at one instant).
PROMETHEUS_SCRAPE_TIMEOUT_S = 10.0
TIMED = ("runtap_event_loop_lag_seconds", "runtap_capture_db_memory", "runtap_capture_queue_depth")


async def _traffic(base_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key=API_KEY, max_retries=0)
    assistant = await client.beta.assistants.create(model="gpt-4o")
    for _ in range(STREAMED_RUNS):
        stream = await client.beta.threads.create_and_run(assistant_id=assistant.id, stream=True)
        async for _event in stream:
            pass
    thread = None
    for _ in range(PLAIN_RUNS):
        run = await client.beta.threads.create_and_run(assistant_id=assistant.id)
        thread = run.thread_id
    for _ in range(STREAMED_RESPONSES):
        rstream = await client.responses.create(model="gpt-4o", input="hi", stream=True)
        async for _revent in rstream:
            pass
    assert thread is not None
    with pytest.raises(openai.NotFoundError):  # not captured: the relay counts the skip
        await client.beta.threads.runs.retrieve(run_id="run_missing", thread_id=thread)
    await client.close()


async def _scrape_after(mode: str, tmp_path: Path, sim_base: str) -> Scrape:
    db = tmp_path / f"{mode}.duckdb"
    proc = await start_runtap(sim_base, db, tmp_path / f"{mode}.log", "--capture-mode", mode)
    try:
        await _traffic(proc.url)
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            m = await scrape(proc.admin_url)
            if m.get("runtap_capture_written_total", table="requests") >= REQUESTS:
                await _classic_even_when_openmetrics_is_asked_for(proc.admin_url, m)
                return m
            assert asyncio.get_running_loop().time() < deadline, m.text
            await asyncio.sleep(0.05)  # another process's writer: nothing to wait on but its metrics
    finally:
        assert await terminate(proc) == 0


async def _classic_even_when_openmetrics_is_asked_for(admin_url: str, m: Scrape) -> None:
    accept = "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5"
    async with aiohttp.ClientSession() as s, s.get(admin_url + "/metrics", headers={"Accept": accept}) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain;")
        assert _families(await r.text()) == _families(m.text)


def _families(text: str) -> list[str]:
    return re.findall(r"^# TYPE (\S+)", text, re.M)


def _counts(m: Scrape) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every counter, gauge and histogram count: what traffic decides, not timing."""
    return {(name, labels): v for (name, labels), v in m.samples.items()
            if not name.endswith(("_created", "_bucket", "_sum")) and not name.startswith(TIMED)}


@pytest.mark.timeout(180)
async def test_a_process_mode_scrape_shows_the_same_families_and_totals_as_in_process_mode(
        tmp_path: Path, sim_upstream: str) -> None:
    split = await _scrape_after("process", tmp_path, sim_upstream)
    single = await _scrape_after("inprocess", tmp_path, sim_upstream)
    families = _families(split.text)
    assert len(families) == len(set(families)), "a family appears twice in one scrape"
    # process mode's own two (runtap_capture_metrics_up is in both: 1 when every family is in the scrape)
    supervisor = {"runtap_capture_restarts_total", "runtap_capture_process_up"}
    assert sorted(set(families) - supervisor) == sorted(_families(single.text))
    # The relay's skip (the 404) and the capture process's counts share one family.
    assert split.get("runtap_capture_skipped_total", reason="upstream_error_status") == 1
    assert split.get("runtap_requests_total") == REQUESTS
    assert split.get("runtap_runs_finished_total", status="completed") == STREAMED_RUNS
    assert split.get("runtap_capture_process_up") == split.get("runtap_capture_metrics_up") == 1
    assert single.get("runtap_capture_metrics_up") == 1
    assert {k: v for k, v in _counts(split).items() if k[0] not in supervisor} == _counts(single)
    # Counters carry _created in both modes, each from the process that counts them.
    assert {n for n, _ in split.samples if n.endswith("_created")} == \
        {n for n, _ in single.samples if n.endswith("_created")}
    lint = subprocess.run([require_binary("promtool"), "check", "metrics"], input=split.text,
                          capture_output=True, text=True, timeout=30)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_the_relays_share_survives_the_trip_and_garbage_is_refused() -> None:
    health = CaptureHealth()
    health.add(Kind.DROPPED, "channel_full", 7)
    health.add(Kind.SKIPPED, "body_too_large")
    health.error("decode", "malformed_json", 2)
    share = decode_share(encode_share(health, 5))
    assert share.queue_depth == 5
    assert dict(share.health) == {Event(Kind.DROPPED, "channel_full"): 7, Event(Kind.SKIPPED, "body_too_large"): 1,
                                  Event(Kind.ERRORS, "decode", "malformed_json"): 2}
    for bad in (b"", b"[]", b'{"queue_depth": -1, "health": []}',
                b'{"queue_depth": 0, "health": [["nope", "x", null, 1]]}',
                b'{"queue_depth": 0, "health": [["dropped", "x", null, 1.5]]}', b'{"queue_depth": 0, "health": [[1]]}'):
        with pytest.raises(ValueError):
            decode_share(bad)


def test_the_relay_exports_only_families_it_counts_itself() -> None:
    # A new relay-side family must be named here, or process mode would lose it (the capture process's
    # copy never moves): every name must exist in Metrics, and none is a capture-writer family.
    from prometheus_client import CollectorRegistry
    from runtap.proxy.addons.metrics import Metrics

    names = {fam.name for fam in Metrics(CollectorRegistry()).registry.collect()}
    assert RELAY_FAMILIES - {"runtap_capture_restarts", "runtap_capture_process_up"} <= names
    assert not {n for n in RELAY_FAMILIES if n.startswith(("runtap_run", "runtap_response", "gen_ai_"))}


@pytest.mark.timeout(120)
async def test_while_the_capture_process_does_not_answer_the_relay_serves_its_own_registry(
        tmp_path: Path, sim_upstream: str) -> None:
    proc = await start_runtap(sim_upstream, tmp_path / "runtap.duckdb", tmp_path / "runtap.log",
                              "--capture-mode", "process")
    try:
        client = openai.AsyncOpenAI(base_url=proc.url + "/v1", api_key=API_KEY, max_retries=0)
        await client.beta.assistants.create(model="gpt-4o")
        await client.close()
        async with aiohttp.ClientSession() as s, s.get(proc.admin_url + "/readyz") as r:
            pid = (await r.json())["capture_process"]["pid"]
        os.kill(pid, signal.SIGSTOP)  # alive, but its control socket answers nothing
        try:
            # Prometheus' default scrape_timeout: a scrape that waits longer is lost, the relay's part too.
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROMETHEUS_SCRAPE_TIMEOUT_S)) as s, \
                    s.get(proc.admin_url + "/metrics") as r:
                assert r.status == 200
                m = Scrape(await r.text())
        finally:
            os.kill(pid, signal.SIGCONT)
        answered = await scrape(proc.admin_url)
    finally:
        assert await terminate(proc) == 0
    assert m.get("runtap_capture_metrics_up") == 0  # the capture part is missing, and the scrape says so
    assert m.get("runtap_capture_process_up") == 1  # ... though the process runs
    assert answered.get("runtap_capture_metrics_up") == 1
    assert _families(answered.text).count("runtap_capture_metrics_up") == 1
    families = _families(m.text)
    assert len(families) == len(set(families))
    assert "runtap_run_transitions_total" in families and "runtap_capture_skipped_total" in families
    assert m.get("runtap_requests_total") == 1
    assert m.get("runtap_capture_store_open") == 0  # the relay holds no store: the capture process did not say


async def test_the_relay_says_per_scrape_whether_the_capture_part_came_back() -> None:
    # capture_admin.scrape against a real control socket: a stand-in capture process that renders what
    # capture_process.py renders, then one that answers too late, then none at all. The relay's gauge
    # follows every scrape, and the family is in each scrape exactly once.
    import tempfile

    from aiohttp import web
    from prometheus_client import CollectorRegistry
    from runtap.proxy.addons.metrics import Metrics
    from runtap.proxy.capture_admin import scrape as relay_scrape
    from runtap.proxy.exposition import RENDERER
    from runtap.proxy.scrape_split import Families

    relay, capture = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    assert Scrape(RENDERER.render(relay.registry).decode()).get("runtap_capture_metrics_up") == 1  # in-process
    capture.runs.finished.labels("completed", "gpt-4o").inc()
    frozen, released = {"on": False}, asyncio.Event()

    async def metrics(request: web.Request) -> web.Response:
        if frozen["on"]:
            await released.wait()
        return web.Response(body=RENDERER.render(Families(capture.registry, RELAY_FAMILIES, keep=False)))

    app = web.Application()
    app.router.add_post("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    with tempfile.TemporaryDirectory(prefix="rt-") as directory:
        sock = os.path.join(directory, "control.sock")
        await web.UnixSite(runner, sock).start()
        try:
            answered = (await relay_scrape(relay, 0, sock, timeout=5)).decode()
            frozen["on"] = True
            late = (await relay_scrape(relay, 0, sock, timeout=0.2)).decode()
            released.set()
        finally:
            await runner.cleanup()
        gone = (await relay_scrape(relay, 0, sock, timeout=5)).decode()
    for text, up in ((answered, 1), (late, 0), (gone, 0)):
        families = _families(text)
        assert len(families) == len(set(families)) and families.count("runtap_capture_metrics_up") == 1
        assert Scrape(text).get("runtap_capture_metrics_up") == up
    assert Scrape(answered).get("runtap_runs_finished_total", status="completed") == 1  # the capture part
    assert Scrape(late).get("runtap_runs_finished_total") == 0  # the relay's stand-in
    assert Scrape((await relay_scrape(relay, 0, "/nonexistent/control.sock")).decode()).get(
        "runtap_capture_metrics_up") == 0
