"""report.html: one self-contained file (inline CSS and SVG, no JavaScript, no external request).

Every string that comes from data is passed through :func:`esc`. Sections degrade to a short note
when there is nothing to show, so a run with 0 turns still gets a readable report.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from ..records import REASONS
from . import plots
from .aggregate import (METRICS, THROTTLE_CLASSES, group_stats, load_sessions, load_turns, read_meta, summarize,
                        summary_by_turn, summary_by_variant, write_tables)
from .compare import compare, comparison_html, split_targets
from .tools import TOOL_METRICS, has_tools, tools_html
from .markup import esc, figure, fmt_num, page, section, table
from .verdict import Verdict, expectation_counts, judge_frames

PACING_WARN_MS = 10.0
SLOWEST = 15
MAX_ROWS = 50


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
        if r.get("interrupted_as_expected", 0):  # barge-in: the interrupted turn is the expected outcome
            rows.insert(2, ("interrupted as expected", f"{int(r['interrupted_as_expected']):,}"))
        if int(r.get("throttled", 0)):  # the quota's doing, not the agent's (harness/quota.py)
            rows.append(("throttled (excluded)", f"{int(r['throttled']):,}"))
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


def _has_variants(df: pd.DataFrame) -> bool:
    return bool(len(df)) and "variant" in df.columns and bool((df["variant"].astype(str) != "").any())


def _by_variant(df: pd.DataFrame) -> str:
    """Which callers the agent fails: one row per caller variant, worst completeness first."""
    s = summary_by_variant(df).sort_values(["completeness", "wer_mean"], ascending=[True, False], na_position="first")
    rows = [[esc(r["target"]), esc(r["variant"]), f"{int(r['count']):,}", fmt_num(r["completeness"], pct=True),
             fmt_num(r["wer_mean"]), fmt_num(r["wer_p95"]), fmt_num(r["expectations_pass_rate"], pct=True),
             fmt_num(r["first_audio_ms_p50"]), fmt_num(r["vad_ms_p50"])]
            for _, r in s.head(300).iterrows()]
    return ("<p class='muted small'>Each session is one caller variant (scenario <code>variants:</code>), assigned "
            "round-robin; WER compares the input transcript with the line's text.</p>"
            + table(["target", "caller variant", "turns", "complete", "WER mean", "WER p95", "expectations",
                     "first audio p50", "VAD p50"], rows, num=range(2, 9)))


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
           "only.</p>", figure("reasons", plots.reasons_over_time_plot(groups), "No failed turns."),
           _throttled(summary)]
    err = df.loc[df["error"] != "", ["target", "reason", "error"]] if len(df) else pd.DataFrame()
    if len(err):
        top = err.astype(str).value_counts().head(15)
        out.append("<h3>Most frequent errors</h3>" + table(
            ["target", "reason", "error", "turns"],
            [[esc(t), esc(r), esc(e[:300]), f"{n:,}"] for (t, r, e), n in top.items()], num=(3,)))
    return "".join(out)


def _throttled(summary: pd.DataFrame) -> str:
    """Turns the service throttled (429 / token quota) or cut at the session cap: their own section."""
    if "throttled" not in summary or not summary["throttled"].sum():
        return ""
    rows = [[f"<code>{esc(k)}</code>"] + [f"{int(r[k]):,}" for _, r in summary.iterrows()]
            for k in THROTTLE_CLASSES if summary[k].sum()]
    return ("<h3>Throttled by the service</h3>" + table(["throttle"] + [str(t) for t in summary["target"]], rows,
                                                      num=range(1, len(summary) + 1))
            + "<p class='muted small'>Quota and capacity limits of the resource, not failures of the agent: these "
              "turns are kept out of completeness and failures (docs/azure.md, sizing a test).</p>")


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


def _verdict(df: pd.DataFrame, sessions: pd.DataFrame, meta: Mapping[str, Any]) -> Verdict | str:
    """The run's verdict (verdict.judge_frames, as the console and the exit code), or why there is none."""
    try:
        return judge_frames(df, sessions, meta)
    except ValueError as exc:  # a threshold in run.json that no longer parses
        return str(exc)


def _verdict_banner(v: Verdict | str) -> str:
    """The first thing the report says: PASS, FAIL or INCOMPLETE, and exactly what failed."""
    if isinstance(v, str):
        return f"<div class='banner bad' id='verdict'><b>VERDICT: unknown.</b> {esc(v)}</div>"
    cls = {"PASS": "ok", "FAIL": "bad"}.get(v.status, "warn")
    items = v.reasons or [v.line().partition(" — ")[2] or "complete; no threshold or expectation failed"]
    body = "".join(f"<li>{esc(r)}</li>" for r in items + v.notes)
    return (f"<div class='banner {cls}' id='verdict'><b>VERDICT: {esc(v.status)}</b> "
            f"<span class='small'>(exit code {v.exit_code})</span><ul>{body}</ul></div>")


def _thresholds(v: Verdict | str) -> str:
    """Thresholds and expectations side by side: the two things a verdict is made of."""
    if isinstance(v, str):
        return section("thresholds", "Thresholds and expectations", f"<p class='fail'>{esc(v)}</p>")
    parts = []
    if v.thresholds:
        rows = [[f"<span class='{'pass' if r.passed else 'fail'}'>{'PASS' if r.passed else 'FAIL'}</span>",
                 esc(r.target or "(all)"), f"<code>{esc(r.threshold.expr)} {esc(r.threshold.op)} "
                 f"{r.threshold.limit:g}</code>", fmt_num(r.actual), esc(r.detail)]
                for r in v.thresholds]
        parts.append("<h3>Thresholds</h3>" + table(["result", "target", "threshold", "actual", "detail"], rows))
    exp = v.expectations
    if exp:
        rows = [[f"<span class='{'fail' if bad else 'pass'}'>{'FAIL' if bad else 'PASS'}</span>",
                 f"<code>{esc(name)}</code>", f"{n:,}", f"{bad:,}"] for name, (n, bad) in exp.items()]
        parts.append("<h3>Expectations</h3>" + table(["result", "expectation", "checked", "failed"], rows,
                                                      num=(2, 3)))
    if not parts:
        return ""
    return section("thresholds", "Thresholds and expectations", "".join(parts))


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
    verdict = _verdict(df, sessions, meta)
    nav = [("overview", "Overview", True), ("thresholds", "Thresholds",
                                            bool(meta.get("thresholds")) or bool(verdict.expectations if isinstance(verdict, Verdict) else expectation_counts(df))),
           ("compare", "Targets compared", len(groups) >= 2), ("latency", "Latency", has),
           ("variants", "Callers", _has_variants(df)), ("failures", "Failures", has),
           ("slowest", "Slowest turns", has),
           ("expectations", "Expectations", has), ("tools", "Tool calls", has_tools(df)),
           ("sessions", "Sessions", True), ("run", "Run", True)]
    parts = [f"<header><h1>{esc(title)}</h1><div class='muted'>{esc(sub)}</div><nav>"
             + "".join(f"<a href='#{a}'>{esc(b)}</a>" for a, b, show in nav if show) + "</nav></header>",
             _verdict_banner(verdict), _banners(meta, df)]
    if len(df):
        stats = group_stats(df)
        parts.append(section("overview", "Overview", _cards(summary) + (
            f"<p class='muted small'>All targets: {stats['count']:,} turns, completeness "
            f"{fmt_num(stats['completeness'], pct=True)}, first-audio p95 {fmt_num(stats['first_audio_ms_p95'])} ms. "
            "Percentiles over valid turns (numpy linear interpolation); latencies from the true end of user "
            "speech.</p>")))
        parts.append(_thresholds(verdict))
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
        if _has_variants(df):
            parts.append(section("variants", "By caller variant", _by_variant(df)))
        parts.append(section("failures", "Failures", _failures(df, groups, summary)))
        parts.append(section("slowest", f"Slowest {SLOWEST} turns (first audio)", _slowest(df)))
        parts.append(section("expectations", "Expectation failures", _expectations(df)))
        if has_tools(df):
            parts.append(section("tools", "Tool calls", tools_html(df)))
    else:
        parts.append(section("overview", "Overview", "<p class='muted'>No turns recorded.</p>"))
        parts.append(_thresholds(verdict))
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
