"""What a Locust user sees: form defaults and host from the scenario, and Locust's CSV made final.

Kept apart from the locustfile (which wires events to the per-test state in locust_run.py).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from typing import Any

import gevent

from .protocol.endpoint import display_url

log = logging.getLogger("voiceload")


def target_label(scenario: Any, override: str | None) -> str:
    """Locust's "host": what this run loads, so the web UI shows it (and no "no host" banner)."""
    if override:
        return display_url(override)
    return ", ".join(f"embedded simulator ({t.profile})" if t.embedded or t.target is None
                     else display_url(t.target.endpoint) for t in scenario.targets)


def apply_defaults(environment: Any, scenario: Any, peak: int) -> None:
    """Options the user did not give come from the scenario: the web UI form shows them as defaults."""
    opts = environment.parsed_options
    if opts.num_users is None:
        opts.num_users = peak
    if opts.spawn_rate is None:
        opts.spawn_rate = scenario.load.spawn_rate
    if not opts.headless and not opts.run_time:
        opts.run_time = int(round(scenario.load.duration_s))
    if not environment.host:
        environment.host = opts.host = target_label(scenario, opts.voiceload_target or None)
    for user_class in environment.user_classes:
        user_class.host = environment.host


def write_final_csv(environment: Any) -> None:
    """Rewrite --csv's _stats/_failures/_exceptions files from the final stats.

    Locust's CSV writer rewrites them once a second and does not write a last snapshot when it
    closes them, so the last second of a run was missing (TURN/CONNECT counts below turns.jsonl).
    The files are replaced atomically; the writer's own handles then point at the old copies.
    """
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if not prefix:
        return
    from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

    table = StatsCSV(environment, PERCENTILES_TO_REPORT)
    for suffix, write in (("_stats.csv", table.requests_csv), ("_failures.csv", table.failures_csv),
                          ("_exceptions.csv", table.exceptions_csv)):
        path = prefix + suffix
        try:
            with open(path + ".tmp", "w", newline="") as fh:
                write(csv.writer(fh))
            os.replace(path + ".tmp", path)
        except OSError as exc:
            log.error("voiceload: cannot write %s: %s", path, exc.strerror or exc)


# -- the web UI: per-kind views instead of Locust's "Aggregated" blend ---------------------------------
KINDS = ("TURN", "CONNECT", "VAD", "TRANSCRIPT", "TOOL")
SERIES_EVERY_S = 2.0
SERIES_MAX = 1800  # one hour at one point per 2 s


def install_web_ui(environment: Any) -> None:
    """Per-kind views in Locust's web UI.

    Locust's table ends with an "Aggregated" row and its charts plot that blend of first-audio
    latencies, connect times and VAD delays, which means nothing. Here the "Aggregated" row is
    dropped, the Charts tab plots TURN (first audio) alone, a "Voice" tab lists each kind apart, and
    ``/voiceload/charts`` (linked from "Download Data") charts each kind over time.
    """
    web_ui = environment.web_ui
    series = _Series(environment)
    web_ui.template_args["extendedTabs"] = [{"title": "Voice (per kind)", "key": "voiceload"}]
    web_ui.template_args["extendedTables"] = [{"key": "voiceload", "structure": [
        {"key": "kind", "title": "Kind"}, {"key": "name", "title": "Name"},
        {"key": "requests", "title": "# Requests"}, {"key": "failures", "title": "# Fails"},
        {"key": "p50", "title": "Median (ms)"}, {"key": "p95", "title": "95%ile (ms)"},
        {"key": "rps", "title": "Current RPS"}]}]
    web_ui.template_args["extendedCsvFiles"] = [
        {"href": "./voiceload/charts", "title": "voiceload: charts per kind (TURN, CONNECT, VAD, TRANSCRIPT, TOOL)"}]
    app = web_ui.app

    @app.after_request
    def _per_kind(response):  # noqa: ANN001 - a Flask response
        if not _is_stats_request() or response.mimetype != "application/json":
            return response
        try:
            report = json.loads(response.get_data())
        except ValueError:
            return response
        response.set_data(json.dumps(per_kind_report(environment, report)))
        return response

    @app.route("/voiceload/charts")
    def _charts():
        return CHARTS_HTML

    @app.route("/voiceload/series")
    def _series():
        from flask import jsonify

        return jsonify(series.points)

    gevent.spawn(series.run)


def _is_stats_request() -> bool:
    from flask import request

    return request.path.endswith("/stats/requests")


def per_kind_report(environment: Any, report: dict) -> dict:
    """Locust's /stats/requests with TURN in place of the blend, and our per-kind rows."""
    entries = [e for e in environment.runner.stats.entries.values()]
    report["stats"] = [row for row in report.get("stats", []) if row.get("name") != "Aggregated"]
    turns = [e for e in entries if e.method == "TURN"]
    if turns:
        report["current_rps"] = sum(e.current_rps for e in turns)
        report["current_fail_per_sec"] = sum(e.current_fail_per_sec for e in turns)
        report["total_rps"] = sum(e.total_rps for e in turns)
        report["total_fail_per_sec"] = sum(e.total_fail_per_sec for e in turns)
        n = sum(e.num_requests for e in turns)
        report["fail_ratio"] = sum(e.num_failures for e in turns) / n if n else 0.0
        from locust.stats import PERCENTILES_TO_CHART

        report["current_response_time_percentiles"] = {  # the worst target's, when there are several
            f"response_time_percentile_{p}": max(e.get_current_response_time_percentile(p) or 0 for e in turns)
            for p in PERCENTILES_TO_CHART}
        report["total_avg_response_time"] = (sum(e.total_response_time for e in turns) / n) if n else 0.0
    report["extended_stats"] = [{"key": "voiceload", "data": kind_rows(entries)}]
    return report


def kind_rows(entries: list) -> list[dict]:
    order = {k: i for i, k in enumerate(KINDS)}
    rows = []
    for e in sorted(entries, key=lambda e: (order.get(e.method, len(KINDS)), e.method, e.name)):
        rows.append({"kind": e.method, "name": e.name, "requests": e.num_requests, "failures": e.num_failures,
                     "p50": round(e.get_response_time_percentile(0.5) or 0), "rps": round(e.current_rps, 2),
                     "p95": round(e.get_response_time_percentile(0.95) or 0)})
    return rows


class _Series:
    """Per kind, every 2 s while a test runs: requests/s, failures/s and current p50/p95 (ms)."""

    def __init__(self, environment: Any) -> None:
        self.environment = environment
        self.points: dict[str, list] = {}
        environment.events.test_start.add_listener(lambda **_kw: self.points.clear())

    def run(self) -> None:
        import time

        while True:
            gevent.sleep(SERIES_EVERY_S)
            runner = self.environment.runner
            if runner is None or runner.state not in ("spawning", "running", "cleanup", "stopping"):
                continue
            now = round(time.time(), 1)
            by_kind: dict[str, list] = {}
            for e in runner.stats.entries.values():
                by_kind.setdefault(e.method, []).append(e)
            for kind, es in by_kind.items():
                point = [now, round(sum(e.current_rps for e in es), 2), round(sum(e.current_fail_per_sec for e in es), 2),
                         max(e.get_current_response_time_percentile(0.5) or 0 for e in es),
                         max(e.get_current_response_time_percentile(0.95) or 0 for e in es)]
                pts = self.points.setdefault(kind, [])
                pts.append(point)
                del pts[:-SERIES_MAX]


CHARTS_HTML = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>voiceload: per kind</title>
<style>body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.3em}
.kind{display:inline-block;margin:0 1.5em 1.5em 0;vertical-align:top}h2{font-size:1.05em;margin:.2em 0}
svg{border:1px solid #ccc;background:#fff}.p50{stroke:#1f77b4}.p95{stroke:#d62728}.rps{stroke:#2ca02c}
.fail{stroke:#ff7f0e}polyline{fill:none;stroke-width:1.6}text{font-size:11px;fill:#555}</style></head><body>
<h1>voiceload — each kind on its own (no "Aggregated" blend)</h1>
<p>TURN = first audio after the caller stopped speaking; CONNECT = WebSocket handshake to session ready;
VAD = speech end to speech_stopped; TRANSCRIPT = speech end to the first transcript; TOOL = a tool's
execution time (the caller's executor, or the service's MCP call). Median and 95th
percentile over the last seconds (ms, left) and requests/s (right), refreshed every 2 s.</p>
<div id="charts"></div>
<script>
const W=460,H=180,P=34;
function line(pts,key,scale,max,cls,t0,t1){if(!pts.length)return"";const s=pts.map(p=>{
 const x=P+(W-2*P)*(t1>t0?(p[0]-t0)/(t1-t0):1),y=H-P-(H-2*P)*(max?p[key]/max:0);return x.toFixed(1)+","+y.toFixed(1)}).join(" ");
 return `<polyline class="${cls}" points="${s}"/>`}
function ticks(max,left){let out="";for(let i=0;i<=4;i++){const v=max*i/4,y=H-P-(H-2*P)*i/4;
 out+=`<text x="${left?2:W-P+4}" y="${y+4}">${Number.isInteger(v)?v:v.toFixed(1)}</text>`}return out}
async function draw(){const r=await fetch("./series");const data=await r.json();const kinds=Object.keys(data).sort(
 (a,b)=>["TURN","CONNECT","VAD","TRANSCRIPT","TOOL"].indexOf(a)-["TURN","CONNECT","VAD","TRANSCRIPT","TOOL"].indexOf(b));
 let html="";for(const k of kinds){const pts=data[k];const t0=pts[0][0],t1=pts[pts.length-1][0];
 const ms=Math.max(1,...pts.map(p=>p[4]));const rps=Math.max(1,...pts.map(p=>Math.max(p[1],p[2])));
 html+=`<div class="kind"><h2>${k}</h2><svg width="${W}" height="${H}" role="img" aria-label="${k}">`+
 ticks(Math.ceil(ms),true)+ticks(Math.ceil(rps),false)+line(pts,3,1,ms,"p50",t0,t1)+line(pts,4,1,ms,"p95",t0,t1)+
 line(pts,1,1,rps,"rps",t0,t1)+line(pts,2,1,rps,"fail",t0,t1)+
 `<text x="${P}" y="14">— p50 ms</text><text x="${P+70}" y="14" style="fill:#d62728">— p95 ms</text>`+
 `<text x="${P+140}" y="14" style="fill:#2ca02c">— req/s</text><text x="${P+200}" y="14" style="fill:#ff7f0e">— fail/s</text>`+
 `</svg></div>`}document.getElementById("charts").innerHTML=html||"<p>No test running yet.</p>"}
draw();setInterval(draw,2000);
</script></body></html>"""
