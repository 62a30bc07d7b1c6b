"""Report plots: matplotlib (Agg) figures rendered to inline SVG markup.

Static SVG keeps report.html a single offline file with no JavaScript, readable in any browser and
diffable; text is drawn as glyph paths (DejaVu), dense point clouds are rasterized inside the SVG so a
100k-turn run stays small. Every function takes ``groups`` (label → typed turns) so the same plot
serves targets of one run and runs being compared, and returns "" when there is nothing to draw.
"""

from __future__ import annotations

import io
import math
import re
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import matplotlib.ticker  # noqa: E402
from matplotlib import patheffects  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..records import REASONS  # noqa: E402

Groups = Mapping[str, pd.DataFrame]

DENSE = 2000  # points above which a scatter layer is rasterized
MAX_POINTS = 30_000  # scatter points drawn at most (a seeded sample beyond that)
LABELS = {
    "first_audio_ms": "first audio", "first_voiced_ms": "first voiced", "vad_ms": "VAD (speech stopped)",
    "server_response_ms": "server response", "response_created_ms": "response created",
    "first_transcript_ms": "first transcript",
}
REASON_COLORS = {
    "no_speech_detected": "#8c564b", "no_response": "#d62728", "no_audio": "#e377c2", "cancelled": "#7f7f7f",
    "failed": "#9467bd", "incomplete": "#bcbd22", "timeout": "#ff7f0e", "disconnected": "#17becf",
    "error": "#1f1f1f", "complete": "#2ca02c",
}
WATERFALL = (  # (from mark, to mark, label, colour): phases of a turn on the speech-end clock
    ("utterance_start", "speech_end", "caller speaking", "#c7d2e0"),
    ("speech_end", "speech_stopped", "VAD", "#6b8fc7"),
    ("speech_stopped", "response_created", "to response.created", "#f2b134"),
    ("response_created", "first_audio", "to first audio", "#e0663a"),
    ("first_audio", "response_done", "response streaming", "#58a55c"),
)

plt.rcParams.update({
    "svg.fonttype": "path", "svg.hashsalt": "voiceload", "font.family": "DejaVu Sans", "font.size": 9,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25,
    "axes.titlesize": 10, "axes.titleweight": "bold", "legend.fontsize": 8, "legend.frameon": False,
    "figure.dpi": 100, "savefig.dpi": 100, "path.simplify": True,
})


def colors(labels: Sequence[str]) -> dict[str, str]:
    """One stable colour per group (tab10 order)."""
    cycle = plt.get_cmap("tab10").colors
    return {g: matplotlib.colors.to_hex(cycle[i % len(cycle)]) for i, g in enumerate(labels)}


def to_svg(fig: Figure) -> str:
    """Serialise a figure as an inline <svg> that scales to its container; closes the figure."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    # Drop fixed width/height (keep viewBox) so CSS decides the size; drop comments.
    svg = re.sub(r'^<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1', svg, count=1)
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, count=1, flags=re.S)  # RDF boilerplate
    return re.sub(r"<!--.*?-->", "", svg, flags=re.S).strip()


def _valid(df: pd.DataFrame, metric: str) -> np.ndarray:
    v = df.loc[df["valid"].to_numpy(dtype=bool), metric].to_numpy(dtype=float)
    return v[~np.isnan(v)]


def _xlim(groups: Groups, metric: str, q: float = 99.5) -> float | None:
    tops = [np.percentile(v, q) for v in (_valid(g, metric) for g in groups.values()) if v.size]
    return float(max(tops)) * 1.05 if tops else None


HALF_WIDTH = (5.6, 3.3)  # figures shown two per row: drawn smaller so their text is as large as a full row's


def _counts(axis: Any) -> None:
    """A count axis (turns, sessions) gets whole-number ticks only."""
    axis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))


def _span(lo: float, hi: float, pad: float = 1.0) -> tuple[float, float]:
    """An axis range that is never empty (all values equal, or all zero)."""
    return (lo, hi) if hi > lo else (lo, lo + pad)


def _empty(ax: plt.Axes, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#888")
    ax.set_xticks([])
    ax.set_yticks([])


def cdf_plot(groups: Groups, metrics: Sequence[str] = ("first_audio_ms", "vad_ms", "server_response_ms")) -> str:
    """Empirical CDF per metric, one line per group (≤ 600 points per line)."""
    if not any(len(g) for g in groups.values()):
        return ""
    col = colors(list(groups))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.0), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        drawn = False
        for label, g in groups.items():
            v = np.sort(_valid(g, metric))
            if not v.size:
                continue
            idx = np.unique(np.linspace(0, v.size - 1, min(v.size, 600)).round().astype(int))
            x, y = np.r_[v[0], v[idx]], np.r_[0.0, (idx + 1) / v.size]  # start at 0 so one turn still shows
            ax.step(x, y, where="post", color=col[label], lw=1.6, label=label)
            drawn = True
        if not drawn:
            _empty(ax)
        else:
            for p in (0.5, 0.95):
                ax.axhline(p, color="#999", lw=0.6, ls="--")
            top = _xlim(groups, metric)
            if top is not None:
                ax.set_xlim(*_span(min(0.0, ax.get_xlim()[0]), top))
            ax.set_ylim(0, 1.01)
            ax.set_xlabel(f"{LABELS.get(metric, metric)} (ms)")
        ax.set_title(LABELS.get(metric, metric))
    axes[0][0].set_ylabel("fraction of turns")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        axes[0][-1].legend(handles, labels, loc="lower right")
    fig.tight_layout()
    return to_svg(fig)


def histogram_plot(groups: Groups, metric: str = "first_audio_ms") -> str:
    """Overlaid step histograms of one metric on shared bins (tail beyond p99.5 folded into the last bin),
    with each group's cumulative fraction (CDF, dashed, right axis) beside it on the same bins."""
    data = {k: _valid(g, metric) for k, g in groups.items()}
    if not any(v.size for v in data.values()):
        return ""
    col = colors(list(groups))
    lo = min(float(np.percentile(v, 0.2)) for v in data.values() if v.size) * 0.95
    hi = _xlim(groups, metric) or lo + 1
    bins = np.linspace(lo, max(hi, lo + 1), 41)
    fig, ax = plt.subplots(figsize=HALF_WIDTH)
    cdf = ax.twinx()
    for label, v in data.items():
        if v.size:
            clipped = np.clip(v, bins[0], bins[-1])
            ax.hist(clipped, bins=bins, histtype="step", lw=1.6, color=col[label], label=f"{label} (n={v.size})")
            x = np.sort(clipped)
            cdf.step(np.r_[x[0], x], np.r_[0.0, np.arange(1, x.size + 1) / x.size], where="post", color=col[label],
                     lw=1.1, ls="--", alpha=0.8)
    _counts(ax.yaxis)
    ax.set_ylim(bottom=0)
    ax.set_xlim(*_span(float(bins[0]), float(bins[-1])))
    cdf.set_ylim(0, 1.01)
    cdf.set_ylabel("cumulative fraction (dashed)")
    cdf.grid(False)
    cdf.spines["right"].set_visible(True)
    ax.set_xlabel(f"{LABELS.get(metric, metric)} (ms; last bin: tail beyond p99.5)")
    ax.set_ylabel("turns")
    ax.set_title(f"Distribution of {LABELS.get(metric, metric)}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return to_svg(fig)


def _elapsed(df: pd.DataFrame, t0: float) -> tuple[np.ndarray, float, str]:
    t = df["t_speech_end"].to_numpy(dtype=float) - t0
    span = float(np.nanmax(t)) if t.size else 0.0
    return (t / 60.0, 60.0, "min") if span > 600 else (t, 1.0, "s")


def _t0(groups: Groups) -> float:
    ts = [g["t_speech_end"][g["t_speech_end"] > 0].min() for g in groups.values() if len(g)]
    ts = [t for t in ts if not math.isnan(t)]
    return min(ts) if ts else 0.0


def over_time_plot(groups: Groups, metric: str = "first_audio_ms", bins: int = 40) -> str:
    """Each turn's latency over the run (invalid turns as grey ×), binned median, and active sessions."""
    frames = {k: g[g["t_speech_end"] > 0] for k, g in groups.items()}
    if not any(len(g) for g in frames.values()):
        return ""
    col, t0 = colors(list(groups)), _t0(frames)
    allf = pd.concat([g for g in frames.values() if len(g)])
    t_all, _, unit = _elapsed(allf, t0)
    edges = np.linspace(0, max(float(t_all.max()), 1.0 if unit == "s" else 1 / 60), bins + 1)
    mids = (edges[:-1] + edges[1:]) / 2
    fig, ax = plt.subplots(figsize=(11, 3.4))
    dense = len(allf) > DENSE
    rng = np.random.default_rng(0)
    keep = min(1.0, MAX_POINTS / max(len(allf), 1))  # thin huge runs (seeded): the medians use every turn
    for label, g in frames.items():
        if not len(g):
            continue
        t, _, _ = _elapsed(g, t0)
        y = g[metric].to_numpy(dtype=float)
        ok = g["valid"].to_numpy(dtype=bool)
        show = ok & (rng.random(len(g)) < keep)
        ax.scatter(t[show], y[show], s=4 if dense else 9, alpha=0.2 if dense else 0.6, color=col[label],
                   lw=0, rasterized=dense)
        if (~ok).any():
            ax.scatter(t[~ok], y[~ok], s=14, marker="x", color="#666", lw=0.8, rasterized=dense,
                       label="invalid (generator overloaded)" if label == next(iter(frames)) else None)
        which = np.clip(np.digitize(t[ok], edges) - 1, 0, bins - 1)
        med = pd.Series(y[ok]).groupby(which).median()
        ax.plot(mids[med.index], med.to_numpy(), color=col[label], lw=2, label=f"{label} median", zorder=4,
                path_effects=[patheffects.withStroke(linewidth=4, foreground="white")])
    top = _xlim(frames, metric, 99.8)
    if top is not None:
        ax.set_ylim(*_span(0.0, top))
    ax.set_xlim(-0.01 * edges[-1], edges[-1] * 1.01)
    ax.set_xlabel(f"time since first turn ({unit})")
    ax.set_ylabel(f"{LABELS.get(metric, metric)} (ms)")
    ax.set_title(f"{LABELS.get(metric, metric)} over time, with concurrent sessions")
    ax2 = ax.twinx()
    which = np.clip(np.digitize(t_all, edges) - 1, 0, bins - 1)
    act = pd.Series(allf["active_sessions"].to_numpy(dtype=float)).groupby(which).max()
    ax2.step(mids[act.index], act.to_numpy(), where="mid", color="#444", lw=1.2, ls=":", label="active sessions")
    ax2.set_ylabel("active sessions")
    ax2.set_ylim(*_span(0.0, float(act.max()) * 1.05))
    _counts(ax2.yaxis)
    ax2.grid(False)
    ax2.spines["right"].set_visible(True)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(6, len(l1 + l2)))
    fig.tight_layout()
    return to_svg(fig)


def concurrency_plot(groups: Groups, metric: str = "first_audio_ms", max_bins: int = 25) -> str:
    """Median and p95 of a metric per active-sessions bin: how latency scales with load."""
    frames = {k: g[g["valid"].to_numpy(dtype=bool) & g[metric].notna().to_numpy()] for k, g in groups.items()}
    if not any(len(g) for g in frames.values()):
        return ""
    col = colors(list(groups))
    amax = max(int(g["active_sessions"].max()) for g in frames.values() if len(g))
    width = max(1, math.ceil((amax + 1) / max_bins))
    fig, ax = plt.subplots(figsize=HALF_WIDTH)
    for label, g in frames.items():
        if not len(g):
            continue
        b = (g["active_sessions"].to_numpy() // width) * width + (width - 1) / 2
        s = pd.Series(g[metric].to_numpy(dtype=float)).groupby(b)
        q = s.quantile([0.5, 0.95]).unstack()
        ax.plot(q.index, q[0.5], "-o", ms=3, color=col[label], lw=1.6, label=f"{label} p50")
        ax.plot(q.index, q[0.95], "--^", ms=3, color=col[label], lw=1.2, label=f"{label} p95")
    ax.set_xlim(-0.5, max(amax + 0.5, 1.5))
    _counts(ax.xaxis)
    ax.set_xlabel("active sessions" + (f" (bins of {width})" if width > 1 else ""))
    ax.set_ylabel(f"{LABELS.get(metric, metric)} (ms)")
    ax.set_title(f"{LABELS.get(metric, metric)} vs concurrency")
    ax.set_ylim(bottom=0)
    ax.legend(ncol=2)
    fig.tight_layout()
    return to_svg(fig)


def reasons_over_time_plot(groups: Groups, bins: int = 30) -> str:
    """Stacked counts of failed turns per time bin, by reason (all groups together)."""
    frames = [g[g["t_speech_end"] > 0] for g in groups.values() if len(g)]
    allf = pd.concat(frames) if frames else pd.DataFrame()
    if not len(allf) or allf["complete"].all():
        return ""
    t, _, unit = _elapsed(allf, _t0(groups))
    edges = np.linspace(0, max(float(t.max()), 1.0 if unit == "s" else 1 / 60), bins + 1)
    which = np.clip(np.digitize(t, edges) - 1, 0, bins - 1)
    reasons = allf["reason"].astype(str).to_numpy()
    fig, ax = plt.subplots(figsize=(11, 2.8))
    bottom = np.zeros(bins)
    width = (edges[1] - edges[0]) * 0.9
    for r in [r for r in REASONS if r != "complete"] + sorted(set(reasons) - set(REASONS)):
        m = reasons == r
        if not m.any():
            continue
        counts = np.bincount(which[m], minlength=bins)
        ax.bar(edges[:-1], counts, width=width, align="edge", bottom=bottom, label=r,
               color=REASON_COLORS.get(r, "#333"))
        bottom += counts
    ax.set_xlabel(f"time since first turn ({unit})")
    ax.set_ylabel("turns per bin")
    ax.set_title("Failed turns over time, by reason")
    if bottom.any():
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_ylim(bottom=0, top=max(1.0, float(bottom.max()) * 1.15))
    _counts(ax.yaxis)
    fig.tight_layout()
    return to_svg(fig)


def waterfall_plot(turns: pd.DataFrame) -> str:
    """One row per turn (slowest first): phases from ``marks`` as bars, milliseconds from speech end."""
    if not len(turns):
        return ""
    rows = list(turns.itertuples(index=False))
    fig, ax = plt.subplots(figsize=(11, 0.9 + 0.32 * len(rows)))
    seen: set[str] = set()
    for i, r in enumerate(rows):
        marks = dict(r.marks or {})
        marks.setdefault("speech_end", 0.0)
        for a, b, label, color in WATERFALL:
            if a in marks and b in marks and marks[b] >= marks[a]:
                ax.barh(i, marks[b] - marks[a], left=marks[a], height=0.6, color=color,
                        label=None if label in seen else label)
                seen.add(label)
        for key, marker, color in (("transcript", "|", "#333"), ("first_voiced", "D", "#1b5e20")):
            x = marks.get(key, r.first_voiced_ms if key == "first_voiced" else None)
            if x is not None and not (isinstance(x, float) and math.isnan(x)):
                ax.plot([x], [i], marker=marker, color=color, ms=6 if marker == "|" else 3.5, ls="none",
                        label=None if key in seen else key.replace("_", " "))
                seen.add(key)
    ax.axvline(0, color="#333", lw=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{r.target} · {str(r.session_id)[-8:]} · t{r.turn_index} ({r.reason})" for r in rows],
                       fontsize=7.5)
    ax.invert_yaxis()
    ax.set_xlabel("ms relative to the true end of user speech")
    ax.set_title("Waterfall of the slowest turns")
    if seen:  # turns with no phase marks at all (e.g. every one timed out) have nothing to explain
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.45 / (0.9 + 0.32 * len(rows))), ncol=7, fontsize=7.5)
    ax.grid(axis="y", visible=False)
    fig.tight_layout()
    return to_svg(fig)


def bars_plot(groups: Groups, metrics: Sequence[str] = ("first_audio_ms", "vad_ms", "server_response_ms")) -> str:
    """Side-by-side p50 (solid) and p95 (hatched) per group for each metric."""
    labels = [k for k, g in groups.items() if len(g)]
    if not labels:
        return ""
    col = colors(list(groups))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.8 * len(metrics), 2.8), squeeze=False)
    w = 0.8 / len(labels)
    for ax, metric in zip(axes[0], metrics):
        for j, label in enumerate(labels):
            v = _valid(groups[label], metric)
            p50, p95 = (np.percentile(v, [50, 95]) if v.size else (np.nan, np.nan))
            x = np.array([0, 1]) - 0.4 + w * (j + 0.5)
            bars = ax.bar(x, [p50, p95], width=w * 0.95, color=col[label], label=label)
            bars[1].set_hatch("///")
            bars[1].set_alpha(0.75)
            for bx, by in zip(x, (p50, p95)):
                if not math.isnan(by):
                    ax.text(bx, by, f"{by:.0f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks([0, 1], ["p50", "p95"])
        ax.set_title(f"{LABELS.get(metric, metric)} (ms)")
        ax.grid(axis="x", visible=False)
        ax.margins(y=0.12)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return to_svg(fig)
