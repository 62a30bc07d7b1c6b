"""Tool-call accuracy from turn records: precision and recall, overall and per tool.

Only turns with a tool expectation (``expect: {tool: ...}``) are scored. A call is correct when its
name is the expected tool and its arguments match (``match`` in the record's ``tool_calls``);
precision = correct calls / calls, recall = turns whose expected tool was called correctly / turns
expecting a tool (``tool: none`` turns count towards precision only: any call there is wrong).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd


def _scored(df: pd.DataFrame) -> list[tuple[str, list[dict[str, Any]]]]:
    if not len(df) or "expected_tool" not in df.columns:
        return []
    return [(str(e), [c for c in calls if isinstance(c, dict)])
            for e, calls in zip(df["expected_tool"].astype(str), df["tool_calls"])
            if e and e not in ("None", "nan")]


def tool_scores(df: pd.DataFrame) -> dict[str, float]:
    """``tool_call_count`` (all calls), ``tool_precision``, ``tool_recall`` (NaN with nothing to score)."""
    total = int(sum(len(c) for c in df["tool_calls"])) if len(df) and "tool_calls" in df.columns else 0
    rows = _scored(df)
    calls = sum(len(c) for _, c in rows)
    correct = sum(1 for e, cs in rows for c in cs if e != "none" and c.get("match"))
    expecting = [(e, cs) for e, cs in rows if e != "none"]
    hit = sum(1 for _, cs in expecting if any(c.get("match") for c in cs))
    return {"tool_call_count": total,
            "tool_precision": correct / calls if calls else math.nan,
            "tool_recall": hit / len(expecting) if expecting else math.nan}


def per_tool(df: pd.DataFrame) -> pd.DataFrame:
    """One row per tool name (expected or called): turns expecting it, calls, correct, precision, recall."""
    rows = _scored(df)
    names = sorted({e for e, _ in rows if e != "none"} | {str(c.get("name")) for _, cs in rows for c in cs})
    out = []
    for name in names:
        calls = [c for _, cs in rows for c in cs if str(c.get("name")) == name]
        correct = sum(1 for c in calls if c.get("match"))
        expecting = [cs for e, cs in rows if e == name]
        hit = sum(1 for cs in expecting if any(c.get("match") for c in cs))
        out.append({"tool": name, "expected_turns": len(expecting), "calls": len(calls), "correct": correct,
                    "precision": correct / len(calls) if calls else math.nan,
                    "recall": hit / len(expecting) if expecting else math.nan})
    return pd.DataFrame(out, columns=["tool", "expected_turns", "calls", "correct", "precision", "recall"])


TOOL_METRICS = ("first_tool_call_ms", "tool_exec_ms", "answer_first_audio_ms", "filler_audio_ms")
MAX_FAILED_ROWS = 20


def has_tools(df: pd.DataFrame) -> bool:
    return bool(len(df)) and (bool(df["tool_calls"].map(len).sum()) or bool((df["expected_tool"].astype(str) != "").any()))


def tools_html(df: pd.DataFrame) -> str:
    """The report's "Tool calls" section body: latency per target, accuracy per tool, failed calls."""
    from .aggregate import group_stats, measured
    from .html import esc, fmt_num, table

    parts = []
    rows, lat = [], []
    for target, g in df.groupby("target", observed=True, sort=False):
        st = group_stats(g)
        rows.append([esc(target), f"{int(st['tool_call_count']):,}", f"{int(st['reason_tool_timeout']):,}",
                     fmt_num(st["tool_precision"], pct=True), fmt_num(st["tool_recall"], pct=True)])
        lat += [[f"<code>{esc(m)}</code>", esc(target), f"{int(st[f'{m}_count']):,}"]
                + [fmt_num(st[f"{m}_{s}"]) for s in ("p50", "p95", "p99", "max")] for m in TOOL_METRICS
                if st[f"{m}_count"]]
    parts.append(table(["target", "calls", "tool_timeout turns", "precision", "recall"], rows, num=range(1, 5)))
    parts.append(table(["metric (ms)", "target", "n", "p50", "p95", "p99", "max"], lat, num=range(2, 7)))
    pt = per_tool(measured(df))
    if len(pt):
        parts.append("<h3>Accuracy per tool (turns with <code>expect: {tool: ...}</code>)</h3>")
        parts.append(table(["tool", "turns expecting it", "calls", "correct", "precision", "recall"],
                           [[f"<code>{esc(r.tool)}</code>", f"{r.expected_turns:,}", f"{r.calls:,}", f"{r.correct:,}",
                             fmt_num(r.precision, pct=True), fmt_num(r.recall, pct=True)] for r in pt.itertuples()],
                           num=range(1, 6)))
    failed = [(r.session_id, r.turn_index, c) for r in df.itertuples() for c in r.tool_calls
              if isinstance(c, dict) and c.get("ok") is not True]
    if failed:
        parts.append(f"<h3>Calls without a good result ({len(failed):,})</h3>")
        parts.append(table(["session", "turn", "tool", "arguments", "result", "exec ms"],
                           [[esc(s), str(i), f"<code>{esc(c.get('name'))}</code>",
                             f"<code>{esc(str(c.get('arguments'))[:120])}</code>",
                             esc("never answered" if c.get("ok") is None else c.get("error") or "error"),
                             fmt_num(c.get("exec_ms"))] for s, i, c in failed[:MAX_FAILED_ROWS]], num=(5,)))
    return "".join(parts)
