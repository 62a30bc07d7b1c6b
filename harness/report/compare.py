"""Compare runs or targets: percentile differences with bootstrap 95% CIs and a noise-proof verdict.

A difference is a *regression* only when its CI excludes 0 in the bad direction AND it is practically
large (default: ≥ 5 % and ≥ 10 ms for latencies, ≥ 0.5 percentage points for completeness), so run-to-run
noise is never flagged. Each group is resampled independently. For percentiles the resample's order
statistics are drawn directly (uniform order statistics are Beta-distributed), which has exactly the
distribution of numpy's linear percentile of a full resample at O(resamples) cost instead of
O(resamples × n); completeness resamples as a binomial proportion. Everything is seeded.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from . import plots
from .aggregate import HIGHER_IS_BETTER, PERCENTILES, load_turns, measured, read_meta, target_order, typed_turns
from .markup import esc, figure, fmt_num, page

COMPARE_METRICS: tuple[str, ...] = (
    "first_audio_ms", "first_voiced_ms", "vad_ms", "server_response_ms", "response_created_ms",
    "first_transcript_ms", "completeness",
)
#: Compared too when any group has a value (runs whose agent called tools).
TOOL_COMPARE_METRICS: tuple[str, ...] = ("first_tool_call_ms", "tool_exec_ms", "answer_first_audio_ms")
VERDICTS = ("regression", "improvement", "no significant change", "no data")
COLUMNS = ("metric", "stat", "group", "baseline", "n_baseline", "n", "baseline_value", "value", "diff",
           "rel_diff", "ci_low", "ci_high", "verdict")


def bootstrap_percentile(values: np.ndarray, q: float, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` draws of ``np.percentile(resample, q)`` where resample = n draws with replacement.

    A resample is x_sorted[floor(n·U_i)] for iid uniforms U_i, so its k-th order statistic is
    x_sorted[floor(n·U_(k))] with U_(k+1) ~ Beta(k+1, n−k), and the next one lies at
    U_(k+1) + (1 − U_(k+1))·Beta(1, n−k−1). Interpolating between them as numpy does gives the exact
    bootstrap distribution without materialising n_boot × n samples.
    """
    xs = np.sort(np.asarray(values, dtype=float))
    xs = xs[~np.isnan(xs)]
    n = xs.size
    if n == 0:
        return np.full(n_boot, np.nan)
    if n == 1:
        return np.full(n_boot, xs[0])
    h = (n - 1) * q / 100.0
    k = min(int(math.floor(h)), n - 1)
    frac = h - k
    a = rng.beta(k + 1, n - k, n_boot)
    lo = xs[np.minimum((a * n).astype(np.int64), n - 1)]
    if frac <= 0 or k + 1 >= n:
        return lo
    b = a + (1.0 - a) * rng.beta(1, n - k - 1, n_boot)
    hi = xs[np.minimum((b * n).astype(np.int64), n - 1)]
    return lo + frac * (hi - lo)


def bootstrap_mean(values: np.ndarray, n_boot: int, rng: np.random.Generator, chunk: int = 2_000_000) -> np.ndarray:
    """Plain resampling bootstrap of the mean, in chunks of ≤ ``chunk`` draws to bound memory."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if not v.size:
        return np.full(n_boot, np.nan)
    rows = max(1, chunk // v.size)
    return np.concatenate([v[rng.integers(0, v.size, (min(rows, n_boot - i), v.size))].mean(axis=1)
                           for i in range(0, n_boot, rows)])


def _stat(values: np.ndarray, stat: str) -> float:
    v = values[~np.isnan(values)]
    if not v.size:
        return math.nan
    return float(np.percentile(v, PERCENTILES[stat]) if stat in PERCENTILES else v.mean())


def _boot(values: np.ndarray, stat: str, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    if stat in PERCENTILES:
        return bootstrap_percentile(values, PERCENTILES[stat], n_boot, rng)
    if stat == "mean":
        return bootstrap_mean(values, n_boot, rng)
    raise ValueError(f"cannot bootstrap stat {stat!r}; use p50/p90/p95/p99/mean")


def verdict(metric: str, diff: float, rel: float, ci_low: float, ci_high: float, *, min_rel: float = 0.05,
            min_abs: float = 10.0, min_rate: float = 0.005) -> str:
    """Regression/improvement only if the CI excludes 0 and the change is practically large."""
    if any(math.isnan(x) for x in (diff, ci_low, ci_high)):
        return "no data"
    if not (ci_low > 0 or ci_high < 0):
        return "no significant change"
    if metric == "completeness":
        practical = abs(diff) >= min_rate
    else:
        practical = math.isnan(rel) or abs(rel) >= min_rel
        if metric.endswith("_ms"):
            practical = practical and abs(diff) >= min_abs
    if not practical:
        return "no significant change"
    worse = diff < 0 if metric in HIGHER_IS_BETTER else diff > 0
    return "regression" if worse else "improvement"


def compare(groups: Mapping[str, pd.DataFrame], metrics: Sequence[str] = COMPARE_METRICS,
            baseline: str | None = None, *, stats: Sequence[str] = ("p50", "p95"), n_boot: int = 2000,
            seed: int = 0, min_rel: float = 0.05, min_abs: float = 10.0, min_rate: float = 0.005,
            include_invalid: bool = False) -> pd.DataFrame:
    """Long table, one row per (metric, stat, non-baseline group): values, diff, 95% CI, verdict.

    ``baseline`` defaults to the first group. Completeness is compared as a proportion (stat "rate").
    """
    labels = list(groups)
    if not labels:
        return pd.DataFrame(columns=list(COLUMNS))
    baseline = labels[0] if baseline is None else baseline
    if baseline not in groups:
        raise ValueError(f"baseline {baseline!r} is not one of the groups: {', '.join(labels)}")
    frames = {k: measured(typed_turns(v), include_invalid) for k, v in groups.items()}
    if metrics is COMPARE_METRICS:
        metrics = tuple(metrics) + tuple(m for m in TOOL_COMPARE_METRICS
                                         if any(f[m].notna().any() for f in frames.values()))
    rng = np.random.default_rng(seed)
    rows = []
    for metric in metrics:
        for stat in (("rate",) if metric == "completeness" else stats):
            base_v, base_boot = _values_and_boot(frames[baseline], metric, stat, n_boot, rng)
            for g in labels:
                if g == baseline:
                    continue
                v, boot = _values_and_boot(frames[g], metric, stat, n_boot, rng)
                b_val, g_val = base_v[0], v[0]
                diff = g_val - b_val
                rel = diff / abs(b_val) if b_val not in (0.0,) and not math.isnan(b_val) else math.nan
                d = boot - base_boot
                lo, hi = ((math.nan, math.nan) if np.isnan(d).any() else
                          tuple(float(x) for x in np.percentile(d, [2.5, 97.5])))
                rows.append({
                    "metric": metric, "stat": stat, "group": g, "baseline": baseline, "n_baseline": base_v[1],
                    "n": v[1], "baseline_value": b_val, "value": g_val, "diff": diff, "rel_diff": rel,
                    "ci_low": lo, "ci_high": hi,
                    "verdict": verdict(metric, diff, rel, lo, hi, min_rel=min_rel, min_abs=min_abs,
                                       min_rate=min_rate),
                })
    out = pd.DataFrame(rows, columns=list(COLUMNS))
    out.attrs["settings"] = {"n_boot": n_boot, "seed": seed, "min_rel": min_rel, "min_abs": min_abs,
                             "min_rate": min_rate, "include_invalid": include_invalid}
    return out


def _values_and_boot(df: pd.DataFrame, metric: str, stat: str, n_boot: int,
                     rng: np.random.Generator) -> tuple[tuple[float, int], np.ndarray]:
    if metric == "completeness":
        n = len(df)
        if not n:
            return (math.nan, 0), np.full(n_boot, np.nan)
        p = float(df["complete"].to_numpy(dtype=bool).mean())
        return (p, n), rng.binomial(n, p, n_boot) / n
    v = df[metric].to_numpy(dtype=float)
    v = v[~np.isnan(v)]
    return (_stat(v, stat), int(v.size)), _boot(v, stat, n_boot, rng)


def split_targets(df: pd.DataFrame, meta: Mapping | None = None) -> dict[str, pd.DataFrame]:
    """label → turns of that target, in run.json order (the first target is the baseline)."""
    df = typed_turns(df)
    tgt = df["target"].astype(str).to_numpy()
    return {t: df[tgt == t] for t in target_order(df, meta)}


def compare_targets(df: pd.DataFrame, meta: Mapping | None = None, **kwargs) -> pd.DataFrame:
    """:func:`compare` across the targets of one run (baseline: first target)."""
    return compare(split_targets(df, meta), **kwargs)


def load_groups(run_dirs: Sequence[str | os.PathLike[str]]) -> dict[str, pd.DataFrame]:
    """Groups for compare_runs: one run → its targets; several → one per run (per run/target if mixed)."""
    runs = [(Path(d), read_meta(d), load_turns(d)) for d in run_dirs]
    if len(runs) == 1:
        path, meta, df = runs[0]
        split = split_targets(df, meta)
        return split if len(split) >= 2 else {str(meta.get("run_id") or path.name): df}
    groups: dict[str, pd.DataFrame] = {}
    for path, meta, df in runs:
        label = str(meta.get("run_id") or path.resolve().name)
        split = split_targets(df, meta)
        parts = {f"{label}/{t}": g for t, g in split.items()} if len(split) >= 2 else {label: df}
        for name, g in parts.items():
            unique, i = name, 2
            while unique in groups:
                unique, i = f"{name} ({i})", i + 1
            groups[unique] = g
    return groups


def comparison_html(groups: Mapping[str, pd.DataFrame], table: pd.DataFrame, *, cdf: bool = True) -> str:
    """The comparison block (verdict table + overlaid CDFs + bars), shared by report.html and compare.html."""
    if len(groups) < 2 or table.empty:
        return "<p class='muted'>Nothing to compare: fewer than two groups with turns.</p>"
    labels, baseline = list(groups), str(table["baseline"].iloc[0])
    others = [g for g in labels if g != baseline]
    head = ["metric", "stat", f"{baseline} (baseline)"] + [
        h for g in others for h in (g, "Δ vs baseline [95% CI]", "verdict")]
    out = ["<div class='scroll'><table class='cmp'><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head)
           + "</tr></thead><tbody>"]
    for (metric, stat), rows in table.groupby(["metric", "stat"], sort=False):
        pct = metric == "completeness"
        first = rows.iloc[0]
        cells = [esc(metric), esc(stat), fmt_num(first["baseline_value"], pct)]
        for g in others:
            r = rows[rows["group"] == g]
            if r.empty:
                cells += ["-", "-", "-"]
                continue
            r = r.iloc[0]
            rel = "" if math.isnan(r["rel_diff"]) or pct else f" ({r['rel_diff']:+.1%})"
            ci = f"[{fmt_num(r['ci_low'], pct, True)}, {fmt_num(r['ci_high'], pct, True)}]"
            cls = {"regression": "bad", "improvement": "good"}.get(r["verdict"], "neutral")
            cells += [fmt_num(r["value"], pct), f"{fmt_num(r['diff'], pct, True)}{esc(rel)} <span class='muted'>"
                      f"{esc(ci)}</span>", f"<span class='verdict {cls}'>{esc(r['verdict'])}</span>"]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table></div>")
    st = {"n_boot": 2000, "min_rel": 0.05, "min_abs": 10.0, "min_rate": 0.005, **table.attrs.get("settings", {})}
    out.append(f"<p class='muted small'>Δ = group − baseline over valid turns; 95% bootstrap CI from "
               f"{st['n_boot']} resamples of each group. Regression/improvement requires the CI to exclude 0 "
               f"and a change of at least {st['min_rel']:.0%} and {st['min_abs']:g} ms "
               f"({st['min_rate'] * 100:g} percentage points for completeness).</p>")
    if cdf:
        out.append(figure("compare-cdf", plots.cdf_plot(groups)))
    out.append(figure("compare-bars", plots.bars_plot(groups)))
    return "\n".join(out)


def compare_runs(run_dirs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], **kwargs) -> Path:
    """Compare run directories (or the targets of a single run); write compare.csv and compare.html."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = load_groups(run_dirs)
    table = compare(groups, **kwargs)
    table.to_csv(out / "compare.csv", index=False, float_format="%.6g")
    items = "".join(f"<li><b>{esc(k)}</b>: {len(g)} turns ({int(g['valid'].sum())} valid)</li>"
                    for k, g in groups.items())
    body = (f"<header><h1>voiceload comparison</h1><p class='muted'>{len(groups)} groups; baseline: "
            f"<b>{esc(next(iter(groups), '-'))}</b></p></header><section><h2>Groups</h2><ul>{items}</ul>"
            f"<p class='muted'>Sources: {esc(', '.join(str(d) for d in run_dirs))}</p></section>"
            f"<section><h2>Side by side</h2>{comparison_html(groups, table)}</section>")
    path = out / "compare.html"
    path.write_text(page("voiceload comparison", body), encoding="utf-8")
    return path
