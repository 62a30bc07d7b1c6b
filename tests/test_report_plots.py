"""Report plot details a reader trips over: whole-number count axes, no empty axis ranges, and the
first-audio histogram with its CDF beside it (checked on the matplotlib figures themselves)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.report import plots


@pytest.fixture
def figures(monkeypatch):
    out = []
    monkeypatch.setattr(plots, "to_svg", lambda fig: out.append(fig) or "<svg/>")
    return out


def turns(first_audio: list[float]) -> pd.DataFrame:
    n = len(first_audio)
    return pd.DataFrame({"valid": [True] * n, "first_audio_ms": first_audio, "t_speech_end": 1e9 + np.arange(n) * 2.0,
                         "active_sessions": [1 + i % 3 for i in range(n)]})


def integer_ticks(axis) -> bool:
    lo, hi = axis.get_view_interval()
    return all(float(t).is_integer() for t in axis.get_ticklocs() if lo <= t <= hi)


def test_histogram_counts_in_whole_turns_with_a_cdf_beside_it(figures):
    plots.histogram_plot({"a": turns([700.0, 710.0, 905.0]), "b": turns([800.0, 820.0])})
    ax, cdf = figures[-1].axes
    assert integer_ticks(ax.yaxis)  # three turns: matplotlib alone would tick 0.5, 1.5…
    assert cdf.get_ylim() == (0.0, 1.01) and len(cdf.get_lines()) == 2  # one CDF per group
    assert max(cdf.get_lines()[0].get_ydata()) == 1.0


def test_over_time_counts_sessions_in_whole_numbers_and_never_has_an_empty_range(figures):
    plots.over_time_plot({"a": turns([0.0, 0.0, 0.0])})  # all zero: a 0..0 latency axis before
    ax, sessions = figures[-1].axes
    lo, hi = ax.get_ylim()
    assert hi > lo
    assert integer_ticks(sessions.yaxis)


def test_half_width_figures_are_drawn_small_so_their_text_stays_readable(figures):
    plots.histogram_plot({"a": turns([700.0, 710.0])})
    plots.concurrency_plot({"a": turns([700.0, 710.0])})
    full = plots.plt.rcParams["font.size"]
    for fig in figures:  # shown at half the page width: text scales by page_width / 2 / figure width
        assert full * (11 / 2) / fig.get_figwidth() >= 0.95 * full, fig.get_figwidth()


def test_waterfall_of_turns_without_any_phase_has_no_empty_legend():
    """Every slowest turn timed out before any phase mark: the plot draws, and matplotlib is not asked
    for a legend with nothing in it (it warned "No artists with labels found")."""
    import warnings

    turns = pd.DataFrame([{"marks": {}, "first_voiced_ms": np.nan, "target": "t", "session_id": f"s{i}",
                           "turn_index": 0, "reason": "timeout"} for i in range(3)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        svg = plots.waterfall_plot(turns)
    assert svg.lstrip().startswith("<svg") and svg.rstrip().endswith("</svg>")
