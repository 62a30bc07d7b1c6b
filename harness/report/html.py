"""report.html: one self-contained file (inline CSS and SVG, no JavaScript, no external request).

Every string that comes from data is passed through :func:`esc`. Sections degrade to a short note
when there is nothing to show, so a run with 0 turns still gets a readable report.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from ..records import REASONS
from . import plots
from .aggregate import (METRICS, group_stats, load_sessions, load_turns, read_meta, summarize, summary_by_turn,
                        target_order, write_tables)
from .check import evaluate, parse_threshold
from .compare import compare, comparison_html, split_targets
from .tools import TOOL_METRICS, has_tools, tools_html

PACING_WARN_MS = 10.0
SLOWEST = 15
MAX_ROWS = 50

CSS = """
:root{--fg:#1d2330;--muted:#667085;--line:#e4e7ec;--bg:#f6f7f9;--card:#fff;--good:#1a7f37;--bad:#c62828;
--warn:#8a5a00;--accent:#2f5fa7}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 -apple-system,"Segoe UI",Roboto,
"DejaVu Sans",Helvetica,Arial,sans-serif}
main{max-width:1320px;margin:0 auto;padding:20px 28px 60px}
header h1{margin:0 0 4px;font-size:24px}
h2{font-size:18px;margin:0 0 12px;padding-bottom:6px;border-bottom:1px solid var(--line)}
h3{font-size:14px;margin:18px 0 8px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:16px 20px;margin:16px 0}
nav{margin:10px 0 0;font-size:13px}nav a{color:var(--accent);margin-right:14px;text-decoration:none}
.muted{color:var(--muted)}.small{font-size:12px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(290px,1fr));gap:14px}
.card{border:1px solid var(--line);border-radius:8px;padding:12px 16px;background:#fbfcfd}
.card h3{margin:0 0 6px;font-size:15px}.big{font-size:28px;font-weight:600}
.card dl{display:grid;grid-template-columns:auto auto;gap:2px 12px;margin:8px 0 0}
.card dt{color:var(--muted)}.card dd{margin:0;text-align:right;font-variant-numeric:tabular-nums}
table{border-collapse:collapse;width:100%;font-size:13px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid var(--line);padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5;font-weight:600;white-space:nowrap}
tbody tr:nth-child(even){background:#fafbfc}
td.num,th.num{text-align:right}
.scroll{overflow-x:auto}th.grp,td.grp{border-left:2px solid var(--line)}th.grp{text-align:center}
figure{margin:12px 0}figure svg,figure img{width:100%;height:auto;display:block}
.banner{border-radius:8px;padding:12px 16px;margin:16px 0;border:1px solid}
.banner.warn{background:#fff8e1;border-color:#f0c36d;color:var(--warn)}
.banner.bad{background:#fdecea;border-color:#f3a7a0;color:var(--bad)}
.banner.ok{background:#edf7ee;border-color:#a6d5ab;color:var(--good)}
.verdict{padding:1px 7px;border-radius:10px;font-size:12px;white-space:nowrap}
.verdict.bad{background:#fdecea;color:var(--bad)}.verdict.good{background:#e6f4ea;color:var(--good)}
.verdict.neutral{background:#f0f2f5;color:var(--muted)}
.pass{color:var(--good);font-weight:600}.fail{color:var(--bad);font-weight:600}
code,pre{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12px}
pre{background:#f6f8fa;padding:8px;border-radius:6px;overflow-x:auto;white-space:pre-wrap}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px}
@media (max-width:900px){.grid2{grid-template-columns:1fr}}
"""


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _nan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA


def fmt_num(x: Any, pct: bool = False, signed: bool = False) -> str:
    """A number for a table cell: ms to 0 decimals (≥100) or 1, rates as %, '-' for missing."""
    if _nan(x):
        return "-"
    x = float(x)
    sign = "+" if signed else ""
    if pct:
        return f"{x * 100:{sign}.2f}%" if not signed else f"{x * 100:+.2f} pp"
    if abs(x) >= 100:
        return f"{x:{sign},.0f}"
    return f"{x:{sign}.1f}" if abs(x) >= 1 or x == 0 else f"{x:{sign}.3f}"


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>\n{body}\n</main></body></html>\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], num: Sequence[int] = ()) -> str:
    """Table from pre-escaped cell markup; columns listed in ``num`` are right-aligned."""
    th = "".join(f"<th class='num'>{esc(h)}</th>" if i in num else f"<th>{esc(h)}</th>"
                 for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td class='num'>{c}</td>" if i in num else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<div class='scroll'><table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>"


def section(sid: str, title: str, body: str) -> str:
    return f"<section id='{esc(sid)}'><h2>{esc(title)}</h2>\n{body}\n</section>"


def figure(name: str, svg: str, empty: str = "no data to plot") -> str:
    """A plot wrapped in <figure id="plot-NAME">, or a short note when there was nothing to draw."""
    return f"<figure id='plot-{esc(name)}'>{svg}</figure>" if svg else f"<p class='muted'>{esc(empty)}</p>"


# -- sections --------------------------------------------------------------------------------------------
def _banners(meta: Mapping[str, Any], df: pd.DataFrame) -> str:
    sc = meta.get("self_check") if isinstance(meta.get("self_check"), dict) else {}
    out = []
    invalid = int((~df["valid"]).sum()) if len(df) else 0
    invalid = max(invalid, int(sc.get("invalid_turns") or 0))
    p99 = sc.get("pacing_late_p99_ms")
    if invalid > 0 or (isinstance(p99, (int, float)) and p99 > PACING_WARN_MS):
        why = []
        if invalid:
            why.append(f"{invalid} turn(s) were measured while the load generator was overloaded "
                       f"(valid=false): they are counted and shown but left out of percentiles")
        if isinstance(p99, (int, float)) and p99 > PACING_WARN_MS:
            why.append(f"audio pacing p99 was {p99:.1f} ms late (limit {PACING_WARN_MS:g} ms)")
        out.append(f"<div class='banner warn'><b>Load generator self-check warning.</b> {esc('; '.join(why))}. "
                   f"Use more workers or fewer users per worker before trusting tail latencies.</div>")
    if not len(df):
        out.append("<div class='banner bad'><b>No turns recorded.</b> turns.jsonl is empty or missing; "
                   "see session outcomes and notes below.</div>")
    return "".join(out)


def _cards(summary: pd.DataFrame) -> str:
    cards = []
    for _, r in summary.iterrows():
        rows = [("turns", f"{int(r['count']):,}"), ("completeness", fmt_num(r["completeness"], pct=True)),
                ("first audio p50", fmt_num(r["first_audio_ms_p50"])),
                ("first audio p95", fmt_num(r["first_audio_ms_p95"])),
                ("first audio p99", fmt_num(r["first_audio_ms_p99"])), ("VAD p50", fmt_num(r["vad_ms_p50"])),
                ("failures", f"{int(r['failures']):,}"), ("invalid (excluded)", f"{int(r['invalid']):,}")]
        dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rows)
        cards.append(f"<div class='card'><h3>{esc(r['target'] or '(no target)')}</h3>"
                     f"<div class='big'>{esc(fmt_num(r['first_audio_ms_p95']))}<span class='muted small'> ms "
                     f"first-audio p95</span></div><dl>{dl}</dl></div>")
    return f"<div class='cards'>{''.join(cards)}</div>"


def _metric_table(summary: pd.DataFrame) -> str:
    stats = ("count", "p50", "p90", "p95", "p99", "max", "mean")
    top = "<th></th>" + "".join(f"<th colspan='{len(stats)}' class='grp'>{esc(t)}</th>" for t in summary["target"])
    sub = "<th>metric</th>" + "".join(f"<th class='num{' grp' if i == 0 else ''}'>{'n' if s == 'count' else s}</th>"
                                      for _ in summary["target"] for i, s in enumerate(stats))
    body = []
    for m in METRICS:
        if m in TOOL_METRICS and not summary[f"{m}_count"].sum():
            continue  # no tool calls in this run: keep the table about what was measured
        cells = [f"<td><code>{esc(m)}</code></td>"]
        for _, r in summary.iterrows():
            cells += [f"<td class='num grp'>{int(r[f'{m}_count']):,}</td>"] + [
                f"<td class='num'>{fmt_num(r[f'{m}_{s}'])}</td>" for s in stats[1:]]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div class='scroll'><table><thead><tr>{top}</tr><tr>{sub}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _by_turn(df: pd.DataFrame) -> str:
    s = summary_by_turn(df)
    rows = [[esc(r["target"]), str(r["turn_index"]), esc(r["fixture"]), f"{int(r['count']):,}",
             fmt_num(r["completeness"], pct=True), fmt_num(r["first_audio_ms_p50"]),
             fmt_num(r["first_audio_ms_p95"]), fmt_num(r["vad_ms_p50"]), fmt_num(r["wer_mean"])]
            for _, r in s.head(200).iterrows()]
    return table(["target", "turn", "fixture", "turns", "complete", "first audio p50", "p95", "VAD p50",
                  "WER mean"], rows, num=range(3, 9))


def _failures(df: pd.DataFrame, groups: Mapping[str, pd.DataFrame], summary: pd.DataFrame) -> str:
    heads = ["reason"] + [h for t in summary["target"] for h in (str(t), "%")]
    rows = []
    for reason in REASONS:
        cnt = [int(r[f"reason_{reason}"]) for _, r in summary.iterrows()]
        if reason != "complete" and not any(cnt):
            continue
        cells = [f"<code>{esc(reason)}</code>"]
        for c, (_, r) in zip(cnt, summary.iterrows()):
            cells += [f"{c:,}", fmt_num(c / r["count"] if r["count"] else math.nan, pct=True)]
        rows.append(cells)
    out = [table(heads, rows, num=range(1, len(heads))),
           "<p class='muted small'>Counts include invalid turns; completeness in the headline uses valid turns "
           "only.</p>", figure("reasons", plots.reasons_over_time_plot(groups), "No failed turns.")]
    err = df.loc[df["error"] != "", ["target", "reason", "error"]] if len(df) else pd.DataFrame()
    if len(err):
        top = err.astype(str).value_counts().head(15)
        out.append("<h3>Most frequent errors</h3>" + table(
            ["target", "reason", "error", "turns"],
            [[esc(t), esc(r), esc(e[:300]), f"{n:,}"] for (t, r, e), n in top.items()], num=(3,)))
    return "".join(out)


def _slowest(df: pd.DataFrame) -> str:
    ok = df[df["valid"] & df["first_audio_ms"].notna()]
    slow = ok.nlargest(SLOWEST, "first_audio_ms")
    if not len(slow):
        return "<p class='muted'>No turn with a first-audio latency.</p>"
    rows = [[esc(r.target), esc(r.session_id), str(r.turn_index), esc(r.fixture), esc(r.reason),
             str(r.active_sessions), fmt_num(r.first_audio_ms), fmt_num(r.vad_ms), fmt_num(r.server_response_ms),
             esc(r.time.strftime("%H:%M:%S") if not pd.isna(r.time) else "-")] for r in slow.itertuples()]
    heads = ["target", "session", "turn", "fixture", "reason", "active", "first audio", "VAD", "server resp.",
             "time (UTC)"]
    return table(heads, rows, num=range(5, 9)) + figure("waterfall", plots.waterfall_plot(slow))


def _expectations(df: pd.DataFrame) -> str:
    bad = df[~df["expectations_ok"]] if len(df) else df
    if not len(bad):
        checked = int((df["expectations"].map(len) > 0).sum()) if len(df) else 0
        return f"<p class='muted'>No expectation failed ({checked:,} turns had expectations).</p>"
    rows = []
    for r in bad.head(MAX_ROWS).itertuples():
        for e in [e for e in r.expectations if isinstance(e, dict) and not e.get("ok", True)] or [{}]:
            rows.append([esc(r.target), esc(r.session_id), str(r.turn_index), esc(r.fixture),
                         esc(e.get("name", "?")), esc(str(e.get("detail", ""))[:300])])
    more = f"<p class='muted'>Showing {MAX_ROWS} of {len(bad):,} turns.</p>" if len(bad) > MAX_ROWS else ""
    return table(["target", "session", "turn", "fixture", "expectation", "detail"], rows) + more


def _sessions(sessions: pd.DataFrame) -> str:
    if not len(sessions):
        return "<p class='muted'>No session records.</p>"
    out = []
    ct = pd.crosstab(sessions["target"].astype(str), sessions["outcome"].astype(str))
    out.append(table(["target"] + list(ct.columns) + ["total"],
                     [[esc(t)] + [f"{int(v):,}" for v in row] + [f"{int(row.sum()):,}"] for t, row in ct.iterrows()],
                     num=range(1, len(ct.columns) + 2)))
    rej = sessions[sessions["outcome"].astype(str) != "ok"]
    if len(rej):
        g = rej.assign(http_status=rej["http_status"].astype("string").fillna("-")).groupby(
            ["target", "outcome", "http_status"], observed=True)
        rows = [[esc(t), esc(o), esc(h), f"{len(x):,}", fmt_num(x["backoff_ms"].sum()),
                 esc(next((e for e in x["error"] if e), "")[:200])] for (t, o, h), x in g]
        out.append("<h3>Handshake rejections and session errors</h3><p class='muted small'>Counted per session, "
                   "never as turn failures.</p>" + table(
                       ["target", "outcome", "HTTP status", "sessions", "backoff total (ms)", "example error"],
                       rows, num=(3, 4)))
    rows = []
    for t, x in sessions.groupby("target", observed=True):
        c = x["connect_ms"].dropna()
        rows.append([esc(t), f"{len(x):,}", fmt_num(c.quantile(0.5) if len(c) else None),
                     fmt_num(c.quantile(0.95) if len(c) else None), f"{int(x['connect_attempts'].sum()):,}",
                     fmt_num(x["backoff_ms"].sum()), f"{int(x['turns_recorded'].sum()):,}"])
    out.append("<h3>Connections</h3>" + table(["target", "sessions", "connect p50 (ms)", "connect p95 (ms)",
                                                 "connect attempts", "backoff total (ms)", "turns recorded"],
                                                rows, num=range(1, 7)))
    return "".join(out)


def _thresholds(meta: Mapping[str, Any], df: pd.DataFrame) -> str:
    texts = [t for t in meta.get("thresholds") or [] if isinstance(t, str)]
    if not texts:
        return ""
    try:
        results = evaluate(df, [parse_threshold(t) for t in texts],
                           targets=target_order(df, meta, include_unseen=True))
    except ValueError as exc:
        return section("thresholds", "Thresholds", f"<p class='fail'>{esc(exc)}</p>")
    rows = [[f"<span class='{'pass' if r.passed else 'fail'}'>{'PASS' if r.passed else 'FAIL'}</span>",
             esc(r.target or "(all)"), f"<code>{esc(r.threshold.expr)} {esc(r.threshold.op)} "
             f"{r.threshold.limit:g}</code>", fmt_num(r.actual), esc(r.detail)]
            for r in results]
    return section("thresholds", "Thresholds", table(["result", "target", "threshold", "actual", "detail"], rows))


def _meta(meta: Mapping[str, Any]) -> str:
    def kv(d: Mapping[str, Any]) -> str:
        return ", ".join(f"{esc(k)}={esc(v)}" for k, v in d.items())

    known = ("run_id", "scenario", "scenario_file", "description", "started", "ended", "duration_s", "host",
             "cpu_count")
    rows = [[esc(k), esc(meta[k])] for k in known if meta.get(k) not in (None, "")]
    for k in ("versions", "load", "self_check", "records", "workers", "breakpoint"):
        if isinstance(meta.get(k), dict) and meta[k]:
            rows.append([esc(k), kv(meta[k])])
    targets = [t for t in meta.get("targets") or [] if isinstance(t, dict)]
    if targets:
        rows.append(["targets", "<br>".join(f"<b>{esc(t.get('name'))}</b> <code>{esc(t.get('url', ''))}</code>"
                                            for t in targets)])
    if meta.get("argv"):
        rows.append(["argv", f"<code>{esc(' '.join(map(str, meta['argv'])))}</code>"])
    if meta.get("notes"):
        rows.append(["notes", "<br>".join(esc(n) for n in meta["notes"])])
    handled = set(known) | {"versions", "load", "self_check", "records", "workers", "breakpoint", "targets",
                            "argv", "notes", "thresholds"}
    for k, v in meta.items():
        if k not in handled and v not in (None, "", [], {}):
            rows.append([esc(k), f"<code>{esc(json.dumps(v, default=str)[:500])}</code>"])
    return table(["key", "value"], rows) if rows else "<p class='muted'>run.json is missing.</p>"


def render(df: pd.DataFrame, sessions: pd.DataFrame, meta: Mapping[str, Any], name: str = "") -> str:
    """The whole report as a string (``name``: the run directory's name, used when run.json has no run_id)."""
    groups = split_targets(df, meta)
    order = list(groups)
    summary = summarize(df, by=("target",))
    if len(summary):
        summary = summary.set_index(summary["target"].astype(str)).loc[order].reset_index(drop=True)
    title = " · ".join(str(x) for x in ("voiceload", meta.get("scenario"), meta.get("run_id") or name) if x)
    when = " → ".join(str(meta[k]) for k in ("started", "ended") if meta.get(k))
    sub = " · ".join(x for x in (when, f"{len(df):,} turns, {len(sessions):,} sessions, targets: "
                                        f"{', '.join(order) or '-'}") if x)
    has = bool(len(df))
    nav = [("overview", "Overview", True), ("thresholds", "Thresholds", bool(meta.get("thresholds"))),
           ("compare", "Targets compared", len(groups) >= 2), ("latency", "Latency", has),
           ("failures", "Failures", has), ("slowest", "Slowest turns", has),
           ("expectations", "Expectations", has), ("tools", "Tool calls", has_tools(df)),
           ("sessions", "Sessions", True), ("run", "Run", True)]
    parts = [f"<header><h1>{esc(title)}</h1><div class='muted'>{esc(sub)}</div><nav>"
             + "".join(f"<a href='#{a}'>{esc(b)}</a>" for a, b, show in nav if show) + "</nav></header>",
             _banners(meta, df)]
    if len(df):
        stats = group_stats(df)
        parts.append(section("overview", "Overview", _cards(summary) + (
            f"<p class='muted small'>All targets: {stats['count']:,} turns, completeness "
            f"{fmt_num(stats['completeness'], pct=True)}, first-audio p95 {fmt_num(stats['first_audio_ms_p95'])} ms. "
            "Percentiles over valid turns (numpy linear interpolation); latencies from the true end of user "
            "speech.</p>")))
        parts.append(_thresholds(meta, df))
        if len(groups) >= 2:
            parts.append(section("compare", "Targets compared",
                                 comparison_html(groups, compare(groups), cdf=False)))
        lat = [figure("cdf", plots.cdf_plot(groups)), "<div class='grid2'>",
               figure("histogram", plots.histogram_plot(groups)),
               figure("concurrency", plots.concurrency_plot(groups)), "</div>",
               figure("over-time", plots.over_time_plot(groups))]
        if len(groups) < 2:
            lat.append(figure("bars", plots.bars_plot(groups)))
        lat += ["<h3>All metrics (ms; WER and RTF unitless)</h3>", _metric_table(summary),
                "<h3>By conversation turn</h3>", _by_turn(df)]
        parts.append(section("latency", "Latency", "".join(lat)))
        parts.append(section("failures", "Failures", _failures(df, groups, summary)))
        parts.append(section("slowest", f"Slowest {SLOWEST} turns (first audio)", _slowest(df)))
        parts.append(section("expectations", "Expectation failures", _expectations(df)))
        if has_tools(df):
            parts.append(section("tools", "Tool calls", tools_html(df)))
    else:
        parts.append(section("overview", "Overview", "<p class='muted'>No turns recorded.</p>"))
        parts.append(_thresholds(meta, df))
    parts.append(section("sessions", "Session outcomes", _sessions(sessions)))
    parts.append(section("run", "Run", _meta(meta)))
    return page(title, "\n".join(p for p in parts if p))


def write_report(run_dir: str | os.PathLike[str], df: pd.DataFrame | None = None) -> Path:
    """Write ``report.html`` into the run directory and return its path."""
    run_dir = Path(run_dir)
    df = load_turns(run_dir) if df is None else df
    path = run_dir / "report.html"
    tmp = run_dir / "report.html.tmp"
    tmp.write_text(render(df, load_sessions(run_dir), read_meta(run_dir), run_dir.resolve().name), encoding="utf-8")
    tmp.replace(path)
    return path


def write_all(run_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """turns.csv + summary.csv + report.html: the one call at the end of a run."""
    df = load_turns(run_dir)
    paths = write_tables(run_dir, df)
    paths["report.html"] = write_report(run_dir, df)
    return paths
