"""Benchmark results: the JSON document, the ratios that matter, and the markdown tables.

Absolute numbers drift on shared machines; the ratios (runtap/nginx, runtap/bare) and the added latency
against direct are only meaningful within one run, which is why one run measures every target.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TARGETS = ("direct", "nginx", "bare", "runtap")
PROXIES = ("nginx", "bare", "runtap")
UPSTREAM_BOUND = 0.85


@dataclass
class Cell:
    """One workload at one concurrency through one target."""

    target: str
    workload: str
    concurrency: int
    load: dict[str, Any] | None = None  # load.LoadResult.to_json()
    error: str | None = None
    proxy_cpu_us: float | None = None  # per request, the proxy's whole process tree
    relay_cpu_us: float | None = None  # per request, the proxy's top process alone (runtap: the relay)
    proxy_cores: float | None = None  # cores the proxy kept busy over the window
    upstream_cpu_us: float | None = None
    # Cores the upstream used, plus the load generator's when both are pinned to one CPU: near 1.0, the
    # feeding side, not the proxy, set the pace.
    feeder_cores: float | None = None
    background_cores: float | None = None  # other work on the machine during the window
    rss_mb: float | None = None
    fds: int | None = None
    capture_drain_ms: float | None = None  # load end -> runtap's capture queue empty
    capture_max_depth: float | None = None
    # runtap's event-loop lag probe over the cell (runtap_event_loop_lag_seconds bucket deltas)
    loop_lag_probes: int | None = None
    loop_lag_p99_ms: float | None = None  # upper bound of the bucket holding the p99
    loop_lag_max_ms: float | None = None  # upper bound of the highest bucket with an observation
    loop_lag_over_10ms: int | None = None
    # request done -> row visible over the cell (runtap_capture_lag_seconds bucket deltas, bucket bound)
    capture_lag_p99_ms: float | None = None


@dataclass
class Relay:
    """SSE per-event relay delay: client receipt minus the upstream's send timestamp."""

    target: str
    events_per_stream: int
    gap_us: int
    streams: int
    broken: int
    events: int
    held_back: int
    p50_us: float | None
    p99_us: float | None
    max_us: float | None


@dataclass
class Capture:
    """Nothing lost. Strictly: a final phase creates runs and reads every response to the end, and each
    run id the client received must be in DuckDB after SIGTERM. Overall: every run the upstream created
    through runtap vs distinct runs in DuckDB; wrk abandons in-flight requests when its duration ends, and
    those show as `requests` rows with an error (the client went away mid-response)."""

    check_sent: int | None = None
    check_received: int | None = None
    check_missing: int | None = None
    created: int | None = None
    captured: int | None = None
    abandoned_creates: int | None = None  # runs.create rows whose client went away or errored
    request_rows: int | None = None
    request_errors: dict[str, int] = field(default_factory=dict)  # "operation:error" -> rows
    requests_sent: int | None = None
    exit_code: int | None = None
    shutdown_s: float | None = None
    spans_exported_posts: int | None = None
    lag_p99_s: float | None = None
    note: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


def _get(cells: list[Cell], target: str, workload: str, c: int) -> Cell | None:
    return next((x for x in cells if x.target == target and x.workload == workload and x.concurrency == c
                 and x.load is not None), None)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _relay_vs_tree(doc: dict[str, Any], cells: list[Cell]) -> list[str]:
    """runtap's relay process alone against its whole tree (with --capture-mode process the capture
    process is a child: the tree includes it), both against bare."""
    mode = doc["meta"].get("capture_mode", "inprocess")
    out = ["", f"runtap CPU by process (capture mode: {mode}; tree = relay "
           "+ capture process + threads), µs per request, and RSS of the tree after the cell:", "",
           "| workload | c | bare µs | runtap relay µs | runtap tree µs | relay/bare | tree/bare | runtap RSS MB |",
           "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for r in doc["ratios"]:
        w, c = r["workload"], r["concurrency"]
        bare, rt = _get(cells, "bare", w, c), _get(cells, "runtap", w, c)
        if rt is None:
            continue
        b = bare.proxy_cpu_us if bare else None
        out.append("| " + " | ".join([w, str(c), _f(b), _f(rt.relay_cpu_us), _f(rt.proxy_cpu_us),
                                      _x(_ratio(rt.relay_cpu_us, b)), _x(_ratio(rt.proxy_cpu_us, b)),
                                      _f(rt.rss_mb)]) + " |")
    return out


def ratios(cells: list[Cell]) -> list[dict[str, Any]]:
    rows = []
    order = list(dict.fromkeys(x.workload for x in cells))
    seen = sorted({(x.workload, x.concurrency) for x in cells}, key=lambda k: (order.index(k[0]), k[1]))
    for workload, c in seen:
        cell = {t: _get(cells, t, workload, c) for t in TARGETS}

        def rps(t: str, cell: dict[str, Cell | None] = cell) -> float | None:
            x = cell[t]
            return x.load["rps"] if x is not None and x.load is not None else None

        def cpu(t: str, cell: dict[str, Cell | None] = cell) -> float | None:
            x = cell[t]
            return x.proxy_cpu_us if x is not None else None

        def p50(t: str, cell: dict[str, Cell | None] = cell) -> float | None:
            x = cell[t]
            return x.load["p50_ms"] if x is not None and x.load is not None else None

        row: dict[str, Any] = {
            "workload": workload, "concurrency": c,
            "cpu_runtap_over_nginx": _ratio(cpu("runtap"), cpu("nginx")),
            "cpu_runtap_over_bare": _ratio(cpu("runtap"), cpu("bare")),
            "rps_runtap_over_nginx": _ratio(rps("runtap"), rps("nginx")),
            "rps_runtap_over_bare": _ratio(rps("runtap"), rps("bare")),
        }
        for t in PROXIES:
            a, d = p50(t), p50("direct")
            row[f"added_p50_ms_{t}"] = None if a is None or d is None else a - d
        rows.append(row)
    return rows


def checks(doc: dict[str, Any]) -> list[str]:
    """The issue's targets, where this run measured them."""
    out = []
    by = {(r["workload"], r["concurrency"]): r for r in doc["ratios"]}
    r = by.get(("create", 50))
    if r and r["cpu_runtap_over_bare"] is not None:
        v = r["cpu_runtap_over_bare"]
        out.append(f"CPU per JSON request <= 1.2x bare (create c=50): {v:.2f}x "
                   f"{'PASS' if v <= 1.2 else 'MISS'}")
    if r and r["cpu_runtap_over_nginx"] is not None:
        v = r["cpu_runtap_over_nginx"]
        out.append(f"toward CPU <= 2x nginx (create c=50): {v:.2f}x {'PASS' if v <= 2 else 'MISS'}")
    r = by.get(("create", 1))
    if r and r["added_p50_ms_runtap"] is not None and r["added_p50_ms_bare"] is not None:
        over_bare = r["added_p50_ms_runtap"] - r["added_p50_ms_bare"]
        out.append(f"p50 at c=1 <= bare + 0.3 ms (create): {over_bare:+.3f} ms "
                   f"{'PASS' if over_bare <= 0.3 else 'MISS'}")
        v = r["added_p50_ms_runtap"]
        out.append(f"toward p50 at c=1 <= direct + 0.3 ms (create): {v:+.3f} ms "
                   f"{'PASS' if v <= 0.3 else 'MISS'}")
    for rel in doc["relays"]:
        if rel["target"] == "runtap" and rel["p99_us"] is not None:
            ok = rel["p99_us"] <= 1000 and rel["held_back"] == 0
            out.append(f"SSE relay p99 <= 1 ms, no event a gap late ({rel['events_per_stream']} events): "
                       f"{rel['p99_us']:.0f} us, {rel['held_back']} late {'PASS' if ok else 'MISS'}")
    quiet = [c for c in doc["results"] if c["target"] == "runtap" and c["concurrency"] == 1
             and c.get("loop_lag_probes")]
    if quiet:
        worst = max(c["loop_lag_max_ms"] or 0 for c in quiet)
        over = sum(c["loop_lag_over_10ms"] or 0 for c in quiet)
        out.append(f"event loop never blocked > 10 ms (c=1 cells, lag probe): worst bucket <= {worst:g} ms, "
                   f"{over} probes over 10 ms {'PASS' if over == 0 else 'MISS'}")
    cap = doc.get("capture")
    if cap and cap.get("check_received") is not None and cap.get("check_missing") is not None:
        ok = cap["check_missing"] == 0 and cap["check_received"] == cap["check_sent"]
        out.append(f"nothing lost: {cap['check_received'] - cap['check_missing']} of {cap['check_received']} "
                   f"runs the client received are in DuckDB ({cap['check_sent']} creates sent) "
                   f"{'PASS' if ok else 'MISS'}")
    per_cell = [c for c in doc["results"] if c["target"] == "runtap" and c.get("capture_lag_p99_ms") is not None]
    if per_cell:
        worst = max(per_cell, key=lambda c: c["capture_lag_p99_ms"])
        v = worst["capture_lag_p99_ms"] / 1e3
        over = [f"{c['workload']} c={c['concurrency']} <= {c['capture_lag_p99_ms'] / 1e3:g} s"
                for c in per_cell if c["capture_lag_p99_ms"] > 1e3]
        out.append(f"capture lag p99 <= 1 s in every cell (worst cell, {worst['workload']} c={worst['concurrency']}; "
                   f"upper bound of the bucket holding the p99): <= {v:g} s {'PASS' if v <= 1 else 'MISS'}"
                   + (f" (over 1 s: {', '.join(over)})" if over else ""))
    elif cap and cap.get("lag_p99_s") is not None:
        v = cap["lag_p99_s"]
        out.append(f"capture lag p99 <= 1 s: {v:.3f} s {'PASS' if v <= 1 else 'MISS'}")
    return out


def document(meta: dict[str, Any], targets: dict[str, dict[str, Any]], cells: list[Cell],
             relays: list[Relay], capture: Capture | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "meta": meta, "targets": targets, "results": [asdict(c) for c in cells],
        "relays": [asdict(r) for r in relays], "capture": asdict(capture) if capture else None,
        "ratios": ratios(cells),
    }
    doc["checks"] = checks(doc)
    return doc


def _f(v: float | None, digits: int = 0, suffix: str = "") -> str:
    if v is None:
        return "–"
    return f"{v:,.{digits}f}{suffix}"


def _headline(note: str) -> str:
    """First and last line of a start-up failure: what failed, and the exception that says why."""
    lines = [ln.strip() for ln in note.strip().splitlines() if ln.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    return f"{lines[0]} … `{lines[-1]}`"


def _x(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}×"


def _tracing(meta: dict[str, Any]) -> str:
    if meta.get("tracing", "on") == "on":
        return "on (OTLP/HTTP to a local sink)"
    return "off (no OTEL endpoint: runtap's default)"


def markdown(doc: dict[str, Any]) -> str:
    meta = doc["meta"]
    cells = [Cell(**c) for c in doc["results"]]
    out = [f"### runtap benchmark, {meta['mode']} ({meta['started']})", "",
           f"`{meta['command']}` · {meta['cpus']} CPUs ({meta['cpu_model']}) · generator "
           f"{meta['generator']} · {meta['seconds']:g} s per cell · bare forwarder on "
           f"{meta.get('bare_loop', 'asyncio')} · runtap tracing: {_tracing(meta)} · "
           f"placement: {meta['placement']}", ""]
    for name, t in doc["targets"].items():
        if t["status"] != "ok":
            out.append(f"- **{name}: {t['status']}** — {_headline(t['note'])}")
    if any(t["status"] != "ok" for t in doc["targets"].values()):
        out.append("")
    out += ["Throughput and proxy CPU per request (CPU = the proxy's process tree, µs of user+system per "
            "completed request):", "",
            "| workload | c | direct req/s | nginx req/s | bare req/s | runtap req/s | nginx µs CPU | "
            "bare µs CPU | runtap µs CPU | runtap/nginx CPU | runtap/bare CPU | runtap/bare req/s |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in doc["ratios"]:
        w, c = r["workload"], r["concurrency"]
        row = [w, str(c)]
        for t in TARGETS:
            x = _get(cells, t, w, c)
            bound = x is not None and (x.feeder_cores or 0) >= UPSTREAM_BOUND
            row.append((_f(x.load["rps"]) + (" †" if bound else "")) if x and x.load else "–")
        for t in PROXIES:
            x = _get(cells, t, w, c)
            row.append(_f(x.proxy_cpu_us) if x else "–")
        row += [_x(r["cpu_runtap_over_nginx"]), _x(r["cpu_runtap_over_bare"]), _x(r["rps_runtap_over_bare"])]
        out.append("| " + " | ".join(row) + " |")
    if any((x.feeder_cores or 0) >= UPSTREAM_BOUND for x in cells):
        out += ["", f"† the fake upstream's core (upstream, plus the load generator where they share a CPU) "
                f"was ≥ {UPSTREAM_BOUND:.0%} busy: that req/s is bounded by the feeding side, not by the "
                "proxy; compare CPU per request instead."]
    out += _relay_vs_tree(doc, cells)
    out += ["", "Latency p50 / p99 in ms, and p50 added over direct in µs:", "",
            "| workload | c | direct | nginx | bare | runtap | +nginx µs | +bare µs | +runtap µs |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in doc["ratios"]:
        w, c = r["workload"], r["concurrency"]
        row = [w, str(c)]
        for t in TARGETS:
            x = _get(cells, t, w, c)
            row.append(f"{_f(x.load['p50_ms'], 3)} / {_f(x.load['p99_ms'], 2)}" if x and x.load else "–")
        for t in PROXIES:
            v = r[f"added_p50_ms_{t}"]
            row.append(_f(None if v is None else v * 1e3))
        out.append("| " + " | ".join(row) + " |")
    if doc["relays"]:
        out += ["", "SSE per-event relay delay (upstream send → client receipt, one stream at a time, events "
                f"{doc['relays'][0]['gap_us']} µs apart; 'late' = a whole gap late: held for the next event, "
                "or descheduled):", "",
                "| target | events/stream | events | p50 µs | p99 µs | max µs | late | broken streams |",
                "|---|--:|--:|--:|--:|--:|--:|--:|"]
        for rel in doc["relays"]:
            out.append(f"| {rel['target']} | {rel['events_per_stream']} | {rel['events']} | "
                       f"{_f(rel['p50_us'])} | {_f(rel['p99_us'])} | {_f(rel['max_us'])} | "
                       f"{rel['held_back']} | {rel['broken']} |")
    cap = doc.get("capture")
    if cap:
        out += ["", "Capture (runtap):", ""] + _capture_lines(cap, [x for x in cells if x.target == "runtap"])
    lagged = [x for x in cells if x.target == "runtap" and x.loop_lag_probes]
    if lagged:
        out += ["", "runtap's event-loop lag during each cell (a 100 ms timer's lateness, "
                "`runtap_event_loop_lag_seconds`; bucket upper bounds; at c=50 the loop is saturated, so "
                "lag there includes queueing behind ready work, not only blocking):", "",
                "| workload | c | probes | p99 ≤ ms | max ≤ ms | probes > 10 ms |", "|---|--:|--:|--:|--:|--:|"]
        for x in lagged:
            out.append(f"| {x.workload} | {x.concurrency} | {x.loop_lag_probes} | {_f(x.loop_lag_p99_ms, 1)} | "
                       f"{_f(x.loop_lag_max_ms, 1)} | {x.loop_lag_over_10ms} |")
    bg = [x.background_cores for x in cells if x.background_cores is not None]
    if bg:
        out += ["", f"Other load on the machine during cells: mean {sum(bg) / len(bg):.2f}, max "
                f"{max(bg):.2f} cores (not part of the benchmark; high values make absolute numbers noisy)."]
    if doc["checks"]:
        out += ["", "Targets (issue 7):", ""] + [f"- {c}" for c in doc["checks"]]
    return "\n".join(out) + "\n"


def _worst_cell_lag(cells: list[Cell]) -> str:
    lagged = [x for x in cells if x.capture_lag_p99_ms is not None]
    if not lagged:
        return ""
    worst = max(lagged, key=lambda x: x.capture_lag_p99_ms or 0.0)
    return f", worst cell p99 <= {_f(worst.capture_lag_p99_ms)} ms ({worst.workload} c={worst.concurrency})"


def _capture_lines(cap: dict[str, Any], cells: list[Cell]) -> list[str]:
    drains = [x.capture_drain_ms for x in cells if x.capture_drain_ms is not None]
    depths = [x.capture_max_depth for x in cells if x.capture_max_depth is not None]
    errors = ", ".join(f"{k} {v:,}" for k, v in sorted(cap["request_errors"].items())) or "none"
    lines = [
        f"- check: {_f(cap['check_sent'])} run creates sent after the load and read to the end; the client "
        f"received **{_f(cap['check_received'])}** run ids, **{_f(cap['check_missing'])}** of them missing "
        "from DuckDB after SIGTERM",
        f"- whole run: the upstream created {_f(cap['created'])} runs and responses through runtap, DuckDB holds "
        f"{_f(cap['captured'])}; {_f(cap['abandoned_creates'])} creates were abandoned by their client "
        "mid-response (wrk drops in-flight requests when a cell's time is up)",
        f"- `requests` rows {_f(cap['request_rows'])} for {_f(cap['requests_sent'])} requests the generators "
        f"completed; rows with an error: {errors}",
        f"- capture queue: drained {_f(max(drains) if drains else None)} ms after the load stopped (worst "
        f"cell), peak depth {_f(max(depths) if depths else None)}"
        + ("" if cap["lag_p99_s"] is None else f"; capture lag (request done -> row visible) p99 over the "
           f"whole run <= {cap['lag_p99_s']:g} s")
        + _worst_cell_lag(cells),
        f"- SIGTERM to exit {_f(cap['shutdown_s'], 1)} s (exit code {cap['exit_code']}); OTLP export POSTs "
        f"the sink received: {_f(cap['spans_exported_posts'])}",
    ]
    if cap["note"]:
        lines.append(f"- note: {cap['note'].strip()}")
    return lines


def write(doc: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(doc["meta"]["started_epoch"]))
    base = out_dir / f"bench-{stamp}-{doc['meta']['mode']}"
    js, md = base.with_suffix(".json"), base.with_suffix(".md")
    text = markdown(doc)
    js.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    md.write_text(text)
    (out_dir / "latest.json").write_text(js.read_text())
    (out_dir / "latest.md").write_text(text)
    return js, md
